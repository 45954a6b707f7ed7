"""What every cgroup manager shares: the Manager interface, SelfJoin and the
helpers of the cgroupfs drivers (fs_v1.FsV1Manager for v1 and hybrid,
fs_v2.FsV2Manager for unified; each loaded only on its kind of host).

A manager is a set of resolved directories, computed once by new_manager()
and stored in the container state (to_state), so later commands act on the
same cgroup whatever cgroup they themselves run in.
"""
from ocirun import oslite as os
import time

from ocirun.cgroups import fsutil
from ocirun.errors import ConfigError, OciError

SIGKILL = 9  # (the signal module would pull in enum on every container start)

# controllers ocirun enables in cgroup.subtree_control on the way down (v2)
V2_WANTED = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")


class CgroupError(OciError):
    """A cgroup operation failed (not a config problem); errno: the
    kernel's, where one said why (0 otherwise)."""

    errno = 0


class SelfJoin:
    """How a new process enters its cgroup without anybody writing its pid
    to cgroup.procs, which takes the kernel's global threadgroup lock and so
    waits for an RCU grace period (6-20 ms after a quiet spell):

    * task_fds: v1 `tasks` files, opened by the runtime (the kernel checks
      the opener's credentials). A single-threaded process writing "0" moves
      itself without that lock (cgroup_procs_write_start skips it for self).
    * into_fd: the cgroup2 directory of a hybrid layout, for clone3's
      CLONE_INTO_CGROUP (no memory controller lives there, so being in it
      from birth changes no accounting).
    * done: the keys (as in FsV1Manager.paths) these cover; add_pid(skip=)
      does the rest. Cleared of "" when clone3 is not available.
    * pending: the v1 directories are made after the clone, while the init
      sets up its mounts (Manager.create_for_clone): the task fds reach it
      later, over the sync socket (see init.Init.fetch_join_fds).
    """

    __slots__ = ("task_fds", "into_fd", "done", "complete", "pending")

    def __init__(self) -> None:
        self.task_fds: list[int] = []
        self.into_fd = -1
        self.done: set[str] = set()
        self.complete = False  # covers every key: no pid write, no fence at all
        self.pending = False

    def enter(self) -> None:
        """Called by the new process itself (single-threaded), then closes."""
        fds, self.task_fds = self.task_fds, []
        try:
            for fd in fds:
                os.write(fd, b"0")
        except OSError as e:
            raise CgroupError(f"joining the container's cgroup: {os.strerror(e.errno)}"
                              f"{_realtime_hint(e.errno, 0)}") from None
        finally:
            for fd in fds:
                os.close(fd)

    @classmethod
    def opening(cls, task_files: list[str], into_dir: str | None) -> "SelfJoin | None":
        """A complete SelfJoin (see Manager.own_join): v1 `tasks` files the
        process writes "0" to, the cgroup2 directory it is cloned into."""
        j = cls()
        try:
            for f in task_files:
                j.task_fds.append(os.open(f, os.O_WRONLY | os.O_CLOEXEC))
            if into_dir is not None:
                j.into_fd = os.open(into_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            j.close()
            return None
        j.complete = True
        return j

    def clone_failed(self) -> None:
        """clone3 with CLONE_INTO_CGROUP is not available: add_pid does ''
        (so the join is no longer complete: the runtime must write a pid)."""
        if "" in self.done:
            self.done.discard("")
            self.complete = False

    def close(self) -> None:
        for fd in self.task_fds + ([self.into_fd] if self.into_fd >= 0 else []):
            os.close(fd)
        self.task_fds, self.into_fd = [], -1


class Manager:
    """Common interface; see ocirun.cgroups for the API the runtime calls."""

    driver = "cgroupfs"
    version = ""

    def __init__(self, path: str, rootless: bool = False) -> None:
        self.path = path
        self.rootless = rootless
        self.warnings: list[str] = []
        self.on_warning = None  # callable(str) or None: set by the runtime to log
        self.undelegated = False  # rootless and the cgroup could not be created
        # rootless "auto" as runc: uid 0 in a user namespace is rootless too,
        # found out on the first permission error (no cost when there is none)
        self.auto_rootless = False
        self.existed = False  # create() found (part of) it there already
        self.made: list[str] = []  # the directories create() made, outermost first
        self.shared = False   # ... holding processes: not ours to kill (to_state)

    def not_delegated(self, e: OSError) -> bool:
        """Whether a failed mkdir of the cgroup means "not ours, go without"
        (rootless, as runc) rather than an error."""
        if e.errno not in _NOT_DELEGATED:
            return False
        if not self.rootless and self.auto_rootless:
            from ocirun.linux.namespaces import in_user_namespace
            self.rootless = in_user_namespace()
        return self.rootless

    def warn(self, msg: str) -> None:
        """A field the kernel/layout cannot express and that runc also ignores."""
        self.warnings.append(msg)
        if self.on_warning:
            self.on_warning(msg)

    # -- implemented by subclasses -------------------------------------------------------
    def dirs(self) -> list[str]:
        raise NotImplementedError

    def procs_path(self) -> str:
        raise NotImplementedError

    def self_join(self) -> SelfJoin | None:
        """See SelfJoin; None when this manager has no such way in."""
        return None

    def own_join(self) -> SelfJoin | None:
        """After create(): how a new process enters every hierarchy without
        anybody writing its pid (cgroup2 by CLONE_INTO_CGROUP, v1 by "0"
        to `tasks`); None when some hierarchy cannot be entered that way."""
        return None

    def create_for_clone(self) -> None:
        """create(), or as much of it as the clone needs: see create_rest."""
        self.create()

    def create_rest(self, join: SelfJoin | None) -> None:
        """After the clone: what create_for_clone left, and the fds of
        join.pending (keys it cannot open are left to add_pid)."""

    # -- shared --------------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isdir(self.procs_path())

    def update(self, resources: dict, path: str = "linux.resources") -> None:
        """`ocirun update`: write the given fields; the others keep their values.

        Everything is validated first (check()), so bad input changes nothing;
        only a write the kernel refuses can leave earlier fields written.
        """
        self.check(resources, path)
        self.apply(resources, path)

    def check(self, resources: dict, path: str = "linux.resources") -> None:
        """apply() with writes turned into 'can this file be opened' checks;
        raises what apply() would raise for bad input; warnings are not kept."""
        saved = list(self.warnings), self.on_warning
        self.on_warning = None
        fsutil.DRY_RUN = True
        try:
            self.apply(resources, path)
        finally:
            fsutil.DRY_RUN = False
            self.warnings[:] = saved[0]
            self.on_warning = saved[1]

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups (pids in our pid ns)."""
        return [p for p in fsutil.procs(self.procs_path()) if p > 0]

    def kill_all(self, sig: int) -> None:
        """Signal every process, with the cgroup frozen so none can fork away.

        The cgroup is thawed afterwards (also when it was paused before:
        frozen tasks would not act on the signal, and SIGKILL must work).
        """
        if not self.exists():
            return
        if sig == SIGKILL and self._cgroup_kill():
            return
        froze = False
        if self.can_freeze():
            try:
                self.freeze()
                froze = True
            except OciError:
                pass
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if froze:
                self.thaw()

    def _cgroup_kill(self) -> bool:
        return False

    def can_freeze(self) -> bool:
        return True

    def destroy(self) -> None:
        """Kill what is left, then remove the directories; idempotent.
        (delete of a stopped container first tries the plain rmdirs without
        loading the managers: container._remove_empty_cgroup.)"""
        deadline = time.monotonic() + 5
        while self.exists():
            pids = self.pids()
            if not pids:
                break
            self.kill_all(SIGKILL)
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.procs_path()}: processes survive SIGKILL")
            _wait_exited(pids, deadline - time.monotonic())
        for d in self.dirs():
            try:
                fsutil.rmdir_tree(d)
            except OSError as e:
                raise CgroupError(f"removing cgroup {d}: {os.strerror(e.errno)}") from None

    def check_existing(self, frozen: bool) -> None:
        """runc's checks of a cgroup that was there before create (or under
        a frozen parent): frozen is an error (the init would freeze as it
        joins, and the runtime wait for it), processes in it a warning
        (runc 1.1; 1.2 refuses), and delete then kills none of them."""
        if frozen:
            raise CgroupError("container's cgroup unexpectedly frozen")
        if self.existed and not self.shared:  # (create may come in two parts)
            n = len(self.pids())
            if n:
                self.shared = True
                self.warn(f"container's cgroup is not empty: {n} process(es) found")

    def remove_made(self) -> None:
        """A failed create in a cgroup that was there before: only what it
        made goes (deepest first); the rest is left as it was found."""
        _rmdir_each(reversed(self.made))

    def remove_if_empty(self) -> None:
        """rmdir each directory once; one that is busy (a cgroup shared with
        processes that are not ours, see check_existing) stays."""
        _rmdir_each(self.dirs())

    def to_state(self) -> dict:
        st = {"driver": self.driver, "version": self.version, "path": self.path,
              "rootless": self.rootless}
        if self.shared:
            st["shared"] = True
        return st


def _rmdir_each(dirs) -> None:
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            pass


_NOT_DELEGATED = (13, 1, 30)  # EACCES, EPERM, EROFS (`errno` stays off the run path)


def _refuse_undelegated(resources: dict, path: str, where: str) -> None:
    """Rootless without a delegated cgroup: limits cannot be set; say so
    rather than run the container without them."""
    for k in sorted(resources):
        if _present(resources, k):
            raise CgroupError(f"{path}.{k}: cannot be set: the cgroup {where} is not "
                              "delegated to this user (rootless)")


def _mod(name: str):
    """ocirun.cgroups.<name> (e.g. "v1.memory"), imported on first use."""
    return __import__(f"ocirun.cgroups.{name}", fromlist=["_"])


def _wait_exited(pids: list[int], timeout: float) -> None:
    """Sleep until every pid has exited, or timeout: poll() on pidfds, which
    become readable at exit (a killed task leaves cgroup.procs then)."""
    import select
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                pass
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        end = time.monotonic() + timeout
        left = len(fds)
        while left:
            ms = (end - time.monotonic()) * 1000
            if ms <= 0:
                return
            for fd, _ in p.poll(ms):
                p.unregister(fd)
                left -= 1
    finally:
        for fd in fds:
            os.close(fd)


def _join(procs_dir: str, pid: int) -> None:
    try:
        fd = os.open(os.path.join(procs_dir, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
    except OSError as e:
        err = CgroupError(f"adding pid {pid} to cgroup {procs_dir}: "
                          f"{os.strerror(e.errno)}{_realtime_hint(e.errno, pid)}")
        err.errno = e.errno
        raise err from None


def _realtime_hint(err: int, pid: int) -> str:
    """The kernel refuses (EINVAL) a SCHED_FIFO/SCHED_RR task in a cpu
    cgroup without real-time runtime (v1: cpu.rt_runtime_us 0, what a new
    cgroup gets), and says nothing more."""
    if err != 22:  # EINVAL
        return ""
    try:
        policy = os.sched_getscheduler(pid) & ~0x40000000  # (SCHED_RESET_ON_FORK)
    except OSError:
        return ""
    if policy not in (1, 2):
        return ""
    return (" (process.scheduler: a SCHED_FIFO or SCHED_RR process needs real-time "
            "runtime in its cpu cgroup; set linux.resources.cpu.realtimeRuntime)")


def enable_controllers(mountpoint: str, leaf: str, wanted=V2_WANTED) -> None:
    """Enable the wanted controllers in subtree_control on every level above leaf.

    Levels that cannot (EBUSY: a level with processes, e.g. the runtime's
    own cgroup) are skipped; a resource write then reports the missing file.
    """
    rel = os.path.relpath(leaf, mountpoint)
    d = mountpoint
    for part in ([] if rel == "." else rel.split("/")):
        try:
            avail = set(fsutil.read(d, "cgroup.controllers").split())
            on = set(fsutil.read(d, "cgroup.subtree_control").split())
        except OSError:
            return
        todo = [c for c in wanted if c in avail and c not in on]
        if todo:
            _enable_in_subtree(d, todo)
        d = os.path.join(d, part)


def _enable_in_subtree(d: str, controllers: list[str]) -> None:
    try:
        fsutil.write(d, "cgroup.subtree_control", " ".join("+" + c for c in controllers),
                     "linux.cgroupsPath")
    except ConfigError:
        for c in controllers:  # one at a time: enable what can be enabled
            try:
                fsutil.write(d, "cgroup.subtree_control", "+" + c, "linux.cgroupsPath")
            except ConfigError:
                pass


def _present(res: dict, key: str) -> bool:
    v = res.get(key)
    return v not in (None, {}, [])
