"""Helpers for the container-level security tests (test_security_container,
test_hardening, test_rootless): a tiny static syscall helper, podman's
profile in OCI form, capability masks read from /proc/<pid>/status.

Why a C helper: busybox has no keyctl/add_key applet and no way to print
the errno of an arbitrary syscall; the rootfs has no interpreter. `sysc`
is 20 lines of C built once per session with `gcc -static` (libc6-dev
ships libc.a): `sysc NR [ARG...]` calls syscall(NR, ...) with integer
arguments (or `s:TEXT` for a string pointer) and prints `ret=R errno=E`.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ocitest import REPO

SYSC_SRC = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long a[6] = {0};
    if (argc < 2) return 2;
    for (int i = 2; i < argc && i < 8; i++)
        a[i - 2] = strncmp(argv[i], "s:", 2) == 0 ? (long)(argv[i] + 2)
                                                  : strtol(argv[i], NULL, 0);
    errno = 0;
    long r = syscall(strtol(argv[1], NULL, 0), a[0], a[1], a[2], a[3], a[4], a[5]);
    printf("ret=%ld errno=%d\n", r, r == -1 ? errno : 0);
    return 0;
}
"""

# x86_64 syscall numbers used by the tests
NR = {"add_key": 248, "request_key": 249, "keyctl": 250, "swapon": 167,
      "sethostname": 170, "ioprio_get": 252, "getpid": 39, "mkdir": 83,
      "sched_getattr": 315, "sysinfo": 99, "geteuid": 107}

ALL_CAPS = None


def build_sysc(dest_dir: str) -> str:
    src = os.path.join(dest_dir, "sysc.c")
    out = os.path.join(dest_dir, "sysc")
    with open(src, "w") as f:
        f.write(SYSC_SRC)
    subprocess.run(["gcc", "-static", "-Os", "-o", out, src], check=True,
                   capture_output=True)
    return out


def install(rootfs: str, binary: str, name: str = "sysc") -> None:
    dst = os.path.join(rootfs, "bin", name)
    if os.path.lexists(dst):
        os.unlink(dst)
    shutil.copy2(binary, dst)


def parse_sysc(line: str) -> tuple[int, int]:
    parts = dict(p.split("=") for p in line.split())
    return int(parts["ret"]), int(parts["errno"])


def cap_mask(names) -> int:
    from ocirun.linux.caps import NAMES
    m = 0
    for n in names:
        m |= 1 << NAMES.index(n)
    return m


def all_caps() -> list[str]:
    from ocirun.linux.caps import NAMES, last_cap
    return list(NAMES[: last_cap() + 1])


def status_fields(text: str) -> dict[str, str]:
    out = {}
    for ln in text.splitlines():
        if ":" in ln:
            k, v = ln.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def caps_of(status: dict[str, str]) -> dict[str, int]:
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def podman_seccomp(bounding: list[str]) -> dict:
    import json
    import sys
    sys.path.insert(0, os.path.join(REPO, "tests", "security"))
    from podman_profile import PODMAN_PROFILE, to_oci
    with open(PODMAN_PROFILE) as f:
        return to_oci(json.load(f), bounding)
