"""v1 memory controller: memory.limit_in_bytes, memsw, soft limit, oom_control."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil, spec


def set(d: str, res: dict, path: str, mgr) -> None:
    m = spec.memory(res, path)
    if m is None:
        return
    p, limit, resv, swap = m.p, m.limit, m.reservation, m.swap
    kernel, ktcp, swappiness = m.kernel, m.kernel_tcp, m.swappiness
    no_oom, hier = m.disable_oom_killer, m.use_hierarchy
    if m.check_before_update:
        m.check_usage(fsutil.read_int(d, "memory.usage_in_bytes"))
    has_memsw = os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
    if swap is not None and not has_memsw:
        mgr.warn(f"{p}.swap ignored: swap accounting is off (no memory.memsw.limit_in_bytes)")
        swap = None
    if limit is not None and swap is not None:
        # memory <= memory+swap at every moment: raise memsw first when growing
        cur = fsutil.read_int(d, "memory.limit_in_bytes")
        grow = limit == -1 or swap == -1 or limit > cur
        order = [("memory.memsw.limit_in_bytes", swap, "swap"),
                 ("memory.limit_in_bytes", limit, "limit")]
        for f, v, k in (order if grow else order[::-1]):
            fsutil.write(d, f, v, f"{p}.{k}")
    elif limit is not None:
        if has_memsw and limit == -1:
            fsutil.write(d, "memory.memsw.limit_in_bytes", -1, p + ".limit")
        fsutil.write(d, "memory.limit_in_bytes", limit, p + ".limit")
    elif swap is not None:
        fsutil.write(d, "memory.memsw.limit_in_bytes", swap, p + ".swap")
    if resv is not None:
        fsutil.write(d, "memory.soft_limit_in_bytes", resv, p + ".reservation")
    if kernel is not None:
        mgr.warn(f"{p}.kernel ignored: kernel memory limits are deprecated (as runc)")
    if ktcp is not None:
        fsutil.write(d, "memory.kmem.tcp.limit_in_bytes", ktcp, p + ".kernelTCP")
    if swappiness is not None:
        fsutil.write(d, "memory.swappiness", swappiness, p + ".swappiness")
    if no_oom is not None:
        fsutil.write(d, "memory.oom_control", int(no_oom), p + ".disableOOMKiller")
    if hier is not None:
        if fsutil.read_int(d, "memory.use_hierarchy", -1) != int(hier):
            fsutil.write(d, "memory.use_hierarchy", int(hier), p + ".useHierarchy")


def _entry(d: str, prefix: str) -> dict:
    return {"usage": fsutil.read_int(d, prefix + "usage_in_bytes"),
            "max": fsutil.read_int(d, prefix + "max_usage_in_bytes"),
            "failcnt": fsutil.read_int(d, prefix + "failcnt"),
            "limit": fsutil.read_int(d, prefix + "limit_in_bytes")}


def stats(d: str) -> dict:
    raw = fsutil.read_kv(d, "memory.stat")
    return {"cache": raw.get("total_cache", raw.get("cache", 0)),
            "usage": _entry(d, "memory."), "swap": _entry(d, "memory.memsw."),
            "kernel": _entry(d, "memory.kmem."), "kernelTCP": _entry(d, "memory.kmem.tcp."),
            "raw": raw}  # (runc's keys only; oom_count() is for `events`)


def oom_count(d: str) -> int:
    return fsutil.read_kv(d, "memory.oom_control").get("oom_kill", 0)
