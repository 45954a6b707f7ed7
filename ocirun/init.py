"""What the container's init does, step by step, from clone() to execve().

Runs in the forked child. Every failure is sent to the parent as one line
("error <text>") and the child exits; the parent cleans up. Order:

 1. namespaces (slow path: join by path, unshare, maybe a second fork)
 2. user namespace: wait for the parent to write the id maps
 3. mount namespace: propagation, the rootfs bound onto itself
 4. mounts in order (cgroup mounts deferred), devices, /dev symlinks
 5. join the cgroup, prestart/createRuntime hooks (parent), createContainer hooks
 6. cgroup namespace and the deferred cgroup mounts (joining first only if
    they must show the cgroup we are in: not for binds of directories the
    runtime named, see cgroupfs.planned_binds)
 7. pivot_root (or MS_MOVE + chroot), sysctl, hostname, masked / read-only paths
 8. rlimits, oomScoreAdj, cwd, the executable looked up, user, capabilities,
    no_new_privs, seccomp (as late as possible)
 9. "created"; wait for start (exec fifo, or the sync socket for `run`)
10. startContainer hooks; close every fd but stdio (+ preserved); execve
The cgroup is joined as late as the config allows (step 5 only if hooks or a
cgroup mount need it, else just before "created"), so the pages this Python
process touches while setting up are not charged to the container.
"""
from __future__ import annotations

from ocirun import oslite as os

# Everything the init needs is imported here, before the fork: after
# pivot_root the runtime's own files are out of reach.
from ocirun.errors import OciError, PeerGone, os_error_line
from ocirun.kernel import syscalls as k
from ocirun.launch import NoParent, drop_privileges, exec_process, prepare_process, seal_fds
from ocirun.linux import cgroupfs, devices, mounts, namespaces as nsmod
TYPE_CHECKING = False
if TYPE_CHECKING:  # (the sync module is not loaded by a vforked init's path)
    from ocirun.sync import Sync


