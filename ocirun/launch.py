"""The container process's last steps, shared by the init and `exec`:
rlimits, oomScoreAdj, cwd, the executable, user, capabilities,
no_new_privs and seccomp (as late as possible), a clean signal state, the
fds it may keep, and execve.

A module of its own so that `exec` loads none of the init's mount and
device code. Everything here runs in a forked child whose root may already
be the container's: what it needs is imported before the fork.
"""
from __future__ import annotations

from ocirun import bundle, oslite as os

from ocirun.errors import OciError
from ocirun.kernel import syscalls as k
from ocirun.linux import process
TYPE_CHECKING = False
if TYPE_CHECKING:  # (the sync module is not loaded by a vforked init's path)
    from ocirun.sync import Sync


def prepare_process(proc) -> tuple[str, list[str]]:
    """rlimits, oomScoreAdj, cwd and the executable, while still privileged."""
    process.set_rlimits(proc.rlimits)
    if not proc.oom_set_early:
        process.set_oom_score_adj(proc.oom_score_adj)
    try:
        os.chdir(proc.cwd)
        os.getcwd()  # fails if cwd resolved outside the root (CVE-2024-21626)
    except OSError as e:
        raise OciError(f"cannot chdir to {proc.cwd}: {e.strerror}") from None
    if not proc.args:
        raise OciError("process.args must not be empty")
    env = process.build_env(proc.env, proc.uid)
    return process.find_executable(proc.args[0], env), env


def drop_privileges(proc, sync: Sync) -> None:
    """Scheduler and LSM label, then user + capabilities, no_new_privs and
    seccomp. Without no_new_privs the filter needs CAP_SYS_ADMIN, so it is
    loaded before the capabilities are dropped (as runc does)."""
    if proc.sched:
        from ocirun.linux import sched
        sched.apply(proc.cfg, proc.sched)
    if proc.apparmor or proc.selinux:
        from ocirun.linux import lsm
        lsm.apply_exec_label(proc.cfg)
    if proc.seccomp is not None and not proc.no_new_privs:
        _load_seccomp(proc, sync)
    caps = proc.caps
    if caps is not None:
        from ocirun.linux import caps as capmod  # loaded by the parent
        capmod.drop_bounding(caps)
        capmod.keep_caps()
    process.fix_stdio_owner(proc.uid, proc.gid)
    process.switch_user(proc.uid, proc.gid, proc.additional_gids, False)
    if caps is not None:
        capmod.apply(caps)
    if proc.no_new_privs:
        k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
        if proc.seccomp is not None:
            _load_seccomp(proc, sync)


def _load_seccomp(proc, sync: Sync) -> None:
    from ocirun.linux import seccomp
    bundle.pin_code()  # (what runs after the filter may still load code)
    fd = seccomp.load(proc.seccomp)
    if fd is not None:  # SCMP_ACT_NOTIFY: the runtime hands it to the listener
        sync.send("seccomp", b"", [fd])
        os.close(fd)
        sync.expect("ok")


def seal_fds(env: list[str], preserve_fds: int) -> None:
    """Every fd but stdio, the preserved ones and LISTEN_FDS closes at execve.
    Done before the seccomp filter is loaded: a profile need not allow
    close_range (runtime-tools' default profile, older Docker ones do not).
    Every fd the process opens after this is O_CLOEXEC.

    A preserved (or LISTEN_FDS) fd passes as it is, as crun passes them: the
    caller's are inheritable (they came through its execve of us), every
    one of ocirun's own is close-on-exec. So when the caller passes fewer
    fds than it asks to preserve, what ocirun opened in their place (its
    bytecode file, the state dir, a pipe) does not reach the container: a
    directory fd of the host in there would be a way out (runc's
    CVE-2024-21626 was a leaked fd). A library caller marks the fds it
    passes inheritable (os.set_inheritable), as for any exec."""
    first = 3 + preserve_fds
    for e in env:
        if e.startswith("LISTEN_FDS="):
            try:
                first += int(e[11:])
            except ValueError:
                pass
    try:
        k.close_range(first, 0xFFFFFFFF, k.CLOSE_RANGE_CLOEXEC)
    except OSError:  # before Linux 5.9, or denied by the host's own seccomp
        _cloexec_from(first)


