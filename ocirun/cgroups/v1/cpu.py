"""v1 cpu controller: CFS shares/quota/period/burst, RT runtime/period, idle."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec
from ocirun.errors import ConfigError


def set(d: str, res: dict, path: str, mgr) -> None:
    cpu = spec.section(res, "cpu", path)
    if not cpu:
        return
    p = path + ".cpu"
    shares = spec.get_int(cpu, "shares", p)
    quota, period = quota_period(cpu, p)
    burst = spec.get_int(cpu, "burst", p)
    rt_rt = spec.get_int(cpu, "realtimeRuntime", p, unlimited=True)
    rt_per = spec.get_int(cpu, "realtimePeriod", p)  # (0: unset, as in runc)
    idle = spec.get_int(cpu, "idle", p, maximum=1)
    if shares:  # 0 means unset, as in runc
        fsutil.write(d, "cpu.shares", shares, p + ".shares")
        got = shares if fsutil.DRY_RUN else fsutil.read_int(d, "cpu.shares")
        if got != shares:  # (update's dry run wrote nothing to read back)
            raise ConfigError(p + ".shares", f"the kernel clamped {shares} to {got} "
                              "(range 2-262144)")
    again = False
    if period:
        try:
            fsutil.write(d, "cpu.cfs_period_us", period, p + ".period")
        except ConfigError:
            # a shorter period with the old quota can exceed the parent's
            # limit (EINVAL): with a new quota too, write it again after
            # that (as runc does)
            if quota is None:
                raise
            again = True
    if quota is not None:
        fsutil.write(d, "cpu.cfs_quota_us", quota, p + ".quota")
    if again:
        fsutil.write(d, "cpu.cfs_period_us", period, p + ".period")
    if burst is not None:
        fsutil.write(d, "cpu.cfs_burst_us", burst, p + ".burst")
    if rt_per:
        fsutil.write(d, "cpu.rt_period_us", rt_per, p + ".realtimePeriod")
    if rt_rt is not None:
        fsutil.write(d, "cpu.rt_runtime_us", rt_rt, p + ".realtimeRuntime")
    if idle is not None:
        fsutil.write(d, "cpu.idle", idle, p + ".idle")


def quota_period(cpu: dict, p: str) -> tuple[int | None, int | None]:
    """cpu.quota / cpu.period, range-checked; 0 means unset (as in runc)."""
    quota = spec.get_int(cpu, "quota", p, unlimited=True)
    period = spec.get_int(cpu, "period", p, maximum=1000000)
    if quota and quota != -1 and quota < 1000:
        raise ConfigError(p + ".quota", f"{quota} is out of range (minimum 1000, or -1)")
    if period and period < 1000:
        raise ConfigError(p + ".period", f"{period} is out of range (1000-1000000)")
    return quota or None, period or None


def throttling(d: str) -> dict:
    s = fsutil.read_kv(d, "cpu.stat")
    return {"periods": s.get("nr_periods", 0), "throttled_periods": s.get("nr_throttled", 0),
            "throttled_time": s.get("throttled_time", 0)}


def usage(d: str) -> dict:
    """cpuacct: nanoseconds (total, per cpu) and user/kernel split (USER_HZ ticks -> ns)."""
    from ocirun import oslite as os
    hz = os.sysconf("SC_CLK_TCK")
    pc = [int(x) for x in _read(d, "cpuacct.usage_percpu").split()]
    st = fsutil.read_kv(d, "cpuacct.stat")
    out = {"total": fsutil.read_int(d, "cpuacct.usage"), "percpu": pc,
           "kernel": st.get("system", 0) * 1_000_000_000 // hz,
           "user": st.get("user", 0) * 1_000_000_000 // hz}
    try:
        lines = _read(d, "cpuacct.usage_all").splitlines()[1:]
        rows = [line.split() for line in lines]
        out["percpu_user"] = [int(r[1]) for r in rows]
        out["percpu_kernel"] = [int(r[2]) for r in rows]
    except (IndexError, ValueError):
        pass
    return out


def _read(d: str, name: str) -> str:
    try:
        return fsutil.read(d, name)
    except OSError:
        return ""
