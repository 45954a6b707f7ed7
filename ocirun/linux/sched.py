"""Process extras of runtime-spec 1.3: personality, I/O priority, scheduler,
execCPUAffinity and the NUMA memory policy.

validate() runs in the runtime before fork, so a bad value is reported as
`config.json: <json path>: ...` before anything is created. apply() runs in
the container's init while it is still privileged (real-time policies and
the RT I/O class need CAP_SYS_NICE / CAP_SYS_ADMIN): before the uid change
and the capability drop. All settings are inherited across execve().
"""
from __future__ import annotations

from ocirun import oslite as os

from ..errors import ConfigError

PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}

IOPRIO_CLASS = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13

SCHED_POLICY = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}

MPOL_MODE = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2,
             "MPOL_INTERLEAVE": 3, "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5,
             "MPOL_WEIGHTED_INTERLEAVE": 6}
MPOL_FLAGS = {"MPOL_F_STATIC_NODES": 1 << 15, "MPOL_F_RELATIVE_NODES": 1 << 14,
              "MPOL_F_NUMA_BALANCING": 1 << 13}
_MPOL_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
_MPOL_NEED_NODES = ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY",
                    "MPOL_WEIGHTED_INTERLEAVE")


def _obj(v: object, where: str) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ConfigError(where, "must be an object")
    return v


