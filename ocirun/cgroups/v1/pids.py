"""v1 pids controller (same file names as v2)."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec


def set(d: str, res: dict, path: str, mgr) -> None:
    v = value(res, path)
    if v is not None:
        fsutil.write(d, "pids.max", v, path + ".pids.limit")


def value(res: dict, path: str) -> str | None:
    """pids.limit -> the pids.max string; 0 is 'unset' as in runc, -1 is 'max'."""
    pids = spec.section(res, "pids", path)
    lim = spec.get_int(pids, "limit", path + ".pids", unlimited=True)
    if not lim:
        return None
    return "max" if lim == -1 else str(lim)


def stats(d: str) -> dict:
    lim = fsutil.read_int(d, "pids.max")
    return {"current": fsutil.read_int(d, "pids.current"),
            "limit": 0 if lim == 0xFFFFFFFFFFFFFFFF else lim}
