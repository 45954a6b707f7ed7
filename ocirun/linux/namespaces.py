"""Namespaces: which to create and which to join, and how many forks it takes.

Fast path (no namespace joined by path, except pid/time): one clone() with
every CLONE_NEW* flag; the child is PID 1 of its new pid namespace at once
and its namespaces are owned by its new user namespace. pid and time
namespaces given by path are entered by the parent for its children only
(setns for children) and left right after the clone.

Slow path (any namespace but pid/time joined by path, or new user and time
namespaces together): the child joins the paths, unshares the new ones,
and clones once more with CLONE_PARENT so the real init is still the
runtime's child.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import ConfigError, OciError

FLAGS = {"pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000,
         "ipc": 0x08000000, "uts": 0x04000000, "user": 0x10000000,
         "cgroup": 0x02000000, "time": 0x00000080}
PROC_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
              "user": "user", "cgroup": "cgroup", "time": "time"}
# join order: user first (it gives the capabilities for the rest), mount last
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "time", "cgroup", "mount")


class NsPlan:
    __slots__ = ("new", "paths", "clone_flags", "slow", "unshare_flags", "second_fork",
                 "new_user", "new_cgroup", "parent_pid_path", "parent_time_path",
                 "new_time_in_parent")

    def __init__(self) -> None:
        self.new: set[str] = set()
        self.paths: dict[str, str] = {}
        self.clone_flags = 0
        self.unshare_flags = 0
        self.slow = False
        self.second_fork = False
        self.new_user = False
        self.new_cgroup = False
        self.parent_pid_path: str | None = None
        self.parent_time_path: str | None = None
        self.new_time_in_parent = False


def plan_namespaces(namespaces: list[dict]) -> NsPlan:
    """Pure: decide clone flags, joins and forks from linux.namespaces."""
    p = NsPlan()
    for i, ns in enumerate(namespaces):
        t = ns["type"]
        if ns.get("path"):
            p.paths[t] = ns["path"]
        else:
            p.new.add(t)
    p.new_user = "user" in p.new
    p.new_cgroup = "cgroup" in p.new
    # Slow path whenever the child must setns() itself: a namespace joined by
    # path (other than pid/time, which the parent enters for its children),
    # or a new time namespace inside a new user namespace: clone() has no bit
    # for CLONE_NEWTIME (0x80 is the exit signal's) and the offsets must be
    # written before any process is inside, so the child unshares it.
    joined_other = set(p.paths) - {"pid", "time"}
    p.slow = "user" in p.paths or bool(joined_other) or (p.new_user and "time" in p.new)
    new_flags = 0
    for t in p.new:
        if t != "cgroup":  # the cgroup namespace comes after the cgroup join
            new_flags |= FLAGS[t]
    if not p.slow:
        # pid/time by path: the parent enters them for its children only
        p.parent_pid_path = p.paths.get("pid")
        p.parent_time_path = p.paths.get("time")
        if "time" in p.new and not p.new_user:
            # offsets must be written before any process is inside
            p.new_time_in_parent = True
            new_flags &= ~FLAGS["time"]
        p.clone_flags = new_flags
    else:
        p.unshare_flags = new_flags & ~(FLAGS["pid"] | FLAGS["time"])
        p.second_fork = bool(new_flags & (FLAGS["pid"] | FLAGS["time"])) or \
            "pid" in p.paths or "time" in p.paths
    return p


def check_paths(p: NsPlan, namespaces: list[dict]) -> None:
    """Before fork: every namespace path exists and is of the right type."""
    for i, ns in enumerate(namespaces):
        path = ns.get("path")
        if path:
            _check_path(i, ns, path)


def _check_path(i: int, ns: dict, path: str) -> None:
    """linux.namespaces[i] (ns) joins `path`: it must be a namespace of ns's type."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"linux.namespaces[{i}].path", f"{path}: {e.strerror}") from None
    try:
        nstype = fcntl.ioctl(fd, 0xB703)  # NS_GET_NSTYPE
    except OSError:
        raise ConfigError(f"linux.namespaces[{i}].path",
                          f"{path} is not a namespace") from None
    finally:
        os.close(fd)
    if nstype != FLAGS[ns["type"]]:
        raise ConfigError(f"linux.namespaces[{i}].path",
                          f"{path} is not a {ns['type']} namespace")


