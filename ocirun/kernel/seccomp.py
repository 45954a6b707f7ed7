"""libseccomp (through ctypes) and the seccomp(2) syscall.

Thin wrappers, no policy: ocirun.linux.seccomp decides what to build.
libseccomp.so.2 is dlopen()ed only when a filter has to be compiled, so a
cached BPF program costs no library load. Loading a program is done here
with seccomp(2) directly, never by libseccomp, so the BPF can come from the
cache.
"""
from __future__ import annotations

from ocirun import oslite as os
import _struct as struct
import sys

from .ffi import addressof, buffer
from .syscalls import syscall

# seccomp(2) operations and filter flags (linux/seccomp.h)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3
FLAG_TSYNC = 1
FLAG_LOG = 2
FLAG_SPEC_ALLOW = 4
FLAG_NEW_LISTENER = 8
FLAG_TSYNC_ESRCH = 16
FLAG_WAIT_KILLABLE_RECV = 32

# filter return values (the same numbers libseccomp uses for SCMP_ACT_*)
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

# libseccomp filter attributes (enum scmp_filter_attr)
ATTR_ACT_DEFAULT = 1
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_TSYNC = 4
ATTR_API_TSKIP = 5
ATTR_CTL_LOG = 6
ATTR_CTL_SSB = 7
ATTR_CTL_OPTIMIZE = 8

_SONAME = "libseccomp.so.2"
_lib = None  # ctypes.CDLL, loaded (with the ctypes package) on first use
_ArgCmp = None
_lib_path: str | None = None


def library_path() -> str | None:
    """Where the dynamic loader would find libseccomp.so.2, without loading it.

    Looks in the usual directories (multiarch first); None when not found,
    in which case the soname is handed to dlopen() as is.
    """
    global _lib_path
    if _lib_path is None:
        multiarch = getattr(sys.implementation, "_multiarch", "")
        dirs = []
        if multiarch:
            dirs += [f"/usr/lib/{multiarch}", f"/lib/{multiarch}"]
        dirs += ["/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib"]
        for d in dirs:
            p = f"{d}/{_SONAME}"
            if os.path.exists(p):
                _lib_path = p
                break
        else:
            _lib_path = ""
    return _lib_path or None


def library_id() -> str:
    """Identify the installed libseccomp cheaply (no dlopen).

    The real file name carries the version (libseccomp.so.2.5.4); size and
    mtime catch a rebuilt package of the same version.
    """
    p = library_path()
    if p is None:
        return "libseccomp:missing"
    real = os.path.realpath(p)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def lib():
    """dlopen libseccomp on first use and declare the calls ocirun makes.

    The full ctypes package is loaded here, not at import: a cached BPF
    program never needs it."""
    global _lib, _ArgCmp
    if _lib is None:
        import ctypes

        class _Version(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                        ("micro", ctypes.c_uint)]

        class ArgCmp(ctypes.Structure):
            """struct scmp_arg_cmp"""
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        try:
            L = ctypes.CDLL(library_path() or _SONAME, use_errno=True)
        except OSError as e:
            raise OSError(f"cannot load {_SONAME} (install libseccomp2): {e}") from None
        vp = ctypes.c_void_p
        u32 = ctypes.c_uint32
        L.seccomp_init.argtypes = [u32]
        L.seccomp_init.restype = vp
        L.seccomp_release.argtypes = [vp]
        L.seccomp_release.restype = None
        L.seccomp_arch_add.argtypes = [vp, u32]
        L.seccomp_arch_native.restype = u32
        L.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        L.seccomp_arch_resolve_name.restype = u32
        L.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        L.seccomp_syscall_resolve_name.restype = ctypes.c_int
        L.seccomp_syscall_resolve_name_arch.argtypes = [u32, ctypes.c_char_p]
        L.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
        L.seccomp_rule_add_array.argtypes = [vp, u32, ctypes.c_int, ctypes.c_uint,
                                             ctypes.POINTER(ArgCmp)]
        L.seccomp_attr_set.argtypes = [vp, ctypes.c_int, u32]
        L.seccomp_export_bpf.argtypes = [vp, ctypes.c_int]
        L.seccomp_version.restype = ctypes.POINTER(_Version)
        L.seccomp_api_get.restype = ctypes.c_uint
        _lib, _ArgCmp = L, ArgCmp
    return _lib


def version() -> tuple[int, int, int]:
    v = lib().seccomp_version().contents
    return (v.major, v.minor, v.micro)


def api_level() -> int:
    return lib().seccomp_api_get()


def arch_token(name: str) -> int:
    """libseccomp's token for an arch name such as "x86_64"; 0 if unknown."""
    return lib().seccomp_arch_resolve_name(name.encode())


def syscall_number(name: str) -> int | None:
    """Native syscall number (or libseccomp pseudo-number) for a name."""
    nr = lib().seccomp_syscall_resolve_name(name.encode())
    return None if nr == -1 else nr


