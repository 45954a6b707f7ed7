"""v1 blkio controller: weights (CFQ or BFQ file names) and throttling."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil, spec

THROTTLE = (("throttleReadBpsDevice", "read_bps_device"),
            ("throttleWriteBpsDevice", "write_bps_device"),
            ("throttleReadIOPSDevice", "read_iops_device"),
            ("throttleWriteIOPSDevice", "write_iops_device"))


def set(d: str, res: dict, path: str, mgr) -> None:
    bio = spec.section(res, "blockIO", path)
    if not bio:
        return
    p = path + ".blockIO"
    w = spec.get_weight(bio, "weight", p)
    lw = spec.get_weight(bio, "leafWeight", p)
    devs = spec.weight_entries(bio, p)
    thr = [(k, f, spec.throttle_entries(bio, k, p)) for k, f in THROTTLE]
    # kernels with BFQ only (no CFQ) name the weight blkio.bfq.weight
    wfile = "blkio.weight" if os.path.exists(os.path.join(d, "blkio.weight")) else "blkio.bfq.weight"
    if w is not None:
        fsutil.write(d, wfile, w, p + ".weight")
    if lw is not None:
        if os.path.exists(os.path.join(d, "blkio.leaf_weight")):
            fsutil.write(d, "blkio.leaf_weight", lw, p + ".leafWeight")
        else:
            mgr.warn(f"{p}.leafWeight ignored: the kernel has no blkio.leaf_weight")
    for i, (ma, mi, dw, dlw) in enumerate(devs):
        q = f"{p}.weightDevice[{i}]"
        if dw is not None:
            f = "blkio.weight_device" if wfile == "blkio.weight" else _bfq_device_file(d)
            fsutil.write(d, f, f"{ma}:{mi} {dw}", q + ".weight")
        if dlw is not None:
            if os.path.exists(os.path.join(d, "blkio.leaf_weight_device")):
                fsutil.write(d, "blkio.leaf_weight_device", f"{ma}:{mi} {dlw}", q + ".leafWeight")
            else:
                mgr.warn(f"{q}.leafWeight ignored: the kernel has no blkio.leaf_weight_device")
    for key, f, entries in thr:
        for i, (ma, mi, rate) in enumerate(entries):
            fsutil.write(d, "blkio.throttle." + f, f"{ma}:{mi} {rate}", f"{p}.{key}[{i}]")


def _bfq_device_file(d: str) -> str:
    """BFQ's per-device weights: blkio.bfq.weight_device where the kernel has
    it (as runc); older BFQ took "MAJ:MIN W" in blkio.bfq.weight itself."""
    if os.path.exists(os.path.join(d, "blkio.bfq.weight_device")):
        return "blkio.bfq.weight_device"
    return "blkio.bfq.weight"


def _recursive(d: str, name: str) -> list[dict]:
    out = []
    try:
        text = fsutil.read(d, name)
    except OSError:
        return out
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and ":" in f[0]:
            ma, mi = f[0].split(":")
            out.append({"major": int(ma), "minor": int(mi), "op": f[1], "value": int(f[2])})
    return out


def stats(d: str) -> dict:
    pre = "blkio.throttle." if not os.path.exists(os.path.join(d, "blkio.io_service_bytes_recursive")) else "blkio."
    return {"ioServiceBytesRecursive": _recursive(d, pre + "io_service_bytes_recursive"),
            "ioServicedRecursive": _recursive(d, pre + "io_serviced_recursive"),
            "ioQueueRecursive": [], "ioServiceTimeRecursive": [],
            "ioWaitTimeRecursive": [], "ioMergedRecursive": [], "ioTimeRecursive": [],
            "sectorsRecursive": []}