class Init:
    __slots__ = ("plan", "sync", "state_dirfd", "joined", "rootfd", "state", "fifo_fd")

    def __init__(self, plan, sync: Sync, state_dirfd: int) -> None:
        self.plan = plan
        self.sync = sync
        self.state_dirfd = state_dirfd
        self.joined = False
        self.rootfd = -1
        self.state: dict | None = None
        self.fifo_fd = -1

    # -- helpers ------------------------------------------------------------
    def ask(self, verb: str, payload: bytes | str = b"") -> bytes:
        self.sync.send(verb, payload)
        return self.sync.expect("ok")

    def fetch_join_fds(self) -> None:
        """The v1 `tasks` fds the runtime opened after the clone (SelfJoin.
        pending); recvmsg, so before the seccomp filter."""
        join = self.plan.cgroup_join
        if join is not None and join.pending:
            self.recv_join_fds(join)

    def recv_join_fds(self, join) -> None:
        """(Only for v1 directories made after the clone, see
        FsV1Manager.create_for_clone.)"""
        join.pending = False
        self.sync.send("cgroupfds")
        verb, payload, fds = self.sync.recv()
        if verb != "ok":
            for fd in fds:
                os.close(fd)
            raise OciError(payload.decode(errors="replace") if verb == "error" else
                           f"internal: {verb!r} instead of the cgroup fds")
        join.task_fds = fds

    def join_cgroup(self) -> None:
        if not self.joined:
            self.joined = True
            self.fetch_join_fds()
            self.ask("join")  # the parent has applied the resources
            if self.plan.cgroup_join is not None:
                self.plan.cgroup_join.enter()

    def send_netns(self) -> None:
        """The parent moves linux.netDevices into our network namespace."""
        fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.sync.send("netns", b"", [fd])
        finally:
            os.close(fd)
        self.sync.expect("ok")

    def get_state(self) -> dict:
        if self.state is None:
            from ocirun.jsonutil import loads
            self.state = loads(self.ask("state"))
        return self.state

    # -- the sequence -------------------------------------------------------
    def run(self):
        plan = self.plan
        proc = plan.process
        k.prctl(k.PR_SET_PDEATHSIG, 9)
        # nothing in the container may open our /proc/<pid>/exe or fds
        k.prctl(k.PR_SET_DUMPABLE, 0)
        self.setup_namespaces(k)
        if "network" in plan.ns.new:
            nsmod.loopback_up()
        if plan.net_devices:
            self.send_netns()
        self.setup_rootfs(k)
        if plan.runtime_hooks:
            self.join_cgroup()
            self.ask("hooks")
        if plan.hooks.get("createContainer"):
            os.chdir(plan.rootfs)  # their cwd, as runc's (its tests bind into ./lib)
            self.run_container_hooks("createContainer")
        if plan.ns.new_cgroup or (plan.mounts_later and plan.cgroup_binds is None):
            self.join_then_mount_cgroups(k)
        elif plan.mounts_later:
            # binds of the directories the runtime named: the join can wait
            self.fetch_join_fds()  # (sent once they all exist)
            self.mount_cgroups()
        self.enter_root(k)
        pty = self.setup_console() if proc.terminal else None
        self.finish_rootfs(k)
        if not plan.no_new_keyring:
            try:
                k.join_session_keyring(None)
            except OSError:
                pass  # keyrings may be unavailable (e.g. seccomp'd host); runc ignores too
        exe, env = prepare_process(proc)
        if pty is not None:
            from ocirun.linux import terminal
            terminal.make_controlling(pty.slave, uid=proc.uid)  # closes the slave fd
        else:
            os.setsid()
        # from here on a dead parent shows as EOF at the "created" handshake
        k.prctl(k.PR_SET_PDEATHSIG, 0)
        self.fetch_join_fds()
        seal_fds(env, plan.preserve_fds)
        drop_privileges(proc, self.sync)
        if plan.hooks.get("startContainer"):
            self.get_state()  # now: the sync socket is closed once started
        self.join_cgroup()
        self.sync.send("created")
        self.sync.expect("ok")
        self.wait_for_start()
        if plan.hooks.get("startContainer"):
            self.run_container_hooks("startContainer")
        exec_process(proc, exe, env)

    def run_container_hooks(self, kind: str) -> None:
        """createContainer / startContainer hooks run here, in the
        container's namespaces."""
        from ocirun.hooks import run_hooks  # loaded by the parent (see forkinit._spawn)
        # (runc's: createContainer runs while create is still going on)
        st = dict(self.get_state(), status="creating" if kind == "createContainer" else "created")
        run_hooks(self.plan.hooks[kind], kind, st)

    def setup_namespaces(self, k) -> None:
        ns = self.plan.ns
        if ns.slow:
            self.setup_namespaces_slow(k)
        else:
            if ns.new_user:
                self.ask_maps(k)
                self.become_root()
            if "mount" in ns.paths:
                nsmod.join(ns.paths["mount"], "mount")

    def setup_namespaces_slow(self, k) -> None:
        """A namespace joined by path, or a new time namespace in a new user
        namespace: clone() cannot make those, so they are joined and
        unshared here, in order."""
        ns = self.plan.ns
        if "user" in ns.paths:
            nsmod.join(ns.paths["user"], "user")
        for t in nsmod.JOIN_ORDER:
            if t != "user" and t in ns.paths and not (t == "mount"):
                nsmod.join(ns.paths[t], t)
        if ns.new_user:
            k.unshare(k.CLONE_NEWUSER)
            self.ask_maps(k)
            self.become_root()
        if ns.unshare_flags & ~k.CLONE_NEWUSER:
            k.unshare(ns.unshare_flags & ~k.CLONE_NEWUSER)
        if "mount" in ns.paths:
            nsmod.join(ns.paths["mount"], "mount")
        if ns.second_fork:
            self.second_fork(k)

    def second_fork(self, k) -> None:
        """Pid and time namespaces (new or joined) apply to children only:
        fork the process that becomes the container's init; this one exits."""
        ns = self.plan.ns
        pidflags = (k.CLONE_NEWPID if "pid" in ns.new else 0) | \
                   (k.CLONE_NEWTIME if "time" in ns.new else 0)
        if "pid" in ns.paths:
            nsmod.join(ns.paths["pid"], "pid")
        if "time" in ns.paths:
            nsmod.join(ns.paths["time"], "time")
        if pidflags & k.CLONE_NEWTIME:
            k.unshare(k.CLONE_NEWTIME)
            if self.plan.time_offsets:
                nsmod.write_time_offsets(self.plan.time_offsets)
            pidflags &= ~k.CLONE_NEWTIME
        nsmod.fork_into_namespaces(lambda pid: self.sync.send("pid", str(pid)), pidflags)

    def ask_maps(self, k) -> None:
        """The parent (or newuidmap, which checks /proc/<pid> belongs to its
        caller) writes our id maps: we must be dumpable for that moment.
        Nothing else is in our new namespaces yet."""
        k.prctl(k.PR_SET_DUMPABLE, 1)
        try:
            self.ask("maps")
        finally:
            k.prctl(k.PR_SET_DUMPABLE, 0)

    def become_root(self) -> None:
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            pass  # root is not mapped: keep the ids we have

    def setup_rootfs(self, k) -> None:
        plan = self.plan
        if plan.has_mount_ns:  # (without one, these would change the host's mounts)
            prop = plan.propagation
            if prop and prop & k.MS_SHARED:
                self.share_root(k, prop)
            else:
                k.mount(None, "/", None, k.MS_REC | (k.MS_PRIVATE if prop and prop & k.MS_PRIVATE
                                                      else k.MS_SLAVE))
            try:
                k.mount(plan.rootfs, plan.rootfs, None, k.MS_BIND | k.MS_REC)
            except OSError as e:
                raise OciError(f"cannot bind rootfs {plan.rootfs}: {e.strerror}") from None
        self.rootfd = os.open(plan.rootfs, k.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for i, step in enumerate(plan.mounts_now):
            if step.bind and plan.ns.new_user and plan.runtime_is_root:
                self.apply_bind_in_userns(i, step)
            elif mounts.is_idmapped(step):
                self.apply_idmapped_mount(step)
            else:
                mounts.apply_mount(self.rootfd, step, -1, -1)
        tree = -1
        if plan.bind_devices and plan.devices and plan.ns.new_user and plan.runtime_is_root:
            tree = self.ask_fd("devtree", optional=True)  # nodes the runtime made
        devices.create_devices(self.rootfd, plan.devices, plan.bind_devices, tree)
        devices.create_symlinks(self.rootfd)
        # runc creates a missing cwd (inside the root, after the mounts)
        try:
            os.close(mounts.make_path(self.rootfd, plan.process.cwd, True))
        except OSError as e:
            raise OciError(f"process.cwd {plan.process.cwd}: cannot create it: "
                           f"{e.strerror}") from None
        if plan.process.terminal:  # /dev/console: the pty slave is bound here later
            os.close(mounts.make_path(self.rootfd, "/dev/console", is_dir=False))

    def share_root(self, k, prop: int) -> None:
        """rootfsPropagation (r)shared: our mounts stay in the host's peer
        groups, so that a volume bound "rshared" propagates both ways
        (Kubernetes' Bidirectional mounts). Only the mount holding the rootfs
        is made private: pivot_root refuses a shared parent, and the rootfs's
        own bind must not show up on the host."""
        from ocirun.linux.mountinfo import holding_mount
        k.mount(None, "/", None, prop)
        point, shared = holding_mount(self.plan.rootfs)
        if shared:
            k.mount(None, point, None, k.MS_PRIVATE)

    def apply_bind_in_userns(self, index: int, step) -> None:
        """A bind in our user namespace: the root runtime makes on the host
        those our root cannot (see ask_bind_tree)."""
        tree = -1
        if mounts.is_idmapped(step) or not mounts.reachable(step.source):
            tree = self.ask_bind_tree(index)
        mounts.apply_mount(self.rootfd, step, -1, tree)

    def apply_idmapped_mount(self, step) -> None:
        """An idmapped mount made here: the ids come from a user namespace
        of its own, with the mount's (or the container's) mappings."""
        from ocirun.linux import userns  # (loaded by the runtime: forkinit._spawn)
        userns_fd = userns.idmap_userns(step, self.plan)
        try:
            mounts.apply_mount(self.rootfd, step, userns_fd, -1)
        finally:
            os.close(userns_fd)

    def ask_bind_tree(self, index: int) -> int:
        """The runtime prepares mounts[index] on the host: inside our user
        namespace an idmap (the superblock belongs to the host's) or a source
        under a directory our root cannot enter would fail."""
        return self.ask_fd("bindtree", str(index))

    def ask_fd(self, verb: str, payload: str = "", optional: bool = False) -> int:
        """A request the runtime answers with one fd (a mount it made);
        optional: -1 when it answers with none (it could not)."""
        self.sync.send(verb, payload)
        verb, payload, fds = self.sync.recv()  # (before seccomp: recvmsg for the fd)
        if verb == "ok" and len(fds) == 1:
            return fds[0]
        if verb == "ok" and not fds and optional:
            return -1
        for fd in fds:
            os.close(fd)
        if verb == "error":
            raise OciError(payload.decode(errors="replace"))
        raise PeerGone("the runtime did not send the mount")

    def setup_console(self):
        """A pty from the container's own devpts (so `tty` says /dev/pts/0),
        bound to /dev/console; the master goes to the console socket, or to
        the runtime for a foreground `run`."""
        from ocirun.linux import terminal
        pty = terminal.open_pty("/dev/ptmx")
        if self.plan.process.console_size:
            terminal.apply_size(pty.master, *self.plan.process.console_size)
        terminal.bind_console(pty.slave_path)
        if self.plan.console_fd >= 0:
            terminal.send_console(self.plan.console_fd, pty.master)
            os.close(self.plan.console_fd)
        else:
            self.sync.send("console", b"", [pty.master])
            self.sync.expect("ok")
        os.close(pty.master)
        return pty

    def mount_cgroups(self) -> None:
        for step in self.plan.mounts_later:
            cgroupfs.mount(self.rootfd, step, self.plan.ns.new_cgroup, self.plan.cgroup_binds)

    def join_then_mount_cgroups(self, k) -> None:
        """The mounts show the cgroup we are in (and a new cgroup namespace
        is rooted there): join it first."""
        self.join_cgroup()
        if self.plan.ns.new_cgroup:
            k.unshare(k.CLONE_NEWCGROUP)
        self.mount_cgroups()

    def enter_root(self, k) -> None:
        root = self.plan.rootfs
        shared = bool(self.plan.propagation and self.plan.propagation & k.MS_SHARED)
        os.chdir(root)
        if not self.plan.has_mount_ns:  # the runtime's mount namespace: no pivot there
            os.chroot(".")
        elif self.plan.no_pivot:  # (a ramdisk rootfs cannot be pivoted)
            _hide_whole_proc_sys(k, root, shared)
            k.mount(root, "/", None, k.MS_MOVE)
            os.chroot(".")
        else:
            old_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if shared else -1
            try:
                k.pivot_root(".", ".")
            except OSError as e:
                raise OciError(f"pivot_root {root}: {e.strerror}"
                               " (use --no-pivot on a ramdisk rootfs)") from None
            if shared:  # (else the old root is a slave or private already)
                # the old root's mounts are the host's peers: their detach
                # below must not unmount the host's own. (Through its fd:
                # "." is the new root for mount(2), the old one for umount2.)
                os.fchdir(old_root)
                os.close(old_root)
                k.mount(None, ".", None, k.MS_SLAVE | k.MS_REC)
            k.umount2(".", k.MNT_DETACH)
        os.chdir("/")

    def finish_rootfs(self, k) -> None:
        plan = self.plan
        if plan.sysctl:
            _write_sysctls(plan.sysctl)
        if plan.hostname is not None:
            k.sethostname(plan.hostname)
        if plan.domainname is not None:
            k.setdomainname(plan.domainname)
        for p in plan.masked:
            mounts.mask_path(p)
        for p in plan.readonly_paths:
            mounts.readonly_path(p)
        if plan.dev_readonly:
            mounts.remount_dev_readonly()
        if plan.readonly:
            mounts.remount_root_readonly()
        if plan.propagation:  # last: an unbindable /dev would refuse the masks' binds
            k.mount(None, "/", None, plan.propagation)
        if plan.process.umask is not None:
            os.umask(plan.process.umask)
        else:
            os.umask(0o022)

    def wait_for_start(self) -> None:
        if self.plan.wait_fifo:
            self.wait_on_exec_fifo()
        else:
            self.sync.expect("go")

    def wait_on_exec_fifo(self) -> None:
        """`create`: the start is `ocirun start` opening exec.fifo, which
        our open for writing waits for."""
        import _signal
        # Until execve, the init is PID 1 and ignores unhandled signals: make
        # `kill` of a created container behave as it would for the process.
        _set_handlers(_signal, _die)
        fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=self.state_dirfd)
        os.close(self.state_dirfd)
        self.state_dirfd = -1
        os.write(fd, b"0")
        # keep fd: it closes at execve (O_CLOEXEC), which `start` waits for
        self.fifo_fd = fd
        self.sync.close()
        _set_handlers(_signal, _signal.SIG_DFL)


