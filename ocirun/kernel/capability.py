"""capget(2) / capset(2) and the capability prctls.

Thin wrappers: raise OSError on failure, no policy (that lives in
ocirun.linux.caps). Capability sets are passed as 64-bit masks
(bit N = capability N), the form the kernel's v3 interface splits in two.
"""
from __future__ import annotations

import ctypes

from .syscalls import (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL,
                       PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, PR_CAPBSET_READ,
                       PR_SET_KEEPCAPS, prctl, syscall)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_GET_KEEPCAPS = 7
PR_CAP_AMBIENT_IS_SET = 1


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_Data2 = _Data * 2


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) masks of `pid` (0 = self)."""
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, pid)
    data = _Data2()
    syscall("capget", ctypes.byref(hdr), ctypes.byref(data))
    lo, hi = data
    return (lo.effective | hi.effective << 32, lo.permitted | hi.permitted << 32,
            lo.inheritable | hi.inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's three capability sets at once."""
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    m = 0xFFFFFFFF
    data = _Data2(_Data(effective & m, permitted & m, inheritable & m),
                  _Data(effective >> 32 & m, permitted >> 32 & m,
                        inheritable >> 32 & m))
    syscall("capset", ctypes.byref(hdr), ctypes.byref(data))


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
