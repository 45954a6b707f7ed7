"""`ocirun features`: what this runtime really supports, in the runtime-spec's
features.json shape (features.md, features-linux.md). Built from the same
tables the code uses, so it cannot drift from the implementation."""
from __future__ import annotations


def features() -> dict:
    from ocirun import __version__
    from ocirun.spec import HOOK_KINDS
    from ocirun.linux import caps, lsm, mounts, seccomp
    from ocirun.linux.namespaces import FLAGS
    from ocirun.specgen import OCI_VERSION
    options = sorted(set(mounts.FLAG_OPTIONS) | set(mounts.PROPAGATION_OPTIONS)
                     | set(mounts.RECURSIVE_OPTIONS) | {"idmap", "ridmap", "tmpcopyup"})
    feats = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": options,
        "linux": {
            "namespaces": sorted(FLAGS),
            "capabilities": list(caps.NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": True,
                       "rdma": True},
            "seccomp": _seccomp(seccomp),
            "apparmor": {"enabled": lsm.apparmor_enabled()},
            "selinux": {"enabled": lsm.selinux_enabled()},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
            "netDevices": {"enabled": True},
        },
        "annotations": {"io.github.ocirun.version": __version__},
    }
    ver = _libseccomp_version()
    if ver:
        feats["annotations"]["io.github.seccomp.libseccomp.version"] = ver
    return feats


def _seccomp(seccomp) -> dict:
    from ocirun.kernel import seccomp as kseccomp
    known = sorted(seccomp.FLAGS)
    supported = [f for f in known if kseccomp.flag_supported(seccomp.FLAGS[f])]
    return {"enabled": True, "actions": sorted(seccomp.ACTIONS),
            "operators": sorted(seccomp.OPERATORS), "archs": sorted(seccomp.ARCHES),
            "knownFlags": known, "supportedFlags": supported}


def _libseccomp_version() -> str | None:
    try:
        from ocirun.kernel import seccomp as kseccomp
        return ".".join(map(str, kseccomp.version()))
    except (OSError, AttributeError):
        return None
