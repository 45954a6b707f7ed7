"""Turn a containers/common seccomp.json into an OCI linux.seccomp object.

containers' own format (used by podman, buildah, CRI-O) differs from the
OCI one: `archMap` instead of `architectures`, and rules carry
`includes` / `excludes` conditions on capabilities, architectures and the
kernel version, resolved when a container is created. This helper does that
resolution the way podman does, so the tests can run podman's real default
profile through ocirun.
"""
from __future__ import annotations

import os
import platform

PODMAN_PROFILE = "/usr/share/containers/seccomp.json"

# uname -m -> (Go's GOARCH as used in includes/excludes.arches, SCMP_ARCH_*)
_NATIVE = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}


def _kernel_version(release: str) -> tuple[int, ...]:
    out = []
    for part in release.split("-")[0].split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def to_oci(profile: dict, capabilities: list[str] | tuple[str, ...],
           machine: str | None = None, kernel: str | None = None) -> dict:
    """Resolve a containers-format profile for one container.

    capabilities: the container's bounding set (podman checks includes /
    excludes caps against it). A rule is kept when every included cap is
    present, no excluded cap is, the native arch is included (if arches are
    listed) and not excluded, and the kernel is at least minKernel.
    """
    machine = machine or platform.machine()
    goarch, scmp_arch = _NATIVE[machine]
    kver = _kernel_version(kernel or os.uname().release)
    caps = set(capabilities)

    out: dict = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if profile.get("architectures"):
        out["architectures"] = list(profile["architectures"])
    else:
        for m in profile.get("archMap") or []:
            if m["architecture"] == scmp_arch:
                out["architectures"] = [m["architecture"], *(m.get("subArchitectures") or [])]
                break
    for k in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(k):
            out[k] = profile[k]

    rules = []
    for rule in profile.get("syscalls") or []:
        inc = rule.get("includes") or {}
        exc = rule.get("excludes") or {}
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if exc.get("arches") and goarch in exc["arches"]:
            continue
        if any(c not in caps for c in inc.get("caps") or []):
            continue
        if any(c in caps for c in exc.get("caps") or []):
            continue
        if inc.get("minKernel") and kver < _kernel_version(inc["minKernel"]):
            continue
        names = list(rule.get("names") or [])
        if rule.get("name"):
            names.append(rule["name"])
        if not names:
            continue
        r = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            r["args"] = [{"index": a["index"], "value": a["value"],
                          "valueTwo": a.get("valueTwo", 0), "op": a["op"]}
                         for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            r["errnoRet"] = rule["errnoRet"]
        rules.append(r)
    out["syscalls"] = rules
    return out
