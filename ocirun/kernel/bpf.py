"""bpf(2): load, attach, query and detach cgroup programs.

Only what cgroup v2 device filtering needs (ocirun.cgroups.devices builds the
program; this module just hands bytes to the kernel). Thin wrappers: each
raises OSError on failure and has no policy.
"""
from __future__ import annotations

from ocirun import oslite as os

from _struct import pack, unpack_from

from .ffi import addressof, buffer, c_long, error, long_func
from .syscalls import NR

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2

_syscall = long_func("syscall")


def _bpf(cmd: int, attr) -> int:
    """bpf(cmd, attr): attr is a packed union bpf_attr (bytes or a buffer)."""
    size = len(attr) if isinstance(attr, bytes) else len(attr.raw)
    ret = _syscall(c_long(NR["bpf"]), c_long(cmd), attr, c_long(size))
    if ret < 0:
        raise error(f"bpf({cmd})")
    return ret


def _prog_load_attr(prog_type: int, insns, lic, name: str, expected_attach_type: int,
                    log=None) -> bytes:
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
    # kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type
    return pack("=IIQQIIQII16sII", prog_type, len(insns.raw) // 8, addressof(insns),
                addressof(lic), 1 if log is not None else 0,
                len(log.raw) if log is not None else 0,
                addressof(log) if log is not None else 0, 0, 0,
                name.encode()[:15], 0, expected_attach_type)


def prog_load(prog_type: int, insns: bytes, license: str = "Apache",
              name: str = "", expected_attach_type: int = 0) -> int:
    """Load a program (insns: packed struct bpf_insn array); returns its fd."""
    buf = buffer(insns)
    lic = buffer(license.encode() + b"\0")
    try:
        return _bpf(BPF_PROG_LOAD, _prog_load_attr(prog_type, buf, lic, name,
                                                   expected_attach_type))
    except OSError as e:
        if e.errno != 22:  # EINVAL: reload with the verifier log for a useful message
            raise
    log = buffer(65536)
    try:
        return _bpf(BPF_PROG_LOAD, _prog_load_attr(prog_type, buf, lic, name,
                                                   expected_attach_type, log))
    except OSError as e2:
        text = log.raw.split(b"\0", 1)[0].decode(errors="replace")
        raise OSError(e2.errno, f"bpf prog load: {e2.strerror}: {text[-500:]}") from None


def _attach_attr(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> bytes:
    # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd
    return pack("=5I", target_fd, prog_fd, attach_type, flags, 0)


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    _bpf(BPF_PROG_ATTACH, _attach_attr(target_fd, prog_fd, attach_type, flags))


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    _bpf(BPF_PROG_DETACH, _attach_attr(target_fd, prog_fd, attach_type))


def prog_query(target_fd: int, attach_type: int) -> tuple[int, list[int]]:
    """(attach_flags, ids of programs attached directly to target_fd)."""
    ids = buffer(64 * 4)
    # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt, pad
    q = buffer(pack("=IIIIQII", target_fd, attach_type, 0, 0, addressof(ids), 64, 0))
    _bpf(BPF_PROG_QUERY, q)
    attach_flags, = unpack_from("=I", q.raw, 12)
    cnt, = unpack_from("=I", q.raw, 24)
    return attach_flags, list(unpack_from(f"={cnt}I", ids.raw))


def prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, pack("=3I", prog_id, 0, 0))
