"""linux.netDevices (config-linux.md "Network Devices"): move host network
devices into the container's network namespace.

The parent does it, once the init reports its network namespace: it keeps
the device's permanent global addresses (the kernel drops addresses when a
device changes namespace), moves and renames it in one request, then adds
the addresses back and sets the link up through a netlink socket opened
inside the container's namespace. As the spec asks, nothing is moved back:
when the namespace dies the kernel returns physical devices to the host and
destroys virtual ones.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import ConfigError, OciError

IFNAMSIZ = 16


def name_problem(name: str, template_ok: bool) -> str | None:
    """What the kernel's dev_valid_name() would refuse, plus at most one %d
    template (in a new name only); None when the name is fine."""
    if not name or len(name) >= IFNAMSIZ or name in (".", "..") or \
            any(ch in name for ch in "/: \t\n\r\v\f"):
        return f"invalid network device name {name!r} (1 to {IFNAMSIZ - 1} characters, " \
               "no '/', ':' or white space)"
    if "%" in name and not (template_ok and name.count("%") == 1 and "%d" in name):
        return f"invalid network device name {name!r} (one %d template at most, " \
               "in the new name only)"
    return None


def check_host(devices: dict) -> None:
    """Before anything is made: each device must exist on the host."""
    import _socket
    for host in devices:
        try:
            _socket.if_nametoindex(host)
        except OSError:
            raise ConfigError(f"linux.netDevices.{host}",
                              "no such network device on the host") from None


def move_all(devices: dict, netns_fd: int) -> None:
    """Move every device into the namespace netns_fd refers to."""
    from ocirun.kernel import netlink, syscalls as k
    host = netlink.Netlink()
    try:
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            k.setns(netns_fd, k.CLONE_NEWNET)
            try:
                inside = netlink.Netlink()  # stays in the container's namespace
            finally:
                k.setns(own, k.CLONE_NEWNET)
        finally:
            os.close(own)
        try:
            for name, dev in devices.items():
                _move(host, inside, name, (dev or {}).get("name") or name, netns_fd)
        finally:
            inside.close()
    finally:
        host.close()


def _move(host, inside, name: str, new_name: str, netns_fd: int) -> None:
    from ocirun.kernel import netlink
    where = f"linux.netDevices.{name}"
    try:
        link = host.link(name)
    except OSError:
        raise OciError(f"{where}: no such network device on the host") from None
    if "%" not in new_name and new_name in {ln.name for ln in inside.links()}:
        # (checked first: the kernel would move the device, then fail the rename)
        raise OciError(f"{where}: a network device named {new_name!r} already exists "
                       "in the container's network namespace")
    keep = [a for a in host.addresses(link.index)
            if a.permanent and a.scope == netlink.RT_SCOPE_UNIVERSE]
    try:
        host.move_link(link.index, netns_fd, new_name if new_name != name else None)
    except OSError as e:
        if e.errno == 17:  # EEXIST
            raise OciError(f"{where}: a network device named {new_name!r} already exists "
                           "in the container's network namespace") from None
        raise OciError(f"{where}: cannot move it into the container: {e.strerror}") from None
    moved = _find(inside, link, new_name)
    for a in keep:
        try:
            inside.add_address(moved.index, a)
        except OSError as e:
            if e.errno != 17:
                raise OciError(f"{where}: cannot restore address {a.text()} "
                               f"in the container: {e.strerror}") from None
    try:
        inside.set_up(moved.index)
    except OSError as e:
        raise OciError(f"{where}: cannot set {moved.name} up: {e.strerror}") from None


def _find(inside, before, new_name: str):
    """The moved link in the container: by name, or (for a %d template, whose
    final name the kernel picks) by its index and hardware address."""
    if "%" not in new_name:
        return inside.link(new_name)
    links = inside.links()
    for ln in links:
        if ln.index == before.index and ln.mac == before.mac:
            return ln
    for ln in links:
        if ln.mac == before.mac and before.mac:
            return ln
    raise OciError(f"linux.netDevices.{before.name}: moved, but not found in the container")
