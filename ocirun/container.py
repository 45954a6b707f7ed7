"""The container lifecycle (runtime.md): create, start, run, kill, delete,
state, list. This is the library API; cli.py is a thin shell over it.

A Container is a handle on <root>/<id>. The create sequence itself lives in
creation.py, so that start, kill, delete and state (one short process per
engine call) load none of it.
"""
from ocirun import oslite as os

from ocirun import log
from ocirun.errors import ContainerNotFound, OciError, StateError
from ocirun import OCI_VERSION
from ocirun.statedir import StateDir, default_root, init_waits, is_init, list_ids

_SILENT_MS = 200  # see _release_init


def cgroup_manager(data: dict):
    """Rebuild the cgroup manager saved in a container's state, if any."""
    cg = data.get("cgroup")
    if not cg:
        return None
    from ocirun import cgroups
    try:
        return cgroups.manager_from_state(cg)
    except (KeyError, TypeError, AttributeError, ValueError):
        cid = data.get("id")
        raise OciError(f"{'container ' + cid + ': ' if isinstance(cid, str) else ''}state.json "
                       "is damaged: its cgroup record is unusable") from None


def _remove_empty_cgroup(cg: dict | None) -> bool:
    """rmdir the cgroupfs directories a state names; True when none is left.
    False (and the cgroup manager's destroy() then does the rest: kill what
    is inside, sub-cgroups, its errors) at the first one the kernel refuses,
    or for a driver that is more than directories (systemd)."""
    if not cg or cg.get("driver") != "cgroupfs":
        return not cg
    dirs = list(cg["paths"].values()) if cg.get("paths") is not None else [cg.get("dir")]
    for d in dirs:
        if not d:
            return False
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:  # EBUSY: processes inside; ENOTEMPTY: sub-cgroups
            return False
    return True


