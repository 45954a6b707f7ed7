"""cgroupfs managers: FsV1Manager (v1 and hybrid) and FsV2Manager (unified).

A manager is a set of resolved directories, computed once by new_manager()
and stored in the container state (to_state), so later commands act on the
same cgroup whatever cgroup they themselves run in.
"""
import errno
from ocirun import oslite as os
import time

from ocirun.cgroups import fsutil
from ocirun.errors import ConfigError, OciError

SIGKILL = 9  # (the signal module would pull in enum on every container start)

# controllers ocirun enables in cgroup.subtree_control on the way down (v2)
V2_WANTED = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")


class CgroupError(OciError):
    """A cgroup operation failed (not a config problem)."""


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
            raise CgroupError(f"joining the container's cgroup: {os.strerror(e.errno)}") \
                from None
        finally:
            for fd in fds:
                os.close(fd)

    def clone_failed(self) -> None:
        """clone3 with CLONE_INTO_CGROUP is not available: add_pid does ''."""
        self.done.discard("")

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

    def to_state(self) -> dict:
        return {"driver": self.driver, "version": self.version, "path": self.path,
                "rootless": self.rootless}


_NOT_DELEGATED = (errno.EACCES, errno.EPERM, errno.EROFS)


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
        raise CgroupError(f"adding pid {pid} to cgroup {procs_dir}: "
                          f"{os.strerror(e.errno)}") from None


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
            try:
                fsutil.write(d, "cgroup.subtree_control", " ".join("+" + c for c in todo),
                             "linux.cgroupsPath")
            except ConfigError:
                for c in todo:  # one at a time: enable what can be enabled
                    try:
                        fsutil.write(d, "cgroup.subtree_control", "+" + c, "linux.cgroupsPath")
                    except ConfigError:
                        pass
        d = os.path.join(d, part)


def _present(res: dict, key: str) -> bool:
    v = res.get(key)
    return v not in (None, {}, [])


