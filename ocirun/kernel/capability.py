"""capget(2) / capset(2) and the capability prctls.

Thin wrappers: raise OSError on failure, no policy (that lives in
ocirun.linux.caps). Capability sets are passed as 64-bit masks
(bit N = capability N), the form the kernel's v3 interface splits in two.
"""
from __future__ import annotations

from _struct import pack, unpack

from .ffi import buffer
from .syscalls import (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL,
                       PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, PR_CAPBSET_READ,
                       PR_SET_KEEPCAPS, prctl, syscall)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_GET_KEEPCAPS = 7
PR_CAP_AMBIENT_IS_SET = 1


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) masks of `pid` (0 = self)."""
    data = buffer(24)  # struct __user_cap_data_struct[2]
    syscall("capget", pack("=Ii", _LINUX_CAPABILITY_VERSION_3, pid), data)
    e0, p0, i0, e1, p1, i1 = unpack("=6I", data.raw)
    return (e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's three capability sets at once."""
    m = 0xFFFFFFFF
    data = pack("=6I", effective & m, permitted & m, inheritable & m,
                effective >> 32 & m, permitted >> 32 & m, inheritable >> 32 & m)
    syscall("capset", pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0), data)


def bounding_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def bounding_read(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap) == 1


def ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def ambient_clear_all() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if on else 0)


def get_keepcaps() -> bool:
    return prctl(PR_GET_KEEPCAPS) == 1