def _guess_cgroup_manager(cid: str):
    """The default cgroup of `cid`, for a state.json that can no longer be
    read: the best guess at what create made, used only by delete."""
    from ocirun import cgroups
    try:
        mgr = cgroups.new_manager(None, cid, rootless=os.geteuid() != 0)
        return mgr if mgr.exists() else None
    except Exception:
        return None


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
                 "preserve_fds", "systemd_cgroup", "cgroup_manager", "notify_socket", "rootless")

    def __init__(self, config: str | None = None, pid_file: str | None = None,
                 console_socket: str | None = None, no_pivot: bool = False,
                 no_new_keyring: bool = False, preserve_fds: int = 0,
                 systemd_cgroup: bool = False, cgroup_manager: str | None = None,
                 notify_socket: str | None = None, rootless: bool | None = None) -> None:
        """notify_socket: the host's NOTIFY_SOCKET, relayed (see ocirun.notify).
        rootless: go without cgroups the caller may not make (True), never
        (False), or None: when not root, or uid 0 in a user namespace (runc's
        `--rootless auto`)."""
        self.config = config
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.systemd_cgroup = systemd_cgroup
        self.cgroup_manager = cgroup_manager
        self.notify_socket = notify_socket
        self.rootless = rootless


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
        self._created: dict | None = None  # create's state data, for run_foreground
        # a foreground create released the init already ("go"), with our
        # signal mask before it blocked the ones run_foreground forwards
        self._go_mask: set | None = None
        # a `run` whose process exits right after (the CLI): its init may
        # share our memory (see creation._vfork_fits)
        self._then_exit = False
        self._notify = None  # a foreground run's notify.Relay

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

    # -- create (the sequence is in create.py) ------------------------------------
    @classmethod
    def create(cls, cid: str, bundle: str = ".", root: str | None = None,
               opts: "CreateOptions | None" = None, _foreground: bool = False,
               _then_exit: bool = False) -> "Container":
        """Create the container and return its handle; the init waits for start."""
        from ocirun.creation import create
        c = cls(cid, root)
        c._then_exit = _then_exit
        return create(c, bundle, opts or CreateOptions(), _foreground)

    def start(self, notify_socket: str | None = None) -> None:
        """notify_socket: the host's NOTIFY_SOCKET; return once the process
        has said READY (or its init has exited), relayed (ocirun.notify)."""
        relay = None
        try:
            self.sd.lock()
            try:
                relay = self._start(notify_socket)
            finally:
                self.sd.unlock()
            if relay is not None:  # (unlocked: READY may take the app a while)
                relay.relay(self.pid, self.pid)
        finally:
            if relay is not None:
                relay.close()

    def _start(self, notify_socket: str | None = None):
        """Release the init; a notify.Relay when there is READY to relay."""
        data = self._data()
        st = self.sd.status(exact=False)
        if st != "created":
            raise StateError(f"cannot start a container that is {st}" if st != "stopped"
                             else "cannot start a container that has stopped")
        self.pid = data["pid"]
        relay = None
        if notify_socket:
            from ocirun import notify
            if os.path.isdir(notify.socket_dir(self.sd.path)):  # (made by a create told so)
                relay = notify.Relay(self.sd.path, notify_socket)
        hooks = data.get("hooks") or {}
        # startContainer runs between the fifo and execve, and poststart must
        # follow the execve: only then is there something to wait for
        try:
            _release_init(self.sd, data["pid"],
                          until_exec=bool(hooks.get("startContainer") or hooks.get("poststart")))
        except BaseException:
            if relay is not None:
                relay.close()
            raise
        _warn_hooks(data, "poststart", "running")
        return relay

    def run_foreground(self, then_exit: bool = False, keep: bool = False) -> int:
        """For `run`: release the init, forward signals (or proxy the
        terminal), wait for the exit status, clean up (keep: leave the
        stopped container, its state and cgroup, for `delete`, as runc's
        --keep). then_exit: the caller exits right after (the CLI), so our
        signal handlers need not be put back (see forward_signals)."""
        from ocirun.linux.foreground import forward_signals
        data = self._created or self._data()  # (create's own copy: no re-read)
        pid = self.pid
        sync = self._sync
        try:
            with forward_signals(pid, restore=not then_exit) as fw:
                if self._go_mask is None:
                    sync.send("go")
                else:  # what arrived since "go" is forwarded now
                    self._unblock_signals()
                if sync is not None:  # (None: a vforked init, exec'd already)
                    self._wait_exec(sync)
                _warn_hooks(data, "poststart", "running")
                if self._console >= 0 or self._notify is not None:
                    return self._wait_in_front(pid, fw)
                return fw.wait()
        finally:
            self._unblock_signals()
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            if self._console >= 0:
                os.close(self._console)
                self._console = -1
            if not keep:
                self.delete(force=True)

    def _wait_exec(self, sync) -> None:
        """A forked init answers "go" by exec'ing (EOF) or with its error."""
        from ocirun.errors import PeerGone
        verb, payload = "", b""
        try:
            verb, payload, _ = sync.recv()
        except PeerGone:  # it died: wait() reports how
            pass
        sync.close()
        self._sync = None
        if verb == "error":
            raise OciError(payload.decode(errors="replace"))

    def _wait_in_front(self, pid: int, fw) -> int:
        """Proxy the terminal or relay READY until the process exits: READY
        goes to the host with our pid as MAINPID, so we stay in front of
        the process (as runc does)."""
        if self._console >= 0:
            from ocirun.linux import terminal
            watch = self._notify.watch(os.getpid()) if self._notify else None
            return terminal.proxy(self._console, pid, watch=watch)
        self._notify.relay(pid, os.getpid())
        return fw.wait()

    def _unblock_signals(self) -> None:
        """Undo the blocking of the forwarded signals by a foreground create
        (see creation._block_forwarded)."""
        if self._go_mask is not None:
            import _signal
            _signal.pthread_sigmask(_signal.SIG_SETMASK, self._go_mask)
            self._go_mask = None

    # -- kill / delete ------------------------------------------------------------
    def kill(self, sig: int = 15, all_processes: bool = False) -> None:
        data = self._data()
        st = self.sd.status()
        if st == "stopped" and all_processes:
            # runc: --all of a stopped container signals what is left in its
            # cgroup (a stopped init's orphans, if any) and succeeds
            mgr = cgroup_manager(data)
            if mgr is not None:
                mgr.kill_all(sig)
            return
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
        if not self._then_exit:  # (a `run` of the CLI leaves it to `delete`)
            self.sd.sweep()

    def _delete(self, force: bool) -> None:
        loaded = self.sd.load()
        data = loaded or {"id": self.id, "pid": 0}
        st = self.sd.status()
        if st in ("running", "paused") and not force:
            raise StateError(f"cannot delete container {self.id} that is not stopped: {st}")
        # (the usual case, a stopped container with an empty cgroup, loads
        # no cgroup manager)
        if not (st == "stopped" and loaded is not None
                and _remove_empty_cgroup(data.get("cgroup"))):
            self._kill_and_remove_cgroup(data, st, loaded is not None)
        remove_host_mounts(data)
        _warn_hooks(data, "poststop", "stopped")
        self.sd.remove()

    def _kill_and_remove_cgroup(self, data: dict, st: str, loaded: bool) -> None:
        """A container still running (delete --force), a cgroup not empty,
        or a state.json that cannot be read (loaded: False)."""
        mgr = cgroup_manager(data) if loaded else _guess_cgroup_manager(self.id)
        # a cgroup that held others' processes at create (see check_existing):
        # with a pid namespace of its own, the init's death took ours along
        shared = mgr is not None and mgr.shared and _own_pid_ns(data)
        if st != "stopped":  # (what a stopped init left behind: mgr.destroy kills it)
            if st == "paused" and mgr is not None:
                mgr.thaw()
            pid = data.get("pid", 0)
            if pid and st != "stopped":
                _signal_pid(pid, data, 9, missing_ok=True)
                wait_gone(pid)
            if mgr is not None and not shared:
                mgr.kill_all(9)
        if shared:
            mgr.remove_if_empty()
        elif mgr is not None:
            try:
                mgr.destroy()
            except Exception as e:
                raise OciError(f"cannot remove cgroup of {self.id}: {e}") from None


