"""`exec`: run a new process inside a running container.

The runtime clones one child (in the container's pid and time namespaces
for its children, entered and left around the clone); the child makes
itself non-dumpable, joins the other namespaces of the container's init
(user first, mount last: setns(mnt) also moves it to the container's root),
sets up the process exactly as the init does (shared code in launch.py), asks
the runtime to put it in the container's cgroup as late as possible, and
execs. The runtime waits for the exec (the sync socket closes on execve),
writes the pid file, and either returns (--detach) or forwards signals /
proxies the terminal and returns the exit status.

When the child needs nothing of the runtime on the way (no terminal, no
seccomp listener, a cgroup it enters by itself) and the caller exits right
after (the CLI), the child shares the runtime's memory until its execve
(kernel/vfork.py, as a `run`'s init does): no fork of the interpreter.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import ConfigError, OciError, StateError, UsageError, os_error_line

_PROC_NS = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "cgroup": "cgroup",
            "pid": "pid", "time": "time", "mount": "mnt"}
_JOIN_ORDER = ("user", "ipc", "uts", "network", "cgroup", "mount")
_JOIN_ORDER_USER_FIRST = ("user", "pid", "time", "ipc", "uts", "network", "cgroup", "mount")


class ExecOptions:
    __slots__ = ("detach", "pid_file", "console_socket", "preserve_fds", "cgroup",
                 "ignore_paused")

    def __init__(self, detach: bool = False, pid_file: str | None = None,
                 console_socket: str | None = None, preserve_fds: int = 0,
                 cgroup: list[str] | str | None = None, ignore_paused: bool = False) -> None:
        self.detach = detach
        self.pid_file = pid_file
        self.console_socket = console_socket
        self.preserve_fds = preserve_fds
        self.cgroup = [cgroup] if isinstance(cgroup, str) else (cgroup or None)
        self.ignore_paused = ignore_paused


def load_process_file(path: str) -> dict:
    """A --process JSON file, validated like config.json's process."""
    from ocirun import spec
    name = os.path.basename(path)
    proc = spec.read_json(path, name)
    if not isinstance(proc, dict):
        raise ConfigError("", "must be a JSON object", name)
    spec.check_process(proc, "", spec.Checker(name), exec_process=True)
    return proc


def process_from_flags(base: dict, args: list[str], *, tty: bool = False,
                       env: list[str] | None = None, cwd: str | None = None,
                       user: str | None = None, additional_gids: list[str] | None = None,
                       caps: list[str] | None = None, no_new_privs: bool = False,
                       apparmor: str | None = None, process_label: str | None = None) -> dict:
    """runc's exec without --process: the container's process, overridden by flags."""
    if not args:
        raise OciError("exec needs a command to run")
    from ocirun.jsonutil import dumps, loads
    proc = loads(dumps(base))  # a deep copy, cheap for this size
    proc["args"] = args
    proc["terminal"] = tty
    proc.pop("consoleSize", None)
    if env:
        merged = {e.split("=", 1)[0]: e for e in proc.get("env") or []}
        for e in env:
            if "=" not in e:
                raise OciError(f"--env {e!r}: must be KEY=VALUE")
            merged[e.split("=", 1)[0]] = e
        proc["env"] = list(merged.values())
    if cwd:
        proc["cwd"] = cwd
    if user:
        uid_s, _, gid_s = user.partition(":")
        try:
            u = proc.setdefault("user", {})
            u["uid"] = int(uid_s)
            if gid_s:
                u["gid"] = int(gid_s)
            if u["uid"] < 0 or u.get("gid", 0) < 0:
                raise ValueError
        except ValueError:
            raise OciError(f"--user {user!r}: must be uid[:gid] (numbers)") from None
    if additional_gids:
        try:
            proc.setdefault("user", {})["additionalGids"] = [int(g) for g in additional_gids]
        except ValueError:
            # (a flag of a number type that does not parse: a usage error, as in runc)
            raise UsageError(f"--additional-gids {additional_gids}: must be numbers") from None
    if caps:
        c = proc.setdefault("capabilities", {})
        for s in ("bounding", "effective", "permitted", "ambient", "inheritable"):
            if s == "inheritable" and s not in c:
                continue
            c[s] = list(dict.fromkeys((c.get(s) or []) + caps))
    if no_new_privs:
        proc["noNewPrivileges"] = True
    if apparmor:
        proc["apparmorProfile"] = apparmor
    if process_label:
        proc["selinuxLabel"] = process_label
    return proc


