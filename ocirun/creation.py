"""create (runtime.md "create"): from a bundle to an init waiting for start.

Everything that can fail is checked before anything exists (config, plan,
namespace paths, hooks, capabilities, seccomp, LSM, network devices); then
the state dir, the cgroup and one clone() of the init. A foreground `run`
whose init needs nothing of the runtime on the way starts it sharing the
runtime's memory until its execve (_spawn_vfork, kernel/vfork.py); any
other init is forked and served over the sync socket until it says
"created" (forkinit.py). Anything that fails on the way is undone:
process, cgroup, mounts, state dir.

Only `create` and `run` load this module; start/kill/delete/state do not.
"""
from ocirun import oslite as os

from ocirun import log
from ocirun.container import CreateOptions, remove_host_mounts, wait_gone
from ocirun.errors import OciError
from ocirun.statedir import proc_mnt_ns, proc_start_time, write_pid_file


def create(c, bundle: str, opts, foreground: bool = False):
    """Create container `c` (a fresh container.Container handle) from the
    bundle; returns it with the init waiting for start (or, for a foreground
    `run`, for the "go" on the sync socket)."""
    layout = None
    prewarm = 0
    if opts.cgroup_manager != "disabled" and os.geteuid() == 0:
        from ocirun import cgroups
        layout = cgroups.detect()
        if _fence_ahead(layout, opts):
            prewarm = start_prewarm()
    try:
        return _create(c, bundle, opts, foreground, layout)
    finally:
        reap_prewarm(prewarm)

def _create(c, bundle: str, opts, _foreground: bool, layout=None):
    from ocirun import plan as planmod, spec
    from ocirun.linux import namespaces
    cid = c.id
    bundle = os.path.abspath(bundle)
    cfg = spec.load(bundle, opts.config)
    _socket_activation(cfg)
    if opts.notify_socket:
        from ocirun import notify
        notify.add_to_config(cfg, c.sd.path)
    plan = planmod.build(cfg, bundle, no_pivot=opts.no_pivot,
                         no_new_keyring=opts.no_new_keyring,
                         preserve_fds=opts.preserve_fds, wait_fifo=not _foreground)
    namespaces.check_paths(plan.ns, plan.linux.get("namespaces") or [])
    if plan.hooks:
        planmod.check_hook_paths(plan.hooks)
    prepare_security(plan, cfg, c.root)
    if plan.net_devices:
        from ocirun.linux import netdev
        netdev.check_host(plan.net_devices)
    if plan.process.terminal or opts.console_socket:
        _check_terminal(plan, opts, _foreground)
    mgr = _new_cgroup_manager(plan.linux, cid, opts, plan.ns.new_user, layout)
    data = {"id": cid, "pid": 0, "status": "creating", "bundle": bundle, "rootfs": plan.rootfs,
            "created": _now_rfc3339(), "owner": "" if os.geteuid() == 0 else str(os.geteuid()),
            "annotations": cfg.get("annotations") or {}, "hooks": plan.hooks,
            "config": cfg,
            "cgroup": mgr.to_state() if mgr is not None else None}
    if not plan.has_mount_ns:
        # its mounts land in our namespace, under the rootfs: remember
        # what was there, so that delete (or a failed create) removes
        # exactly what the container added
        from ocirun.linux.mountinfo import ids_under
        data["host_mounts"] = {"root": plan.rootfs, "before": sorted(ids_under(plan.rootfs))}
    # before the cgroup exists: a killed create leaves what to delete (the
    # config, for exec, comes with the second save)
    c.sd.make({k: v for k, v in data.items() if k != "config"})
    pid = 0
    try:
        if opts.notify_socket:
            notify.make_dir(c.sd.path)
            if _foreground:  # (its init may exec before we could bind later)
                c._notify = notify.Relay(c.sd.path, opts.notify_socket)
        if opts.console_socket:
            from ocirun.linux import terminal
            plan.console_fd = terminal.connect_console(opts.console_socket)
        pid = _spawn_and_serve(c, plan, data, mgr, opts)
    except BaseException:  # (an init cloned before the failure is in data)
        _undo_create(c, pid or data.get("pid", 0), mgr)
        raise
    finally:
        if plan.console_fd >= 0:
            os.close(plan.console_fd)
    c.pid = pid
    c._mgr = mgr
    c._created = data
    c.sd.unlock()
    return c


def _check_terminal(plan, opts, foreground: bool) -> None:
    from ocirun.linux import terminal
    terminal.check_terminal_args(plan.process.terminal, opts.console_socket,
                                 detach=not foreground)
    if opts.console_socket:
        terminal.check_console_socket(opts.console_socket)