def _cloexec_from(first: int) -> None:
    import fcntl
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc in the container: every possible fd
        fds = range(first, min(os.sysconf("SC_OPEN_MAX"), 1 << 20))
    for fd in fds:
        if fd >= first:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            except OSError:
                pass


def exec_process(proc, exe: str, env: list[str]) -> None:
    """A clean signal state, then execve (seal_fds has run)."""
    _default_signals()
    os.execve(exe, proc.args, dict(e.split("=", 1) for e in env))


def _default_signals() -> None:
    """The process starts with every signal at its default and none blocked
    (as crun does). Caught signals go back to default at execve by
    themselves; SIG_IGN survives it (Python ignores SIGPIPE and SIGXFSZ, the
    caller may have ignored more), so only the ignored ones are reset: the
    kernel lists them in /proc/self/status (all of them when it cannot be
    read, e.g. no /proc in the container)."""
    import _signal  # built in: importable after pivot_root
    ignored = (1 << 64) - 1
    try:
        for line in os.read_bytes("/proc/self/status").split(b"\n"):
            if line.startswith(b"SigIgn:"):
                ignored = int(line[7:], 16)
                break
    except (OSError, ValueError):
        pass
    for sig in range(1, _signal.NSIG):
        if ignored >> (sig - 1) & 1 and sig not in (9, 19):  # KILL, STOP: always default
            try:
                k.signal_default(sig)  # raw: also for libc's own 32 and 33
            except OSError:
                pass
    try:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    except OSError:
        pass  # denied by the seccomp profile: nothing here blocks signals anyway


class NoParent:
    """The sync channel of a child started by kernel.vfork.spawn (an init,
    an exec'd process): its parent sleeps until the execve, so nothing can
    be asked of it. The plans that take this way (creation._vfork_fits,
    execute._vfork_fits) need no answer but "ok"; an error goes down
    err_fd, which the parent reads once the child has exited."""
    __slots__ = ("err_fd",)

    def __init__(self, err_fd: int) -> None:
        self.err_fd = err_fd

    def send(self, verb: str, payload: bytes | str = b"", fds=None) -> None:
        if verb == "error":
            os.write(self.err_fd, payload.encode() if isinstance(payload, str) else payload)
        elif verb not in ("join", "created"):
            raise OciError(f"internal: {verb!r} asked of a parent that sleeps")

    def expect(self, verb: str) -> bytes:
        return b""

    def close(self) -> None:
        pass


def spawn_vforked(flags: int, child_main, join) -> int:
    """child_main(err_fd) in a child that shares our memory until its
    execve (kernel/vfork.py), cloned with `flags` (and into join's cgroup2
    directory); its pid once it has exec'd. What it reports on err_fd
    before (see NoParent) is raised here as an OciError, after reaping it.
    OSError: clone3 failed (where it is refused outright, vfork is off
    from now on); the caller forks instead."""
    from ocirun.kernel import vfork
    fds = join.task_fds[:] if join is not None else []
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        dumpable = k.prctl(k.PR_GET_DUMPABLE)
        try:
            pid = vfork.spawn(flags, lambda: child_main(w),
                              join.into_fd if join is not None else -1)
        except OSError as e:
            import errno
            if e.errno in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
                vfork.disable()  # clone3 itself refused (an old kernel or profile)
            raise
        finally:
            os.close(w)
            if join is not None:  # (the child emptied join.task_fds: its copies)
                join.task_fds = fds
        try:
            if dumpable:  # (the child's PR_SET_DUMPABLE was on our shared mm)
                k.prctl(k.PR_SET_DUMPABLE, dumpable)
            msg = os.read(r, 16384)  # (one line; 64 KiB moved the heap top)
            if msg:  # it has exited
                os.waitpid(pid, 0)
        except OSError as e:  # (not clone3's: the caller must not fork a second one)
            raise OciError(f"internal: after the clone: {e.strerror}") from None
        if msg:
            raise OciError(msg.decode(errors="replace"))
        return pid
    finally:
        os.close(r)
