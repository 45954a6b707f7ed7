"""Which cgroup hierarchies this machine has, and where this process sits in them.

Read once from /proc/self/mountinfo and /proc/self/cgroup; no writes. The
runtime needs this to turn a spec's cgroupsPath into directories.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.linux.mountinfo import unescape

CGROUP_ROOT = "/sys/fs/cgroup"
# v1 controllers ocirun knows how to drive (others are still joined, never written).
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                  "blkio", "pids", "hugetlb", "net_cls", "net_prio", "perf_event",
                  "rdma", "misc")


class Hierarchy:
    """One mounted v1 hierarchy: where, which mount root, which controllers."""

    __slots__ = ("mountpoint", "root", "controllers", "name")

    def __init__(self, mountpoint: str, root: str, controllers: tuple[str, ...],
                 name: str | None) -> None:
        self.mountpoint, self.root = mountpoint, root
        self.controllers, self.name = controllers, name

    @property
    def key(self) -> str:
        """The /proc/<pid>/cgroup key: 'cpu,cpuacct' or 'name=systemd'."""
        parts = list(self.controllers)
        if self.name:
            parts.append("name=" + self.name)
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"Hierarchy({self.mountpoint!r}, {self.key!r})"


class Layout:
    """mode: 'v1' | 'hybrid' | 'v2'.

    v1: controller -> mountpoint (combined mounts appear under every name);
    hierarchies: every v1 mount (incl. named ones such as name=systemd);
    unified: the cgroup2 mountpoint or None; unified_root: its mount root.
    """

    __slots__ = ("mode", "v1", "hierarchies", "unified", "unified_root", "_own")

    def __init__(self, mode: str, hierarchies: list[Hierarchy],
                 unified: str | None, unified_root: str = "/",
                 own: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.hierarchies = hierarchies
        self.v1 = {c: h.mountpoint for h in hierarchies for c in h.controllers}
        self.unified, self.unified_root = unified, unified_root
        self._own = own

    def __repr__(self) -> str:
        return f"Layout(mode={self.mode!r}, v1={self.v1!r}, unified={self.unified!r})"

    def unified_controllers(self) -> set[str]:
        """Controllers available at the cgroup2 root (empty if none)."""
        if not self.unified:
            return set()
        try:
            with open(os.path.join(self.unified, "cgroup.controllers")) as f:
                return set(f.read().split())
        except OSError:
            return set()

    def own_cgroups(self) -> dict[str, str]:
        """/proc/self/cgroup as {key: path}; '' is the cgroup2 entry."""
        if self._own is None:
            self._own = own_cgroups()
        return self._own


def own_cgroups(pid: int | str = "self") -> dict[str, str]:
    out = {}
    for line in os.read_bytes(f"/proc/{pid}/cgroup").decode().splitlines():
        _, key, path = line.split(":", 2)
        out[key] = path
    return out


def detect(mountinfo: str = "/proc/self/mountinfo") -> Layout:
    """Find the cgroup mounts (one read of mountinfo; cheap)."""
    hier: list[Hierarchy] = []
    unified = None
    unified_root = "/"
    for line in os.read_bytes(mountinfo).decode(errors="surrogateescape").splitlines():
        if "cgroup" not in line:
            continue
        fields = line.split()
        sep = fields.index("-")
        fstype = fields[sep + 1]
        root, mnt = unescape(fields[3]), unescape(fields[4])
        if fstype == "cgroup2":
            # prefer the canonical mountpoint if cgroup2 is mounted twice
            if unified is None or mnt in (CGROUP_ROOT, CGROUP_ROOT + "/unified"):
                unified, unified_root = mnt, root
        elif fstype == "cgroup":
            ctrls, name = [], None
            for opt in fields[sep + 3].split(","):
                if opt.startswith("name="):
                    name = opt[5:]
                elif opt in V1_CONTROLLERS:
                    ctrls.append(opt)
            if any(h.mountpoint == mnt for h in hier):
                continue
            hier.append(Hierarchy(mnt, root, tuple(ctrls), name))
    if hier:
        mode = "hybrid" if unified else "v1"
    elif unified:
        mode = "v2"
    else:
        raise OSError(2, "no cgroup filesystem is mounted")
    return Layout(mode, hier, unified, unified_root)
