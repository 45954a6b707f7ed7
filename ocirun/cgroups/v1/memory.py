"""v1 memory controller: memory.limit_in_bytes, memsw, soft limit, oom_control."""
from __future__ import annotations

import os

from ocirun.cgroups import fsutil, spec
from ocirun.errors import ConfigError


def set(d: str, res: dict, path: str, mgr) -> None:
    mem = spec.section(res, "memory", path)
    if not mem:
        return
    p = path + ".memory"
    limit = spec.get_int(mem, "limit", p, unlimited=True)
    resv = spec.get_int(mem, "reservation", p, unlimited=True)
    swap = spec.get_int(mem, "swap", p, unlimited=True)
    kernel = spec.get_int(mem, "kernel", p, unlimited=True)
    ktcp = spec.get_int(mem, "kernelTCP", p, unlimited=True)
    swappiness = spec.get_int(mem, "swappiness", p, maximum=100)
    no_oom = spec.get_bool(mem, "disableOOMKiller", p)
    hier = spec.get_bool(mem, "useHierarchy", p)
    check = spec.get_bool(mem, "checkBeforeUpdate", p)
    if swap not in (None, -1) and limit not in (None, -1) and swap < limit:
        raise ConfigError(p + ".swap", f"memory+swap limit {swap} must be >= memory limit {limit}")
    if check and limit not in (None, -1):
        usage = fsutil.read_int(d, "memory.usage_in_bytes")
        if usage > limit:
            raise ConfigError(p + ".limit", f"{limit} is below the current usage {usage}"
                              " (checkBeforeUpdate)")
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
            "raw": raw, "oom_kill": oom_count(d)}


def oom_count(d: str) -> int:
    return fsutil.read_kv(d, "memory.oom_control").get("oom_kill", 0)
