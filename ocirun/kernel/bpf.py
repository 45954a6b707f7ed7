"""bpf(2): load, attach, query and detach cgroup programs.

Only what cgroup v2 device filtering needs (ocirun.cgroups.devices builds the
program; this module just hands bytes to the kernel). Thin wrappers: each
raises OSError on failure and has no policy.
"""
from __future__ import annotations

import ctypes
import os

from ocirun.kernel.syscalls import NR, _libc

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _syscall(ctypes.c_long(NR["bpf"]), ctypes.c_long(cmd),
                   ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf({cmd}): {os.strerror(e)}")
    return ret


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _Attach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


class _Query(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class _GetFd(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


def prog_load(prog_type: int, insns: bytes, license: str = "Apache",
              name: str = "", expected_attach_type: int = 0) -> int:
    """Load a program (insns: packed struct bpf_insn array); returns its fd."""
    buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(65536)
    attr = _ProgLoad(prog_type=prog_type, insn_cnt=len(insns) // 8,
                     insns=ctypes.addressof(buf), license=ctypes.addressof(lic),
                     prog_name=name.encode()[:15],
                     expected_attach_type=expected_attach_type)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        if e.errno != 22:  # EINVAL: reload with the verifier log for a useful message
            raise
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e2:
            raise OSError(e2.errno, f"bpf prog load: {e2.strerror}: "
                          f"{log.value.decode(errors='replace')[-500:]}") from None


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    _bpf(BPF_PROG_ATTACH, _Attach(target_fd=target_fd, attach_bpf_fd=prog_fd,
                                  attach_type=attach_type, attach_flags=flags))


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    _bpf(BPF_PROG_DETACH, _Attach(target_fd=target_fd, attach_bpf_fd=prog_fd,
                                  attach_type=attach_type))


def prog_query(target_fd: int, attach_type: int) -> tuple[int, list[int]]:
    """(attach_flags, ids of programs attached directly to target_fd)."""
    ids = (ctypes.c_uint32 * 64)()
    q = _Query(target_fd=target_fd, attach_type=attach_type,
               prog_ids=ctypes.addressof(ids), prog_cnt=64)
    _bpf(BPF_PROG_QUERY, q)
    return q.attach_flags, list(ids[:q.prog_cnt])


def prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _GetFd(prog_id=prog_id))
