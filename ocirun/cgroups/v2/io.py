"""v2 io controller: io.weight / io.bfq.weight and io.max (from blockIO)."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil, spec
from ocirun.cgroups.v1.blkio import THROTTLE

_MAXKEY = {"read_bps_device": "rbps", "write_bps_device": "wbps",
           "read_iops_device": "riops", "write_iops_device": "wiops"}


def blkio_to_io_weight(w: int) -> int:
    """v1 blkio.weight [10, 1000] -> v2 io.weight [1, 10000] (runc's linear map)."""
    return 1 + (w - 10) * 9999 // 990


def set(d: str, res: dict, path: str, mgr) -> None:
    bio = spec.section(res, "blockIO", path)
    if not bio:
        return
    p = path + ".blockIO"
    w = spec.get_weight(bio, "weight", p)
    if spec.get_weight(bio, "leafWeight", p) is not None:
        mgr.warn(f"{p}.leafWeight ignored: cgroup v2 has no leaf weights")
    devs = spec.weight_entries(bio, p)
    thr = [(k, f, spec.throttle_entries(bio, k, p)) for k, f in THROTTLE]
    bfq = os.path.exists(os.path.join(d, "io.bfq.weight"))
    if w is not None:
        if bfq:  # BFQ takes the v1 range unchanged
            fsutil.write(d, "io.bfq.weight", w, p + ".weight")
        else:
            fsutil.write(d, "io.weight", f"default {blkio_to_io_weight(w)}", p + ".weight")
    for i, (ma, mi, dw, dlw) in enumerate(devs):
        q = f"{p}.weightDevice[{i}]"
        if dw:  # (0: nothing to set in a new cgroup; v2 has no "clear" value)
            if bfq:
                fsutil.write(d, "io.bfq.weight", f"{ma}:{mi} {dw}", q + ".weight")
            else:
                fsutil.write(d, "io.weight", f"{ma}:{mi} {blkio_to_io_weight(dw)}", q + ".weight")
        if dlw is not None:
            mgr.warn(f"{q}.leafWeight ignored: cgroup v2 has no leaf weights")
    for key, f, entries in thr:
        for i, (ma, mi, rate) in enumerate(entries):
            fsutil.write(d, "io.max", f"{ma}:{mi} {_MAXKEY[f]}={rate}", f"{p}.{key}[{i}]")


def stats(d: str) -> dict:
    sb, sv = [], []
    try:
        text = fsutil.read(d, "io.stat")
    except OSError:
        text = ""
    for line in text.splitlines():
        f = line.split()
        if not f or ":" not in f[0]:
            continue
        ma, mi = (int(x) for x in f[0].split(":"))
        kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
        for key, op, out in (("rbytes", "Read", sb), ("wbytes", "Write", sb),
                             ("rios", "Read", sv), ("wios", "Write", sv)):
            if key in kv:
                out.append({"major": ma, "minor": mi, "op": op, "value": int(kv[key])})
    return {"ioServiceBytesRecursive": sb, "ioServicedRecursive": sv,
            "ioQueueRecursive": [], "ioServiceTimeRecursive": [], "ioWaitTimeRecursive": [],
            "ioMergedRecursive": [], "ioTimeRecursive": [], "sectorsRecursive": []}
