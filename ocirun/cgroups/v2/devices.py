"""v2 devices: no control files; an eBPF (BPF_PROG_TYPE_CGROUP_DEVICE)
program attached to the cgroup, with the semantics of v1's rules (see
ocirun.cgroups.devices)."""
from __future__ import annotations

from ocirun.cgroups import devices
from ocirun.cgroups.devices import Rule
from ocirun.errors import ConfigError


def set(d: str, res: dict, path: str, mgr) -> None:
    if res.get("devices") is None:
        return
    rules = devices.parse_rules(res["devices"], path + ".devices")
    from ocirun.cgroups import fsutil
    if fsutil.DRY_RUN:
        return
    try:
        attach(d, rules)
    except OSError as e:
        raise ConfigError(path + ".devices", f"attaching the device filter to {d}: {e}") from None


# struct bpf_cgroup_dev_ctx { u32 access_type; /* (access << 16) | type */ u32 major, minor; }
_TYPE = {"b": 1, "c": 2}          # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACC = {"m": 1, "r": 2, "w": 4}   # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return bytes((code, (src << 4) | dst)) + off.to_bytes(2, "little", signed=True) \
        + imm.to_bytes(4, "little", signed=True)


_LDXW = 0x61      # BPF_LDX | BPF_MEM | BPF_W
_AND_K = 0x57     # BPF_ALU64 | BPF_AND | BPF_K
_RSH_K = 0x77     # BPF_ALU64 | BPF_RSH | BPF_K
_MOV_K = 0xb7     # BPF_ALU64 | BPF_MOV | BPF_K
_MOV_X = 0xbf     # BPF_ALU64 | BPF_MOV | BPF_X
_JNE_K = 0x55     # BPF_JMP | BPF_JNE | BPF_K
_JEQ_K = 0x15     # BPF_JMP | BPF_JEQ | BPF_K
_EXIT = 0x95


def bpf_program(rules: list[Rule]) -> bytes:
    """Assemble the device filter: returns packed struct bpf_insn[].

    r2 = type, r3 = access, r4 = major, r5 = minor; the rules are tested
    last-first and the first match returns its verdict (so the last rule in
    the spec wins, as in v1). An allow rule matches when it covers every
    requested access, a deny rule when it covers any of them. No match:
    allow (a fresh cgroup's behaviour).
    """
    prog = [_insn(_LDXW, 2, 1, 0), _insn(_AND_K, 2, imm=0xFFFF),
            _insn(_LDXW, 3, 1, 0), _insn(_RSH_K, 3, imm=16),
            _insn(_LDXW, 4, 1, 4), _insn(_LDXW, 5, 1, 8)]
    default = 1
    for r in reversed(rules):
        block = []
        if r.type != "a":
            block.append([_JNE_K, 2, 0, _TYPE[r.type]])
        mask = sum(_ACC[c] for c in r.access)
        if mask != 7:
            # allow: every requested access must be in the rule (v1 default-deny
            # exceptions); deny: any requested access in the rule is enough
            block.append([_MOV_X, 1, 3])
            if r.allow:
                block.append([_AND_K, 1, 0, ~mask & 7])
                block.append([_JNE_K, 1, 0, 0])
            else:
                block.append([_AND_K, 1, 0, mask])
                block.append([_JEQ_K, 1, 0, 0])
        if r.major is not None:
            block.append([_JNE_K, 4, 0, r.major])
        if r.minor is not None:
            block.append([_JNE_K, 5, 0, r.minor])
        if not block:           # matches everything: earlier rules can never decide
            default = int(r.allow)
            break
        n = len(block) + 2      # + mov r0, exit
        for i, b in enumerate(block):
            if b[0] in (_JNE_K, _JEQ_K):
                prog.append(_insn(b[0], b[1], off=n - i - 1, imm=b[3]))
            elif b[0] == _MOV_X:
                prog.append(_insn(_MOV_X, b[1], b[2]))
            else:
                prog.append(_insn(_AND_K, b[1], imm=b[3]))
        prog.append(_insn(_MOV_K, 0, imm=int(r.allow)))
        prog.append(_insn(_EXIT))
    prog.append(_insn(_MOV_K, 0, imm=default))
    prog.append(_insn(_EXIT))
    return b"".join(prog)


def attach(cgroup_dir: str, rules: list[Rule]) -> None:
    """Load the filter for `rules` and make it the cgroup's only ocirun filter.

    The new program is attached (BPF_F_ALLOW_MULTI) before the old ones are
    detached, so there is no moment without a filter during an update.
    """
    from ocirun import oslite as os
    from ocirun.kernel import bpf

    insns = bpf_program(rules)
    dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            _, old = bpf.prog_query(dfd, bpf.BPF_CGROUP_DEVICE)
        except OSError:
            old = []
        pfd = bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, insns, "Apache",
                            "ocirun_dev", bpf.BPF_CGROUP_DEVICE)
        try:
            bpf.prog_attach(dfd, pfd, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
        finally:
            os.close(pfd)
        for pid in old:
            try:
                ofd = bpf.prog_get_fd_by_id(pid)
            except OSError:
                continue
            try:
                bpf.prog_detach(dfd, ofd, bpf.BPF_CGROUP_DEVICE)
            except OSError:
                pass
            finally:
                os.close(ofd)
    finally:
        os.close(dfd)
