"""v1 cpuset controller. A new v1 cpuset cgroup starts empty and refuses
tasks, so every level we create is seeded from its parent first."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil


def init_dirs(made: list[str], leaf: str, mount: str) -> None:
    """Copy cpuset.cpus/mems down into newly made directories (outermost
    first), and into any empty level above them or an empty leaf that was
    there before (as runc: e.g. a pod's cgroup an engine made with mkdir
    would otherwise refuse the container's tasks). A new v1 cpuset is empty
    (or, under cgroup.clone_children, has its parent's values already:
    writing them again changes nothing)."""
    for f in ("cpuset.cpus", "cpuset.mems"):
        if not made:
            _filled(leaf, f, mount)
            continue
        value = _filled(os.path.dirname(made[0]), f, mount)
        for d in made:
            try:
                fsutil.write(d, f, value or "\n", "linux.cgroupsPath")
            except OSError:
                pass


def _filled(d: str, f: str, mount: str) -> str:
    """d's value of f; an empty one is first filled from the nearest
    ancestor that has one."""
    try:
        value = fsutil.read(d, f).strip()
    except OSError:
        return ""
    if value or d == mount or len(d) <= len(mount):
        return value
    value = _filled(os.path.dirname(d), f, mount)
    if value:
        try:
            fsutil.write(d, f, value, "linux.cgroupsPath")
        except OSError:
            pass
    return value


def set(d: str, res: dict, path: str, mgr) -> None:
    from ocirun.cgroups import spec  # (not for init_dirs: every create needs that)
    cpu = spec.section(res, "cpu", path)
    if not cpu:
        return
    p = path + ".cpu"
    cpus = spec.cpuset(cpu, "cpus", p)
    mems = spec.cpuset(cpu, "mems", p)
    if cpus:
        fsutil.write(d, "cpuset.cpus", cpus, p + ".cpus")
    if mems:
        fsutil.write(d, "cpuset.mems", mems, p + ".mems")