def exec_in(cid: str, proc_cfg: dict, root: str | None = None,
            opts: ExecOptions | None = None, then_exit: bool = False) -> int:
    """Run proc_cfg in container cid; the exit status (0 at once with detach).
    then_exit: the caller exits right after (the CLI), so the child may
    share our memory until its execve (see _vfork_fits)."""
    from ocirun import plan as planmod
    from ocirun.container import Container, cgroup_manager, oci_state
    from ocirun.creation import prepare_security
    opts = opts or ExecOptions()
    c = Container(cid, root)
    data = c._data()
    st = c.status()
    if st == "stopped" or st == "creating":
        raise StateError(f"cannot exec in a {st} container")
    if st == "paused" and not opts.ignore_paused:
        raise StateError("cannot exec in a paused container (use --ignore-paused to override)")
    cfg = data.get("config") or {}
    pplan = planmod.build_process(proc_cfg)
    if not pplan.args:
        raise ConfigError("args", "must name the program to run", "process")

    class _P:  # what prepare_security needs of a plan
        process = pplan
        linux = cfg.get("linux") or {}

    prepare_security(_P, dict(cfg, process=proc_cfg), c.root)
    if pplan.terminal or opts.console_socket:
        from ocirun.linux import terminal
        terminal.check_terminal_args(pplan.terminal, opts.console_socket, opts.detach)
        if opts.console_socket:
            terminal.check_console_socket(opts.console_socket)
    init_pid = data["pid"]
    ns_types = [ns["type"] for ns in (cfg.get("linux") or {}).get("namespaces") or []]
    mgr = cgroup_manager(data)
    join = mgr.self_join() if mgr is not None and not opts.cgroup else None
    prewarm = 0
    if mgr is not None and os.geteuid() == 0 and (join is None or not join.complete):
        from ocirun.creation import start_prewarm
        prewarm = start_prewarm()
    try:
        vforked = then_exit and _vfork_fits(pplan, mgr, opts, join)
        return _run(c, data, pplan, init_pid, ns_types, mgr, opts, oci_state(data, st), join,
                    vforked)
    finally:
        if join is not None:
            join.close()
        if prewarm:
            from ocirun.creation import reap_prewarm
            reap_prewarm(prewarm)


def _open_ns(pid: int, types: list[str]) -> dict[str, int]:
    fds = {}
    try:
        for t in types:
            fds[t] = os.open(f"/proc/{pid}/ns/{_PROC_NS[t]}", os.O_RDONLY | os.O_CLOEXEC)
        if "mount" not in types:  # it shares ours and is chrooted: so will we be
            t = "root"
            fds[t] = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        for fd in fds.values():
            os.close(fd)
        what = "root directory" if t == "root" else f"{t} namespace"
        raise StateError(f"cannot open the container's {what}: {e.strerror}") from None
    return fds


def _vfork_fits(pplan, mgr, opts: ExecOptions, join) -> bool:
    """Can the child share our memory until its execve? Only if it needs
    nothing of us on the way: no terminal or console socket, no seccomp
    listener, no --cgroup, and a cgroup it enters by itself (or none); and
    only for a caller that exits right after (see creation._vfork_fits)."""
    if pplan.terminal or opts.console_socket or opts.cgroup:
        return False
    if pplan.seccomp is not None and pplan.seccomp.listener_path:
        return False
    if mgr is not None and (join is None or not join.complete):
        return False
    import _thread
    if _thread._count():  # another thread would run Python beside the child
        return False
    from ocirun.kernel import vfork
    return vfork.available()


