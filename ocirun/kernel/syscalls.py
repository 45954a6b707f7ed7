"""libc / raw syscalls that the stdlib does not expose, and their constants.

Thin wrappers only: each raises OSError(errno) on failure and has no policy.
Built on ocirun.kernel.ffi (the `_ctypes` extension alone, ~0.7 ms to load
instead of ctypes' ~2.5 ms); imported only by code about to touch the kernel.
"""
from __future__ import annotations

from ocirun import oslite as os

from _struct import pack

from .ffi import c_long, char_array, error, get_errno, int_func, long_func, python_api_func

_ARCH = os.uname().machine
_NR = {
    "x86_64": dict(rt_sigaction=13, prlimit64=302, clone=56, pivot_root=155, personality=135, ioprio_set=251,
                   sched_setattr=314, set_mempolicy=238, keyctl=250,
                   capget=125, capset=126, seccomp=317, bpf=321),
    "aarch64": dict(rt_sigaction=134, prlimit64=261, clone=220, pivot_root=41, personality=92, ioprio_set=30,
                    sched_setattr=274, set_mempolicy=237, keyctl=219,
                    capget=90, capset=91, seccomp=277, bpf=280),
}.get(_ARCH)
if _NR is None:  # pragma: no cover - other architectures are not built yet
    raise ImportError(f"ocirun: unsupported architecture {_ARCH}")
# Syscalls added after 4.20 have the same number on every architecture.
_NR.update(pidfd_send_signal=424, clone3=435, open_tree=428, move_mount=429, fsopen=430,
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
CLONE_INTO_CGROUP = 0x200000000

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
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_EMPTY_PATH = 0x40
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
PR_GET_DUMPABLE = 3
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
        raise error(what)
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return os.fsencode(s)


_syscall = long_func("syscall")


def syscall(name: str, *args) -> int:
    """Call syscall `name` (see NR) with integers, bytes, None or buffers."""
    return _check(_syscall(c_long(_NR[name]),
                           *[c_long(a) if isinstance(a, int) else a for a in args]), name)


# --- mount family -------------------------------------------------------
_mount = int_func("mount")
_umount2 = int_func("umount2")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    if _mount(_b(source), _b(target), _b(fstype), c_long(flags), _b(data)) < 0:
        raise error("", target)


def umount2(target: str, flags: int = 0) -> None:
    if _umount2(_b(target), flags) < 0:
        raise error("", target)


def pivot_root(new_root: str, put_old: str) -> None:
    syscall("pivot_root", _b(new_root), _b(put_old))


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return syscall("open_tree", dirfd, _b(path), flags)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str,
               flags: int) -> None:
    syscall("move_mount", from_fd, _b(from_path), to_fd, _b(to_path), flags)


FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    return syscall("fsopen", _b(fstype), flags)


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None,
             aux: int = 0) -> None:
    syscall("fsconfig", fd, cmd, _b(key), _b(value), aux)


def fsmount(fd: int, attr_flags: int = 0, flags: int = FSMOUNT_CLOEXEC) -> int:
    """A detached mount of the configured filesystem; its fd."""
    return syscall("fsmount", fd, flags, attr_flags)


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0,
                  attr_clr: int = 0, propagation: int = 0,
                  userns_fd: int = 0) -> None:
    attr = pack("=4Q", attr_set, attr_clr, propagation, userns_fd)  # struct mount_attr
    syscall("mount_setattr", dirfd, _b(path), flags, attr, len(attr))


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = pack("=3Q", flags | os.O_CLOEXEC, mode, resolve)  # struct open_how
    ret = _syscall(c_long(_NR["openat2"]), c_long(dirfd), _b(path), how, c_long(len(how)))
    if ret < 0:
        raise error("", path)
    return ret


# --- namespaces and processes -------------------------------------------
_unshare = int_func("unshare")
_setns = int_func("setns")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


_pysyscall = long_func("syscall", gil=True)
_before_fork = python_api_func("PyOS_BeforeFork")
_after_fork_child = python_api_func("PyOS_AfterFork_Child")
_after_fork_parent = python_api_func("PyOS_AfterFork_Parent")


