"""sd_notify through the runtime (NOTIFY_SOCKET), as runc does it.

A runtime started with NOTIFY_SOCKET (a systemd unit of Type=notify, or an
engine passing its own socket) gives the container a socket of its own
instead of the host's: <state dir>/notify/notify.sock, bind-mounted
read-only at /run/notify, with NOTIFY_SOCKET=/run/notify/notify.sock in the
process's environment. Whoever starts the process (`run`, or `start` after
`create`) waits until the container sends a READY= line or its init exits,
then tells the host: that line, MAINPID (the init; for a foreground `run`
the runtime itself, which stays in front of it), and BARRIER=1, the
sd_notify_barrier() handshake, so the host has read both before we go on.
Only READY is relayed (runc relays nothing else either).

Loaded only when NOTIFY_SOCKET is set.
"""
from __future__ import annotations

import _socket

from ocirun import log
from ocirun import oslite as os
from ocirun.errors import OciError

CONTAINER_DIR = "/run/notify"
SOCKET_NAME = "notify.sock"
BARRIER_TIMEOUT_MS = 30000  # as runc: a host that ignores BARRIER costs this once


def socket_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "notify")


def add_to_config(cfg: dict, state_dir: str) -> None:
    """The container's side: the read-only bind of our socket's directory
    and NOTIFY_SOCKET naming it (replacing one the config has)."""
    mounts = cfg.get("mounts") or []
    cfg["mounts"] = mounts + [{"destination": CONTAINER_DIR, "type": "bind",
                               "source": socket_dir(state_dir),
                               "options": ["bind", "nosuid", "noexec", "nodev", "ro"]}]
    proc = cfg.get("process")
    if isinstance(proc, dict):
        env = [e for e in proc.get("env") or [] if not e.startswith("NOTIFY_SOCKET=")]
        proc["env"] = env + [f"NOTIFY_SOCKET={CONTAINER_DIR}/{SOCKET_NAME}"]


def make_dir(state_dir: str) -> None:
    """The bind source, made by `create` (the socket in it by whoever starts
    the process: a `create` exits long before)."""
    os.mkdir(socket_dir(state_dir), 0o755)


class Listener:
    """Our end: a datagram socket bound in the state dir, which anyone in
    the container may write to."""

    def __init__(self, state_dir: str) -> None:
        d = socket_dir(state_dir)
        path = os.path.join(d, SOCKET_NAME)
        try:
            os.unlink(path)  # an earlier start's
        except FileNotFoundError:
            pass
        except OSError as e:
            raise OciError(f"notify socket {path}: {e.strerror}") from None
        self.sock = _socket.socket(_socket.AF_UNIX,
                                   _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        try:
            dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:  # (through the dir's fd: a long state root would overflow sun_path)
                self.sock.bind(f"/proc/self/fd/{dfd}/{SOCKET_NAME}")
            finally:
                os.close(dfd)
            os.chmod(path, 0o777)
        except OSError as e:
            self.sock.close()
            raise OciError(f"notify socket {path}: {e.strerror}") from None

    def wait_ready(self, pid: int) -> bytes | None:
        """The first READY=... line the container sends; None if its init
        (pid) exits first. Signal handlers run meanwhile (PEP 475)."""
        import select
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        try:
            p = select.poll()
            p.register(self.sock.fileno(), select.POLLIN)
            p.register(pidfd, select.POLLIN)
            while True:
                ready = dict(p.poll())
                if self.sock.fileno() in ready:
                    line = self.read_ready()
                    if line is not None:
                        return line
                elif pidfd in ready:
                    return None
        finally:
            os.close(pidfd)

    def read_ready(self) -> bytes | None:
        """One datagram (the socket is readable): its READY=... line, if any."""
        return _ready_line(self.sock.recv(4096))

    def close(self) -> None:
        self.sock.close()


class Relay:
    """One process's READY, from our socket to the host's."""

    def __init__(self, state_dir: str, host: str) -> None:
        self.host = host
        self.listener = Listener(state_dir)  # before the process can send

    def relay(self, pid: int, mainpid: int) -> None:
        """Block until the process (init pid) says READY or exits; tell the
        host, naming mainpid."""
        ready = self.listener.wait_ready(pid)
        if ready is not None:
            tell_host(self.host, ready, mainpid)

    def watch(self, mainpid: int) -> dict:
        """The same, for a loop that has other fds to serve (the pty proxy):
        {fd: callback}; the BARRIER answer is not waited for there."""
        def on_datagram() -> bool:
            ready = self.listener.read_ready()
            if ready is None:
                return True
            tell_host(self.host, ready, mainpid, wait=False)
            return False
        return {self.listener.sock.fileno(): on_datagram}

    def close(self) -> None:
        self.listener.close()


def _ready_line(datagram: bytes) -> bytes | None:
    for line in datagram.split(b"\n"):
        if line.startswith(b"READY="):
            return line
    return None


def tell_host(host: str, ready: bytes, mainpid: int, wait: bool = True) -> None:
    """READY, MAINPID, then wait for the host to confirm it read them
    (BARRIER=1 with a pipe it closes). A failure is a warning: the
    container runs either way. wait=False: BARRIER is sent but not waited
    for (a foreground runtime with a terminal to serve, which stays in
    front of the process anyway)."""
    addr = "\0" + host[1:] if host.startswith("@") else host  # @: abstract
    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        try:
            s.connect(addr)
            s.send(ready + b"\n")
            s.send(b"MAINPID=%d\n" % mainpid)
            _barrier(s, wait)
        finally:
            s.close()
    except OSError as e:
        log.warn(f"NOTIFY_SOCKET {host}: {e.strerror or e}")


def _barrier(s, wait: bool = True) -> None:
    import select
    from _struct import pack
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            s.sendmsg([b"BARRIER=1"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pack("i", w))])
        finally:
            os.close(w)
        if not wait:
            return
        p = select.poll()
        p.register(r, select.POLLIN)
        if not p.poll(BARRIER_TIMEOUT_MS):
            log.warn("NOTIFY_SOCKET: the host did not answer BARRIER=1 "
                     f"in {BARRIER_TIMEOUT_MS // 1000} s; ignored")
    finally:
        os.close(r)
