"""v2 cpuset controller: cpuset.cpus / cpuset.mems."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec


def set(d: str, res: dict, path: str, mgr) -> None:
    cpu = spec.section(res, "cpu", path)
    if not cpu:
        return
    p = path + ".cpu"
    for k in ("cpus", "mems"):
        v = spec.cpuset(cpu, k, p)
        if v:
            fsutil.write(d, "cpuset." + k, v, f"{p}.{k}")
