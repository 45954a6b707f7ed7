"""Device nodes for an init in a new user namespace, which may not mknod:
the runtime (host root) makes them on a detached tmpfs, the init binds them
in (devices.create_devices). Loaded only then: not on a plain start."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.linux import mounts
from ocirun.linux.devices import Device

_STAGING = "/dev/.ocirun-devices"


def make_tree(devices: list[Device], uid_maps: list, gid_maps: list) -> int:
    """The runtime's part for an init in a new user namespace, which may not
    mknod: each node, named by its index, on a detached tmpfs the runtime
    makes as host root (not nodev), owned by the host ids its uid/gid map
    to. The init binds them in (create_devices); devices the host lacks
    work too, with the config's numbers and owner (crun does the same; a
    bind of the host's path cannot). Returns the mount's fd; OSError where
    the kernel or our privileges allow none of it (the init then binds the
    host's nodes, as before)."""
    k = mounts._sys()
    fs = k.fsopen("tmpfs")
    try:
        k.fsconfig(fs, k.FSCONFIG_SET_STRING, "mode", "0755")
        k.fsconfig(fs, k.FSCONFIG_CMD_CREATE)
        tree = k.fsmount(fs, k.MOUNT_ATTR_NOSUID | k.MOUNT_ATTR_NOEXEC)
    finally:
        os.close(fs)
    old = os.umask(0)
    try:
        for i, d in enumerate(devices):
            os.mknod(str(i), d.mode, os.makedev(d.major, d.minor), dir_fd=tree)
            uid, gid = _host_id(uid_maps, d.uid), _host_id(gid_maps, d.gid)
            if uid is not None and gid is not None:
                os.chown(str(i), uid, gid, dir_fd=tree, follow_symlinks=False)
    except BaseException:
        os.close(tree)
        raise
    finally:
        os.umask(old)
    return tree


def _host_id(maps: list, cid: int) -> int | None:
    for m in maps:
        if m["containerID"] <= cid < m["containerID"] + m["size"]:
            return m["hostID"] + cid - m["containerID"]
    return None  # unmapped: left to host root, which shows as the overflow id


class Staged:
    """make_tree's mount attached at a staging point under the container's
    /dev while its nodes are bound to their places, then removed."""

    def __init__(self, rootfd: int, tree_fd: int) -> None:
        self.rootfd = rootfd
        point = mounts.make_path(rootfd, _STAGING, True, 0o700)
        try:
            mounts.attach(tree_fd, point)  # (closes tree_fd)
        finally:
            os.close(point)
        self.fd = mounts.resolve(rootfd, _STAGING)  # now the tmpfs's root

    def node(self, i: int) -> int:
        return mounts.resolve(self.fd, str(i))

    def remove(self) -> None:
        k = mounts._sys()
        try:
            k.umount2(mounts.fdpath(self.fd), k.MNT_DETACH)
        finally:
            os.close(self.fd)
        parent, _, name = _STAGING.rpartition("/")
        pfd = mounts.resolve(self.rootfd, parent)
        try:
            os.rmdir(name, dir_fd=pfd)
        finally:
            os.close(pfd)
