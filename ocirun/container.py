"""The container lifecycle (runtime.md): create, start, run, kill, delete,
state, list. This is the library API; cli.py is a thin shell over it.

create forks the init with one clone() (see linux/namespaces.py), serves
its requests over the sync socket (id maps, cgroup join, runtime hooks,
state), and returns once the init says "created"; anything that fails on
the way is undone: process, cgroup, state dir.
"""
import os

from ocirun import log
from ocirun.errors import ContainerNotFound, OciError, StateError
from ocirun import OCI_VERSION
from ocirun.statedir import (StateDir, default_root, is_init, list_ids, proc_mnt_ns,
                             proc_start_time, write_pid_file)


def cgroup_manager(data: dict):
    """Rebuild the cgroup manager saved in a container's state, if any."""
    cg = data.get("cgroup")
    if not cg:
        return None
    from ocirun import cgroups
    return cgroups.manager_from_state(cg)


def _guess_cgroup_manager(cid: str):
    """The default cgroup of `cid`, for a state.json that can no longer be
    read: the best guess at what create made, used only by delete."""
    from ocirun import cgroups
    try:
        mgr = cgroups.new_manager(None, cid, rootless=os.geteuid() != 0)
        return mgr if mgr.exists() else None
    except Exception:
        return None


def _now_rfc3339() -> str:
    import time
    t = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + f".{t % 10**9:09d}Z"


def oci_state(data: dict, status: str) -> dict:
    """The spec's state object plus what runc adds (rootfs, created, owner)."""
    st = {"ociVersion": OCI_VERSION, "id": data["id"],
          "pid": data.get("pid", 0) if status != "stopped" else 0,
          "status": status, "bundle": data.get("bundle", ""),
          "rootfs": data.get("rootfs", ""), "created": data.get("created", ""),
          "owner": data.get("owner", "")}
    if data.get("annotations"):
        st["annotations"] = data["annotations"]
    return st


class CreateOptions:
    """Options of create/run beyond the bundle (runc's flags)."""

    __slots__ = ("config", "pid_file", "console_socket", "no_pivot", "no_new_keyring",
                 "preserve_fds", "systemd_cgroup", "cgroup_manager")

    def __init__(self, config: str | None = None, pid_file: str | None = None,
                 console_socket: str | None = None, no_pivot: bool = False,
                 no_new_keyring: bool = False, preserve_fds: int = 0,
                 systemd_cgroup: bool = False, cgroup_manager: str | None = None) -> None:
        self.config = config
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.systemd_cgroup = systemd_cgroup
        self.cgroup_manager = cgroup_manager