_TERMINATING = (15, 2, 1, 3, 10, 12)  # TERM INT HUP QUIT USR1 USR2


def _hide_whole_proc_sys(k, root: str, shared: bool) -> None:
    """--no-pivot keeps the host's mounts in the namespace, under the chroot:
    a whole proc or sysfs among them would let the container mount a fresh,
    unmasked proc (runc's msMoveRoot does the same). Our mounts are slaves
    (or private), so nothing of this reaches the host; with a shared
    rootfsPropagation, "/" (where the rootfs moves) and the parents of what
    is detached are made slaves first, for the same reason."""
    from ocirun.linux.mountinfo import whole_proc_sys_outside
    found = whole_proc_sys_outside(root)
    if shared:
        for parent in {"/", *(parent for _p, parent in found)}:
            k.mount(None, parent, None, k.MS_SLAVE)
        for p, _parent in found:  # (their submounts' detach propagates too)
            try:
                k.mount(None, p, None, k.MS_SLAVE | k.MS_REC)
            except FileNotFoundError:
                continue
    for p, _parent in found:
        try:
            k.umount2(p, k.MNT_DETACH)
        except FileNotFoundError:
            continue  # under one detached already
        except OSError as e:
            if e.errno not in (1, 22):  # EPERM, EINVAL (locked): cover it instead
                raise
            k.mount("tmpfs", p, "tmpfs", 0, None)