def _forking(name: str, *args) -> int:
    """A raw fork-like syscall with the interpreter's own fork hooks around
    it, so the child's runtime state (GIL, import lock, at-fork callbacks)
    is sane. Same contract as os.fork(): 0 in the child, its pid in the parent."""
    _before_fork()
    pid = _pysyscall(c_long(_NR[name]), *args)
    if pid == 0:
        _after_fork_child()
        return 0
    err = get_errno()
    _after_fork_parent()
    if pid < 0:
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return pid


def clone(flags: int) -> int:
    """fork() with clone flags (new namespaces, CLONE_PARENT)."""
    return _forking("clone", c_long(flags | SIGCHLD), c_long(0), c_long(0), c_long(0),
                    c_long(0))


def clone_into_cgroup(flags: int, cgroup_fd: int) -> int:
    """clone() with CLONE_INTO_CGROUP (clone3): the child starts life in the
    cgroup2 directory cgroup_fd, with no migration afterwards. Same contract
    as clone(); OSError (ENOSYS, E2BIG, EINVAL...) when the kernel cannot."""
    # struct clone_args (CLONE_ARGS_SIZE_VER2): flags, pidfd, child_tid,
    # parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup
    args = pack("=11Q", flags | CLONE_INTO_CGROUP, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0,
                cgroup_fd)
    return _forking("clone3", args, c_long(len(args)))


# RLIMIT_* numbers (the generic ones: x86_64 and aarch64 share them)
RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
           "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
           "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
           "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}
RLIM_INFINITY = (1 << 64) - 1


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """prlimit64 on ourselves (the `resource` module costs an extension load)."""
    syscall("prlimit64", 0, resource, pack("=QQ", soft, hard), 0)


_prctl = int_func("prctl")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
          arg5: int = 0) -> int:
    return _check(_prctl(option, c_long(arg2), c_long(arg3), c_long(arg4), c_long(arg5)),
                  "prctl")


_setdomainname = int_func("setdomainname")
_sethostname = int_func("sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_setdomainname(b, c_long(len(b))), "setdomainname")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_sethostname(b, c_long(len(b))), "sethostname")


_socket = int_func("socket")
AF_INET = 2
SOCK_DGRAM = 2
SOCK_CLOEXEC = 0o2000000


def socket(family: int, type_: int, proto: int = 0) -> int:
    """A close-on-exec socket fd, for ioctls (the `_socket` module's set-up
    costs ~0.1 ms of an init that needs one throwaway socket)."""
    return _check(_socket(family, type_ | SOCK_CLOEXEC, proto), "socket")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    syscall("pidfd_send_signal", pidfd, sig, 0, 0)


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    syscall("close_range", first, last, flags)


CLOSE_RANGE_CLOEXEC = 4

KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str | None = None) -> int:
    return syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, _b(name) if name else 0)


_linkat = int_func("linkat")


def link_fd(fd: int, path: str) -> None:
    """Give an O_TMPFILE inode its name (linkat with AT_EMPTY_PATH)."""
    if _linkat(fd, b"", -100, _b(path), AT_EMPTY_PATH) < 0:
        raise error("", path)


_renameat2 = int_func("renameat2")
RENAME_EXCHANGE = 2


def rename_exchange(a: str, b: str) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE)."""
    if _renameat2(-100, _b(a), -100, _b(b), RENAME_EXCHANGE) < 0:
        raise error("", b)


def signal_default(sig: int) -> None:
    """SIG_DFL for any signal, including the two real-time signals that libc
    reserves for itself (32, 33) and refuses in sigaction()."""
    act = bytes(32)  # handler SIG_DFL, flags, restorer, mask: all zero
    syscall("rt_sigaction", sig, act, 0, 8)


def map_file(fd: int, size: int) -> memoryview:
    """The first `size` bytes of a file, mapped read-only: reading them
    touches pages (page faults, not system calls a seccomp filter could
    refuse). The mapping lives as long as the process (or its execve)."""
    addr = long_func("mmap")(c_long(0), c_long(size), 1, 2, fd, c_long(0))  # PROT_READ, MAP_PRIVATE
    if addr == -1:
        raise error("mmap")
    return memoryview(char_array(size).from_address(addr))
