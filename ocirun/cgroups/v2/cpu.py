"""v2 cpu controller: cpu.weight (from v1 shares), cpu.max, cpu.max.burst, cpu.idle."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec
from ocirun.cgroups.v1.cpu import quota_period
from ocirun.errors import NotSupported


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares [2, 262144] -> v2 cpu.weight [1, 10000] (runc's linear map)."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def set(d: str, res: dict, path: str, mgr) -> None:
    cpu = spec.section(res, "cpu", path)
    if not cpu:
        return
    p = path + ".cpu"
    shares = spec.get_int(cpu, "shares", p, maximum=262144)
    quota, period = quota_period(cpu, p)
    burst = spec.get_int(cpu, "burst", p)
    idle = spec.get_int(cpu, "idle", p, maximum=1)
    for k in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(k):
            raise NotSupported(f"{p}.{k}", "realtime scheduling limits on cgroup v2")
    if shares:
        fsutil.write(d, "cpu.weight", shares_to_weight(max(shares, 2)), p + ".shares")
    if quota is not None or period is not None:
        # one file for both: the one not given keeps its current value (an
        # update of the period alone must not lift the quota)
        cur = fsutil.read(d, "cpu.max").split() if quota is None or period is None else None
        q = cur[0] if quota is None else "max" if quota == -1 else str(quota)
        if period is None:
            period = int(cur[1])
        fsutil.write(d, "cpu.max", f"{q} {period}", p + (".quota" if quota else ".period"))
    if burst is not None:
        fsutil.write(d, "cpu.max.burst", burst, p + ".burst")
    if idle is not None:
        fsutil.write(d, "cpu.idle", idle, p + ".idle")


def stats(d: str) -> dict:
    s = fsutil.read_kv(d, "cpu.stat")
    return {"usage": {"total": s.get("usage_usec", 0) * 1000, "percpu": [],
                      "kernel": s.get("system_usec", 0) * 1000,
                      "user": s.get("user_usec", 0) * 1000},
            "throttling": {"periods": s.get("nr_periods", 0),
                           "throttled_periods": s.get("nr_throttled", 0),
                           "throttled_time": s.get("throttled_usec", 0) * 1000}}