def _write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        except OSError as e:
            raise OciError(f"linux.sysctl.{key}: cannot set {value!r}: {e.strerror}") from None


def _set_handlers(_signal, handler) -> None:
    """(After the seccomp filter: a profile may refuse rt_sigaction; the
    waiting init then simply keeps PID 1's default of ignoring signals.)"""
    for sig in _TERMINATING:
        try:
            _signal.signal(sig, handler)
        except OSError:
            pass


def _die(signum, frame):
    os._exit(128 + signum)


def vfork_child_main(plan, err_fd: int) -> None:
    """Entry point of an init that shares the runtime's memory (see
    kernel/vfork.py); never returns."""
    child_main(plan, NoParent(err_fd), -1)


def child_main(plan, sync: Sync, state_dirfd: int) -> None:
    """Entry point in the cloned child; never returns."""
    init = Init(plan, sync, state_dirfd)
    try:
        init.run()
    except BaseException as e:
        try:
            _report_exception(init, e)
        finally:
            os._exit(1)  # never into the frames below, the runtime's (a fork)
    os._exit(1)


def _report_exception(init: Init, e: BaseException) -> None:
    """Why the init failed, as one line (unless the runtime knows already)."""
    if isinstance(e, PeerGone):
        return  # the runtime failed and says why itself (or it was killed)
    if isinstance(e, OciError):
        _report(init, str(e))
    elif isinstance(e, OSError):
        _report(init, os_error_line(e))
    else:  # a bug: still one line, with the type to find it
        _report(init, f"internal error in container init: {type(e).__name__}: {e}")


def _report(init: Init, msg: str) -> None:
    hooks = init.plan.hooks
    if init.fifo_fd >= 0 and not (hooks.get("startContainer") or hooks.get("poststart")):
        # after a start that does not wait for the execve (it may still hold
        # the fifo, without reading): the process's stderr, as runc
        _to_stderr(msg)
        return
    try:
        if init.fifo_fd >= 0:  # after a start that waits: it reads this
            try:
                import _signal
                _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)  # reset for execve
            except OSError:
                pass
            os.write(init.fifo_fd, f"error {msg}".encode())
        else:
            init.sync.send("error", msg)
    except OSError:  # the channel is gone: the caller's stderr is all we have
        _to_stderr(msg)


def _to_stderr(msg: str) -> None:
    try:
        os.write(2, f"ocirun: {msg}\n".encode())
    except OSError:
        pass