def _run(c, data: dict, pplan, init_pid: int, ns_types: list[str], mgr, opts: ExecOptions,
         state: dict, join=None, vforked: bool = False) -> int:
    from ocirun import launch  # noqa: F401  (before the fork: the child needs it after setns)
    from ocirun.kernel import syscalls as k
    from ocirun.linux import namespaces
    from ocirun.linux.foreground import forward_signals
    nsfds = _open_ns(init_pid, ns_types)
    console_fd = -1
    if opts.console_socket:
        from ocirun.linux import terminal
        console_fd = terminal.connect_console(opts.console_socket)
    parent = child = None
    restore = []
    pid = 0
    in_child = False
    user_first = False
    try:
        for t, flag in (("pid", k.CLONE_NEWPID), ("time", k.CLONE_NEWTIME)):
            if t in nsfds:
                restore.append((os.open(f"/proc/self/ns/{_PROC_NS[t]}",
                                        os.O_RDONLY | os.O_CLOEXEC), flag))
                try:
                    k.setns(nsfds[t], flag)
                except PermissionError:
                    if "user" not in nsfds:
                        raise
                    # rootless: only its user namespace gives us the right;
                    # the child enters it first, then forks (see _child)
                    user_first, vforked = True, False
                    break
        if user_first:
            namespaces.restore_for_children(restore)
            restore = []
        if vforked:
            pid = _spawn_vfork(pplan, nsfds, opts.preserve_fds, join)
        if not pid:
            from ocirun.sync import Sync
            parent, child = Sync.pair()
            import gc
            gc.freeze()
            try:
                from ocirun.forkinit import clone_child
                pid = clone_child(0, join)
            except OSError as e:
                if e.errno == 12 and "pid" in nsfds:  # ENOMEM: the pid namespace is dead
                    raise StateError("cannot exec: the container is no longer running") from None
                raise
            # the parent has nothing to do before the execve when the child
            # enters its cgroup on its own: no "ready" round trip then
            handshake = join is None or not join.complete
            if pid == 0:
                in_child = True
                parent.close()
                _child(pplan, child, nsfds, console_fd, opts.preserve_fds, join, handshake,
                       user_first)
            if user_first:
                pid = _sibling_pid(parent, pid)
    finally:
        if not in_child:
            namespaces.restore_for_children(restore)
            for fd in nsfds.values():
                os.close(fd)
            if child is not None:
                child.close()
            if console_fd >= 0:
                os.close(console_fd)
    master = -1
    if parent is not None:
        master = _serve(parent, pid, join, mgr, opts, pplan, state, handshake)
    if opts.pid_file:
        from ocirun.statedir import write_pid_file
        write_pid_file(os.path.abspath(opts.pid_file), pid)
    if opts.detach:
        if master >= 0:
            os.close(master)
        return 0
    with forward_signals(pid) as fw:
        if master >= 0:
            from ocirun.linux import terminal
            try:
                return terminal.proxy(master, pid)
            finally:
                os.close(master)
        return fw.wait()


def _serve(parent, pid: int, join, mgr, opts: ExecOptions, pplan, state: dict,
           handshake: bool) -> int:
    """A forked child's requests until its execve; returns the terminal's
    master fd (-1 without one). Kills and reaps the child on failure."""
    from ocirun.errors import PeerGone
    master = -1
    try:
        while True:
            verb, payload, fds = parent.recv()
            if verb == "ready":
                if join is not None:
                    _add_pid(mgr, pid, join.done, state["pid"])  # the child does the rest
                elif mgr is not None:
                    _join_cgroup(mgr, pid, opts.cgroup, state["pid"])
                parent.send("ok")
                break
            if verb == "console":
                master = fds[0]
                from ocirun.linux import terminal
                terminal.copy_size(0, master)
            elif verb == "seccomp":
                from ocirun.linux import seccomp
                try:
                    flt = pplan.seccomp
                    seccomp.send_listener(flt.listener_path, fds[0], state,
                                          flt.listener_metadata, required=flt.notify)
                finally:
                    os.close(fds[0])
            elif verb == "error":
                raise OciError(payload.decode(errors="replace"))
            elif verb == "":
                if not handshake:
                    break  # execve closed its end (or it died: the wait says how)
                raise OciError("exec: the process setup died unexpectedly")
            parent.send("ok")
        if handshake:
            verb, payload, _ = parent.recv()  # EOF once execve closed its end
        if verb == "error":
            raise OciError(payload.decode(errors="replace"))
    except (BrokenPipeError, ConnectionResetError, PeerGone):
        parent.close()
        if master >= 0:
            os.close(master)
        _reap(pid)
        raise OciError("exec: the process setup died unexpectedly "
                       "(the container was killed or deleted)") from None
    except BaseException:
        parent.close()
        if master >= 0:
            os.close(master)
        _reap(pid)
        raise
    parent.close()
    return master


