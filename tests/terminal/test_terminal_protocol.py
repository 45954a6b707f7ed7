"""The console-socket wire format as the real receivers check it, and bad
input turned into one clear line."""
from __future__ import annotations

import os
import socket
import sys

import pytest

from ocirun.errors import OciError
from ocirun.linux import terminal
from termhelpers import short_tmp  # noqa: F401  (fixtures)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert isinstance(e.value, OciError)
    assert "\n" not in msg and msg
    return msg


# --- wire format ---------------------------------------------------------

def test_message_matches_strict_receivers(short_tmp):
    """conmon requires cmsg_len == CMSG_LEN(sizeof(int)); go-runc requires
    oobn == CMSG_SPACE(4) and a name < 4096 bytes; both need a non-empty
    payload. Receive exactly that way, with buffers as small as theirs."""
    path = f"{short_tmp}/c.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    pty = terminal.open_pty()
    try:
        terminal.send_console(path, pty.master)  # queued in the backlog
        conn, _ = srv.accept()
        with conn:
            data, anc, flags, _ = conn.recvmsg(256, socket.CMSG_SPACE(4))
        assert data == b"/dev/ptmx"
        assert not flags & socket.MSG_CTRUNC
        assert len(anc) == 1
        level, kind, blob = anc[0]
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        assert len(blob) == 4  # exactly one int: cmsg_len == CMSG_LEN(4)
        fd = int.from_bytes(blob, sys.byteorder)
        try:
            # it is the same pty: a size set on it shows on our slave
            terminal.apply_size(fd, 11, 22)
            assert terminal.get_size(pty.slave) == (11, 22)
        finally:
            os.close(fd)
    finally:
        pty.close()
        srv.close()


def test_sender_closes_connection(short_tmp):
    """One message then EOF, so a receiver reading to EOF does not hang."""
    path = f"{short_tmp}/c.sock"
    with terminal.ConsoleReceiver(path) as rcv, terminal.open_pty() as pty:
        terminal.send_console(path, pty.master)
        conn, _ = rcv._s._accept()
        try:
            fd, payload = terminal.recv_fd(conn, timeout=5)
            os.close(fd)
            assert os.read(conn, 10) == b""
        finally:
            os.close(conn)


def test_recv_console_path_form(short_tmp):
    """recv_console(path) listens itself; a sender connecting later works."""
    path = f"{short_tmp}/c.sock"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # sender: wait until the receiver listens
        try:
            os.close(w)
            os.read(r, 1)
            with terminal.open_pty() as pty:
                terminal.send_console(path, pty.master)
        finally:
            os._exit(0)
    os.close(r)
    import threading
    threading.Timer(0.2, lambda: os.write(w, b"x")).start()
    try:
        fd = terminal.recv_console(path, timeout=10)
        assert os.isatty(fd)
        os.close(fd)
        assert not os.path.exists(path)  # cleaned up
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def test_long_socket_path(tmp_path):
    """Paths over sun_path's 108 bytes still connect (via /proc/self/fd)."""
    d = tmp_path / ("d" * 60) / ("e" * 60)
    d.mkdir(parents=True)
    path = str(d / "console.sock")
    assert len(path) > 108
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dfd = os.open(str(d), os.O_PATH)
    try:
        srv.bind(f"/proc/self/fd/{dfd}/console.sock")
        srv.listen(1)
        assert os.path.exists(path)
        with terminal.open_pty() as pty:
            terminal.send_console(path, pty.master)
        conn, _ = srv.accept()
        with conn:
            fd, payload = terminal.recv_fd(conn.fileno(), timeout=5)
            os.close(fd)
    finally:
        os.close(dfd)
        srv.close()


def test_fd_over_a_socketpair():
    """The same send/recv works on the init<->parent sync socket."""
    a, b = socket.socketpair()
    with a, b, terminal.open_pty() as pty:
        terminal.send_fd(a.fileno(), pty.master, b"pty")
        fd, payload = terminal.recv_fd(b.fileno(), timeout=5)
        assert payload == b"pty"
        assert os.path.samestat(os.fstat(fd), os.fstat(pty.master))
        os.close(fd)


def test_recv_fd_rejects_no_fd():
    a, b = socket.socketpair()
    with a, b:
        a.send(b"/dev/ptmx")
        with pytest.raises(OciError) as e:
            terminal.recv_fd(b.fileno(), timeout=5)
        assert "got 0 fd(s)" in one_line(e)


