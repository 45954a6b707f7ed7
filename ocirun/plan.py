"""Pure functions: a validated config -> InitPlan, everything the container's
init needs, parsed and checked before any fork. The init (init.py) only
executes the plan, so a bad config fails before anything exists, and the
forked child does as little Python work as possible."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import ConfigError, NotSupported

# sysctls that are namespaced, and by which namespace (as runc checks them)
_SYSCTL_IPC = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
               "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


# filesystems that take a context= mount option (runc labels these)
_LABELLED_FS = ("tmpfs", "devpts", "mqueue", "shm")


class ProcessPlan:
    __slots__ = ("args", "env", "cwd", "uid", "gid", "additional_gids", "umask", "rlimits",
                 "oom_score_adj", "oom_set_early", "no_new_privs", "terminal", "console_size", "caps",
                 "seccomp", "apparmor", "selinux", "sched", "cfg")


class InitPlan:
    __slots__ = ("rootfs", "readonly", "propagation", "ns", "uid_maps", "gid_maps",
                 "time_offsets", "mounts_now", "mounts_later", "devices", "bind_devices",
                 "masked", "readonly_paths", "hostname", "domainname", "sysctl", "process",
                 "hooks", "runtime_hooks", "no_pivot", "no_new_keyring", "preserve_fds",
                 "wait_fifo", "has_mount_ns", "mount_label", "console_fd",
                 "cgroup_join", "cgroup_binds", "linux", "net_devices", "runtime_is_root",
                 "dev_readonly")


def build_process(proc: dict, base: str = "process") -> ProcessPlan:
    p = ProcessPlan()
    p.cfg = proc
    p.args = proc.get("args") or []
    p.env = proc.get("env") or []
    p.cwd = proc.get("cwd") or "/"
    user = proc.get("user") or {}
    p.uid = user.get("uid", 0)
    p.gid = user.get("gid", 0)
    p.additional_gids = user.get("additionalGids") or []
    p.umask = user.get("umask")
    p.rlimits = proc.get("rlimits") or []
    p.oom_score_adj = proc.get("oomScoreAdj")
    p.oom_set_early = False  # set outside a user namespace (see process.set_oom_score_adj)
    p.no_new_privs = bool(proc.get("noNewPrivileges"))
    p.terminal = bool(proc.get("terminal"))
    cs = proc.get("consoleSize")
    p.console_size = (cs["height"], cs["width"]) if cs else None
    p.caps = None
    p.seccomp = None
    p.apparmor = proc.get("apparmorProfile")
    p.selinux = proc.get("selinuxLabel")
    p.sched = None  # the linux object, when it asks for scheduling extras
    if proc.get("commandLine") is not None:
        raise NotSupported(f"{base}.commandLine", "commandLine (Windows only)")
    return p


def build(cfg: dict, bundle: str, *, no_pivot: bool = False, no_new_keyring: bool = False,
          preserve_fds: int = 0, wait_fifo: bool = True) -> InitPlan:
    """Turn config.json into an InitPlan; raises ConfigError on anything unusable."""
    from ocirun.linux import devices, mounts, namespaces  # not needed by `exec`
    plan = InitPlan()
    root = cfg.get("root")
    if root is None:
        raise ConfigError("root", "is required to create a container")
    rootfs = root["path"]
    if not rootfs.startswith("/"):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise ConfigError("root.path", f"rootfs {rootfs} does not exist or is not a directory")
    plan.rootfs = rootfs
    plan.readonly = bool(root.get("readonly"))
    linux = cfg.get("linux") or {}
    plan.linux = linux
    prop = linux.get("rootfsPropagation")
    from ocirun.spec import PROPAGATIONS
    plan.propagation = PROPAGATIONS[prop] if prop else None
    nslist = linux.get("namespaces") or []
    plan.ns = namespaces.plan_namespaces(nslist)
    plan.has_mount_ns = "mount" in plan.ns.new or "mount" in plan.ns.paths
    if not plan.has_mount_ns:
        _check_without_mount_ns(cfg, linux)
    plan.uid_maps = linux.get("uidMappings") or []
    plan.gid_maps = linux.get("gidMappings") or []
    if plan.ns.new_user and not (plan.uid_maps and plan.gid_maps):
        _default_id_maps(plan, cfg)
    plan.time_offsets = linux.get("timeOffsets")
    steps = mounts.plan_mounts(cfg.get("mounts") or [], bundle)
    plan.dev_readonly = mounts.defer_dev_readonly(steps)
    plan.mounts_now, plan.mounts_later = mounts.split_deferred(steps)
    dev_bound = any(s.bind and s.dest == "/dev" for s in steps)
    plan.devices = devices.plan_devices(linux.get("devices") or [], dev_bound)
    plan.bind_devices = plan.ns.new_user or "user" in plan.ns.paths
    plan.masked = linux.get("maskedPaths") or []
    plan.readonly_paths = linux.get("readonlyPaths") or []
    plan.hostname = cfg.get("hostname")
    plan.domainname = cfg.get("domainname")
    uts = "uts" in plan.ns.new or "uts" in plan.ns.paths
    if (plan.hostname or plan.domainname) and not uts:
        raise ConfigError("hostname", "setting a hostname needs a uts namespace")
    plan.sysctl = linux.get("sysctl") or {}
    plan.runtime_is_root = os.geteuid() == 0  # (only root may prepare mounts on the host)
    plan.net_devices = linux.get("netDevices") or {}
    if plan.net_devices:
        _check_net_devices(plan.ns)
    if plan.sysctl:
        _check_sysctl(plan.sysctl, plan.ns, plan.domainname)
    proc = cfg.get("process")
    if proc is None:
        raise ConfigError("process", "is required to create a container")
    plan.process = build_process(proc)
    hooks = cfg.get("hooks") or {}
    plan.hooks = hooks
    plan.runtime_hooks = bool(hooks.get("prestart") or hooks.get("createRuntime"))
    plan.no_pivot = no_pivot
    plan.no_new_keyring = no_new_keyring
    plan.preserve_fds = preserve_fds
    plan.wait_fifo = wait_fifo
    plan.mount_label = linux.get("mountLabel")
    if plan.mount_label:
        _label_mounts(plan)
    plan.console_fd = -1
    plan.cgroup_join = None  # set by the runtime: cgroups.manager.SelfJoin
    plan.cgroup_binds = None  # set by the runtime: linux.cgroupfs.planned_binds
    return plan


def _default_id_maps(plan: InitPlan, cfg: dict) -> None:
    """A new user namespace without (some of) its mappings: as crun (runc
    refuses), the runtime's own ids, and what /etc/subuid (/etc/subgid)
    grants it, see userns.default_id_map."""
    from ocirun.linux import userns
    user = (cfg.get("process") or {}).get("user") or {}
    if not plan.uid_maps:
        plan.uid_maps = userns.default_id_map("uid", user.get("uid", 0))
    if not plan.gid_maps:
        plan.gid_maps = userns.default_id_map("gid", user.get("gid", 0))


def _label_mounts(plan: InitPlan) -> None:
    """SELinux: filesystems the container mounts get the mountLabel (as
    runc); create refuses a mountLabel on a host without SELinux (lsm.check)."""
    from ocirun.linux import lsm
    for step in plan.mounts_now + plan.mounts_later:
        if not step.bind and step.fstype in _LABELLED_FS:
            step.data = lsm.mount_data(step.data, plan.mount_label)


def _check_net_devices(ns) -> None:
    if "network" not in ns.new and "network" not in ns.paths:
        raise ConfigError("linux.netDevices", "moving network devices needs a network namespace")
    if os.geteuid() != 0:
        raise ConfigError("linux.netDevices", "moving network devices needs root "
                                              "(not supported for rootless containers)")


def _check_without_mount_ns(cfg: dict, linux: dict) -> None:
    """No mount namespace: the container shares the runtime's (the spec's
    "inherit"), its mounts are made there, under the rootfs, and removed at
    delete, and the init chroots. What would change the host's own mounts
    is refused (runc refuses masked/read-only paths too)."""
    for key in ("maskedPaths", "readonlyPaths"):
        if linux.get(key):
            raise ConfigError(f"linux.{key}", "needs a mount namespace "
                                              "(it would change the host's mounts)")
    if linux.get("rootfsPropagation"):
        raise ConfigError("linux.rootfsPropagation", "needs a mount namespace "
                                                     "(it would change the host's mounts)")
    if (cfg.get("root") or {}).get("readonly"):
        raise ConfigError("root.readonly", "needs a mount namespace "
                                           "(it would change the host's mounts)")


def _check_sysctl(sysctl: dict, ns, domainname: str | None) -> None:
    """As runc: only sysctls of a namespace the container has its own of
    (anything else would change the host), consistent with the config's
    hostname and domainname."""
    have = ns.new | set(ns.paths)
    for k in sysctl:
        if k in _SYSCTL_IPC or k.startswith("fs.mqueue."):
            if "ipc" not in have:
                raise ConfigError(f"linux.sysctl.{k}", "needs an ipc namespace")
        elif k.startswith("net."):
            if "network" not in have:
                raise ConfigError(f"linux.sysctl.{k}", "needs a network namespace")
        elif k in ("kernel.hostname", "kernel.domainname"):
            if "uts" not in have:
                raise ConfigError(f"linux.sysctl.{k}", "needs a uts namespace")
            if k == "kernel.hostname":  # (as runc; crun too when hostname is set)
                raise ConfigError(f"linux.sysctl.{k}", 'conflicts with the OCI "hostname" field')
        else:
            raise ConfigError(f"linux.sysctl.{k}", "is not namespaced: refusing to change the host")
    dn = sysctl.get("kernel.domainname")
    if dn is not None and domainname is not None and dn != domainname:
        raise ConfigError("linux.sysctl.kernel.domainname",
                          f'{dn!r} conflicts with the OCI "domainname" field {domainname!r}')


def check_hook_paths(hooks: dict) -> None:
    """Hooks run in the runtime namespace must exist before we create anything."""
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        for i, h in enumerate(hooks.get(kind) or []):
            if not os.path.exists(h["path"]):
                raise ConfigError(f"hooks.{kind}[{i}].path", f"{h['path']}: no such file")

