"""The cgroupfs manager of a v1 or hybrid host: one directory per hierarchy,
keyed like /proc/self/cgroup ('cpu', 'cpu,cpuacct', 'name=systemd'; '' is the
cgroup2 directory of a hybrid layout)."""
from ocirun import oslite as os
import time

from ocirun.cgroups import fsutil
from ocirun.cgroups.manager import (CgroupError, Manager, SelfJoin, _join, _mod,
                                    _present, _refuse_undelegated, enable_controllers)
from ocirun.errors import ConfigError


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

    def cpu_quota(self) -> int | None:
        """The CFS quota now (-1: none; None: no cpu controller)."""
        d = self.ctl.get("cpu")
        return None if d is None else fsutil.read_int(d, "cpu.cfs_quota_us", -1)

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
        if self.rootless:  # found out making the cgroup2 part (see not_delegated)
            self.create(self._deferred)
            self._deferred = []

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

    def create(self, keys=None, check: bool = True) -> None:
        from ocirun.cgroups.v1 import cpuset
        frozen = False
        for key, d in self.paths.items():
            if keys is not None and key not in keys:
                continue
            try:
                made = fsutil.mkdir_p(d)
            except OSError as e:
                self._skip_undelegated(key, d, e)
                continue
            if not made:
                self.existed = True
            self.made += made
            if "freezer" in key.split(",") and (not made or os.path.dirname(made[0]) != self.mounts[key]):
                # (a new cgroup right under the root cannot be frozen: no read)
                frozen = _frozen(d)
            if "cpuset" in key.split(","):
                cpuset.init_dirs(made, d, self.mounts[key])
            if key == "":
                enable_controllers(self.mounts[""], d, ("hugetlb", "rdma", "misc"))
        if check and (frozen or self.existed):
            self.check_existing(frozen)

    def _skip_undelegated(self, key: str, d: str, e: OSError) -> None:
        """create() could not make d: rootless, a hierarchy not delegated to
        us is quietly left out (as runc); else CgroupError."""
        if self.not_delegated(e):
            self.skipped.add(key)
            return
        raise CgroupError(f"creating cgroup {d}: {os.strerror(e.errno)}") from None

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
            self._check_unified(resources, path)
        cpu_res = resources.get("cpu") or {}
        if not isinstance(cpu_res, dict):
            raise ConfigError(path + ".cpu", "must be an object")
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
                self._refuse_undelegated_ctl(ctl, keys, resources, path)
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

    def _check_unified(self, resources: dict, path: str) -> None:
        """Hybrid: linux.resources.unified goes to the cgroup2 hierarchy."""
        unified = _mod("v2.unified")
        uctl = self._unified_ctls()
        if not uctl:
            raise ConfigError(path + ".unified", "not supported: cgroup v2 keys "
                              "on a cgroup v1 host")
        unified.check(resources, path, uctl)

    def _refuse_undelegated_ctl(self, ctl: str, keys: tuple[str, ...], resources: dict,
                                path: str) -> None:
        """Rootless, ctl not delegated to us: its limits cannot be set
        (devices: the user namespace guards them)."""
        if ctl != "devices":
            _refuse_undelegated({k: resources[k] for k in keys}, path, self.ctl.get(ctl, ctl))

    def add_pid(self, pid: int, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Write pid to cgroup.procs of every hierarchy but those in skip
        (the keys a SelfJoin lets the process enter by itself)."""
        for key, d in self.paths.items():
            if key not in self.skipped and key not in skip:
                _join(d, pid)

    def own_join(self) -> SelfJoin | None:
        """v1 `tasks` fds (a process moving itself takes no global lock)
        and, in a hybrid layout, the cgroup2 directory for CLONE_INTO_CGROUP."""
        if self.skipped or self.rootless or os.geteuid() != 0:
            return None
        return SelfJoin.opening([os.path.join(d, "tasks") for key, d in self.paths.items() if key],
                                self.paths.get(""))

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
        st = {**super().to_state(), "paths": self.paths, "mounts": self.mounts}
        if self.skipped:  # (rootless: hierarchies it could not make a cgroup in)
            st["skipped"] = sorted(self.skipped)
        return st


def _frozen(d: str) -> bool:
    try:
        return fsutil.read(d, "freezer.state").strip() != "THAWED"
    except OSError:
        return False
