"""v1 cpuset controller. A new v1 cpuset cgroup starts empty and refuses
tasks, so every level we create is seeded from its parent first."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil


def init_dirs(made: list[str]) -> None:
    """Copy cpuset.cpus/mems down into newly made directories (outermost
    first). A new v1 cpuset is empty (or, under cgroup.clone_children, has
    its parent's values already: writing them again changes nothing)."""
    for d in made:
        parent = os.path.dirname(d)
        for f in ("cpuset.cpus", "cpuset.mems"):
            try:
                fsutil.write(d, f, fsutil.read(parent, f).strip() or "\n", "linux.cgroupsPath")
            except OSError:
                pass


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
