"""A minimal D-Bus client: enough to call systemd's Manager over the system bus.

Why hand-rolled: the systemd driver needs 4 method calls and one signal; the
PyPI clients (dbus-python, jeepney, dbus-next, pydbus) are either C
extensions, need GLib, or pull in asyncio and far more code than this, and
ocirun is stdlib-only. See docs/cgroups.md.

Wire format: little endian, protocol version 1, AUTH EXTERNAL over a unix
socket. Values: ints/bools for y b n q i u x t, str for s o g, list for a,
dict for a{..}, tuple for (..), (signature, value) for v.
"""
from __future__ import annotations

from ocirun import oslite as os
import socket
import struct
import time

_FMT = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d"}
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8,
          "s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1, "h": 4}


class DBusError(Exception):
    """An error reply: .name is the D-Bus error name."""

    def __init__(self, name: str, msg: str) -> None:
        self.name = name
        super().__init__(f"{name}: {msg}")


def _split(sig: str) -> list[str]:
    """'sa(sv)u' -> ['s', 'a(sv)', 'u']."""
    out, i = [], 0
    while i < len(sig):
        j = _end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _end(sig: str, i: int) -> int:
    c = sig[i]
    if c == "a":
        return _end(sig, i + 1)
    if c in "({":
        depth, j = 0, i
        while True:
            if sig[j] in "({":
                depth += 1
            elif sig[j] in ")}":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
    return i + 1


class _W:
    def __init__(self) -> None:
        self.b = bytearray()

    def pad(self, n: int) -> None:
        self.b.extend(b"\0" * (-len(self.b) % n))

    def put(self, t: str, v) -> None:
        c = t[0]
        self.pad(_ALIGN[c])
        if c in _FMT:
            self.b.extend(struct.pack("<" + _FMT[c], v))
        elif c in "so":
            e = v.encode()
            self.b.extend(struct.pack("<I", len(e)) + e + b"\0")
        elif c == "g":
            e = v.encode()
            self.b.extend(bytes((len(e),)) + e + b"\0")
        elif c == "v":
            self.put("g", v[0])
            self.put(v[0], v[1])
        elif c == "(":
            for st, x in zip(_split(t[1:-1]), v):
                self.put(st, x)
        elif c == "a":
            et = t[1:]
            self.b.extend(b"\0\0\0\0")
            at = len(self.b) - 4
            self.pad(_ALIGN[et[0]])
            start = len(self.b)
            if et[0] == "{":
                kt, vt = _split(et[1:-1])
                for k, x in v.items():
                    self.pad(8)
                    self.put(kt, k)
                    self.put(vt, x)
            elif et == "y" and isinstance(v, (bytes, bytearray)):
                self.b.extend(v)
            else:
                for x in v:
                    self.put(et, x)
            struct.pack_into("<I", self.b, at, len(self.b) - start)
        else:
            raise ValueError(f"dbus: cannot marshal type {t!r}")


class _R:
    def __init__(self, b: bytes, pos: int = 0) -> None:
        self.b, self.p = b, pos

    def pad(self, n: int) -> None:
        self.p += -self.p % n

    def get(self, t: str):
        c = t[0]
        self.pad(_ALIGN[c])
        if c in _FMT:
            f = "<" + _FMT[c]
            (v,) = struct.unpack_from(f, self.b, self.p)
            self.p += struct.calcsize(f)
            return v
        if c in "so":
            (n,) = struct.unpack_from("<I", self.b, self.p)
            v = self.b[self.p + 4:self.p + 4 + n].decode()
            self.p += 5 + n
            return v
        if c == "g":
            n = self.b[self.p]
            v = self.b[self.p + 1:self.p + 1 + n].decode()
            self.p += 2 + n
            return v
        if c == "v":
            st = self.get("g")
            return (st, self.get(st))
        if c == "(":
            return tuple(self.get(st) for st in _split(t[1:-1]))
        if c == "a":
            (n,) = struct.unpack_from("<I", self.b, self.p)
            self.p += 4
            et = t[1:]
            self.pad(_ALIGN[et[0]])
            end = self.p + n
            if et[0] == "{":
                kt, vt = _split(et[1:-1])
                d = {}
                while self.p < end:
                    self.pad(8)
                    k = self.get(kt)
                    d[k] = self.get(vt)
                return d
            out = []
            while self.p < end:
                out.append(self.get(et))
            return out
        raise ValueError(f"dbus: cannot unmarshal type {t!r}")


