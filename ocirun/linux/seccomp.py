"""linux.seccomp: validate, compile to BPF (cached), load, hand over notify fds.

compile() runs in the runtime before fork: it validates the whole object
(ConfigError with the JSON path of the first problem), then looks the BPF
program up in a cache keyed by the profile and the libseccomp build. Only
on a miss is libseccomp loaded and asked to build the program, which is
exported as raw BPF and stored. load() runs in the container's init, as the
last step before execve(): it installs the raw program with seccomp(2).
"""
from __future__ import annotations

import errno

from ocirun import oslite as os

from ..errors import ConfigError, OciError

DEFAULT_CACHE_DIR = "/run/ocirun/.cache/seccomp"  # hidden: not a container id
_CACHE_MAGIC = b"OCIRSC2\n"  # bump when the cache layout (or the programs) change

ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,  # libseccomp: KILL == KILL_THREAD
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1

OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# OCI name -> libseccomp name (seccomp_arch_resolve_name()).
ARCHES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64", "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x", "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64", "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64", "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
_FLAG_TSYNC = 1
_FLAG_NEW_LISTENER = 8
_FLAG_WAIT_KILLABLE_RECV = 32


class Filter:
    """A compiled filter: raw BPF plus what load() and the runtime need."""

    __slots__ = ("bpf", "flags", "notify", "listener_path", "listener_metadata",
                 "cached", "key", "skipped")

    def __init__(self, bpf: bytes, flags: int = 0, notify: bool = False,
                 listener_path: str | None = None,
                 listener_metadata: str | None = None, cached: bool = False,
                 key: str = "", skipped: tuple[str, ...] = ()) -> None:
        self.bpf = bpf                  # struct sock_filter[], 8 bytes each
        self.flags = flags              # SECCOMP_FILTER_FLAG_* asked for
        self.notify = notify            # some rule uses SCMP_ACT_NOTIFY
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata
        self.cached = cached            # bpf came from the cache
        self.key = key                  # cache key (hex)
        self.skipped = skipped          # syscall names libseccomp did not know

    def __repr__(self) -> str:
        return (f"Filter({len(self.bpf) // 8} insns, flags={self.flags:#x}, "
                f"notify={self.notify}, cached={self.cached})")


