"""libc / raw syscalls that the stdlib does not expose, and their constants.

Thin wrappers only: each raises OSError(errno) on failure and has no policy.
Loading ctypes costs ~2 ms, so this module is imported only by code that is
about to touch the kernel.
"""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
# PyDLL keeps the GIL across the call: needed for a raw clone(), where the
# child must come back holding the same interpreter state as the parent.
_pylibc = ctypes.PyDLL(None, use_errno=True)

_ARCH = os.uname().machine
_NR = {
    "x86_64": dict(rt_sigaction=13, clone=56, pivot_root=155, personality=135, ioprio_set=251,
                   sched_setattr=314, set_mempolicy=238, keyctl=250,
                   capget=125, capset=126, seccomp=317, bpf=321),
    "aarch64": dict(rt_sigaction=134, clone=220, pivot_root=41, personality=92, ioprio_set=30,
                    sched_setattr=274, set_mempolicy=237, keyctl=219,
                    capget=90, capset=91, seccomp=277, bpf=280),
}.get(_ARCH)
if _NR is None:  # pragma: no cover - other architectures are not built yet
    raise ImportError(f"ocirun: unsupported architecture {_ARCH}")
# Syscalls added after 4.20 have the same number on every architecture.
_NR.update(pidfd_send_signal=424, open_tree=428, move_mount=429, fsopen=430,
           fsconfig=431, fsmount=432, pidfd_open=434, close_range=436,
           openat2=437, pidfd_getfd=438, mount_setattr=442)
NR = _NR

# --- namespaces ---------------------------------------------------------
CLONE_NEWTIME = 0x00000080
CLONE_VM = 0x00000100
CLONE_FILES = 0x00000400
CLONE_VFORK = 0x00004000
CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17

# --- mount --------------------------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# new mount API
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
O_PATH = getattr(os, "O_PATH", 0o10000000)

# --- prctl --------------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _check(ret: int, what: str = "") -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}" if what else os.strerror(e))
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return os.fsencode(s)


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def syscall(name: str, *args: int | bytes | None | ctypes._SimpleCData) -> int:
    """Call syscall `name` (see NR) with integer / pointer arguments."""
    conv = [a if not isinstance(a, int) else ctypes.c_long(a) for a in args]
    return _check(_syscall(ctypes.c_long(_NR[name]), *conv), name)


# --- mount family -------------------------------------------------------
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), target)


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), target)


def pivot_root(new_root: str, put_old: str) -> None:
    syscall("pivot_root", _b(new_root), _b(put_old))


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return syscall("open_tree", dirfd, _b(path), flags)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str,
               flags: int) -> None:
    syscall("move_mount", from_fd, _b(from_path), to_fd, _b(to_path), flags)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0,
                  attr_clr: int = 0, propagation: int = 0,
                  userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    syscall("mount_setattr", dirfd, _b(path), flags, ctypes.byref(attr),
            ctypes.sizeof(attr))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _syscall(ctypes.c_long(_NR["openat2"]), ctypes.c_long(dirfd), _b(path),
                   ctypes.byref(how), ctypes.c_long(ctypes.sizeof(how)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return ret


# --- namespaces and processes -------------------------------------------
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


_pysyscall = _pylibc.syscall
_pysyscall.restype = ctypes.c_long
_pyapi = ctypes.pythonapi


def clone(flags: int) -> int:
    """fork() with clone flags (new namespaces, CLONE_PARENT).

    Same contract as os.fork(): 0 in the child, the child's pid in the
    parent. The interpreter's own fork hooks run around the raw syscall so
    the child's runtime state (GIL, import lock, at-fork callbacks) is sane.
    """
    _pyapi.PyOS_BeforeFork()
    pid = _pysyscall(ctypes.c_long(_NR["clone"]), ctypes.c_long(flags | SIGCHLD),
                     ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0),
                     ctypes.c_long(0))
    if pid == 0:
        _pyapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _pyapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
          arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, len(b)), "setdomainname")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), "sethostname")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    syscall("pidfd_send_signal", pidfd, sig, 0, 0)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    syscall("close_range", first, last, flags)


CLOSE_RANGE_CLOEXEC = 4

KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str | None = None) -> int:
    return syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, _b(name) if name else 0)


_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_int]


def link_fd(fd: int, path: str) -> None:
    """Give an O_TMPFILE inode its name (linkat with AT_EMPTY_PATH)."""
    if _libc.linkat(fd, b"", -100, _b(path), AT_EMPTY_PATH) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


def signal_default(sig: int) -> None:
    """SIG_DFL for any signal, including the two real-time signals that libc
    reserves for itself (32, 33) and refuses in sigaction()."""
    act = (ctypes.c_ulong * 4)(0, 0, 0, 0)  # handler SIG_DFL, flags, restorer, mask
    syscall("rt_sigaction", sig, act, 0, 8)