def native_arch() -> int:
    return lib().seccomp_arch_native()


def syscall_number_on(token: int, name: str) -> int | None:
    """The syscall number of a name on the arch `token`; None when unknown
    there (or a negative libseccomp pseudo-number: multiplexed calls)."""
    nr = lib().seccomp_syscall_resolve_name_arch(token, name.encode())
    return None if nr < 0 else nr


def _rc(ret: int, what: str) -> None:
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")


class Ctx:
    """A libseccomp filter context; release() frees it."""

    def __init__(self, default_action: int) -> None:
        self._L = lib()
        self._ctx = self._L.seccomp_init(default_action)
        if not self._ctx:
            raise OSError(22, f"seccomp_init({default_action:#x}) failed")

    def set_attr(self, attr: int, value: int) -> None:
        _rc(self._L.seccomp_attr_set(self._ctx, attr, value), "seccomp_attr_set")

    def add_arch(self, token: int) -> bool:
        """Add an architecture; False when it was already there."""
        ret = self._L.seccomp_arch_add(self._ctx, token)
        if ret == -17:  # EEXIST
            return False
        _rc(ret, "seccomp_arch_add")
        return True

    def add_rule(self, action: int, nr: int,
                 conds: list[tuple[int, int, int, int]] = ()) -> None:
        """Add one rule; conds are (arg index, op, datum_a, datum_b), ANDed."""
        arr = (_ArgCmp * max(len(conds), 1))(*[_ArgCmp(*c) for c in conds])
        _rc(self._L.seccomp_rule_add_array(self._ctx, action, nr, len(conds), arr),
            "seccomp_rule_add")

    def export_bpf(self) -> bytes:
        """The filter as raw struct sock_filter[] (8 bytes per instruction)."""
        fd = os.memfd_create("ocirun-seccomp", os.MFD_CLOEXEC)
        try:
            _rc(self._L.seccomp_export_bpf(self._ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._ctx:
            self._L.seccomp_release(self._ctx)
            self._ctx = None


# --- seccomp(2) -----------------------------------------------------------
def load_filter(bpf: bytes, flags: int = 0) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, prog) with a raw BPF program.

    Returns the syscall's result: the notification listener fd when
    FLAG_NEW_LISTENER is set, else 0. Needs no_new_privs or CAP_SYS_ADMIN.
    """
    n = len(bpf) // 8
    if n == 0 or n > 0xFFFF or len(bpf) % 8:
        raise ValueError(f"bad BPF program length {len(bpf)}")
    buf = buffer(bpf)
    prog = struct.pack("=H6xQ", n, addressof(buf))  # struct sock_fprog
    return syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, prog)


def flag_supported(flag: int) -> bool:
    """Does the running kernel know this filter flag?

    The kernel checks flags before it reads the program: with a NULL
    program a known flag gives EFAULT, an unknown one EINVAL.
    """
    if flag == FLAG_WAIT_KILLABLE_RECV:
        flag |= FLAG_NEW_LISTENER  # only valid together
    try:
        syscall("seccomp", SECCOMP_SET_MODE_FILTER, flag, 0)
    except OSError as e:
        return e.errno in (14, 13)  # EFAULT; EACCES means it got past flags
    return True  # pragma: no cover - cannot succeed with a NULL program


def action_available(action: int) -> bool:
    """SECCOMP_GET_ACTION_AVAIL for a filter return value."""
    v = struct.pack("=I", action & 0xFFFF0000 if action != RET_KILL_PROCESS else action)
    try:
        syscall("seccomp", SECCOMP_GET_ACTION_AVAIL, 0, v)
    except OSError:
        return False
    return True


# --- user notification (for supervisors and tests) -------------------------
# struct seccomp_notif { u64 id; u32 pid; u32 flags; struct seccomp_data
#   { s32 nr; u32 arch; u64 instruction_pointer; u64 args[6]; } }
_NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp { u64 id; s64 val; s32 error; u32 flags; }
_RESP = struct.Struct("=QqiI")
IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
IOCTL_NOTIF_ID_VALID = 0x40082102
USER_NOTIF_FLAG_CONTINUE = 1


def notif_recv(fd: int) -> dict:
    """Block until a notification arrives on a listener fd; return it."""
    import fcntl
    buf = bytearray(_NOTIF.size)
    fcntl.ioctl(fd, IOCTL_NOTIF_RECV, buf, True)
    id_, pid, flags, nr, arch, ip, *args = _NOTIF.unpack(buf)
    return {"id": id_, "pid": pid, "flags": flags, "nr": nr, "arch": arch,
            "ip": ip, "args": args}


def notif_send(fd: int, id_: int, val: int = 0, error: int = 0,
               flags: int = 0) -> None:
    """Answer a notification: error is a negative errno, or 0 with `val`."""
    import fcntl
    fcntl.ioctl(fd, IOCTL_NOTIF_SEND, bytearray(_RESP.pack(id_, val, error, flags)),
                True)