# --- validation -------------------------------------------------------------
def _uint(v: object, where: str, limit: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > limit:
        raise ConfigError(where, f"must be an integer from 0 to {limit}")
    return v


def _action(name: object, errno_ret: object, where: str, errno_where: str) -> int:
    if not isinstance(name, str):
        raise ConfigError(where, "must be a string")
    base = ACTIONS.get(name)
    if base is None:
        raise ConfigError(where, f'unknown action "{name}"')
    if name in _WITH_ERRNO:
        e = _EPERM if errno_ret is None else _uint(errno_ret, errno_where, 0xFFFF)
        return base | e
    if errno_ret is not None:
        # runtime-spec: "When the action doesn't support an errno, the
        # runtime MUST print and error and fail."
        raise ConfigError(errno_where, f"not supported with action {name}")
    return base


class _Plan:
    __slots__ = ("default", "arches", "flags", "rules", "notify")


def _validate(cfg: object, path: str) -> _Plan:
    if not isinstance(cfg, dict):
        raise ConfigError(path, "must be an object")
    p = _Plan()
    if "defaultAction" not in cfg:
        raise ConfigError(f"{path}.defaultAction", "is required")
    p.default = _action(cfg["defaultAction"], cfg.get("defaultErrnoRet"),
                        f"{path}.defaultAction", f"{path}.defaultErrnoRet")
    p.notify = cfg["defaultAction"] == "SCMP_ACT_NOTIFY"
    if p.notify:
        # The kernel would send every syscall, exit() included, to the
        # supervisor; runc refuses this too.
        raise ConfigError(f"{path}.defaultAction",
                          "SCMP_ACT_NOTIFY cannot be the default action")

    arches = cfg.get("architectures") or []
    if not isinstance(arches, list):
        raise ConfigError(f"{path}.architectures", "must be an array of strings")
    p.arches = []
    for i, a in enumerate(arches):
        if not isinstance(a, str) or a not in ARCHES:
            raise ConfigError(f"{path}.architectures[{i}]",
                              f"unknown architecture {a!r}".replace("'", '"'))
        p.arches.append(ARCHES[a])

    flags = cfg.get("flags") or []
    if not isinstance(flags, list):
        raise ConfigError(f"{path}.flags", "must be an array of strings")
    p.flags = 0
    for i, f in enumerate(flags):
        if not isinstance(f, str) or f not in FLAGS:
            raise ConfigError(f"{path}.flags[{i}]",
                              f"unknown flag {f!r}".replace("'", '"'))
        p.flags |= FLAGS[f]

    syscalls = cfg.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ConfigError(f"{path}.syscalls", "must be an array")
    p.rules = []
    for i, sc in enumerate(syscalls):
        w = f"{path}.syscalls[{i}]"
        if not isinstance(sc, dict):
            raise ConfigError(w, "must be an object")
        names = sc.get("names")
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{w}.names", "must be a non-empty array of strings")
        for j, n in enumerate(names):
            if not isinstance(n, str) or not n:
                raise ConfigError(f"{w}.names[{j}]", "must be a non-empty string")
        if "action" not in sc:
            raise ConfigError(f"{w}.action", "is required")
        act = _action(sc["action"], sc.get("errnoRet"), f"{w}.action",
                      f"{w}.errnoRet")
        if sc["action"] == "SCMP_ACT_NOTIFY":
            p.notify = True
        args = sc.get("args") or []
        if not isinstance(args, list):
            raise ConfigError(f"{w}.args", "must be an array")
        conds = []
        for j, a in enumerate(args):
            aw = f"{w}.args[{j}]"
            if not isinstance(a, dict):
                raise ConfigError(aw, "must be an object")
            if "index" not in a:
                raise ConfigError(f"{aw}.index", "is required")
            idx = _uint(a["index"], f"{aw}.index", 5)
            if "value" not in a:
                raise ConfigError(f"{aw}.value", "is required")
            val = _uint(a["value"], f"{aw}.value", 2**64 - 1)
            val2 = _uint(a.get("valueTwo", 0), f"{aw}.valueTwo", 2**64 - 1)
            op = a.get("op")
            if not isinstance(op, str) or op not in OPERATORS:
                raise ConfigError(f"{aw}.op", f"unknown operator {op!r}".replace("'", '"'))
            conds.append((idx, OPERATORS[op], val, val2))
        p.rules.append((names, act, conds, w))

    if p.notify and not cfg.get("listenerPath"):
        raise ConfigError(f"{path}.listenerPath",
                          "is required when SCMP_ACT_NOTIFY is used")
    lp = cfg.get("listenerPath")
    if lp is not None and (not isinstance(lp, str) or not os.path.isabs(lp)):
        raise ConfigError(f"{path}.listenerPath", "must be an absolute path")
    md = cfg.get("listenerMetadata")
    if md is not None:
        if not isinstance(md, str):
            raise ConfigError(f"{path}.listenerMetadata", "must be a string")
        if not lp:
            raise ConfigError(f"{path}.listenerMetadata",
                              "must not be set without listenerPath")
    return p


# --- cache ------------------------------------------------------------------
def _digest(data: bytes) -> bytes:
    try:  # _blake2 alone: hashlib would also load OpenSSL (~2 ms)
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover
        from hashlib import blake2b
    return blake2b(data, digest_size=32).digest()


def cache_key(cfg: dict) -> str:
    """Hash of what decides the BPF: the rules, libseccomp build, arch, kernel.

    flags and listener fields are not part of the program, so they are
    left out of the key. The kernel release is in the key because
    libseccomp probes the kernel's API level while it builds.
    """
    from ..jsonutil import dumps_canonical
    from ..kernel import seccomp as k
    rel = {f: cfg.get(f) for f in ("defaultAction", "defaultErrnoRet",
                                   "architectures", "syscalls")}
    u = os.uname()
    material = "\0".join((
        dumps_canonical(rel),
        k.library_id(), u.machine, u.release, _CACHE_MAGIC.decode().strip()))
    return _digest(material.encode()).hex()


def _cache_dir_ok(d: str) -> bool:
    """Trust a cache dir only if we own it and nobody else can write it."""
    try:
        st = os.stat(d)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _cache_read(d: str, key: str) -> bytes | None:
    try:
        with open(f"{d}/{key}", "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(_CACHE_MAGIC) + 32
    bpf = data[head:]
    if (not data.startswith(_CACHE_MAGIC) or not bpf or len(bpf) % 8
            or data[len(_CACHE_MAGIC):head] != _digest(bpf)):
        return None  # torn or corrupt entry: rebuild (and overwrite) it
    return bpf


def _cache_write(d: str, key: str, bpf: bytes) -> None:
    """Atomic: write a private temp file in the same dir, then rename."""
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        if not _cache_dir_ok(d):
            return
        tmp = f"{d}/.{key}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)  # left by a crashed process that had our pid
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                     | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, _CACHE_MAGIC + _digest(bpf) + bpf)
        finally:
            os.close(fd)
        os.replace(tmp, f"{d}/{key}")
    except OSError:
        pass  # a cache that cannot be written only costs time


# --- compile ----------------------------------------------------------------
def _build(p: _Plan) -> tuple[bytes, tuple[str, ...]]:
    from ..kernel import seccomp as k
    ctx = k.Ctx(p.default)
    try:
        # The BPF only has to be correct for this machine; bad-arch calls
        # are killed (libseccomp's default), as in runc.
        for name in p.arches:
            tok = k.arch_token(name)
            if not tok:
                raise OciError(f"seccomp: architecture {name} not supported by "
                               f"libseccomp {'.'.join(map(str, k.version()))}")
            ctx.add_arch(tok)
        skipped = []
        for names, act, conds, where in p.rules:
            if act == p.default:
                continue  # libseccomp refuses rules equal to the default
            # The same argument twice in one rule is an OR in runc (one
            # rule per condition); libseccomp rejects it in a single rule.
            idxs = [c[0] for c in conds]
            groups = [[c] for c in conds] if len(set(idxs)) < len(idxs) else [conds]
            for n in names:
                nr = k.syscall_number(n)
                if nr is None:
                    skipped.append(n)  # unknown to libseccomp: skip, as runc
                    continue
                for g in groups:
                    try:
                        ctx.add_rule(act, nr, g)
                    except OSError as e:
                        raise ConfigError(where, f"syscall {n}: libseccomp: "
                                          f"{os.strerror(e.errno)}") from None
        bpf = ctx.export_bpf()
    finally:
        ctx.release()
    if p.default & 0xFFFF0000 not in _PERMISSIVE and p.default != ACTIONS["SCMP_ACT_ERRNO"] | 38:
        bpf = enosys_stub(_last_syscalls(p)) + bpf
    return bpf, tuple(skipped)


# --- the ENOSYS stub ------------------------------------------------------------
# (as runc's): a syscall newer than every one the profile names gets ENOSYS,
# not the default action, so that libc falls back to an older call (clone3
# -> clone, faccessat2 -> faccessat ...) instead of failing with EPERM. Not
# for a default that lets calls through (allow, log, trace).
_PERMISSIVE = (ACTIONS["SCMP_ACT_ALLOW"], ACTIONS["SCMP_ACT_LOG"], ACTIONS["SCMP_ACT_TRACE"])
_AUDIT_ARCH_X86_64 = 0xC000003E
_SCMP_ARCH_X32 = 0x4000003E  # x32 calls come as x86_64 ones with this bit in nr:
_X32_SYSCALL_BIT = 0x40000000


def _last_syscalls(p: _Plan) -> dict[int, int]:
    """libseccomp arch token -> the highest syscall number the profile names
    there (the native arch and every one in `architectures`)."""
    from ..kernel import seccomp as k
    tokens = {k.native_arch()} | {k.arch_token(a) for a in p.arches}
    names = {n for rule in p.rules for n in rule[0]}
    last = {}
    for t in tokens:
        nrs = [nr for nr in (k.syscall_number_on(t, n) for n in names) if nr is not None]
        if nrs:
            last[t] = max(nrs)
    return last


def enosys_stub(last: dict[int, int]) -> bytes:
    """Classic BPF put before libseccomp's program (which loads what it
    needs itself): per arch, nr > last -> ERRNO(ENOSYS), else on to it."""
    import struct
    LD_W_ABS, JEQ, JGT, JSET, JA, RET = 0x20, 0x15, 0x25, 0x45, 0x05, 0x06
    ops: list[list] = []  # [code, jt, jf, k]; a str jt/jf/k is a label
    labels: dict[str, int] = {}
    arches: dict[int, tuple[int | None, int | None]] = {}  # audit arch -> (last, last x32)
    for token, nr in last.items():
        if token == _SCMP_ARCH_X32:
            arches[_AUDIT_ARCH_X86_64] = (arches.get(_AUDIT_ARCH_X86_64, (None, None))[0], nr)
        else:
            arches[token] = (nr, arches.get(token, (None, None))[1])
    for i, (audit, (nr, nr_x32)) in enumerate(sorted(arches.items())):
        nxt = f"arch{i + 1}"
        ops.append([LD_W_ABS, 0, 0, 4])  # seccomp_data.arch
        ops.append([JEQ, 0, nxt, audit])
        ops.append([LD_W_ABS, 0, 0, 0])  # seccomp_data.nr
        if audit == _AUDIT_ARCH_X86_64:
            ops.append([JSET, f"x32_{i}", 0, _X32_SYSCALL_BIT])
        ops.append([JGT, "enosys", "filter", nr] if nr is not None else [JA, 0, 0, "filter"])
        if audit == _AUDIT_ARCH_X86_64:
            labels[f"x32_{i}"] = len(ops)
            ops.append([JGT, "enosys", "filter", nr_x32] if nr_x32 is not None
                       else [JA, 0, 0, "filter"])
        labels[nxt] = len(ops)
    ops.append([JA, 0, 0, "filter"])
    labels["enosys"] = len(ops)
    ops.append([RET, 0, 0, ACTIONS["SCMP_ACT_ERRNO"] | errno.ENOSYS])
    labels["filter"] = len(ops)
    out = []
    for at, (code, jt, jf, kk) in enumerate(ops):
        rel = (lambda v: labels[v] - at - 1 if isinstance(v, str) else v)
        out.append(struct.pack("=HBBI", code, rel(jt), rel(jf), rel(kk)))
    return b"".join(out)


def compile(cfg: dict, path: str = "linux.seccomp",
            cache_dir: str | None = DEFAULT_CACHE_DIR) -> Filter:
    """Validate linux.seccomp and return its BPF program, from cache if we can.

    cache_dir None disables the cache. A hit does not load libseccomp.
    """
    p = _validate(cfg, path)
    if p.notify:  # (without a NOTIFY rule the path is only tried: see send_listener)
        check_listener(cfg["listenerPath"], f"{path}.listenerPath")
    key = ""
    bpf = None
    if cache_dir:
        key = cache_key(cfg)
        if _cache_dir_ok(cache_dir):
            bpf = _cache_read(cache_dir, key)
    cached = bpf is not None
    skipped: tuple[str, ...] = ()
    if bpf is None:
        bpf, skipped = _build(p)
        if cache_dir:
            _cache_write(cache_dir, key, bpf)
    return Filter(bpf, p.flags, p.notify, cfg.get("listenerPath"),
                  cfg.get("listenerMetadata"), cached, key, skipped)


def check_listener(listener_path: str, where: str = "linux.seccomp.listenerPath") -> None:
    """Before anything is created: the agent's socket must exist (the spec
    says the runtime MUST fail if it cannot send; failing here names the
    field and leaves nothing behind)."""
    import _stat as stat
    try:
        st = os.stat(listener_path)
    except OSError as e:
        raise ConfigError(where, f"failed to connect with seccomp agent: {listener_path}: "
                                 f"{e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(where, f"failed to connect with seccomp agent: {listener_path} "
                                 "is not a socket")


# --- load (in the container's init) ---------------------------------------------
def load(flt: Filter) -> int | None:
    """Install the filter on the calling process; its listener fd when a
    listenerPath is set.

    Needs no_new_privs, or CAP_SYS_ADMIN in the effective set. TSYNC is
    dropped: the init is single-threaded, and the kernel refuses TSYNC
    together with NEW_LISTENER. LOG / SPEC_ALLOW / WAIT_KILLABLE_RECV that
    the running kernel lacks are dropped (runc drops what its libseccomp
    cannot do); WAIT_KILLABLE_RECV only means something with a listener.
    A listenerPath without NOTIFY rules still gets a listener fd, as crun
    gives one (an agent waiting on the path is not left hanging), unless a
    filter above ours already has one (EBUSY): then there is none to send.
    """
    from ..kernel import seccomp as k
    flags = flt.flags & ~_FLAG_TSYNC
    listener = flt.notify or bool(flt.listener_path)
    if listener:
        flags |= _FLAG_NEW_LISTENER
    else:
        flags &= ~_FLAG_WAIT_KILLABLE_RECV
    for f in (2, 4, _FLAG_WAIT_KILLABLE_RECV):
        if flags & f and not k.flag_supported(f):
            flags &= ~f
    try:
        try:
            fd = k.load_filter(flt.bpf, flags)
        except OSError as e:
            if e.errno != errno.EBUSY or flt.notify or not listener:
                raise
            listener = False
            fd = k.load_filter(flt.bpf, flags & ~(_FLAG_NEW_LISTENER | _FLAG_WAIT_KILLABLE_RECV))
    except OSError as e:
        hint = (" (set process.noNewPrivileges, or keep CAP_SYS_ADMIN until "
                "the filter is loaded)" if e.errno == 13 else "")
        raise OciError(f"seccomp: loading filter: {os.strerror(e.errno)}{hint}") from None
    return fd if listener else None


def send_listener(listener_path: str, listener_fd: int, state: dict,
                  metadata: str | None = None, required: bool = True) -> None:
    """Send the container process state and the seccomp fd to an agent.

    runtime-spec "containerProcessState": one JSON document per connection,
    the fd in SCM_RIGHTS of the first sendmsg(), then the connection is
    closed. `state` is the container's state object (status "creating").
    Runs in the runtime, which can still reach listener_path (the init
    already pivoted into the container). The caller keeps and closes its
    copy of listener_fd. required=False (no NOTIFY rule: the spec says the
    path is then ignored): a failure to send is no error.
    """
    import json
    import socket
    msg = {"ociVersion": state.get("ociVersion", "1.2.0"), "fds": ["seccompFd"],
           "pid": state.get("pid"), "metadata": metadata or "", "state": state}
    data = json.dumps(msg).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.connect(listener_path)
            sent = socket.send_fds(s, [data], [listener_fd])
            if sent < len(data):
                s.sendall(data[sent:])
    except OSError as e:
        if not required:
            return
        raise OciError(f"linux.seccomp.listenerPath: sending the seccomp fd to {listener_path}: "
                       f"{e.strerror or e}") from None
