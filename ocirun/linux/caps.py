"""process.capabilities: parse the five sets and apply them in the init.

Order in the container's init (same as runc):
    drop_bounding(cs)   still root with full caps (needs CAP_SETPCAP)
    keep_caps()         so setresuid() away from 0 keeps the permitted set
    ... setgroups / setresgid / setresuid ...
    apply(cs)           capset(eff, perm, inh), raise ambient, clear keepcaps
"""
from __future__ import annotations

from ocirun import oslite as os
import sys

from ..errors import ConfigError

TYPE_CHECKING = False  # typing costs ~15 ms (it imports re); mypy knows this idiom
if TYPE_CHECKING:
    from collections.abc import Callable

# Capability numbers from linux/capability.h. A name the running kernel does
# not know (number > cap_last_cap) is dropped quietly.
NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS = {n: i for i, n in enumerate(NAMES)}
SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")

_last_cap: int | None = None


def last_cap() -> int:
    """Highest capability number the running kernel knows."""
    global _last_cap
    if _last_cap is None:
        try:
            _last_cap = os.decimal(os.read_bytes("/proc/sys/kernel/cap_last_cap").strip())
        except (OSError, ValueError):  # pragma: no cover - /proc missing
            _last_cap = len(NAMES) - 1
    return _last_cap


class CapSets:
    """The five capability sets as 64-bit masks (bit N = capability N)."""

    __slots__ = SETS

    def __init__(self, bounding: int = 0, effective: int = 0, permitted: int = 0,
                 inheritable: int = 0, ambient: int = 0) -> None:
        self.bounding = bounding
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable
        self.ambient = ambient

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CapSets) and all(
            getattr(self, s) == getattr(other, s) for s in SETS)

    def __repr__(self) -> str:
        return "CapSets(" + ", ".join(
            f"{s}={getattr(self, s):#x}" for s in SETS) + ")"

    def names(self, which: str) -> list[str]:
        """Capability names in one set, for messages and tests."""
        mask = getattr(self, which)
        return [n for i, n in enumerate(NAMES) if mask >> i & 1] + [
            f"CAP_{i}" for i in range(len(NAMES), 64) if mask >> i & 1]


def _warn_stderr(msg: str) -> None:
    sys.stderr.write(f"ocirun: warning: {msg}\n")


def parse(cfg: dict | None, path: str = "process.capabilities",
          warn: Callable[[str], None] | None = None) -> CapSets:
    """Turn the spec's name lists into masks.

    A missing object or set means "empty" (as runc: the process gets no
    capabilities it was not given). Unknown names are reported through
    `warn` (stderr by default) and ignored, like runc; names the running
    kernel lacks are dropped without a word, so one config works on old and
    new kernels.
    """
    if cfg is None:
        return CapSets()
    if not isinstance(cfg, dict):
        raise ConfigError(path, "must be an object")
    top = last_cap()
    out = CapSets()
    unknown: dict[str, str] = {}
    for s in SETS:
        names = cfg.get(s)
        if names is None:
            continue
        if not isinstance(names, list):
            raise ConfigError(f"{path}.{s}", "must be an array of strings")
        mask = 0
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise ConfigError(f"{path}.{s}[{i}]", "must be a string")
            n = _NUMBERS.get(name)
            if n is None:
                unknown.setdefault(name, f"{path}.{s}[{i}]")
            elif n <= top:
                mask |= 1 << n
        setattr(out, s, mask)
    w = warn or _warn_stderr
    for name, where in unknown.items():
        w(f"{where}: unknown capability {name!r}, ignored")
    stray = out.ambient & ~(out.permitted & out.inheritable)
    if stray:
        # The kernel refuses these (PR_CAP_AMBIENT_RAISE -> EPERM). runc
        # drops them without a word, and its default spec asks for them, so
        # a warning here would fire on nearly every container.
        out.ambient &= ~stray
    return out


def drop_bounding(cs: CapSets) -> None:
    """Drop every capability not in the bounding set (needs CAP_SETPCAP).

    Must run while still privileged and before the uid change: the bounding
    set limits what execve() can ever grant back (file caps, setuid root).
    """
    from ..kernel import capability as k
    for cap in range(last_cap() + 1):
        if not cs.bounding >> cap & 1:
            k.bounding_drop(cap)


def keep_caps() -> None:
    """Keep the permitted set across setresuid() away from uid 0."""
    from ..kernel import capability as k
    k.set_keepcaps(True)


def _capset_failure(k, cs: CapSets, e: OSError) -> str:
    """Name what the runtime cannot grant (a capability outside its own
    permitted set, e.g. dropped from the host's bounding set), not the
    whole request."""
    why = f"capset: {os.strerror(e.errno)}"
    extra = CapSets(effective=cs.effective & ~cs.permitted)
    if extra.effective:
        return f"{why}: effective {', '.join(extra.names('effective'))} not in permitted"
    try:
        have = k.capget()[1]
    except OSError:
        return why
    missing = CapSets(permitted=cs.permitted & ~have)
    if missing.permitted:
        return (f"{why}: {', '.join(missing.names('permitted'))} not in the runtime's own "
                "permitted capabilities (e.g. dropped from the host's bounding set)")
    return why


def apply(cs: CapSets) -> None:
    """Set effective/permitted/inheritable exactly, then raise ambient.

    Runs after setresuid(). parse() already removed ambient capabilities
    that are not both permitted and inheritable (the kernel would refuse
    them). Clears keepcaps so a later setuid() in the container behaves
    normally.
    """
    from ..kernel import capability as k
    try:
        k.capset(cs.effective, cs.permitted, cs.inheritable)
    except OSError as e:
        raise ConfigError("process.capabilities", _capset_failure(k, cs, e)) from None
    k.ambient_clear_all()
    amb = cs.ambient
    for cap in range(last_cap() + 1):
        if amb >> cap & 1:
            k.ambient_raise(cap)
    k.set_keepcaps(False)
