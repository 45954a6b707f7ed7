"""The cgroupfs manager of a unified (cgroup v2) host: one directory."""
from ocirun import oslite as os
import time

from ocirun.cgroups import fsutil
from ocirun.cgroups.manager import (CgroupError, Manager, SelfJoin, _join, _present,
                                    _refuse_undelegated, enable_controllers)
from ocirun.errors import ConfigError


class FsV2Manager(Manager):
    version = "v2"

    def __init__(self, path: str, mountpoint: str, dir: str, rootless: bool = False) -> None:
        super().__init__(path, rootless)
        self.mountpoint, self.dir = mountpoint, dir

    def dirs(self) -> list[str]:
        return [self.dir]

    def procs_path(self) -> str:
        return self.dir

    def cpu_quota(self) -> int | None:
        """The CFS quota now (-1: none; None: no cpu controller)."""
        try:
            q = fsutil.read(self.dir, "cpu.max").split()[0]
        except OSError:
            return None
        return -1 if q == "max" else int(q)

    def create(self, check: bool = True) -> None:
        """mkdir the cgroup (and parents) and enable controllers down to it.
        Rootless without a delegated subtree: no cgroup at all (as runc)."""
        try:
            made = fsutil.mkdir_p(self.dir)
        except OSError as e:
            if self.not_delegated(e):
                self.undelegated = True
                return
            raise CgroupError(f"creating cgroup {self.dir}: {os.strerror(e.errno)}") from None
        self.existed = not made
        self.made += made
        # (a new cgroup right under the root cannot be frozen: no read)
        if check and (self.existed or os.path.dirname(made[0]) != self.mountpoint):
            self.check_existing(_frozen(self.dir))
        enable_controllers(self.mountpoint, self.dir)

    def own_join(self) -> SelfJoin | None:
        if self.undelegated:
            return None
        return SelfJoin.opening([], self.dir)

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
        st = {**super().to_state(), "mountpoint": self.mountpoint, "dir": self.dir}
        if self.undelegated:  # (rootless: no cgroup of its own)
            st["undelegated"] = True
        return st


def _frozen(d: str) -> bool:
    """Frozen, or under a frozen parent (cgroup.events says which it is)."""
    try:
        return "frozen 1" in fsutil.read(d, "cgroup.events")
    except OSError:
        return False
