"""Terminals and process I/O: ptys, the console socket, the foreground proxy
and signal forwarding.

Where each call belongs in create/start/run/exec is in docs/terminal.md.

Import cost matters on the container start path: this module imports only
`os`, `stat` and `sys` (already loaded by the interpreter) at the top; the
C modules it needs (`fcntl`, `_socket`, `_signal`, `select`, `termios`) are
imported inside the functions. `_socket`/`_signal` are used instead of
`socket`/`signal` because the public wrappers pull in `enum` (~4 ms).
"""
from __future__ import annotations

from ocirun import oslite as os
import _stat as stat  # the C module: `stat` adds only a .py wrapper
import sys

from ocirun.errors import OciError
from ocirun.linux.foreground import (_Wakeup, exit_code, forward_signals,  # noqa: F401
                                     forwarded_signals)

# ioctl request numbers. These are the asm-generic values, shared by x86_64
# and aarch64 (the architectures ocirun.kernel.syscalls supports).
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441  # Linux >= 4.13: open the peer without a path lookup

# Payload sent with the master fd on the console socket. runc sends the name
# of the master file ("/dev/ptmx"); crun sends one byte. Receivers (go-runc,
# conmon) need a non-empty payload (a stream socket cannot carry ancillary
# data alone), shorter than 256 bytes (conmon's buffer), and exactly one
# SCM_RIGHTS message holding exactly one fd.
CONSOLE_PAYLOAD = b"/dev/ptmx"

_SUN_PATH_MAX = 107  # sizeof(sun_path) - 1 for the NUL


# --------------------------------------------------------------------------
# validation (parent, before fork)

def check_terminal_args(terminal: bool, console_socket: str | None,
                        detach: bool) -> None:
    """Reject flag combinations runc rejects, before anything is created.

    `create` and `exec --detach` are detached; `run`/`exec` without
    --detach are not. A detached process with a terminal has nowhere to put
    the master except the console socket.
    """
    if console_socket and not terminal:
        raise OciError("--console-socket given but process.terminal is false")
    if terminal and detach and not console_socket:
        raise OciError("process.terminal is true: a detached container needs "
                       "--console-socket")