def _spawn_and_serve(c, plan, data: dict, mgr, opts) -> int:
    if c._then_exit and _vfork_fits(plan, mgr, opts):
        pid = _spawn_vfork(c, plan, mgr)
        if pid:
            return _created(c, plan, data, pid, opts, mgr)
    from ocirun.forkinit import spawn_and_serve
    return spawn_and_serve(c, plan, data, mgr, opts)

def _created(c, plan, data: dict, pid: int, opts, mgr) -> int:
    """The init is there: its identity into the state, saved."""
    data["pid"] = pid
    if mgr is not None and (mgr.shared or mgr.rootless):  # (known once it was created)
        data["cgroup"] = mgr.to_state()
    data["start_time"] = proc_start_time(pid)
    if plan.has_mount_ns:
        data["mnt_ns"] = proc_mnt_ns(pid)  # with start_time: pid reuse is caught
    data.pop("status", None)
    c.sd.save(data, replacing=True)
    if log.debugging():
        log.debug(f"container {c.id}: init {pid} created (state in {c.sd.path})")
    if opts.pid_file:
        write_pid_file(os.path.abspath(opts.pid_file), pid)
    return pid


def _block_forwarded(c) -> None:
    from ocirun.linux.foreground import forwarded_signals
    import _signal
    c._go_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, forwarded_signals())


def _vfork_fits(plan, mgr, opts) -> bool:
    """Can the init of this `run` share our memory until its execve (see
    kernel/vfork.py)? Only if it needs nothing of us on the way: no user
    namespace to map, no hooks, no terminal, console socket, network
    devices or seccomp listener, no namespace joined by path, idmapped
    mounts, and a cgroup it can enter by itself. (And only for a process
    that exits right after, the CLI: the init's unfinished frames leave
    ~20 KB of objects behind in our memory, which a long-lived library
    caller would pile up run after run; it forks instead.)"""
    ns = plan.ns
    if plan.wait_fifo or ns.slow or ns.new_user or ns.paths or ns.new_time_in_parent or \
            plan.net_devices or plan.process.terminal or opts.console_socket or \
            any(plan.hooks.values()):
        return False
    sc = plan.linux.get("seccomp")
    if sc is not None and sc.get("listenerPath"):
        return False
    if mgr is not None and (mgr.driver != "cgroupfs" or mgr.rootless):
        return False
    from ocirun.linux import mounts
    if any(mounts.is_idmapped(s) for s in plan.mounts_now):
        return False
    import _thread
    if _thread._count():  # another thread would run Python beside the child
        return False
    from ocirun.kernel import vfork
    return vfork.available()


def _spawn_vfork(c, plan, mgr) -> int:
    """The whole cgroup first (the init enters it by itself), then the
    init, which shares our memory until it has exec'd; returns its pid, or
    0 when clone3 fails (refused by a seccomp profile or an old kernel, or
    CLONE_INTO_CGROUP refused): fork then, which has its own ways round."""
    from ocirun import init
    join = None
    if mgr is not None:
        mgr.create()
        join = mgr.own_join()
        if join is None:
            raise OciError("internal: no way for the init into its cgroup")
        plan.cgroup_join = join
        mgr.apply(_resources_with_default_devices(plan.linux.get("resources")))
        if plan.mounts_later and not plan.ns.new_cgroup:
            from ocirun.linux import cgroupfs
            plan.cgroup_binds = cgroupfs.planned_binds(mgr)
    _block_forwarded(c)  # (the child too, until its execve)
    try:
        from ocirun.launch import spawn_vforked
        return spawn_vforked(plan.ns.clone_flags, lambda w: init.vfork_child_main(plan, w), join)
    except OSError:  # no child: fork it instead (as clone_child does)
        plan.cgroup_join = plan.cgroup_binds = None
        c._unblock_signals()
        return 0
    except BaseException:
        c._unblock_signals()
        raise
    finally:
        if join is not None:
            join.close()


def _undo_create(c, pid: int, mgr) -> None:
    """Remove everything a failed create made (process, cgroup, state)."""
    if c._sync is not None:
        c._sync.close()
        c._sync = None
    if c._notify is not None:
        c._notify.close()
        c._notify = None
    data = c.sd.load() or {}
    pid = pid or data.get("pid", 0)
    if pid:
        _kill_and_reap(pid)
    if mgr is not None:
        try:
            if mgr.existed:  # not made by us (maybe frozen, or others' processes in it)
                mgr.remove_made()
            else:
                mgr.kill_all(9)
                mgr.destroy()
        except Exception as e:  # keep the original error; say what is left
            log.warn(f"cleanup of cgroup failed: {e}")
    remove_host_mounts(data)
    c.sd.remove()

# -- start / run ------------------------------------------------------------