def _add_pid(mgr, pid: int, skip: set[str] | frozenset[str], init_pid: int) -> None:
    """The process into the container's cgroup; on cgroup v2, where that
    cgroup turned a domain controller on for its children (so it may hold no
    process: EBUSY), into the init's cgroup instead, as runc does."""
    from ocirun.cgroups.manager import CgroupError
    try:
        mgr.add_pid(pid, skip=skip)
    except CgroupError as e:
        if e.errno != 16 or mgr.version != "v2":  # EBUSY
            raise
        from ocirun import cgroups
        from ocirun.cgroups.layout import own_cgroups
        from ocirun.cgroups.manager import _join
        layout = cgroups.detect()
        rel = os.path.relpath(own_cgroups(init_pid)[""], layout.unified_root)
        _join(os.path.normpath(os.path.join(layout.unified, rel)), pid)


def _spawn_vfork(pplan, nsfds: dict[str, int], preserve_fds: int, join) -> int:
    """The child, sharing our memory until its execve (launch.spawn_vforked);
    its pid, or 0 when clone3 fails (a seccomp profile, an old kernel):
    fork then."""
    from ocirun import launch
    try:
        return launch.spawn_vforked(
            0, lambda w: _child(pplan, launch.NoParent(w), nsfds, -1, preserve_fds, join, False),
            join)
    except OSError as e:
        if e.errno == 12 and "pid" in nsfds:  # ENOMEM: the pid namespace is dead
            raise StateError("cannot exec: the container is no longer running") from None
        return 0


def _join_cgroup(mgr, pid: int, subs: list[str] | None, init_pid: int) -> None:
    """exec --cgroup (runc's): [controller[,controller...]:]path, repeatable;
    a path without controllers is for every hierarchy not named elsewhere
    (the container's own cgroup by default)."""
    if not subs:
        _add_pid(mgr, pid, frozenset(), init_pid)
        return
    default, per_ctl = "", {}
    for sub in subs:
        ctls, _, path = sub.rpartition(":")
        if ".." in path.split("/"):
            raise OciError(f"invalid --cgroup argument: {path} is not a sub cgroup path")
        if ctls:
            for c in ctls.split(","):
                per_ctl[c] = path
        else:
            default = path
    targets = _cgroup_targets(mgr, default, per_ctl)
    for d, path in targets:
        target = os.path.join(d, path.strip("/"), "cgroup.procs")
        try:
            with open(target, "w") as f:
                f.write(str(pid))
        except FileNotFoundError:
            raise OciError(f"--cgroup {path}: adding pid {pid} to {target}: no such file "
                           "or directory (no such sub-cgroup)") from None
        except OSError as e:  # e.g. ENOSPC: a v1 cpuset child with no cpus/mems set
            raise OciError(f"--cgroup {path}: cannot join {os.path.dirname(target)}: "
                           f"{e.strerror}") from None


def _cgroup_targets(mgr, default: str, per_ctl: dict) -> list[tuple[str, str]]:
    """(container cgroup directory, sub path) for each hierarchy."""
    paths = getattr(getattr(mgr, "fs", mgr), "paths", None)
    if paths is None:  # v2 (or systemd's): one directory, no controllers to name
        if per_ctl:
            bad = sorted(c for c in per_ctl if c not in _v2_controllers(mgr))
            if bad:
                raise OciError(f"--cgroup: unknown controller {bad[0]}")
            path = next(iter(per_ctl.values())) if not default else default
        else:
            path = default
        return [(d, path) for d in mgr.dirs()]
    known = {c for key in paths for c in key.split(",") if key} | {""}
    bad = sorted(c for c in per_ctl if c not in known)
    if bad:
        raise OciError(f"--cgroup: unknown controller {bad[0]}")
    out = []
    for key, d in paths.items():
        named = [per_ctl[c] for c in key.split(",") if c in per_ctl]
        out.append((d, named[0] if named else default))
    return out


