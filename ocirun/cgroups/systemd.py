"""systemd cgroup driver: the container's cgroup is a transient scope unit.

systemd owns the cgroup tree on such hosts; writing into it behind its back
gets undone. So the scope is created over D-Bus (StartTransientUnit, with
Delegate=yes and the main limits as unit properties), and then the same
cgroupfs code writes every resource into the delegated directory, as runc.

A scope cannot exist without a process: create() only records, add_pid()
starts the unit with PIDs=[pid]; resources given to apply() before that are
passed as properties and written once the unit is up.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import spec
from ocirun.cgroups.layout import Layout, detect
from ocirun.cgroups.manager import CgroupError, Manager
from ocirun.errors import ConfigError

JPATH = "linux.cgroupsPath"
DEST = "org.freedesktop.systemd1"
OBJ = "/org/freedesktop/systemd1"
IFACE = "org.freedesktop.systemd1.Manager"
INFINITY = 0xFFFFFFFFFFFFFFFF


def parse_path(p: str | None, cid: str, rootless: bool) -> tuple[str, str, str]:
    """'slice:prefix:name' -> parts; None/'' -> the defaults (as runc, prefix 'ocirun')."""
    if not p:
        return ("user.slice" if rootless else "system.slice"), "ocirun", cid
    parts = p.split(":")
    if len(parts) != 3:
        raise ConfigError(JPATH, f"{p!r}: expected 'slice:prefix:name' for the systemd driver")
    slice_, prefix, name = parts
    if not slice_:
        slice_ = "user.slice" if rootless else "system.slice"
    if not name:
        name = cid
    for what, v in (("slice", slice_), ("prefix", prefix), ("name", name)):
        if "/" in v or ".." in v or "\0" in v or any(c.isspace() for c in v):
            raise ConfigError(JPATH, f"{p!r}: invalid {what} {v!r}")
    expand_slice(slice_)
    return slice_, prefix, name


def expand_slice(s: str) -> str:
    """'a-b.slice' -> '/a.slice/a-b.slice' (systemd's slice nesting by dashes)."""
    if not s.endswith(".slice"):
        raise ConfigError(JPATH, f"{s!r}: a slice name must end in .slice")
    if s == "-.slice":
        return ""
    base = s[:-6]
    if not base or base.startswith("-") or base.endswith("-") or "--" in base:
        raise ConfigError(JPATH, f"{s!r}: invalid slice name")
    out, acc = "", ""
    for part in base.split("-"):
        acc = f"{acc}-{part}" if acc else part
        out += f"/{acc}.slice"
    return out


def unit_name(prefix: str, name: str) -> str:
    if name.endswith(".slice"):
        return name
    return f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def properties(res: dict, version: str, path: str = "linux.resources") -> list[tuple]:
    """Unit properties for the limits systemd knows (the rest goes through cgroupfs)."""
    from ocirun.cgroups.v2.cpu import shares_to_weight
    from ocirun.cgroups.v2.io import blkio_to_io_weight
    from ocirun.cgroups.v2.memory import swap_max
    from ocirun.cgroups.v1.cpu import quota_period
    out: list[tuple] = []

    def t(n: int) -> int:
        return INFINITY if n == -1 else n

    mem = spec.section(res, "memory", path)
    limit = spec.get_int(mem, "limit", path + ".memory", unlimited=True)
    if limit is not None:
        out.append(("MemoryMax" if version == "v2" else "MemoryLimit", ("t", t(limit))))
    if version == "v2":
        resv = spec.get_int(mem, "reservation", path + ".memory", unlimited=True)
        if resv is not None:
            out.append(("MemoryLow", ("t", t(resv))))
        sw = swap_max(spec.get_int(mem, "swap", path + ".memory", unlimited=True), limit,
                      path + ".memory")
        if sw is not None:
            out.append(("MemorySwapMax", ("t", t(sw))))
    cpu = spec.section(res, "cpu", path)
    shares = spec.get_int(cpu, "shares", path + ".cpu")
    if shares:
        out.append(("CPUWeight", ("t", shares_to_weight(shares))) if version == "v2"
                   else ("CPUShares", ("t", shares)))
    quota, period = quota_period(cpu, path + ".cpu")
    if period:
        out.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota:
        if quota == -1:
            out.append(("CPUQuotaPerSecUSec", ("t", INFINITY)))
        else:
            per = period or 100000
            q = quota * 1_000_000 // per
            q = (q + 9999) // 10000 * 10000  # systemd rounds to 1% of a CPU; round up
            out.append(("CPUQuotaPerSecUSec", ("t", q)))
    if version == "v2":
        for k, prop in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
            v = spec.cpuset(cpu, k, path + ".cpu")
            if v:
                out.append((prop, ("ay", spec.cpuset_bits(v))))
    pids = spec.section(res, "pids", path)
    lim = spec.get_int(pids, "limit", path + ".pids", unlimited=True)
    if lim:
        out.append(("TasksMax", ("t", t(lim))))
    bio = spec.section(res, "blockIO", path)
    w = spec.get_weight(bio, "weight", path + ".blockIO")
    if w is not None:
        out.append(("IOWeight", ("t", blkio_to_io_weight(w))) if version == "v2"
                   else ("BlockIOWeight", ("t", w)))
    unified = res.get("unified") if version == "v2" else None
    if unified and isinstance(unified, dict):
        # last: they override the fields above, for systemd as in the files
        # (a daemon-reload would otherwise put the unit's values back)
        named = dict(out)
        named.update(_unified_properties(unified))
        out = list(named.items())
    return out


# linux.resources.unified keys systemd has properties for (as runc maps them)
_UNIFIED_PROPS = {"memory.min": "MemoryMin", "memory.low": "MemoryLow",
                  "memory.high": "MemoryHigh", "memory.max": "MemoryMax",
                  "memory.swap.max": "MemorySwapMax", "pids.max": "TasksMax",
                  "cpu.weight": "CPUWeight", "io.weight": "IOWeight"}


def _unified_properties(unified: dict) -> list[tuple]:
    """Unit properties for the unified keys systemd knows; a value that is
    not a number for it is left to the file write (which says what is wrong)."""
    out: list[tuple] = []
    for key, value in unified.items():
        if not isinstance(value, str):
            continue
        v = value.strip()
        try:
            if key in _UNIFIED_PROPS:
                if key == "io.weight" and v.startswith("default "):
                    v = v[len("default "):]
                out.append((_UNIFIED_PROPS[key], ("t", INFINITY if v == "max" else int(v))))
            elif key == "cpu.max":
                quota, _, period = v.partition(" ")
                per = int(period) if period else 100000
                out.append(("CPUQuotaPeriodUSec", ("t", per)))
                q = INFINITY if quota == "max" else \
                    (int(quota) * 1_000_000 // per + 9999) // 10000 * 10000
                out.append(("CPUQuotaPerSecUSec", ("t", q)))
            elif key in ("cpuset.cpus", "cpuset.mems") and v:
                out.append(("AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes",
                            ("ay", spec.cpuset_bits(v))))
        except (ValueError, ZeroDivisionError):
            continue
    return out


def _with_quota(resources: dict, fs) -> dict:
    """systemd keeps a quota per second: given a new period alone, it would
    scale the quota with it. An update of the period keeps the quota, as
    runc's (which passes its whole config) does: the current one goes along."""
    cpu = resources.get("cpu")
    if not isinstance(cpu, dict) or cpu.get("period") is None or cpu.get("quota") is not None:
        return resources
    q = fs.cpu_quota()
    return dict(resources, cpu=dict(cpu, quota=q)) if q and q > 0 else resources


class SystemdManager(Manager):
    driver = "systemd"

    def __init__(self, slice_: str, prefix: str, name: str, layout: Layout | None,
                 rootless: bool = False, *, fs_state: dict | None = None) -> None:
        self.slice, self.prefix, self.name = slice_, prefix, name
        self.unit = unit_name(prefix, name)
        path = expand_slice(slice_) + "/" + self.unit
        super().__init__(path, rootless)
        if fs_state is not None:
            from ocirun.cgroups import manager_from_state
            self.fs = manager_from_state(fs_state)
        else:
            from ocirun.cgroups import new_manager
            self.fs = new_manager(path, self.unit, layout=layout or detect(), rootless=rootless)
        self.fs.on_warning = self.warn
        self.version = self.fs.version
        self.pending: dict | None = None
        self._pending_path = "linux.resources"

    # ---- D-Bus ------------------------------------------------------------------------
    def _bus(self):
        from ocirun.cgroups import dbus
        try:
            return dbus.Connection(dbus.user_bus_address() if self.rootless else None)
        except OSError as e:
            raise CgroupError(f"systemd driver: cannot connect to D-Bus: {e}") from None

    def _run_job(self, member: str, sig: str, args: tuple, timeout: float = 60.0) -> str:
        """Call a Manager method that returns a job, wait for JobRemoved; its result."""
        from ocirun.cgroups import dbus
        with self._bus() as c:
            c.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                   "AddMatch", "s", ("type='signal',sender='org.freedesktop.systemd1',"
                                     "interface='org.freedesktop.systemd1.Manager',"
                                     "member='JobRemoved'",))
            c.call(DEST, OBJ, IFACE, "Subscribe")
            try:
                job = c.call(DEST, OBJ, IFACE, member, sig, args)[0]
            except dbus.DBusError:
                raise
            m = c.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job, timeout)
            return m.body[3]

    def create(self) -> None:
        """Nothing to make before a pid exists (a scope needs one, see
        add_pid). A scope that is there already (another container's, with
        the same cgroupsPath) gets runc's checks of a cgroup found at create."""
        if self.fs.exists():
            self.existed = self.fs.existed = True  # (a failed create leaves it)
            self.fs.check_existing(self.fs.frozen())
            self.shared = self.fs.shared

    def add_pid(self, pid: int, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """First call: StartTransientUnit with PIDs=[pid]; later calls: cgroup.procs.
        (skip: the cgroupfs managers' SelfJoin keys; a scope never has any.)"""
        from ocirun.cgroups import dbus
        if self.fs.exists():
            self.fs.add_pid(pid)
            return
        props = [("Description", ("s", f"ocirun container {self.name}")),
                 ("Delegate", ("b", True)), ("PIDs", ("au", [pid])),
                 ("DefaultDependencies", ("b", False)),
                 ("MemoryAccounting", ("b", True)), ("CPUAccounting", ("b", True)),
                 ("TasksAccounting", ("b", True))]
        if self.version == "v2":
            props.append(("IOAccounting", ("b", True)))
        if self.unit.endswith(".scope"):
            props.append(("Slice", ("s", self.slice)))
        else:
            props.append(("Wants", ("s", self.slice)))
        if self.pending:
            props += properties(self.pending, self.version)
        try:
            result = self._run_job("StartTransientUnit", "ssa(sv)a(sa(sv))",
                                   (self.unit, "replace", props, []))
        except dbus.DBusError as e:
            if e.name.endswith("UnitExists"):
                self.fs.create()
                self.fs.add_pid(pid)
                return
            raise CgroupError(f"systemd: starting {self.unit}: {e}") from None
        except (OSError, TimeoutError) as e:
            raise CgroupError(f"systemd: starting {self.unit}: {e}") from None
        if result != "done":
            raise CgroupError(f"systemd: starting {self.unit}: job {result}")
        # v1: systemd only makes the hierarchies it manages; join the rest ourselves
        # (what systemd made holds our init already: not a cgroup found in use)
        self.fs.create(check=False)
        if self.fs.version == "v1":
            self.fs.add_pid(pid)
        if self.pending:
            res, self.pending = self.pending, None
            self.fs.apply(res, self._pending_path)

    def apply(self, resources: dict, path: str = "linux.resources") -> None:
        if resources is None:
            return
        properties(resources, self.version, path)  # validate now
        if not self.fs.exists():
            from ocirun.cgroups import fsutil
            if fsutil.DRY_RUN:
                return
            self.pending = _merge(self.pending or {}, resources)
            self._pending_path = path
            return
        resources = _with_quota(resources, self.fs)
        props = properties(resources, self.version, path)
        from ocirun.cgroups import fsutil
        if props and not fsutil.DRY_RUN:
            try:
                with self._bus() as c:
                    c.call(DEST, OBJ, IFACE, "SetUnitProperties", "sba(sv)",
                           (self.unit, True, props))
            except Exception as e:  # the fs writes below still apply the limits
                self.warn(f"systemd: SetUnitProperties on {self.unit}: {e}")
        self.fs.apply(resources, path)

    def destroy(self) -> None:
        """StopUnit (kills what is left), then remove any directory left behind."""
        from ocirun.cgroups import dbus
        try:
            self._run_job("StopUnit", "ss", (self.unit, "replace"))
        except dbus.DBusError as e:
            if not e.name.endswith("NoSuchUnit"):
                raise CgroupError(f"systemd: stopping {self.unit}: {e}") from None
        except (OSError, TimeoutError) as e:
            if os.path.exists("/run/systemd/system"):
                raise CgroupError(f"systemd: stopping {self.unit}: {e}") from None
        try:
            with self._bus() as c:
                c.call(DEST, OBJ, IFACE, "ResetFailedUnit", "s", (self.unit,))
        except Exception:
            pass
        self.fs.destroy()

    # ---- delegated to the cgroupfs manager ----------------------------------------------
    def dirs(self) -> list[str]:
        return self.fs.dirs()

    def procs_path(self) -> str:
        return self.fs.procs_path()

    def freeze(self) -> None:
        self.fs.freeze()

    def thaw(self) -> None:
        self.fs.thaw()

    def frozen(self) -> bool:
        return self.fs.frozen()

    def can_freeze(self) -> bool:
        return self.fs.can_freeze()

    def pids(self) -> list[int]:
        return self.fs.pids()

    def kill_all(self, sig: int) -> None:
        self.fs.kill_all(sig)

    def stats(self) -> dict:
        return self.fs.stats()

    def oom_count(self) -> int:
        return self.fs.oom_count()

    def to_state(self) -> dict:
        return {**super().to_state(), "slice": self.slice, "prefix": self.prefix,
                "name": self.name, "unit": self.unit, "fs": self.fs.to_state()}

    @classmethod
    def from_state(cls, d: dict) -> "SystemdManager":
        return cls(d["slice"], d["prefix"], d["name"], None, d.get("rootless", False),
                   fs_state=d["fs"])


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
