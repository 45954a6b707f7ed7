"""AppArmor and SELinux labels: process.apparmorProfile, process.selinuxLabel,
linux.mountLabel.

check() runs in the runtime before fork and refuses a label for an LSM that
is not enabled (see docs/security.md for why we fail instead of ignoring).
apply_exec_label() runs in the container's init: it asks the LSM to switch
the process to the label at its next execve(), so the runtime's own code
keeps running unconfined and the container process starts confined.
"""
from __future__ import annotations

from ocirun import oslite as os

from ..errors import ConfigError, OciError

_SELINUXFS = ("/sys/fs/selinux", "/selinux")


def apparmor_enabled() -> bool:
    """The AppArmor module is loaded and switched on (as runc checks it)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled", "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    """selinuxfs is mounted: the policy is loaded (enforcing or permissive)."""
    for d in _SELINUXFS:
        if os.path.exists(f"{d}/enforce"):
            return True
    try:
        with open("/proc/self/mountinfo") as f:
            return any(" - selinuxfs " in line for line in f)
    except OSError:
        return False


def _str(cfg: dict | None, key: str, where: str) -> str | None:
    v = (cfg or {}).get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ConfigError(where, "must be a string")
    return v


def check(process_cfg: dict | None, linux_cfg: dict | None) -> None:
    """Fail early, with the JSON path, if a label cannot be honoured here.

    "unconfined" for AppArmor is accepted on a host without AppArmor: the
    process is unconfined there anyway.
    """
    prof = _str(process_cfg, "apparmorProfile", "process.apparmorProfile")
    if prof is not None and prof != "unconfined" and not apparmor_enabled():
        raise ConfigError("process.apparmorProfile",
                          f'AppArmor profile "{prof}" requested but AppArmor is '
                          "not enabled on this host")
    label = _str(process_cfg, "selinuxLabel", "process.selinuxLabel")
    if label is not None and not selinux_enabled():
        raise ConfigError("process.selinuxLabel", f'SELinux label "{label}" '
                          "requested but SELinux is not enabled on this host")
    ml = _str(linux_cfg, "mountLabel", "linux.mountLabel")
    if ml is not None and not selinux_enabled():
        raise ConfigError("linux.mountLabel", f'SELinux mount label "{ml}" '
                          "requested but SELinux is not enabled on this host")


def _write_attr(paths: tuple[str, ...], value: str, what: str) -> None:
    err: OSError | None = None
    for p in paths:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            err = e
            continue
        except OSError as e:
            raise OciError(f"{what}: {p}: {e.strerror}") from None
        try:
            os.write(fd, value.encode())
            return
        except OSError as e:
            raise OciError(f"{what}: writing {value!r} to {p}: {e.strerror}") from None
        finally:
            os.close(fd)
    raise OciError(f"{what}: {paths[0]}: {err.strerror if err else 'missing'}")


def apply_exec_label(process_cfg: dict | None, proc: str = "/proc") -> None:
    """Label the next execve(): AppArmor change_onexec and/or SELinux setexeccon.

    Call in the init after /proc of the container is mounted and before the
    uid change and capability drop (as runc), with the same thread that will
    execve() (the attribute is per thread, hence thread-self).
    """
    prof = _str(process_cfg, "apparmorProfile", "process.apparmorProfile")
    if prof is not None and (prof != "unconfined" or apparmor_enabled()):
        # Kernels >= 5.8 have the per-LSM directory; older ones only attr/exec.
        _write_attr((f"{proc}/thread-self/attr/apparmor/exec",
                     f"{proc}/thread-self/attr/exec"), f"exec {prof}",
                    f'apparmor: applying profile "{prof}"')
    label = _str(process_cfg, "selinuxLabel", "process.selinuxLabel")
    if label is not None:
        _write_attr((f"{proc}/thread-self/attr/exec",), label,
                    f'selinux: setting exec label "{label}"')


def mount_data(data: str | None, mount_label: str | None) -> str | None:
    """Mount options with the SELinux context= option added (runc's format)."""
    if not mount_label:
        return data
    ctx = f'context="{mount_label}"'
    return f"{data},{ctx}" if data else ctx