# --- helpers (parent side) -----------------------------------------------------
def _own_pid_ns(data: dict) -> bool:
    """The container had a new pid namespace (True when the state does not say)."""
    cfg = data.get("config")
    if not cfg:
        return True
    return any(n.get("type") == "pid" and not n.get("path")
               for n in (cfg.get("linux") or {}).get("namespaces") or [])


def remove_host_mounts(data: dict) -> None:
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


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    import select
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def _release_init(sd, pid: int, until_exec: bool = False) -> None:
    """Open the exec fifo for reading: the init's blocked open returns, it
    writes "0" and execs. Like runc and crun, return once the "0" is read;
    with `until_exec`, wait until its end closes at execve (EOF here), so
    that what fails in between (startContainer hooks, execve) is reported.
    Without, such a failure goes to the process's stderr. The pidfd is
    taken first: engines reap a process that exits at once, and a process
    that ran and exited has still been started. An init that stays silent
    for a while is checked once: a fifo left by a start killed after the
    execve must not make us wait for ever (see statedir.init_waits)."""
    import select
    fifo = sd.fifo
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
        checked = False
        while not done:
            events = dict(poller.poll(-1 if checked or buf else _SILENT_MS))
            if not events and not checked and not buf:
                checked = True
                if not init_waits(pid, sd.path, fifo):
                    raise StateError("cannot start a container that is running")
                continue
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
                if not until_exec and buf[:1] == b"0":
                    done = True
                    break
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


def start(cid: str, root: str | None = None, notify_socket: str | None = None) -> None:
    Container(cid, root).start(notify_socket)


def run(cid: str, bundle: str = ".", root: str | None = None,
        opts: CreateOptions | None = None, detach: bool = False,
        then_exit: bool = False, keep: bool = False) -> int:
    """create + start (+ wait and delete unless detached, or kept); returns
    the exit status. then_exit, keep: see Container.run_foreground."""
    if detach:
        _run_detached(cid, bundle, root, opts)
        return 0
    c = Container.create(cid, bundle, root, opts, _foreground=True, _then_exit=then_exit)
    return c.run_foreground(then_exit, keep)


def _run_detached(cid: str, bundle: str, root: str | None,
                  opts: CreateOptions | None) -> None:
    """A start that fails deletes what create made."""
    c = Container.create(cid, bundle, root, opts)
    try:
        c.start(opts.notify_socket if opts is not None else None)
    except BaseException:
        c.delete(force=True)
        raise


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
