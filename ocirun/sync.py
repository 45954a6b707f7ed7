"""The parent <-> init channel: a SOCK_SEQPACKET socketpair, one message per
request, optional fds over SCM_RIGHTS. Messages are short ASCII verbs
followed by an optional payload ("error <text>", "pid 1234", "created")."""
from __future__ import annotations

import os
import socket


class Sync:
    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple["Sync", "Sync"]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        return Sync(a), Sync(b)

    def send(self, verb: str, payload: bytes | str = b"", fds: list[int] | None = None) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        msg = verb.encode() + (b" " + payload if payload else b"")
        if fds:
            socket.send_fds(self.sock, [msg], fds)
        else:
            self.sock.send(msg)

    def recv(self) -> tuple[str, bytes, list[int]]:
        """(verb, payload, fds); verb is "" at EOF (the peer exec'd or died)."""
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 4)
                break
            except InterruptedError:
                continue
            except ConnectionResetError:
                return "", b"", []
        verb, _, payload = msg.partition(b" ")
        return verb.decode(), payload, fds

    def expect(self, verb: str) -> bytes:
        got, payload, _ = self.recv()
        if got == verb:
            return payload
        if got == "error":
            from ocirun.errors import OciError
            raise OciError(payload.decode(errors="replace"))
        from ocirun.errors import OciError
        raise OciError(f"internal: expected {verb!r} from the runtime, got {got or 'EOF'!r}")

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