def test_recv_fd_rejects_two_fds_and_closes_them():
    a, b = socket.socketpair()
    r, w = os.pipe()
    with a, b:
        socket.send_fds(a, [b"x"], [r, w])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(OciError) as e:
            terminal.recv_fd(b.fileno(), timeout=5)
        assert "got 2 fd(s)" in one_line(e)
        assert set(os.listdir("/proc/self/fd")) <= before  # nothing leaked
    os.close(r)
    os.close(w)


def test_recv_fd_peer_closed():
    a, b = socket.socketpair()
    with b:
        a.close()
        with pytest.raises(OciError) as e:
            terminal.recv_fd(b.fileno(), timeout=5)
        assert "closed" in one_line(e)


def test_recv_timeout(short_tmp):
    with terminal.ConsoleReceiver(f"{short_tmp}/c.sock") as rcv:
        with pytest.raises(OciError) as e:
            rcv.receive(timeout=0.05)
        assert "timed out" in one_line(e)


# --- bad input -------------------------------------------------------------

def test_console_socket_missing(short_tmp):
    path = f"{short_tmp}/nope.sock"
    with pytest.raises(OciError) as e:
        terminal.check_console_socket(path)
    assert one_line(e) == f"console socket {path}: no such file"
    with pytest.raises(OciError) as e:
        terminal.connect_console(path)
    assert one_line(e) == f"console socket {path}: no such file"
    with pytest.raises(OciError):
        terminal.send_console(path, 0)


@pytest.mark.parametrize("kind", ["file", "dir", "fifo"])
def test_console_socket_not_a_socket(short_tmp, kind):
    path = f"{short_tmp}/x"
    if kind == "file":
        open(path, "w").close()
    elif kind == "dir":
        os.mkdir(path)
    else:
        os.mkfifo(path)
    with pytest.raises(OciError) as e:
        terminal.check_console_socket(path)
    assert one_line(e) == f"console socket {path}: not a unix socket"


def test_console_socket_empty_path():
    with pytest.raises(OciError) as e:
        terminal.check_console_socket("")
    one_line(e)


def test_console_socket_nobody_listening(short_tmp):
    path = f"{short_tmp}/c.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening: a stale socket file
    s.close()
    terminal.check_console_socket(path)  # it is a socket...
    with pytest.raises(OciError) as e:
        terminal.connect_console(path)  # ...but nobody is there
    assert one_line(e) == f"console socket {path}: connect: Connection refused"


@pytest.mark.parametrize("terminal_, sock, detach, ok", [
    (True, "/x.sock", True, True),
    (True, None, False, True),       # run -t in the foreground: proxy
    (False, None, True, True),
    (False, None, False, True),
    (False, "/x.sock", True, False),  # socket without a terminal
    (False, "/x.sock", False, False),
    (True, None, True, False),       # detached tty with nowhere to go
])
def test_check_terminal_args(terminal_, sock, detach, ok):
    if ok:
        terminal.check_terminal_args(terminal_, sock, detach)
    else:
        with pytest.raises(OciError) as e:
            terminal.check_terminal_args(terminal_, sock, detach)
        one_line(e)


def test_open_pty_bad_ptmx(short_tmp):
    with pytest.raises(OciError) as e:
        terminal.open_pty(f"{short_tmp}/ptmx")
    assert one_line(e).startswith(f"open {short_tmp}/ptmx: ")
    with pytest.raises(OciError) as e:
        terminal.open_pty("/dev/null")
    assert "not a pty multiplexer" in one_line(e)


def test_open_pty_fds_are_cloexec_and_unlocked():
    with terminal.open_pty() as pty:
        assert not os.get_inheritable(pty.master)
        assert not os.get_inheritable(pty.slave)
        assert os.path.samestat(os.stat(pty.slave_path), os.fstat(pty.slave))
        os.write(pty.master, b"x\n")  # unlocked: the pair works
        assert os.read(pty.slave, 10) == b"x\n"
    assert pty.master == -1 and pty.slave == -1


def test_apply_size_bad_input():
    r, w = os.pipe()
    try:
        with pytest.raises(OciError) as e:
            terminal.apply_size(r, 24, 80)
        one_line(e)
    finally:
        os.close(r)
        os.close(w)
    with terminal.open_pty() as pty, pytest.raises(OciError) as e:
        terminal.apply_size(pty.master, 70000, 80)
    one_line(e)


def test_exit_code():
    assert terminal.exit_code(0) == 0
    assert terminal.exit_code(3 << 8) == 3
    assert terminal.exit_code(15) == 143            # killed by SIGTERM
    assert terminal.exit_code(3 | 0x80) == 131      # SIGQUIT, core dumped