def _now_rfc3339() -> str:
    import time
    t = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + f".{t % 10**9:09d}Z"


_SCHED_PROCESS = ("ioPriority", "scheduler", "execCPUAffinity")
_SCHED_LINUX = ("personality", "memoryPolicy")


def prepare_security(plan, cfg: dict, root: str) -> None:
    """Parse capabilities, compile seccomp, check LSMs and the scheduling
    extras before the fork, and load what the init will need after
    pivot_root."""
    proc = cfg["process"]
    if any(proc.get(f) is not None for f in _SCHED_PROCESS) or \
            any(plan.linux.get(f) is not None for f in _SCHED_LINUX):
        from ocirun.linux import sched
        sched.validate(proc, plan.linux)
        plan.process.sched = plan.linux
    # no capabilities object means no capabilities at all (as runc)
    from ocirun.linux import caps
    plan.process.caps = caps.parse(proc.get("capabilities"), "process.capabilities",
                                   warn=log.warn)
    from ocirun.kernel import capability  # noqa: F401  (the init uses it after pivot_root)
    sc = plan.linux.get("seccomp")
    if sc is not None:
        _prepare_seccomp(plan, sc, root)
    if proc.get("apparmorProfile") or proc.get("selinuxLabel") or plan.linux.get("mountLabel"):
        from ocirun.linux import lsm
        lsm.check(proc, plan.linux)


def _prepare_seccomp(plan, sc: dict, root: str) -> None:
    from ocirun.linux import seccomp
    plan.process.seccomp = seccomp.compile(sc, "linux.seccomp",
                                           cache_dir=os.path.join(root, ".cache", "seccomp"))
    from ocirun.kernel import seccomp as _kseccomp  # noqa: F401  (loaded before the fork)


def _socket_activation(cfg: dict) -> None:
    """systemd socket activation passes through, as in runc: when the
    caller's LISTEN_PID is our pid, its LISTEN_FDS fds (3..3+N-1) go to the
    process, whose env says LISTEN_FDS=N, LISTEN_PID=1; launch.exec_process
    keeps them open, before the --preserve-fds ones."""
    n = os.getenv("LISTEN_FDS", "")
    if not n.isdigit() or int(n) == 0 or os.getenv("LISTEN_PID") != str(os.getpid()):
        return
    _set_listen_env(cfg, int(n))


def _set_listen_env(cfg: dict, n: int) -> None:
    proc = cfg.get("process")
    if not isinstance(proc, dict):
        return
    env = [e for e in proc.get("env") or [] if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
    proc["env"] = env + [f"LISTEN_FDS={n}", "LISTEN_PID=1"]


def _new_cgroup_manager(linux: dict, cid: str, opts: CreateOptions, rootless: bool,
                        layout=None):
    if opts.cgroup_manager == "disabled":
        return None
    from ocirun import cgroups
    systemd = opts.systemd_cgroup or opts.cgroup_manager == "systemd"
    if opts.rootless is not None:
        rootless = opts.rootless
    elif systemd:  # the caller's own systemd instance: the user's when not root
        rootless = os.geteuid() != 0  # (a user namespace in the config does not matter)
    else:
        rootless = rootless or os.geteuid() != 0
    mgr = cgroups.new_manager(linux.get("cgroupsPath"), cid, systemd=systemd,
                              rootless=rootless, layout=layout)
    mgr.auto_rootless = opts.rootless is None and not systemd
    mgr.on_warning = log.warn
    return mgr


def _resources_with_default_devices(resources: dict | None) -> dict:
    """The config's device rules, then the devices every container may use
    (null, zero, tty, ptys ...), as runc appends them."""
    from ocirun import cgroups
    res = dict(resources or {})
    res["devices"] = list(res.get("devices") or []) + cgroups.default_device_rules()
    return res


def start_prewarm() -> int:
    """Pay the cgroup migration fence in a short-lived child process, while
    this one parses the config and the init sets up (see
    cgroups.prewarm_migration). A process, not a thread: the raw clone()
    of the init must not happen in a multi-threaded process."""
    try:
        pid = os.fork()
    except OSError:
        return 0
    if pid == 0:
        try:
            from ocirun import cgroups
            cgroups.prewarm_migration()
        finally:
            os._exit(0)
    return pid


def reap_prewarm(pid: int) -> None:
    if pid:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _fence_ahead(layout, opts: CreateOptions) -> bool:
    """Will a cgroup.procs write by pid (and its RCU fence) be needed? Only
    for cgroup v2 and systemd; v1 and hybrid hosts join without one."""
    return layout.mode == "v2" or opts.systemd_cgroup or opts.cgroup_manager == "systemd"


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        wait_gone(pid)