# ---------------------------------------------------------------------------------------
class FsV2Manager(Manager):
    version = "v2"

    def __init__(self, path: str, mountpoint: str, dir: str, rootless: bool = False) -> None:
        super().__init__(path, rootless)
        self.mountpoint, self.dir = mountpoint, dir

    def dirs(self) -> list[str]:
        return [self.dir]

    def procs_path(self) -> str:
        return self.dir

    def create(self) -> None:
        """mkdir the cgroup (and parents) and enable controllers down to it.
        Rootless without a delegated subtree: no cgroup at all (as runc)."""
        try:
            fsutil.mkdir_p(self.dir)
        except OSError as e:
            if self.rootless and e.errno in _NOT_DELEGATED:
                self.undelegated = True
                return
            raise CgroupError(f"creating cgroup {self.dir}: {os.strerror(e.errno)}") from None
        enable_controllers(self.mountpoint, self.dir)

    def controllers(self) -> set[str]:
        try:
            return set(fsutil.read(self.dir, "cgroup.controllers").split())
        except OSError:
            return set()

    def apply(self, resources: dict, path: str = "linux.resources") -> None:
        """Write linux.resources to the v2 files."""
        from ocirun.cgroups.v2 import cpu, cpuset, devices, hugetlb, io, memory, unified
        from ocirun.cgroups.v1 import net, pids, rdma
        if resources is None:
            return
        if not isinstance(resources, dict):
            raise ConfigError(path, "must be an object")
        unified.check(resources, path, None)
        if self.rootless and os.geteuid() != 0:
            # device rules need CAP_SYS_ADMIN in the host (an eBPF program); the
            # user namespace already keeps the container from creating devices
            resources = {k: v for k, v in resources.items() if k != "devices"}
            if self.undelegated:
                _refuse_undelegated(resources, path, self.dir)
                return
        if _present(resources, "network"):
            net.parse(resources, path)
            self.warn(f"{path}.network ignored: cgroup v2 has no net_cls/net_prio "
                      "(use a BPF program or nftables)")
        d = self.dir
        for mod in (memory, cpu, cpuset, io, hugetlb, rdma):
            mod.set(d, resources, path, self)
        pids.set(d, resources, path, self)
        devices.set(d, resources, path, self)
        unified.set(d, resources, path, self, self.controllers() | {"cgroup"})

    def add_pid(self, pid: int, skip: set[str] | frozenset[str] = frozenset()) -> None:
        if not self.undelegated and "" not in skip:
            _join(self.dir, pid)

    def _cgroup_kill(self) -> bool:
        if not os.path.exists(os.path.join(self.dir, "cgroup.kill")):
            return False
        try:
            fsutil.write(self.dir, "cgroup.kill", "1", "")
        except ConfigError:
            return False
        return True

    def freeze(self) -> None:
        self._freeze("1")

    def thaw(self) -> None:
        self._freeze("0")

    def _freeze(self, v: str) -> None:
        try:
            fsutil.write(self.dir, "cgroup.freeze", v, "")
        except ConfigError as e:
            raise CgroupError(e.msg) from None
        # the kernel notifies cgroup.events (POLLPRI) when "frozen" changes
        import select
        fd = os.open(os.path.join(self.dir, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            p = select.poll()
            p.register(fd, select.POLLPRI | select.POLLERR)
            end = time.monotonic() + 5
            while (f"frozen {v}\n".encode() not in os.pread(fd, 4096, 0)):
                ms = (end - time.monotonic()) * 1000
                if ms <= 0:
                    raise CgroupError(f"cgroup {self.dir}: timed out waiting for frozen={v}")
                p.poll(ms)
        finally:
            os.close(fd)

    def frozen(self) -> bool:
        return fsutil.read_kv(self.dir, "cgroup.events").get("frozen", 0) == 1

    def stats(self) -> dict:
        """runc `events --stats` data."""
        from ocirun.cgroups.v2 import cpu, hugetlb, io, memory
        from ocirun.cgroups.v1 import pids
        d = self.dir
        return {"cpu": cpu.stats(d), "memory": memory.stats(d), "pids": pids.stats(d),
                "blkio": io.stats(d), "hugetlb": hugetlb.stats(d)}

    def oom_count(self) -> int:
        from ocirun.cgroups.v2 import memory
        return memory.oom_count(self.dir)

    def to_state(self) -> dict:
        return {**super().to_state(), "mountpoint": self.mountpoint, "dir": self.dir}


# ---------------------------------------------------------------------------------------
class FsV1Manager(Manager):
    """v1 (and hybrid): one directory per hierarchy, keyed like /proc/self/cgroup
    ('cpu', 'cpu,cpuacct', 'name=systemd'; '' is the cgroup2 dir in hybrid mode)."""

    version = "v1"

    def __init__(self, path: str, paths: dict[str, str], mounts: dict[str, str],
                 rootless: bool = False) -> None:
        super().__init__(path, rootless)
        self.paths = paths    # key -> cgroup dir
        self.mounts = mounts  # key -> mountpoint
        self.ctl = {c: d for k, d in paths.items() if k and not k.startswith("name=")
                    for c in k.split(",")}
        self.skipped: set[str] = set()
        self._deferred: list[str] = []  # keys create_for_clone left to create_rest

    def dirs(self) -> list[str]:
        return list(self.paths.values())

    def procs_path(self) -> str:
        for c in ("pids", "freezer", "memory", "devices", "cpu"):
            if c in self.ctl:
                return self.ctl[c]
        return next(iter(self.paths.values()))

    def create_for_clone(self) -> None:
        """Only the cgroup2 part of a hybrid layout (clone3 enters it): the v1
        directories, ~1 ms of mkdirs, are made after the clone, in parallel
        with the init's setup. (Not rootless: whether a hierarchy is
        delegated decides how the init joins, before the clone.)"""
        if self.rootless or os.geteuid() != 0:
            self.create()
            return
        self._deferred = [k for k in self.paths if k]
        self.create([k for k in self.paths if not k])

    def create_rest(self, join: SelfJoin | None) -> None:
        keys, self._deferred = self._deferred, []
        if not keys:
            return
        self.create(keys)
        if join is None or not join.pending:
            return
        for key in keys:
            try:
                join.task_fds.append(os.open(os.path.join(self.paths[key], "tasks"),
                                             os.O_WRONLY | os.O_CLOEXEC))
            except OSError:
                join.done.discard(key)  # the runtime writes the pid at "join"
                join.complete = False

    def create(self, keys=None) -> None:
        from ocirun.cgroups.v1 import cpuset
        for key, d in self.paths.items():
            if keys is not None and key not in keys:
                continue
            try:
                made = fsutil.mkdir_p(d)
            except OSError as e:
                if self.rootless and e.errno in _NOT_DELEGATED:
                    self.skipped.add(key)  # not delegated to us: quietly none (as runc)
                    continue
                raise CgroupError(f"creating cgroup {d}: {os.strerror(e.errno)}") from None
            if "cpuset" in key.split(","):
                cpuset.init_dirs(made)
            if key == "":
                enable_controllers(self.mounts[""], d, ("hugetlb", "rdma", "misc"))

    def _dir(self, controller: str, res: dict, keys: tuple[str, ...], path: str) -> str | None:
        d = self.ctl.get(controller)
        if d is None and controller in self._unified_ctls():
            d = self.paths[""]
        if d is None and any(_present(res, k) for k in keys):
            self.warn(f"{path}.{'/'.join(keys)}: ignored, the {controller} controller "
                      "is not mounted")
        return d

    def _unified_ctls(self) -> set[str]:
        if "" not in self.paths:
            return set()
        try:
            return set(fsutil.read(self.paths[""], "cgroup.controllers").split())
        except OSError:
            return set()

    def apply(self, resources: dict, path: str = "linux.resources") -> None:
        """Write linux.resources to the v1 files (hybrid: v2 files for controllers
        that live only in the unified hierarchy, e.g. hugetlb here)."""
        if resources is None:
            return
        if not isinstance(resources, dict):
            raise ConfigError(path, "must be an object")
        if resources.get("unified"):
            unified = _mod("v2.unified")
            uctl = self._unified_ctls()
            if not uctl:
                raise ConfigError(path + ".unified", "not supported: cgroup v2 keys "
                                  "on a cgroup v1 host")
            unified.check(resources, path, uctl)
        cpu_res = resources.get("cpu") or {}
        # (controller, config keys, "module.function"); a controller module is
        # loaded only when the config uses it: this is on every container start
        plan = [
            ("memory", ("memory",), "v1.memory.set"),
            ("cpu", ("cpu",), "v1.cpu.set" if any(k in cpu_res for k in (
                "shares", "quota", "period", "burst", "realtimeRuntime",
                "realtimePeriod", "idle")) else None),
            ("cpuset", ("cpu",), "v1.cpuset.set" if ("cpus" in cpu_res or "mems" in cpu_res)
             else None),
            ("pids", ("pids",), "v1.pids.set"),
            ("blkio", ("blockIO",), "v1.blkio.set"),
            ("hugetlb", ("hugepageLimits",), "v1.hugetlb.set"),
            ("net_cls", ("network",), "v1.net.set_cls"),
            ("net_prio", ("network",), "v1.net.set_prio"),
            ("rdma", ("rdma",), "v1.rdma.set"),
            ("devices", ("devices",), "v1.devices.set"),
        ]
        skipped_ctls = {c for k in self.skipped for c in k.split(",")}
        for ctl, keys, fname in plan:
            if fname is None or not any(_present(resources, k) for k in keys):
                continue
            modname, _, func = fname.rpartition(".")
            fn = getattr(_mod(modname), func)
            if self.rootless and ((ctl == "devices" and os.geteuid() != 0)
                                  or ctl in skipped_ctls):
                if ctl != "devices":  # devices: the user namespace guards them
                    _refuse_undelegated({k: resources[k] for k in keys}, path,
                                        self.ctl.get(ctl, ctl))
                continue
            d = self._dir(ctl, resources, keys, path)
            if d is None:
                if ctl.startswith("net_"):
                    _mod("v1.net").parse(resources, path)  # still validate what we ignore
                continue
            if ctl == "hugetlb" and d != self.ctl.get("hugetlb"):
                fn = _mod("v2.hugetlb").set  # hybrid: hugetlb lives in the cgroup2 hierarchy
            fn(d, resources, path, self)
        if resources.get("unified"):
            _mod("v2.unified").set(self.paths[""], resources, path, self, self._unified_ctls())

    def add_pid(self, pid: int, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Write pid to cgroup.procs of every hierarchy but those in skip
        (the keys a SelfJoin lets the process enter by itself)."""
        for key, d in self.paths.items():
            if key not in self.skipped and key not in skip:
                _join(d, pid)

    def self_join(self) -> SelfJoin | None:
        if self.skipped or os.geteuid() != 0:  # (root with a user namespace is fine)
            return None
        j = SelfJoin()
        try:
            for key, d in self.paths.items():
                if key in self._deferred:
                    j.pending = True  # opened by create_rest
                elif key:
                    j.task_fds.append(os.open(os.path.join(d, "tasks"),
                                              os.O_WRONLY | os.O_CLOEXEC))
                elif "memory" not in self.ctl:
                    continue  # memory in cgroup2: join late, the parent writes the pid
                else:
                    j.into_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                j.done.add(key)
        except OSError:
            j.close()
            return None
        j.complete = j.done == set(self.paths)
        return j

    def can_freeze(self) -> bool:
        return "freezer" in self.ctl

    def freeze(self) -> None:
        d = self._freezer()
        deadline = time.monotonic() + 5
        while True:
            # re-writing FROZEN retries tasks that were busy (runc does the same)
            fsutil.write(d, "freezer.state", "FROZEN", "")
            if fsutil.read(d, "freezer.state").strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                fsutil.write(d, "freezer.state", "THAWED", "")
                raise CgroupError(f"cgroup {d}: timed out freezing")
            time.sleep(0.005)

    def thaw(self) -> None:
        fsutil.write(self._freezer(), "freezer.state", "THAWED", "")

    def frozen(self) -> bool:
        try:
            return fsutil.read(self._freezer(), "freezer.state").strip() == "FROZEN"
        except OSError:
            return False

    def _freezer(self) -> str:
        d = self.ctl.get("freezer")
        if d is None:
            raise CgroupError("the freezer cgroup controller is not mounted")
        return d

    def stats(self) -> dict:
        from ocirun.cgroups.v1 import blkio, cpu, hugetlb, memory, pids
        from ocirun.cgroups.v2 import hugetlb as hugetlb2
        out: dict = {"cpu": {"usage": {"total": 0, "percpu": [], "kernel": 0, "user": 0},
                             "throttling": {"periods": 0, "throttled_periods": 0,
                                            "throttled_time": 0}},
                     "memory": {}, "pids": {}, "blkio": {}, "hugetlb": {}}
        c = self.ctl
        if "cpuacct" in c:
            out["cpu"]["usage"] = cpu.usage(c["cpuacct"])
        if "cpu" in c:
            out["cpu"]["throttling"] = cpu.throttling(c["cpu"])
        if "memory" in c:
            out["memory"] = memory.stats(c["memory"])
        if "pids" in c:
            out["pids"] = pids.stats(c["pids"])
        if "blkio" in c:
            out["blkio"] = blkio.stats(c["blkio"])
        if "hugetlb" in c:
            out["hugetlb"] = hugetlb.stats(c["hugetlb"])
        elif "hugetlb" in self._unified_ctls():
            out["hugetlb"] = hugetlb2.stats(self.paths[""])
        return out

    def oom_count(self) -> int:
        from ocirun.cgroups.v1 import memory
        d = self.ctl.get("memory")
        return memory.oom_count(d) if d else 0

    def to_state(self) -> dict:
        return {**super().to_state(), "paths": self.paths, "mounts": self.mounts}
