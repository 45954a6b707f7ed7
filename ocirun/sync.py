"""The parent <-> init channel: a SOCK_SEQPACKET socketpair, one message per
request, optional fds over SCM_RIGHTS. Messages are short ASCII verbs
followed by an optional payload ("error <text>", "pid 1234", "created")."""
from __future__ import annotations

from ocirun import oslite as os
import sys

# _socket, not socket: the socket module pulls in enum (~2 ms per start)
import _socket


from ocirun.errors import PeerGone  # noqa: F401  (re-exported)


class Sync:
    __slots__ = ("sock",)

    def __init__(self, sock) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple["Sync", "Sync"]:
        a, b = _socket.socketpair(_socket.AF_UNIX,
                                  _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        return Sync(a), Sync(b)

    def send(self, verb: str, payload: bytes | str = b"", fds: list[int] | None = None) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        msg = verb.encode() + (b" " + payload if payload else b"")
        try:
            if fds:
                anc = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
                self.sock.sendmsg([msg], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, anc)])
            else:
                # write(2), not send(2): the init talks after its seccomp
                # filter is loaded, and every profile allows read/write
                os.write(self.sock.fileno(), msg)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("the other side of the sync socket is gone") from None

    def recv(self) -> tuple[str, bytes, list[int]]:
        """(verb, payload, fds); verb is "" at EOF (the peer exec'd or died)."""
        while True:
            try:
                msg, anc, _flags, _addr = self.sock.recvmsg(1 << 16, _socket.CMSG_LEN(4 * 64),
                                                             _socket.MSG_CMSG_CLOEXEC)
                break
            except InterruptedError:
                continue
            except ConnectionResetError:
                return "", b"", []
        fds = []
        for level, kind, data in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
                        for i in range(0, len(data) - len(data) % 4, 4)]
        verb, _, payload = msg.partition(b" ")
        return verb.decode(), payload, fds

    def expect(self, verb: str) -> bytes:
        """The child's side: one message, no fds, by read(2) (see send)."""
        while True:
            try:
                msg = os.read(self.sock.fileno(), 1 << 16)
                break
            except InterruptedError:
                continue
            except ConnectionResetError:
                msg = b""
                break
        got, _, payload = msg.partition(b" ")
        got = got.decode()
        if got == verb:
            return payload
        from ocirun.errors import OciError
        if got == "error":
            raise OciError(payload.decode(errors="replace"))
        if got == "":
            raise PeerGone("the other side of the sync socket is gone")
        raise OciError(f"internal: expected {verb!r} from the runtime, got {got!r}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
