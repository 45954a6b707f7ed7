"""v2 memory controller: memory.max/low/swap.max (swap converted from v1 semantics)."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec
from ocirun.errors import ConfigError


def _v(n: int) -> str:
    return "max" if n == -1 else str(n)


def swap_max(swap: int | None, limit: int | None, p: str) -> int | None:
    """v1 memory+swap -> v2 memory.swap.max (swap only), as runc/crun do."""
    if swap is None or swap == 0:
        return -1 if limit == -1 and swap is None else None
    if swap == -1:
        return -1
    if limit in (None, 0, -1):
        raise ConfigError(p + ".swap", "cannot set a swap limit without a memory limit")
    if swap < limit:
        raise ConfigError(p + ".swap", f"memory+swap limit {swap} must be >= memory limit {limit}")
    return swap - limit


def set(d: str, res: dict, path: str, mgr) -> None:
    m = spec.memory(res, path)
    if m is None:
        return
    mem, p, limit, resv = res["memory"], m.p, m.limit, m.reservation
    sw = swap_max(m.swap, limit, p)
    if m.check_before_update:
        m.check_usage(fsutil.read_int(d, "memory.current"))
    if sw is not None:
        fsutil.write(d, "memory.swap.max", _v(sw), p + ".swap")
    if limit is not None:
        fsutil.write(d, "memory.max", _v(limit), p + ".limit")
    if resv is not None:
        fsutil.write(d, "memory.low", _v(resv), p + ".reservation")
    for k, why in (("kernel", "kernel memory limits do not exist on cgroup v2"),
                   ("kernelTCP", "cgroup v2 has no separate kernel TCP limit"),
                   ("swappiness", "cgroup v2 has no per-cgroup swappiness")):
        if mem.get(k) is not None:
            mgr.warn(f"{p}.{k} ignored: {why}")
    if mem.get("disableOOMKiller"):
        mgr.warn(f"{p}.disableOOMKiller ignored: cgroup v2 cannot disable the OOM killer")
    if mem.get("useHierarchy") is False:
        mgr.warn(f"{p}.useHierarchy ignored: cgroup v2 is always hierarchical")


def stats(d: str) -> dict:
    raw = fsutil.read_kv(d, "memory.stat")
    ev = fsutil.read_kv(d, "memory.events")
    peak = fsutil.read_int(d, "memory.peak")
    return {"cache": raw.get("file", 0),
            "usage": {"usage": fsutil.read_int(d, "memory.current"), "max": peak,
                      "failcnt": ev.get("max", 0), "limit": fsutil.read_int(d, "memory.max")},
            "swap": {"usage": fsutil.read_int(d, "memory.swap.current"), "max": 0,
                     "failcnt": fsutil.read_kv(d, "memory.swap.events").get("max", 0),
                     "limit": fsutil.read_int(d, "memory.swap.max")},
            "kernel": {"usage": raw.get("kernel", 0), "max": 0, "failcnt": 0, "limit": 0},
            "kernelTCP": {"usage": raw.get("sock", 0), "max": 0, "failcnt": 0, "limit": 0},
            "raw": raw}  # (runc's keys only; oom_count() is for `events`)


def oom_count(d: str) -> int:
    return fsutil.read_kv(d, "memory.events").get("oom_kill", 0)