def _int(v: object, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(where, f"must be an integer from {lo} to {hi}")
    return v


def _names(v: object, table: dict, where: str, what: str) -> int:
    if v is None:
        return 0
    if not isinstance(v, list):
        raise ConfigError(where, "must be an array of strings")
    out = 0
    for i, n in enumerate(v):
        if not isinstance(n, str) or n not in table:
            raise ConfigError(f"{where}[{i}]", f"unknown {what} {n!r}".replace("'", '"'))
        out |= table[n]
    return out


def parse_list(s: object, where: str, limit: int = 1 << 16) -> list[int]:
    """"0-3,7" -> [0, 1, 2, 3, 7] (the cpuset list format)."""
    if not isinstance(s, str):
        raise ConfigError(where, "must be a string like \"0-3,7\"")
    out: set[int] = set()
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise ConfigError(where, f'bad list "{s}"') from None
        if a < 0 or b < a or b >= limit:
            raise ConfigError(where, f'bad range "{part}" in "{s}"')
        out.update(range(a, b + 1))
    return sorted(out)


class _Plan:
    __slots__ = ("personality", "ioprio", "sched", "affinity", "final_affinity",
                 "mempolicy")


def _plan(process_cfg: dict | None, linux_cfg: dict | None) -> _Plan:
    p = _Plan()
    proc = process_cfg or {}
    lin = linux_cfg or {}

    p.personality = None
    pers = _obj(lin.get("personality"), "linux.personality")
    if pers is not None:
        dom = pers.get("domain")
        if not isinstance(dom, str) or dom not in PERSONALITY:
            raise ConfigError("linux.personality.domain",
                              f"unknown domain {dom!r}".replace("'", '"')
                              + " (LINUX or LINUX32)")
        if pers.get("flags"):
            raise ConfigError("linux.personality.flags",
                              "no personality flags are supported")
        p.personality = PERSONALITY[dom]

    p.ioprio = None
    io = _obj(proc.get("ioPriority"), "process.ioPriority")
    if io is not None:
        cls = io.get("class")
        if not isinstance(cls, str) or cls not in IOPRIO_CLASS:
            raise ConfigError("process.ioPriority.class",
                              f"unknown class {cls!r}".replace("'", '"'))
        prio = _int(io.get("priority", 0), "process.ioPriority.priority", 0, 7)
        p.ioprio = IOPRIO_CLASS[cls] << _IOPRIO_CLASS_SHIFT | prio

    p.sched = None
    sc = _obj(proc.get("scheduler"), "process.scheduler")
    if sc is not None:
        w = "process.scheduler"
        pol = sc.get("policy")
        if not isinstance(pol, str) or pol not in SCHED_POLICY:
            raise ConfigError(f"{w}.policy", f"unknown policy {pol!r}".replace("'", '"'))
        nice = _int(sc.get("nice", 0), f"{w}.nice", -20, 19)
        if pol in ("SCHED_FIFO", "SCHED_RR"):
            prio = _int(sc.get("priority", 0), f"{w}.priority", 1, 99)
        else:
            prio = _int(sc.get("priority", 0), f"{w}.priority", 0, 0)
        flags = _names(sc.get("flags"), SCHED_FLAGS, f"{w}.flags", "flag")
        u64 = 2**64 - 1
        rt = _int(sc.get("runtime", 0), f"{w}.runtime", 0, u64)
        dl = _int(sc.get("deadline", 0), f"{w}.deadline", 0, u64)
        per = _int(sc.get("period", 0), f"{w}.period", 0, u64)
        if pol == "SCHED_DEADLINE":
            if rt == 0 or dl < rt or (per and per < dl):
                raise ConfigError(w, "SCHED_DEADLINE needs 0 < runtime <= deadline "
                                  "<= period (period 0 means period = deadline)")
        elif rt or dl or per:
            raise ConfigError(w, "runtime, deadline and period are only for SCHED_DEADLINE")
        p.sched = (SCHED_POLICY[pol], flags, nice, prio, rt, dl, per)

    p.affinity = p.final_affinity = None
    aff = _obj(proc.get("execCPUAffinity"), "process.execCPUAffinity")
    if aff is not None:
        for key in ("initial", "final"):
            v = aff.get(key)
            if v:  # "omitted or empty": leave the affinity alone
                cpus = parse_list(v, f"process.execCPUAffinity.{key}")
                if not cpus:
                    raise ConfigError(f"process.execCPUAffinity.{key}", "no CPUs")
                setattr(p, "affinity" if key == "initial" else "final_affinity", cpus)

    p.mempolicy = None
    mp = _obj(lin.get("memoryPolicy"), "linux.memoryPolicy")
    if mp is not None:
        w = "linux.memoryPolicy"
        mode = mp.get("mode")
        if not isinstance(mode, str) or mode not in MPOL_MODE:
            raise ConfigError(f"{w}.mode", f"unknown mode {mode!r}".replace("'", '"'))
        nodes = parse_list(mp["nodes"], f"{w}.nodes", 4096) if mp.get("nodes") else []
        flags = _names(mp.get("flags"), MPOL_FLAGS, f"{w}.flags", "flag")
        if mode in _MPOL_NO_NODES and nodes:
            raise ConfigError(f"{w}.nodes", f"must be empty for {mode}")
        if mode in _MPOL_NEED_NODES and not nodes:
            raise ConfigError(f"{w}.nodes", f"{mode} needs at least one node")
        both = MPOL_FLAGS["MPOL_F_STATIC_NODES"] | MPOL_FLAGS["MPOL_F_RELATIVE_NODES"]
        if flags & both == both:
            raise ConfigError(f"{w}.flags", "MPOL_F_STATIC_NODES and "
                              "MPOL_F_RELATIVE_NODES exclude each other")
        p.mempolicy = (MPOL_MODE[mode] | flags, nodes)
    return p


def validate(process_cfg: dict | None, linux_cfg: dict | None) -> None:
    """Check every field apply() uses; raises ConfigError with the JSON path."""
    _plan(process_cfg, linux_cfg)


def _kernel_error(where: str, call: str, e: OSError) -> ConfigError:
    return ConfigError(where, f"{call}: {os.strerror(e.errno)}")


def apply(process_cfg: dict | None, linux_cfg: dict | None) -> None:
    """Apply personality, memory policy, I/O priority, scheduler, initial affinity."""
    p = _plan(process_cfg, linux_cfg)
    if (p.personality is None and p.mempolicy is None and p.ioprio is None
            and p.sched is None and p.affinity is None):
        return
    import _struct as struct  # loaded before the fork (kernel.syscalls)
    from ..kernel.syscalls import syscall

    if p.personality is not None:
        try:
            syscall("personality", p.personality)
        except OSError as e:
            raise _kernel_error("linux.personality", "personality", e) from None
    if p.mempolicy is not None:
        mode, nodes = p.mempolicy
        try:
            if nodes:
                words = [0] * (max(nodes) // 64 + 1)
                for n in nodes:
                    words[n // 64] |= 1 << (n % 64)
                mask = struct.pack(f"={len(words)}Q", *words)
                # maxnode counts one past the last bit (kernel quirk)
                syscall("set_mempolicy", mode, mask, len(words) * 64 + 1)
            else:
                syscall("set_mempolicy", mode, 0, 0)
        except OSError as e:
            raise _kernel_error("linux.memoryPolicy", "set_mempolicy", e) from None
    if p.ioprio is not None:
        try:
            syscall("ioprio_set", _IOPRIO_WHO_PROCESS, 0, p.ioprio)
        except OSError as e:
            raise _kernel_error("process.ioPriority", "ioprio_set", e) from None
    if p.sched is not None:
        policy, flags, nice, prio, rt, dl, per = p.sched
        # struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes); util_max at
        # its default (1024) so the clamp flags alone change nothing.
        attr = struct.pack("=IIQiIQQQII", 56, policy, flags, nice, prio, rt, dl,
                           per, 0, 1024)
        try:
            syscall("sched_setattr", 0, attr, 0)
        except OSError as e:
            raise _kernel_error("process.scheduler", "sched_setattr", e) from None
    if p.affinity is not None:
        _set_affinity(p.affinity, "process.execCPUAffinity.initial")


def _set_affinity(cpus: list[int], where: str) -> None:
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as e:
        raise _kernel_error(where, "sched_setaffinity", e) from None


def set_exec_affinity(process_cfg: dict | None, which: str) -> None:
    """execCPUAffinity for `exec`: "initial" before joining the container's
    cgroup, "final" right after it (no-op when that field is empty)."""
    p = _plan(process_cfg, None)
    cpus = p.affinity if which == "initial" else p.final_affinity
    if cpus is not None:
        _set_affinity(cpus, f"process.execCPUAffinity.{which}")