class Message:
    __slots__ = ("type", "serial", "fields", "body")

    def __init__(self, type: int, serial: int, fields: dict, body: list) -> None:
        self.type, self.serial, self.fields, self.body = type, serial, fields, body

    @property
    def member(self) -> str | None:
        return self.fields.get(3)


class Connection:
    """One authenticated connection to a bus; blocking, single-threaded."""

    def __init__(self, address: str | None = None, timeout: float = 30.0) -> None:
        path = _socket_path(address)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.serial = 0
        self.buf = b""
        self.pending: list[Message] = []
        self._auth()
        self.unique_name = self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "Hello")[0]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *a) -> None:
        self.close()

    def _auth(self) -> None:
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        line = self._line()
        if not line.startswith(b"OK "):
            raise DBusError("org.freedesktop.DBus.Error.AuthFailed", line.decode(errors="replace"))
        self.sock.sendall(b"BEGIN\r\n")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("dbus: connection closed during auth")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def send(self, dest: str, path: str, iface: str, member: str,
             sig: str = "", args: tuple = ()) -> int:
        self.serial += 1
        body = _W()
        for t, v in zip(_split(sig), args):
            body.put(t, v)
        fields = [(1, ("o", path)), (2, ("s", iface)), (3, ("s", member)), (6, ("s", dest))]
        if sig:
            fields.append((8, ("g", sig)))
        h = _W()
        h.b.extend(struct.pack("<BBBBII", ord("l"), 1, 0, 1, len(body.b), self.serial))
        h.put("a(yv)", fields)
        h.pad(8)
        self.sock.sendall(bytes(h.b) + bytes(body.b))
        return self.serial

    def _read_message(self, deadline: float) -> Message:
        while True:
            if len(self.buf) >= 16:
                blen, _, flen = struct.unpack_from("<III", self.buf, 4)
                hlen = 16 + flen + (-(16 + flen) % 8)
                if len(self.buf) >= hlen + blen:
                    msg, self.buf = self.buf[:hlen + blen], self.buf[hlen + blen:]
                    if msg[0:1] != b"l":
                        raise ValueError("dbus: big-endian messages are not supported")
                    r = _R(msg, 12)
                    fields = {k: v[1] for k, v in r.get("a(yv)")}
                    r.p = hlen
                    sig = fields.get(8, "")
                    body = [r.get(t) for t in _split(sig)]
                    return Message(msg[1], struct.unpack_from("<I", msg, 8)[0], fields, body)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("dbus: timed out waiting for a reply")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("dbus: connection closed")
            self.buf += chunk

    def call(self, dest: str, path: str, iface: str, member: str,
             sig: str = "", args: tuple = (), timeout: float = 30.0) -> list:
        """Call a method and return its reply body; DBusError on an error reply."""
        serial = self.send(dest, path, iface, member, sig, args)
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.type in (2, 3) and m.fields.get(5) == serial:
                if m.type == 3:
                    raise DBusError(m.fields.get(4, "?"), str(m.body[0]) if m.body else "")
                return m.body
            if m.type == 4:
                self.pending.append(m)

    def wait_signal(self, pred, timeout: float = 30.0) -> Message:
        """Next signal for which pred(msg) is true (earlier ones queued by call())."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                m = self.pending.pop(0)
                if pred(m):
                    return m
            m = self._read_message(deadline)
            if m.type == 4 and pred(m):
                return m


def _socket_path(address: str | None) -> str:
    if address is None:
        address = os.getenv("DBUS_SYSTEM_BUS_ADDRESS",
                                 "unix:path=/run/dbus/system_bus_socket")
    if address.startswith("/"):
        return address
    for part in address.split(";"):
        if part.startswith("unix:"):
            for kv in part[5:].split(","):
                if kv.startswith("path="):
                    return kv[5:]
    raise ValueError(f"dbus: unsupported bus address {address!r}")


def user_bus_address() -> str:
    """The session bus of the calling user (rootless systemd driver)."""
    return os.getenv("DBUS_SESSION_BUS_ADDRESS",
                          f"unix:path=/run/user/{os.geteuid()}/bus")