def _v2_controllers(mgr) -> set[str]:
    try:
        with open(os.path.join(mgr.dirs()[0], "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def _reap(pid: int) -> None:
    if pid:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _sibling_pid(parent, middle: int) -> int:
    """user_first: the pid of the process the child forked (see
    namespaces.fork_into_namespaces); the child itself is reaped."""
    try:
        verb, payload, _ = parent.recv()
    finally:
        try:
            os.waitpid(middle, 0)
        except ChildProcessError:
            pass
    if verb == "pid":
        return int(payload)
    if verb == "error":
        raise OciError(payload.decode(errors="replace"))
    raise OciError("exec: the process setup died unexpectedly")


def _child(pplan, sync, nsfds: dict[str, int], console_fd: int, preserve_fds: int,
           join=None, handshake: bool = True, user_first: bool = False) -> None:
    """In the cloned child; never returns. user_first: the runtime could
    not enter the pid/time namespaces for us (rootless): they are entered
    here, right after the user namespace, and a fork puts us in them."""
    from ocirun import launch
    from ocirun.errors import PeerGone
    from ocirun.kernel import syscalls as k
    try:
        k.prctl(k.PR_SET_PDEATHSIG, 9)
        # before entering: a container process must not reach our exe or fds
        k.prctl(k.PR_SET_DUMPABLE, 0)
        from ocirun.linux import namespaces as nsmod
        if "user" in nsfds and pplan.oom_score_adj is not None and os.geteuid() == 0:
            # ours to write only out here (see process.set_oom_score_adj)
            from ocirun.linux.process import set_oom_score_adj
            set_oom_score_adj(pplan.oom_score_adj)
            pplan.oom_set_early = True
        for t in _JOIN_ORDER_USER_FIRST if user_first else _JOIN_ORDER:
            if t in nsfds:
                try:
                    k.setns(nsfds[t], nsmod.FLAGS[t])
                except OSError as e:
                    raise OciError(f"cannot join the container's {t} namespace: "
                                   f"{e.strerror}") from None
        if "root" in nsfds:
            os.fchdir(nsfds["root"])
            os.chroot(".")
            os.chdir("/")
        for fd in nsfds.values():
            os.close(fd)
        if user_first:
            nsmod.fork_into_namespaces(lambda pid: sync.send("pid", str(pid)))
        pty = None
        if pplan.terminal:
            from ocirun.linux import terminal
            pty = terminal.open_pty("/dev/ptmx")
            if pplan.console_size:
                terminal.apply_size(pty.master, *pplan.console_size)
            if console_fd >= 0:
                terminal.send_console(console_fd, pty.master)
                os.close(console_fd)
            else:
                sync.send("console", b"", [pty.master])
                sync.expect("ok")
            os.close(pty.master)
        if pplan.cfg.get("execCPUAffinity"):
            from ocirun.linux import sched
            sched.set_exec_affinity(pplan.cfg, "initial")
        exe, env = launch.prepare_process(pplan)
        if pty is not None:
            from ocirun.linux import terminal
            terminal.make_controlling(pty.slave, uid=pplan.uid)
        else:
            os.setsid()
        launch.seal_fds(env, preserve_fds)
        launch.drop_privileges(pplan, sync)
        if handshake:
            sync.send("ready")
            sync.expect("ok")
        if join is not None:
            join.enter()
        # The death signal survives execve: without this, `exec -d`'s process
        # would be SIGKILLed as soon as ocirun returns.
        k.prctl(k.PR_SET_PDEATHSIG, 0)
        if pplan.cfg.get("execCPUAffinity"):
            from ocirun.linux import sched
            sched.set_exec_affinity(pplan.cfg, "final")
        launch.exec_process(pplan, exe, env)
    except PeerGone:
        pass  # the runtime failed and reports it (or it was killed)
    except OciError as e:
        _send_error(sync, str(e))
    except OSError as e:
        _send_error(sync, os_error_line(e))
    except BaseException as e:
        _send_error(sync, f"internal error in exec: {type(e).__name__}: {e}")
    os._exit(255)


def _send_error(sync, msg: str) -> None:
    try:
        sync.send("error", msg)
    except OSError:
        try:
            os.write(2, f"ocirun: {msg}\n".encode())
        except OSError:
            pass