def in_user_namespace() -> bool:
    """Whether this process is outside the initial user namespace, whose
    uid_map alone maps every id to itself (rootless podman runs its
    runtime as uid 0 in a namespace of the user's)."""
    try:
        return os.read_bytes("/proc/self/uid_map").split() != [b"0", b"0", b"4294967295"]
    except OSError:
        return False


def restore_for_children(restore: list[tuple[int, int]]) -> None:
    """Back to the runtime's own pid/time namespaces for its next children,
    after a clone into a container's ones (fds of the old ones; closed).
    Rootless podman runs the runtime as uid 0 in a user namespace of its
    own, without CAP_SYS_ADMIN over the host's pid namespace: there the way
    back is refused (EPERM) and the runtime stays as it is; it makes no
    more children in those namespaces after the clone."""
    from ocirun.kernel import syscalls as k
    for fd, flag in restore:
        try:
            k.setns(fd, flag)
        except PermissionError:
            pass
        finally:
            os.close(fd)


def fork_into_namespaces(report, flags: int = 0) -> None:
    """Pid and time namespaces apply to children only: fork the process
    that runs on (with clone flags, e.g. a new pid namespace) as a sibling
    (CLONE_PARENT: still the runtime's child); this one calls report(its
    pid) and exits. The new process goes on only once that is done, so the
    runtime takes none of its messages for the middle one's, nor moves the
    wrong process into a cgroup."""
    from ocirun.kernel import syscalls as k
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = k.clone(flags | k.CLONE_PARENT)
    if pid:
        report(pid)
        os._exit(0)  # closes w
    os.close(w)
    os.read(r, 1)  # EOF: the middle process has exited
    os.close(r)
    k.prctl(k.PR_SET_PDEATHSIG, 9)


def join(path: str, nstype: str) -> None:
    from ocirun.kernel import syscalls as k
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        k.setns(fd, FLAGS[nstype])
    except OSError as e:
        raise OciError(f"cannot join {nstype} namespace {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def write_proc_file(path: str, data: str) -> None:
    """One write to a /proc file; OciError naming it and the data."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
    except OSError as e:
        what = os.path.basename(path)
        raise OciError(f"cannot write {what} ({data.strip()!r}): {e.strerror}") from None


_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 1


def loopback_up() -> None:
    """A new network namespace gets its `lo` up (runc and crun do the same);
    two ioctls on a throwaway socket, cheaper than a netlink round trip."""
    import fcntl
    from ocirun.kernel import syscalls as k
    try:
        fd = k.socket(k.AF_INET, k.SOCK_DGRAM)
        try:
            ifr = bytearray(b"lo".ljust(16, b"\0") + bytes(24))
            fcntl.ioctl(fd, _SIOCGIFFLAGS, ifr)
            flags = int.from_bytes(ifr[16:18], "little") | _IFF_UP
            ifr[16:18] = flags.to_bytes(2, "little")
            fcntl.ioctl(fd, _SIOCSIFFLAGS, ifr)
        finally:
            os.close(fd)
    except OSError as e:
        raise OciError(f"cannot bring up the loopback device: {e.strerror}") from None


def write_time_offsets(offsets: dict) -> None:
    """linux.timeOffsets into the time namespace our children will enter."""
    lines = "".join(f"{clock} {o.get('secs', 0)} {o.get('nanosecs', 0)}\n"
                    for clock, o in offsets.items())
    try:
        write_proc_file("/proc/self/timens_offsets", lines)
        return
    except OciError:
        # After setresuid() in a new user namespace the process is not
        # dumpable, so /proc/self belongs to host root, which is not mapped
        # there: EACCES. Dumpable for this one write (no one else is inside).
        from ocirun.kernel import syscalls as k
        if k.prctl(3) == 1:  # PR_GET_DUMPABLE: it was not the cause
            raise
    k.prctl(k.PR_SET_DUMPABLE, 1)
    try:
        write_proc_file("/proc/self/timens_offsets", lines)
    finally:
        k.prctl(k.PR_SET_DUMPABLE, 0)
