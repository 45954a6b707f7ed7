"""A minimal rtnetlink (NETLINK_ROUTE) client: links and addresses.

Only what moving a network device into a container needs (linux.netDevices):
look a link up, list its addresses, move/rename it, add an address, bring it
up. Messages are packed by hand (rtnetlink(7), netlink(7)); no policy here.
A socket belongs to the network namespace it was opened in, which is how the
caller talks to a container's namespace without staying in it.
"""
from __future__ import annotations

from ocirun import oslite as os
from struct import Struct

import _socket

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 1, 2, 4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400

IFLA_ADDRESS, IFLA_IFNAME, IFLA_NET_NS_FD = 1, 3, 28
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 3, 4, 8
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
IFF_UP = 1

_NLMSGHDR = Struct("=IHHII")      # len, type, flags, seq, pid
_IFINFOMSG = Struct("=BxHiII")    # family, type, index, flags, change
_IFADDRMSG = Struct("=BBBBI")     # family, prefixlen, flags, scope, index
_RTATTR = Struct("=HH")           # len, type


class Link:
    __slots__ = ("index", "name", "flags", "mac")

    def __init__(self, index: int, name: str, flags: int, mac: bytes) -> None:
        self.index, self.name, self.flags, self.mac = index, name, flags, mac


class Addr:
    """One address as the kernel reported it; `attrs` are re-sent as they are."""
    __slots__ = ("family", "prefixlen", "flags", "scope", "index", "attrs")

    def __init__(self, family, prefixlen, flags, scope, index, attrs) -> None:
        self.family, self.prefixlen, self.flags = family, prefixlen, flags
        self.scope, self.index, self.attrs = scope, index, attrs

    @property
    def permanent(self) -> bool:
        flags = self.attrs.get(IFA_FLAGS)
        full = int.from_bytes(flags[:4], "little") if flags else self.flags
        return bool(full & IFA_F_PERMANENT)

    def text(self) -> str:
        raw = self.attrs.get(IFA_LOCAL) or self.attrs.get(IFA_ADDRESS) or b""
        fam = _socket.AF_INET if len(raw) == 4 else _socket.AF_INET6
        try:
            return f"{_socket.inet_ntop(fam, raw)}/{self.prefixlen}"
        except (OSError, ValueError):
            return f"?/{self.prefixlen}"


def _attr(kind: int, data: bytes) -> bytes:
    n = _RTATTR.size + len(data)
    return _RTATTR.pack(n, kind) + data + b"\0" * (-n % 4)


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + _RTATTR.size <= end:
        n, kind = _RTATTR.unpack_from(buf, off)
        if n < _RTATTR.size:
            break
        out[kind & 0x3FFF] = buf[off + _RTATTR.size:off + n]
        off += (n + 3) & ~3
    return out


class Netlink:
    """One NETLINK_ROUTE socket, in the network namespace current at open."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK,
                                   _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, mtype: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, payload) of every reply until the
        ack or the end of the dump. A negative error code raises OSError."""
        self.seq += 1
        seq = self.seq
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags | NLM_F_REQUEST, seq, 0)
        self.sock.send(msg + body)
        out = []
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                n, t, f, s, _pid = _NLMSGHDR.unpack_from(data, off)
                if n < _NLMSGHDR.size:
                    return out
                payload = data[off + _NLMSGHDR.size:off + n]
                off += (n + 3) & ~3
                if s != seq:
                    continue
                if t == NLMSG_ERROR:
                    code = int.from_bytes(payload[:4], "little", signed=True)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return out  # the ack
                if t == NLMSG_DONE:
                    return out
                out.append((t, payload))
                if not f & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return out

    # -- links ----------------------------------------------------------------
    @staticmethod
    def _link(payload: bytes) -> Link:
        _fam, _type, index, flags, _chg = _IFINFOMSG.unpack_from(payload)
        a = _attrs(payload, _IFINFOMSG.size, len(payload))
        return Link(index, a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"),
                    flags, a.get(IFLA_ADDRESS, b""))

    def link(self, name: str) -> Link:
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
        reply = self._request(RTM_GETLINK, 0, body)
        if not reply:
            raise OSError(19, os.strerror(19))  # ENODEV
        return self._link(reply[0][1])

    def links(self) -> list[Link]:
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0)
        return [self._link(p) for t, p in self._request(RTM_GETLINK, NLM_F_DUMP, body)
                if t == RTM_NEWLINK]

    def move_link(self, index: int, netns_fd: int, new_name: str | None) -> None:
        """Into another network namespace (the kernel takes the device down and
        drops its addresses), renamed there if new_name is given."""
        body = _IFINFOMSG.pack(0, 0, index, 0, 0) + _attr(IFLA_NET_NS_FD, netns_fd.to_bytes(4, "little"))
        if new_name:
            body += _attr(IFLA_IFNAME, new_name.encode() + b"\0")
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def set_up(self, index: int) -> None:
        self._request(RTM_NEWLINK, NLM_F_ACK, _IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP))

    # -- addresses -------------------------------------------------------------
    def addresses(self, index: int) -> list[Addr]:
        out = []
        for t, p in self._request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(0, 0, 0, 0, 0)):
            if t != RTM_NEWADDR:
                continue
            fam, plen, flags, scope, idx = _IFADDRMSG.unpack_from(p)
            if idx == index:
                out.append(Addr(fam, plen, flags, scope, idx,
                                _attrs(p, _IFADDRMSG.size, len(p))))
        return out

    def add_address(self, index: int, a: Addr) -> None:
        body = _IFADDRMSG.pack(a.family, a.prefixlen, a.flags, a.scope, index)
        for kind in (IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST, IFA_FLAGS):
            if kind in a.attrs:  # (no IFA_LABEL: it carries the old name)
                body += _attr(kind, a.attrs[kind])
        self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
