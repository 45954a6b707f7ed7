"""podman's real default seccomp profile, converted and enforced on a child.

The profile comes from Debian's golang-github-containers-common package
(/usr/share/containers/seccomp.json); tools/setup.sh should install it.
"""
from __future__ import annotations

import errno
import json
import os
import time

import pytest

from ocirun.linux import seccomp
from podman_profile import PODMAN_PROFILE, to_oci
from sec_util import nnp_and_load, proc_status, raw_syscall, run_child, syscall_nr

if not os.path.exists(PODMAN_PROFILE):  # pragma: no cover
    pytest.skip(f"{PODMAN_PROFILE} missing: apt-get install golang-github-containers-common",
                allow_module_level=True)

# podman's default capability set (containers.conf default_capabilities)
PODMAN_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
               "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID",
               "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"]


def _profile() -> dict:
    with open(PODMAN_PROFILE) as f:
        return json.load(f)


def _run_under(oci: dict, fn):
    flt = seccomp.compile(oci, cache_dir=None)
    for n in ("swapon", "add_key", "request_key", "sethostname", "getppid"):
        syscall_nr(n)  # resolve before the filter is in place

    def child():
        from ocirun.kernel import syscalls
        syscalls.unshare(syscalls.CLONE_NEWUTS)  # sethostname never reaches the host
        nnp_and_load(flt)
        return fn()
    return run_child(child)


def _fork_exec_true() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv("/bin/true", ["true"])
        finally:
            os._exit(127)
    _, st = os.waitpid(pid, 0)
    return st


def _probe() -> dict:
    return {
        "seccomp": proc_status("Seccomp"),
        "true": _fork_exec_true(),
        "swapon": raw_syscall(syscall_nr("swapon"), 0, 0)[1],
        "add_key": raw_syscall(syscall_nr("add_key"), 0, 0, 0, 0, 0)[1],
        "request_key": raw_syscall(syscall_nr("request_key"), 0, 0, 0, 0)[1],
        "sethostname": raw_syscall(syscall_nr("sethostname"), 0, 0)[1],
        "getppid_ok": raw_syscall(syscall_nr("getppid"))[0] > 0,
    }


def test_conversion_shape():
    oci = to_oci(_profile(), PODMAN_CAPS, machine="x86_64")
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["defaultErrnoRet"] == 38
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    names = {n for r in oci["syscalls"] for n in r["names"]}
    assert "arch_prctl" in names and "s390_runtime_instr" not in names
    allowed = {n for r in oci["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert "sethostname" not in allowed  # needs CAP_SYS_ADMIN
    assert all(set(r) <= {"names", "action", "args", "errnoRet"} for r in oci["syscalls"])
    with_admin = to_oci(_profile(), PODMAN_CAPS + ["CAP_SYS_ADMIN"], machine="x86_64")
    assert any("sethostname" in r["names"] and r["action"] == "SCMP_ACT_ALLOW"
               for r in with_admin["syscalls"])
    arm = to_oci(_profile(), PODMAN_CAPS, machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_podman_default_profile_enforced():
    oci = to_oci(_profile(), PODMAN_CAPS)
    got = _run_under(oci, _probe).ok()
    assert got == {
        "seccomp": "2",
        "true": 0,                      # fork + execve of a real program
        "swapon": errno.EPERM,          # the rule's errnoRet 1
        "add_key": errno.ENOSYS,        # defaultErrnoRet 38
        "request_key": errno.ENOSYS,
        "sethostname": errno.EPERM,     # no CAP_SYS_ADMIN at conversion
        "getppid_ok": True,
    }


def test_podman_profile_with_cap_sys_admin_allows_sethostname():
    oci = to_oci(_profile(), PODMAN_CAPS + ["CAP_SYS_ADMIN"])

    def probe():
        name = b"ocirun-test"
        import ctypes
        buf = ctypes.create_string_buffer(name)
        ret = raw_syscall(syscall_nr("sethostname"), ctypes.addressof(buf), len(name))
        return [ret, os.uname().nodename, raw_syscall(syscall_nr("swapon"), 0, 0)[1]]
    assert _run_under(oci, probe).ok() == [[0, 0], "ocirun-test", errno.EPERM]


def test_podman_profile_cache_speedup(tmp_path, capsys):
    """compile() twice: the second is served from the cache, without libseccomp."""
    oci = to_oci(_profile(), PODMAN_CAPS)
    d = str(tmp_path / "cache")
    t0 = time.perf_counter()
    miss = seccomp.compile(oci, cache_dir=d)
    t1 = time.perf_counter()
    hit = seccomp.compile(oci, cache_dir=d)
    t2 = time.perf_counter()
    assert not miss.cached and hit.cached and hit.bpf == miss.bpf
    assert (t2 - t1) < (t1 - t0)
    with capsys.disabled():
        print(f"\n  podman profile: {len(miss.bpf) // 8} BPF insns; compile miss "
              f"{(t1 - t0) * 1e3:.2f} ms, hit {(t2 - t1) * 1e3:.2f} ms")