def check_console_socket(path: str) -> None:
    """Fail early, in the parent, with one clear line if `path` is unusable."""
    if not path:
        raise OciError("console socket: empty path")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise OciError(f"console socket {path}: no such file") from None
    except OSError as e:
        raise OciError(f"console socket {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise OciError(f"console socket {path}: not a unix socket")


def connect_console(path: str) -> int:
    """Connect to the console socket; return the connected fd (O_CLOEXEC).

    Call this in the parent before fork: the child inherits the fd across
    fork (CLOEXEC only matters at execve) and can send the master after
    pivot_root, when the host path is no longer reachable. Errors come out
    here, before any namespace exists.
    """
    import _socket
    check_console_socket(path)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    dirfd = -1
    try:
        addr = path
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            # sun_path holds 108 bytes; reach deeper paths through the
            # directory's /proc/self/fd magic link.
            dirfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
            addr = f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
        s.connect(addr)
    except OSError as e:
        s.close()
        raise OciError(f"console socket {path}: connect: {e.strerror}") from None
    finally:
        if dirfd >= 0:
            os.close(dirfd)
    return s.detach()


# --------------------------------------------------------------------------
# pty allocation (container init, after pivot_root)

class Pty:
    """A pty pair: `master`, `slave` fds (both O_CLOEXEC), `slave_path` as
    the opener sees it (e.g. /dev/pts/0), `index` (the N of /dev/pts/N)."""

    __slots__ = ("master", "slave", "slave_path", "index")

    def __init__(self, master: int, slave: int, slave_path: str, index: int) -> None:
        self.master = master
        self.slave = slave
        self.slave_path = slave_path
        self.index = index

    def close(self) -> None:
        """Close whichever ends are still open (idempotent)."""
        for name in ("master", "slave"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Pty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Pty(master={self.master}, slave={self.slave}, "
                f"slave_path={self.slave_path!r})")


def open_pty(ptmx: str = "/dev/ptmx") -> Pty:
    """Allocate a pty from the devpts instance behind `ptmx`.

    In the container this runs after pivot_root, so /dev/ptmx (a symlink to
    pts/ptmx, or the 5:2 device which the kernel resolves to the sibling
    pts/ mount) is the container's own devpts and the slave is /dev/pts/N
    there. The slave is opened with TIOCGPTPEER from the master, so no path
    inside a (possibly hostile) container is trusted.
    """
    import fcntl
    flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC
    try:
        master = os.open(ptmx, flags)
    except OSError as e:
        raise OciError(f"open {ptmx}: {e.strerror}") from None
    try:
        try:
            fcntl.ioctl(master, TIOCSPTLCK, bytes(4))  # unlockpt()
            index = int.from_bytes(fcntl.ioctl(master, TIOCGPTN, bytes(4)),
                                   sys.byteorder)
        except OSError as e:
            raise OciError(f"{ptmx}: not a pty multiplexer: {e.strerror}") from None
        try:
            slave = fcntl.ioctl(master, TIOCGPTPEER, flags)
        except OSError:
            slave = os.open(_pts_guess(ptmx, index), flags)  # kernel < 4.13
        try:
            path = _slave_path(slave, ptmx, index)
        except BaseException:
            os.close(slave)
            raise
        return Pty(master, slave, path, index)
    except BaseException:
        os.close(master)
        raise


def _pts_guess(ptmx: str, index: int) -> str:
    real = os.path.realpath(ptmx)
    d = os.path.dirname(real)
    st = os.stat(real)
    if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 5 and os.minor(st.st_rdev) == 2:
        return os.path.join(d, "pts", str(index))  # /dev/ptmx -> /dev/pts/N
    return os.path.join(d, str(index))  # /dev/pts/ptmx -> /dev/pts/N


def _slave_path(slave: int, ptmx: str, index: int) -> str:
    # The kernel's own name for the open slave, relative to our root and
    # mount namespace: the same answer ttyname()/`tty` gives in the child.
    try:
        p = os.readlink(f"/proc/self/fd/{slave}")
        if p.startswith("/") and not p.endswith(" (deleted)"):
            return p
    except OSError:
        pass  # no /proc mounted yet
    return _pts_guess(ptmx, index)


def apply_size(fd: int, rows: int, cols: int) -> None:
    """Set the window size (process.consoleSize {height: rows, width: cols}).

    On the master before it is handed out, so the process sees the right size
    from its first instruction; later calls make the kernel send SIGWINCH to
    the terminal's foreground process group.
    """
    import fcntl
    if not (0 <= rows <= 0xFFFF and 0 <= cols <= 0xFFFF):
        raise OciError(f"console size {rows}x{cols}: out of range")
    ws = b"".join(v.to_bytes(2, sys.byteorder) for v in (rows, cols, 0, 0))
    try:
        fcntl.ioctl(fd, TIOCSWINSZ, ws)
    except OSError as e:
        raise OciError(f"set console size: {e.strerror}") from None


def get_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of a terminal; OSError if `fd` is not one."""
    import fcntl
    b = fcntl.ioctl(fd, TIOCGWINSZ, bytes(8))
    return (int.from_bytes(b[0:2], sys.byteorder),
            int.from_bytes(b[2:4], sys.byteorder))


def bind_console(slave_path: str, target: str = "/dev/console") -> None:
    """Bind-mount the slave on /dev/console, as runc and crun do.

    In the container after pivot_root and before /dev is made read-only;
    `target` is created as an empty file if missing.
    """
    from ocirun.kernel import syscalls
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC | os.O_NOCTTY, 0o666))
    except OSError as e:
        raise OciError(f"create {target}: {e.strerror}") from None
    try:
        syscalls.mount(slave_path, target, None, syscalls.MS_BIND)
    except OSError as e:
        raise OciError(f"bind {slave_path} on {target}: {e.strerror}") from None


def make_controlling(slave_fd: int, uid: int | None = None,
                     gid: int | None = None) -> None:
    """Make the slave this process's controlling terminal and its stdio.

    In the child, after the master has been sent and closed, and before
    dropping privileges: fchown() to the process user (like runc), setsid()
    unless already a session leader, TIOCSCTTY, dup2 onto 0, 1, 2. The
    original fd is closed unless it is itself 0, 1 or 2.
    """
    import fcntl
    try:
        if uid is not None or gid is not None:
            os.fchown(slave_fd, -1 if uid is None else uid, -1 if gid is None else gid)
        if os.getsid(0) != os.getpid():
            os.setsid()
        fcntl.ioctl(slave_fd, TIOCSCTTY, 0)
        for target in (0, 1, 2):
            if slave_fd != target:
                os.dup2(slave_fd, target)
    except OSError as e:
        raise OciError(f"set up console: {e.strerror}") from None
    if slave_fd > 2:
        os.close(slave_fd)


# --------------------------------------------------------------------------
# the console socket protocol

def send_fd(sock_fd: int, fd: int, payload: bytes = CONSOLE_PAYLOAD) -> None:
    """Send `fd` with `payload` in one message on a connected AF_UNIX socket.

    Usable on the console socket and on the init<->parent sync socket (the
    receiver must then call recv_fd() at that point of its protocol: a plain
    read of a stream socket silently drops the passed fd).
    """
    import _socket
    if not payload:
        raise ValueError("payload must not be empty")
    s = _socket.socket(fileno=sock_fd)
    try:
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                fd.to_bytes(4, sys.byteorder, signed=True))]
        n = s.sendmsg([payload], anc)
        if n != len(payload):  # pragma: no cover - stream send of < 256 bytes
            s.sendall(payload[n:])
    finally:
        s.detach()


def send_console(sock: str | int, master_fd: int) -> None:
    """Hand the pty master to the console socket, the way runc does.

    `sock` is a connected fd from connect_console() (preferred: inherited
    across fork, still valid after pivot_root) or a path, which is connected
    here and closed after. One message: payload b"/dev/ptmx" plus one
    SCM_RIGHTS fd.
    """
    if isinstance(sock, str):
        fd = connect_console(sock)
        try:
            send_console(fd, master_fd)
        finally:
            os.close(fd)
        return
    try:
        send_fd(sock, master_fd)
    except OSError as e:
        raise OciError(f"console socket: send pty master: {e.strerror}") from None


def recv_fd(sock_fd: int, timeout: float | None = None) -> tuple[int, bytes]:
    """Receive one fd and its payload, checking the message as strictly as
    go-runc and conmon do. The fd comes back O_CLOEXEC."""
    import _socket
    if timeout is not None:
        _wait_readable(sock_fd, timeout, "receive fd")
    s = _socket.socket(fileno=sock_fd)
    try:
        # room for a few fds, so that "too many" is seen and cleaned up
        data, anc, flags, _ = s.recvmsg(4096, _socket.CMSG_SPACE(4 * 8),
                                        _socket.MSG_CMSG_CLOEXEC)
    finally:
        s.detach()
    fds: list[int] = []
    for level, kind, blob in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(blob) // 4
            fds.extend(int.from_bytes(blob[i * 4:i * 4 + 4], sys.byteorder,
                                      signed=True) for i in range(n))
    if len(anc) == 1 and len(fds) == 1 and not flags & _socket.MSG_CTRUNC:
        return fds[0], data
    for fd in fds:
        os.close(fd)
    if not anc and not data:
        raise OciError("receive fd: peer closed without sending one")
    raise OciError(f"receive fd: expected 1 fd in 1 message, got {len(fds)} "
                   f"fd(s) in {len(anc)} message(s)")


def _wait_readable(fd: int, timeout: float, what: str) -> None:
    import select
    p = select.poll()
    p.register(fd, select.POLLIN)
    if not p.poll(int(timeout * 1000)):
        raise OciError(f"{what}: timed out after {timeout:g}s")


class ConsoleReceiver:
    """A listening console socket, like the one conmon or containerd's shim
    creates for `--console-socket`; receive() accepts one connection and
    returns the pty master."""

    def __init__(self, path: str, mode: int = 0o600) -> None:
        import _socket
        self.path = path
        self.payload = b""
        self._s = _socket.socket(_socket.AF_UNIX,
                                 _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            self._s.bind(path)
            os.chmod(path, mode)
            self._s.listen(1)
        except OSError as e:
            self._s.close()
            raise OciError(f"console socket {path}: {e.strerror}") from None

    def fileno(self) -> int:
        return self._s.fileno()

    def receive(self, timeout: float | None = None) -> int:
        """Accept one sender and return the fd it sent (O_CLOEXEC)."""
        if timeout is not None:
            _wait_readable(self._s.fileno(), timeout, "console socket")
        conn, _ = self._s._accept()
        try:
            fd, self.payload = recv_fd(conn, timeout)
        finally:
            os.close(conn)
        return fd

    def close(self) -> None:
        self._s.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> ConsoleReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recv_console(socket_path: str | ConsoleReceiver,
                 timeout: float | None = None) -> int:
    """Receive a pty master on a console socket (test / utility receiver).

    Given a path, listens there, accepts one sender and removes the socket;
    the sender must connect after this has started listening. To listen
    before forking the sender, make a ConsoleReceiver and pass it instead.
    """
    if isinstance(socket_path, ConsoleReceiver):
        return socket_path.receive(timeout)
    with ConsoleReceiver(socket_path) as r:
        return r.receive(timeout)


# --------------------------------------------------------------------------
# foreground: exit status, signal forwarding, the tty proxy

def _make_raw(attrs: list) -> list:
    # cfmakeraw(3) on a tcgetattr() list
    import termios as t
    a = list(attrs)
    a[0] &= ~(t.IGNBRK | t.BRKINT | t.PARMRK | t.ISTRIP | t.INLCR | t.IGNCR
              | t.ICRNL | t.IXON)
    a[1] &= ~t.OPOST
    a[2] = (a[2] & ~(t.CSIZE | t.PARENB)) | t.CS8
    a[3] &= ~(t.ECHO | t.ECHONL | t.ICANON | t.ISIG | t.IEXTEN)
    cc = list(a[6])
    cc[t.VMIN] = 1
    cc[t.VTIME] = 0
    a[6] = cc
    return a


def copy_size(src: int, dst: int) -> None:
    """Give the pty dst the window size of terminal src (if src is one).

    The runtime does this as soon as it gets the master of a foreground
    `run -t` / `exec -t`, before the process runs: a later change would
    send the process a SIGWINCH that can interrupt its first tty ioctls."""
    try:
        rows, cols = get_size(src)
        if rows and cols:
            apply_size(dst, rows, cols)
    except (OSError, OciError):
        pass


_BUF = 65536


def proxy(master_fd: int, pid: int, *, pidfd: int | None = None,
          stdin: int = 0, stdout: int = 1, watch: dict | None = None) -> int:
    """Foreground `run`/`exec -t` without a console socket: connect the
    caller's terminal to the container's pty until the process exits.

    If `stdin` is a tty it is put in raw mode (restored on return, on error
    and on KeyboardInterrupt), its size is copied to the master, and SIGWINCH
    copies it again. Bytes are copied both ways with poll() on stdin, the
    master and a pidfd of `pid` (no busy loop). When the process exits,
    output still in the pty is drained, the process is reaped (`pid` must
    be our child) and exit_code() is returned. Main thread only for the
    SIGWINCH part; the caller keeps ownership of `master_fd`. `watch`:
    {fd: callback} for other fds to serve meanwhile (the notify socket);
    a callback that returns False is not called again.
    """
    import fcntl
    import select
    own_pidfd = pidfd is None
    if own_pidfd:
        pidfd = os.pidfd_open(pid)
    saved_attrs = None
    saved_winch: object = None
    tty_in = os.isatty(stdin)
    old_fl = fcntl.fcntl(master_fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(master_fd, fcntl.F_SETFL, old_fl | os.O_NONBLOCK)
        if tty_in:
            import termios
            import _signal
            saved_attrs = termios.tcgetattr(stdin)
            termios.tcsetattr(stdin, termios.TCSADRAIN, _make_raw(saved_attrs))
            copy_size(stdin, master_fd)
            try:
                saved_winch = _signal.signal(
                    _signal.SIGWINCH, lambda s, f: copy_size(stdin, master_fd))
            except ValueError:  # not the main thread: no live resize
                saved_winch = None
        wake = _Wakeup()
        try:
            _pump(master_fd, pidfd, stdin, stdout, select, wake, watch or {})
        finally:
            wake.close()
    finally:
        if saved_winch is not None:
            import _signal
            _signal.signal(_signal.SIGWINCH, saved_winch)
        if saved_attrs is not None:
            import termios
            try:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved_attrs)
            except termios.error:
                pass
        try:
            fcntl.fcntl(master_fd, fcntl.F_SETFL, old_fl)
        except OSError:
            pass
        if own_pidfd:
            os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return exit_code(status)


def _write_all(fd: int, data: bytes) -> bool:
    """Blocking write of everything; False if the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except (BrokenPipeError, OSError):
            return False
        view = view[n:]
    return True


def _pump(master: int, pidfd: int, stdin: int, stdout: int, select,
          wake: _Wakeup, watch: dict) -> None:
    POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
    HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
    to_master = bytearray()
    in_open = True      # stdin still gives data
    m_open = True       # the slave side is still open somewhere
    out_open = True     # someone still reads our stdout
    p = select.poll()
    p.register(pidfd, POLLIN)
    if wake.fd >= 0:
        p.register(wake.fd, POLLIN)
    watch = dict(watch)
    for fd in watch:
        p.register(fd, POLLIN)
    reg: dict[int, int] = {}

    def want(fd: int, ev: int) -> None:
        if reg.get(fd, 0) != ev:
            if ev:
                p.register(fd, ev)  # register() on a known fd modifies it
            elif fd in reg:
                p.unregister(fd)
            reg[fd] = ev

    while True:
        if stdin == master:  # pragma: no cover - nonsense input
            raise ValueError("stdin is the master")
        want(stdin, POLLIN if in_open and len(to_master) < _BUF else 0)
        want(master, (POLLIN if m_open else 0)
             | (POLLOUT if m_open and to_master else 0))
        for fd, ev in p.poll():
            if fd == wake.fd:
                wake.drain()  # a signal: its handler runs at the next bytecode
                continue
            if fd in watch:
                if watch[fd]() is False:
                    p.unregister(fd)
                    del watch[fd]
                continue
            if fd == pidfd:
                if m_open:
                    _drain(master, stdout if out_open else -1)
                return
            if fd == master:
                if ev & POLLOUT and to_master:
                    try:
                        n = os.write(master, to_master)
                        del to_master[:n]
                    except BlockingIOError:
                        pass
                    except OSError:
                        to_master.clear()
                if ev & (POLLIN | HUP):
                    try:
                        data = os.read(master, _BUF)
                    except BlockingIOError:
                        continue
                    except OSError:  # EIO: no slave open any more
                        data = b""
                    if not data:
                        m_open = False
                        to_master.clear()
                    elif out_open:
                        out_open = _write_all(stdout, data)
            elif fd == stdin:
                try:
                    data = os.read(stdin, _BUF)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    in_open = False
                elif m_open:
                    to_master += data


def _drain(master: int, stdout: int) -> None:
    # After exit: whatever the process wrote is already in the pty buffer.
    while True:
        try:
            data = os.read(master, _BUF)
        except OSError:  # EAGAIN (empty, a background job holds the slave) or EIO
            return
        if not data:
            return
        if stdout >= 0 and not _write_all(stdout, data):
            stdout = -1