class Container:
    """A handle on one container in a state root."""

    def __init__(self, cid: str, root: str | None = None) -> None:
        self.root = root or default_root()
        self.sd = StateDir(self.root, cid)
        self.id = cid
        self.pid = 0
        self._sync = None
        self._mgr = None
        self._console = -1

    # -- queries --------------------------------------------------------------
    def _data(self) -> dict:
        if not self.sd.exists():
            raise ContainerNotFound(self.id)
        data = self.sd.load()
        if data is None:
            return {"id": self.id, "pid": 0}
        return data

    def status(self) -> str:
        if not self.sd.exists():
            raise ContainerNotFound(self.id)
        return self.sd.status()

    def state(self) -> dict:
        data = self._data()
        return oci_state(data, self.sd.status())

    # -- create -----------------------------------------------------------------
    @classmethod
    def create(cls, cid: str, bundle: str = ".", root: str | None = None,
               opts: CreateOptions | None = None, _foreground: bool = False) -> "Container":
        opts = opts or CreateOptions()
        c = cls(cid, root)
        layout = None
        prewarm = 0
        if opts.cgroup_manager != "disabled" and os.geteuid() == 0:
            from ocirun import cgroups
            layout = cgroups.detect()
            if _fence_ahead(layout, opts):
                prewarm = _start_prewarm()
        try:
            return cls._create(c, bundle, opts, _foreground, layout)
        finally:
            _reap_prewarm(prewarm)

    @classmethod
    def _create(cls, c: "Container", bundle: str, opts: CreateOptions,
                _foreground: bool, layout=None) -> "Container":
        from ocirun import plan as planmod, spec
        from ocirun.linux import namespaces
        cid = c.id
        bundle = os.path.abspath(bundle)
        cfg = spec.load(bundle, opts.config)
        _socket_activation(cfg)
        plan = planmod.build(cfg, bundle, no_pivot=opts.no_pivot,
                             no_new_keyring=opts.no_new_keyring,
                             preserve_fds=opts.preserve_fds, wait_fifo=not _foreground)
        namespaces.check_paths(plan.ns, plan.linux.get("namespaces") or [])
        planmod.check_hook_paths(plan.hooks)
        _prepare_security(plan, cfg, c.root)
        if plan.net_devices:
            from ocirun.linux import netdev
            netdev.check_host(plan.net_devices)
        if plan.process.terminal or opts.console_socket:
            from ocirun.linux import terminal
            terminal.check_terminal_args(plan.process.terminal, opts.console_socket,
                                         detach=not _foreground)
            if opts.console_socket:
                terminal.check_console_socket(opts.console_socket)
        mgr = _new_cgroup_manager(plan.linux, cid, opts, plan.ns.new_user, layout)
        c.sd.make()
        data = {"id": cid, "pid": 0, "status": "creating", "bundle": bundle, "rootfs": plan.rootfs,
                "created": _now_rfc3339(), "owner": "" if os.geteuid() == 0 else str(os.geteuid()),
                "annotations": cfg.get("annotations") or {}, "hooks": plan.hooks,
                "config": cfg,
                "cgroup": mgr.to_state() if mgr is not None else None}
        if not plan.has_mount_ns:
            # its mounts land in our namespace, under the rootfs: remember
            # what was there, so that delete (or a failed create) removes
            # exactly what the container added
            from ocirun.linux import mounts
            data["host_mounts"] = {"root": plan.rootfs,
                                   "before": sorted(mounts.ids_under(plan.rootfs))}
        pid = 0
        try:
            c.sd.save(data)
            if plan.wait_fifo:
                os.mkfifo(c.sd.fifo)
                os.chmod(c.sd.fifo, 0o622)  # the init opens it as the container user
            if opts.console_socket:
                from ocirun.linux import terminal
                plan.console_fd = terminal.connect_console(opts.console_socket)
            pid = c._spawn_and_serve(plan, data, mgr, opts)
        except BaseException:
            c._undo_create(pid, mgr)
            raise
        finally:
            if plan.console_fd >= 0:
                os.close(plan.console_fd)
        c.pid = pid
        c._mgr = mgr
        c.sd.unlock()
        return c

    def _spawn_and_serve(self, plan, data: dict, mgr, opts: CreateOptions) -> int:
        from ocirun.sync import Sync
        join = resources = None
        if mgr is not None:
            # built before the fork: the parent's writes after it copy pages
            resources = _resources_with_default_devices(plan.linux.get("resources"))
            # before the clone: the init can then enter it by itself (SelfJoin)
            mgr.create()
            join = mgr.self_join()
        plan.cgroup_join = join
        try:
            parent, child = Sync.pair()
            dirfd = os.open(self.sd.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                pid = _spawn(plan, child, parent, dirfd, self.sd)
            except BaseException:
                parent.close()
                raise
            finally:
                child.close()
                os.close(dirfd)
        finally:
            if join is not None:
                join.close()  # the init has its own copies
        self._sync = parent
        data["pid"] = pid
        try:
            if mgr is not None:  # while the init sets up its mounts
                mgr.apply(resources)
            pid = self._serve(plan, data, mgr, pid)
            data["pid"] = pid
            data["start_time"] = proc_start_time(pid)
            if plan.has_mount_ns:
                data["mnt_ns"] = proc_mnt_ns(pid)  # with start_time: pid reuse is caught
            data.pop("status", None)
            self.sd.save(data)
            if opts.pid_file:
                write_pid_file(os.path.abspath(opts.pid_file), pid)
            parent.send("ok")
        except BaseException:
            parent.close()
            self._sync = None
            raise
        if plan.wait_fifo:
            parent.close()
            self._sync = None
        return pid

    def _serve(self, plan, data: dict, mgr, pid: int) -> int:
        """Answer the init's requests until it says "created"."""
        from ocirun.sync import PeerGone
        try:
            return self._serve_requests(plan, data, mgr, pid)
        except PeerGone:  # it died between two messages
            raise OciError(_death_reason(data["pid"])) from None

    def _serve_requests(self, plan, data: dict, mgr, pid: int) -> int:
        sync = self._sync
        while True:
            verb, payload, fds = sync.recv()
            if verb == "created":
                return pid
            if verb == "maps":
                from ocirun.linux.namespaces import write_id_maps
                write_id_maps(pid, plan.uid_maps, plan.gid_maps)
            elif verb == "pid":  # slow path: the real init is a second child
                middle, pid = pid, int(payload)
                os.waitpid(middle, 0)
                data["pid"] = pid
                continue  # no reply: the middle child is gone
            elif verb == "netns":  # its network namespace, for linux.netDevices
                from ocirun.linux import netdev
                try:
                    netdev.move_all(plan.net_devices, fds[0])
                finally:
                    for fd in fds:
                        os.close(fd)
            elif verb == "join":
                if mgr is not None:  # what the init does not enter by itself
                    mgr.add_pid(pid, skip=plan.cgroup_join.done if plan.cgroup_join else ())
            elif verb == "hooks":
                from ocirun.hooks import run_hooks
                st = oci_state(data, "creating")
                run_hooks(plan.hooks.get("prestart"), "prestart", st)
                run_hooks(plan.hooks.get("createRuntime"), "createRuntime", st)
            elif verb == "state":
                from ocirun.jsonutil import dumps
                sync.send("ok", dumps(oci_state(data, "creating")))
                continue
            elif verb == "console":  # foreground run with a terminal: we proxy it
                self._console = fds[0]
                from ocirun.linux import terminal
                terminal.copy_size(0, self._console)
            elif verb == "seccomp":
                from ocirun.linux import seccomp
                try:
                    seccomp.send_listener(plan.linux["seccomp"]["listenerPath"], fds[0],
                                          oci_state(data, "creating"),
                                          plan.linux["seccomp"].get("listenerMetadata", ""))
                finally:
                    for fd in fds:
                        os.close(fd)
            elif verb == "error":
                raise OciError(payload.decode(errors="replace"))
            elif verb == "":
                raise OciError(_death_reason(pid))
            else:
                raise OciError(f"internal: unexpected message {verb!r} from the container init")
            sync.send("ok")

    def _undo_create(self, pid: int, mgr) -> None:
        """Remove everything a failed create made (process, cgroup, state)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        data = self.sd.load() or {}
        pid = pid or data.get("pid", 0)
        if pid:
            _kill_and_reap(pid)
        if mgr is not None:
            try:
                mgr.kill_all(9)
                mgr.destroy()
            except Exception as e:  # keep the original error; say what is left
                log.warn(f"cleanup of cgroup failed: {e}")
        _remove_host_mounts(data)
        self.sd.remove()

    # -- start / run ------------------------------------------------------------
    def start(self) -> None:
        self.sd.lock()
        try:
            self._start()
        finally:
            self.sd.unlock()

    def _start(self) -> None:
        data = self._data()
        st = self.sd.status()
        if st != "created":
            raise StateError(f"cannot start a container that is {st}" if st != "stopped"
                             else "cannot start a container that has stopped")
        _release_init(self.sd.fifo, data["pid"])
        _warn_hooks(data, "poststart", "running")

    def run_foreground(self) -> int:
        """For `run`: release the init, forward signals (or proxy the
        terminal), wait for the exit status, clean up."""
        from ocirun.linux.foreground import forward_signals
        from ocirun.sync import PeerGone
        data = self._data()
        pid = self.pid
        sync = self._sync
        try:
            with forward_signals(pid) as fw:
                try:
                    sync.send("go")
                    verb, payload, _ = sync.recv()
                except PeerGone:  # it died: wait() reports how
                    verb, payload = "", b""
                sync.close()
                self._sync = None
                if verb == "error":
                    raise OciError(payload.decode(errors="replace"))
                _warn_hooks(data, "poststart", "running")
                if self._console >= 0:
                    from ocirun.linux import terminal
                    return terminal.proxy(self._console, pid)
                return fw.wait()
        finally:
            if self._console >= 0:
                os.close(self._console)
                self._console = -1
            self.delete(force=True)

    # -- kill / delete ------------------------------------------------------------
    def kill(self, sig: int = 15, all_processes: bool = False) -> None:
        data = self._data()
        st = self.sd.status()
        if st == "stopped" or st == "creating":
            raise StateError("container not running")
        if all_processes:
            mgr = cgroup_manager(data)
            if mgr is not None:
                mgr.kill_all(sig)
                return
        _signal_pid(data["pid"], data, sig)
        if sig == 9 and st == "paused":
            # a frozen v1 task acts on SIGKILL only once thawed (runc thaws too)
            mgr = cgroup_manager(data)
            if mgr is not None:
                mgr.thaw()

    def delete(self, force: bool = False) -> None:
        if not self.sd.exists():
            if force:
                return  # runc: delete --force of a missing container succeeds
            raise ContainerNotFound(self.id)
        self.sd.lock()
        try:
            self._delete(force)
        finally:
            self.sd.unlock()

    def _delete(self, force: bool) -> None:
        loaded = self.sd.load()
        data = loaded or {"id": self.id, "pid": 0}
        st = self.sd.status()
        if st in ("running", "paused") and not force:
            raise StateError(f"cannot delete container {self.id} that is not stopped: {st}")
        mgr = cgroup_manager(data) if loaded is not None else _guess_cgroup_manager(self.id)
        if st != "stopped" or (mgr is not None and mgr.pids()):
            if st == "paused" and mgr is not None:
                mgr.thaw()
            pid = data.get("pid", 0)
            if pid and st != "stopped":
                _signal_pid(pid, data, 9, missing_ok=True)
                _wait_gone(pid)
            if mgr is not None:
                mgr.kill_all(9)
        if mgr is not None:
            try:
                mgr.destroy()
            except Exception as e:
                raise OciError(f"cannot remove cgroup of {self.id}: {e}") from None
        _remove_host_mounts(data)
        _warn_hooks(data, "poststop", "stopped")
        self.sd.remove()


# --- helpers (parent side) -----------------------------------------------------
def _remove_host_mounts(data: dict) -> None:
    """A container without a mount namespace mounted in ours: undo that."""
    hm = data.get("host_mounts")
    if hm:
        from ocirun.linux import mounts
        mounts.detach_new_under(hm["root"], hm["before"])


def _warn_hooks(data: dict, kind: str, status: str) -> None:
    """poststart/poststop: failures are warnings (hooks.py loaded only if needed)."""
    hooks = (data.get("hooks") or {}).get(kind)
    if hooks:
        from ocirun.hooks import run_hooks_warn
        run_hooks_warn(hooks, kind, oci_state(data, status), log.warn)


_SCHED_PROCESS = ("ioPriority", "scheduler", "execCPUAffinity")
_SCHED_LINUX = ("personality", "memoryPolicy")


def _prepare_security(plan, cfg: dict, root: str) -> None:
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
        from ocirun.linux import seccomp
        plan.process.seccomp = seccomp.compile(sc, "linux.seccomp",
                                               cache_dir=os.path.join(root, ".cache", "seccomp"))
        from ocirun.kernel import seccomp as _kseccomp  # noqa: F401  (loaded before the fork)
    if proc.get("apparmorProfile") or proc.get("selinuxLabel") or plan.linux.get("mountLabel"):
        from ocirun.linux import lsm
        lsm.check(proc, plan.linux)


def _socket_activation(cfg: dict) -> None:
    """systemd socket activation passes through, as in runc: when the
    caller's LISTEN_PID is our pid, its LISTEN_FDS fds (3..3+N-1) go to the
    process, whose env says LISTEN_FDS=N, LISTEN_PID=1; launch.exec_process
    keeps them open, before the --preserve-fds ones."""
    n = os.environ.get("LISTEN_FDS", "")
    if not n.isdigit() or int(n) == 0 or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return
    proc = cfg.get("process")
    if not isinstance(proc, dict):
        return
    env = [e for e in proc.get("env") or [] if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
    proc["env"] = env + [f"LISTEN_FDS={int(n)}", "LISTEN_PID=1"]


def _new_cgroup_manager(linux: dict, cid: str, opts: CreateOptions, rootless: bool,
                        layout=None):
    if opts.cgroup_manager == "disabled":
        return None
    from ocirun import cgroups
    systemd = opts.systemd_cgroup or opts.cgroup_manager == "systemd"
    mgr = cgroups.new_manager(linux.get("cgroupsPath"), cid, systemd=systemd,
                              rootless=rootless or os.geteuid() != 0, layout=layout)
    mgr.on_warning = log.warn
    return mgr


def _resources_with_default_devices(resources: dict | None) -> dict:
    """The config's device rules, then the devices every container may use
    (null, zero, tty, ptys ...), as runc appends them."""
    from ocirun import cgroups
    res = dict(resources or {})
    res["devices"] = list(res.get("devices") or []) + cgroups.default_device_rules()
    return res


def _start_prewarm() -> int:
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


def _reap_prewarm(pid: int) -> None:
    if pid:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _spawn(plan, child_sync, parent_sync, state_dirfd: int, sd: StateDir) -> int:
    """clone() the init with the planned namespaces; returns its pid."""
    from ocirun import init  # noqa: F401  (its imports must happen before the fork)
    if plan.hooks.get("createContainer") or plan.hooks.get("startContainer"):
        from ocirun import hooks  # noqa: F401  (run by the init after pivot_root)
    from ocirun.kernel import syscalls as k
    from ocirun.linux import namespaces as nsmod
    ns = plan.ns
    restore: list[tuple[int, int]] = []
    try:
        if ns.parent_pid_path:
            restore.append((os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC),
                            k.CLONE_NEWPID))
            nsmod.join(ns.parent_pid_path, "pid")
        if ns.parent_time_path or ns.new_time_in_parent:
            restore.append((os.open("/proc/self/ns/time", os.O_RDONLY | os.O_CLOEXEC),
                            k.CLONE_NEWTIME))
            if ns.parent_time_path:
                nsmod.join(ns.parent_time_path, "time")
            else:
                k.unshare(k.CLONE_NEWTIME)
                if plan.time_offsets:
                    nsmod.write_time_offsets(plan.time_offsets)
        import gc
        gc.freeze()  # keep the child's copy-on-write pages few
        pid = _clone(ns.clone_flags, plan.cgroup_join)
    except BaseException:
        _restore_ns(restore)
        raise
    if pid == 0:
        parent_sync.close()
        sd.unlock()
        from ocirun.init import child_main
        child_main(plan, child_sync, state_dirfd)
    _restore_ns(restore)
    return pid


def _clone(flags: int, join) -> int:
    """clone(), straight into the cgroup2 part of the container's cgroup when
    the manager offers it (see cgroups.manager.SelfJoin)."""
    from ocirun.kernel import syscalls as k
    if join is not None and join.into_fd >= 0:
        try:
            return k.clone_into_cgroup(flags, join.into_fd)
        except OSError:
            join.clone_failed()  # old kernel: the parent writes the pid instead
    return k.clone(flags)


def _fence_ahead(layout, opts: CreateOptions) -> bool:
    """Will a cgroup.procs write by pid (and its RCU fence) be needed? Only
    for cgroup v2 and systemd; v1 and hybrid hosts join without one."""
    return layout.mode == "v2" or opts.systemd_cgroup or opts.cgroup_manager == "systemd"


def _restore_ns(restore: list[tuple[int, int]]) -> None:
    from ocirun.kernel import syscalls as k
    for fd, t in restore:
        try:
            k.setns(fd, t)
        finally:
            os.close(fd)


def _death_reason(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "container init exited unexpectedly"
    if os.WIFSIGNALED(status):
        return f"container init was killed by signal {os.WTERMSIG(status)} during create"
    return f"container init exited with status {os.WEXITSTATUS(status)} during create"


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        _wait_gone(pid)


def _signal_pid(pid: int, data: dict, sig: int, missing_ok: bool = False) -> None:
    """Signal the init through a pidfd, after checking it is still our process."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        if missing_ok:
            return
        raise StateError("container not running") from None
    try:
        if data.get("start_time") is not None and not is_init(pid, data):
            if missing_ok:
                return
            raise StateError("container not running")
        import _signal
        _signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        if not missing_ok:
            raise StateError("container not running") from None
    finally:
        os.close(pidfd)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    import select
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def _release_init(fifo: str, pid: int) -> None:
    """Open the exec fifo for reading: the init's blocked open returns, it
    writes "0", execs, and its end closes at execve (EOF here). The pidfd is
    taken first: engines reap a process that exits at once, and a process
    that ran and exited has still been started."""
    import select
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise StateError("cannot start a container that has stopped") from None
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(pidfd)
        raise StateError("cannot start a container that has already been started") from None
    buf = b""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        # (a fifo reports POLLHUP only once a writer has come and gone since
        # our open, so this sleeps until the init writes or exits)
        done = False
        while not done:
            events = dict(poller.poll())
            if pidfd in events:
                done = True  # the init is gone: take what it wrote, then stop
            while True:
                try:
                    chunk = os.read(fd, 4096)
                except BlockingIOError:
                    break
                if not chunk:
                    if buf:
                        done = True  # EOF after "0": its end closed at execve
                    break
                buf += chunk
    finally:
        os.close(fd)
        os.close(pidfd)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
    if not buf:
        raise OciError("container init exited before start")
    if buf[1:].startswith(b"error "):
        raise OciError(buf[7:].decode(errors="replace"))


# --- module-level API -------------------------------------------------------------
def create(cid: str, bundle: str = ".", root: str | None = None,
           opts: CreateOptions | None = None) -> Container:
    """Create a container and leave its init waiting for start."""
    return Container.create(cid, bundle, root, opts)


def start(cid: str, root: str | None = None) -> None:
    Container(cid, root).start()


def run(cid: str, bundle: str = ".", root: str | None = None,
        opts: CreateOptions | None = None, detach: bool = False) -> int:
    """create + start (+ wait and delete unless detached); returns the exit status."""
    if detach:
        c = Container.create(cid, bundle, root, opts)
        try:
            c.start()
        except BaseException:
            c.delete(force=True)
            raise
        return 0
    c = Container.create(cid, bundle, root, opts, _foreground=True)
    return c.run_foreground()


def kill(cid: str, sig: int = 15, root: str | None = None, all_processes: bool = False) -> None:
    Container(cid, root).kill(sig, all_processes)


def delete(cid: str, root: str | None = None, force: bool = False) -> None:
    Container(cid, root).delete(force)


def state(cid: str, root: str | None = None) -> dict:
    return Container(cid, root).state()


def list_containers(root: str | None = None) -> list[dict]:
    root = root or default_root()
    out = []
    for cid in list_ids(root):
        try:
            out.append(Container(cid, root).state())
        except OciError:
            continue
    return out
