"""/dev inside the container: the spec's default devices, linux.devices,
and the standard symlinks. Device nodes are made with mknod; where a user
namespace forbids mknod they are bound in, from nodes the runtime made on
a tmpfs of its own (devtree.py; as crun does), or from the host's paths
when the runtime is not root (as runc does)."""
from __future__ import annotations

from ocirun import oslite as os
import _stat as stat  # the C module: `stat` adds only a .py wrapper

from ocirun.errors import ConfigError, OciError
from ocirun.linux import mounts

# path, type, major, minor (mode 0666, root-owned) — runtime-spec config-linux.md
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3), ("/dev/zero", "c", 1, 5), ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8), ("/dev/urandom", "c", 1, 9), ("/dev/tty", "c", 5, 0),
)
SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
    ("/proc/kcore", "/dev/core"), ("pts/ptmx", "/dev/ptmx"),
)
_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


class Device:
    __slots__ = ("path", "mode", "major", "minor", "uid", "gid")

    def __init__(self, path: str, mode: int, major: int, minor: int, uid: int, gid: int):
        self.path, self.mode, self.major, self.minor = path, mode, major, minor
        self.uid, self.gid = uid, gid


def plan_devices(devices: list[dict], dev_is_bound: bool) -> list[Device]:
    """Pure: the default devices (unless /dev is a host bind) plus linux.devices."""
    out: dict[str, Device] = {}
    if not dev_is_bound:
        for path, t, ma, mi in DEFAULT_DEVICES:
            out[path] = Device(path, _TYPES[t] | 0o666, ma, mi, 0, 0)
    for i, d in enumerate(devices):
        dev = _plan_device(i, d)
        out[dev.path] = dev
    return list(out.values())


def _plan_device(i: int, d: dict) -> Device:
    """linux.devices[i], validated, its path cleaned."""
    path = d["path"]
    # "MAY be anywhere in the container filesystem, notably outside of
    # /dev" (config-linux.md); it is made inside the rootfs whatever it says
    if not path.startswith("/") or path.rstrip("/") == "" or ".." in path.split("/"):
        raise ConfigError(f"linux.devices[{i}].path",
                          f"must be an absolute path inside the container: {path!r}")
    # cleaned as runc does (filepath.Clean): "/mnt/" names /mnt, "//dev/./x" /dev/x
    path = "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
    mode = d.get("fileMode")
    return Device(path, _TYPES[d["type"]] | (0o666 if mode is None else mode & 0o7777),
                  d.get("major") or 0, d.get("minor") or 0,  # (null: as absent)
                  d.get("uid") or 0, d.get("gid") or 0)


def create_devices(rootfd: int, devices: list[Device], bind_from_host: bool,
                   tree_fd: int = -1) -> None:
    """Each parent directory is resolved once and the umask cleared once:
    the init makes these while the runtime waits for it. In a user
    namespace (no mknod there) the nodes are bound in: from the runtime's
    tree_fd (devtree.make_tree) when there is one, else from the host's paths."""
    parents: dict[str, tuple[int, bool]] = {}
    tree = None
    if tree_fd >= 0:
        from ocirun.linux.devtree import Staged
        tree = Staged(rootfd, tree_fd)
    old = os.umask(0)
    try:
        for i, d in enumerate(devices):
            parent, _, name = d.path.rpartition("/")
            got = parents.get(parent)
            if got is None:
                pfd = mounts.make_path(rootfd, parent, True)
                # (a setgid directory gives new nodes its group)
                got = parents[parent] = (pfd, bool(os.stat(pfd).st_mode & stat.S_ISGID))
            if tree is not None:
                _bind_device(rootfd, got[0], name, d, tree.node(i))
            elif bind_from_host:
                _bind_device(rootfd, got[0], name, d, d.path)
            elif not _mknod(got[0], name, d, got[1]):
                # the runtime itself is in a user namespace (rootless podman
                # runs it as uid 0 in the user's): bind the host's, as runc
                bind_from_host = True
                _bind_device(rootfd, got[0], name, d, d.path)
    finally:
        os.umask(old)
        for pfd, _ in parents.values():
            os.close(pfd)
        if tree is not None:
            tree.remove()


def _mknod(pfd: int, name: str, d: Device, setgid_parent: bool) -> bool:
    """(umask 0) A node already there is replaced, as runc does; a new one
    is chowned only where it would not already have d's owner. False: no
    mknod in the user namespace the runtime itself runs in."""
    dev = os.makedev(d.major, d.minor)
    try:
        try:
            os.mknod(name, d.mode, dev, dir_fd=pfd)
        except FileExistsError:
            if not _replace_node(pfd, name, d, dev):
                return True
    except PermissionError as e:
        from ocirun.linux.namespaces import in_user_namespace
        if in_user_namespace():
            return False
        raise OciError(f"cannot create device {d.path}: {e.strerror}") from None
    except OSError as e:
        raise OciError(f"cannot create device {d.path}: {e.strerror}") from None
    if d.uid != os.geteuid() or d.gid != os.getegid() or setgid_parent:
        os.chown(name, d.uid, d.gid, dir_fd=pfd, follow_symlinks=False)
    return True


def _replace_node(pfd: int, name: str, d: Device, dev: int) -> bool:
    """_mknod where the name is taken: unlink it and make the node (a
    directory in the way is an error). False: something is mounted there
    (a bind of the host's node from the config's mounts, as rootless podman
    gives a privileged container): it stays, as runc leaves it."""
    try:
        os.unlink(name, dir_fd=pfd)
    except IsADirectoryError:
        raise OciError(f"cannot create device {d.path}: a directory is in the way") from None
    except OSError as e:
        if e.errno == 16:  # EBUSY
            return False
        raise
    os.mknod(name, d.mode, dev, dir_fd=pfd)
    return True


def _bind_device(rootfd: int, pfd: int, name: str, d: Device, source: str | int) -> None:
    """source: the host's path, or an O_PATH fd of a node of
    devtree.make_tree's (closed here)."""
    try:
        try:
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644, dir_fd=pfd))
        except OSError as e:
            import errno
            if e.errno != errno.EEXIST:
                raise OciError(f"cannot create {d.path}: {e.strerror}") from None
        tfd = mounts.resolve(rootfd, d.path)
        try:
            mounts.attach(mounts.bind_tree(source, False), tfd)
        except OSError as e:
            where = "from the host" if isinstance(source, str) else "from the runtime's tmpfs"
            raise OciError(f"cannot bind device {d.path} {where}: {e.strerror}") from None
        finally:
            os.close(tfd)
    finally:
        if isinstance(source, int):
            os.close(source)


def create_symlinks(rootfd: int) -> None:
    pfd = mounts.make_path(rootfd, "/dev", True)
    try:
        for target, link in SYMLINKS:
            # /dev/core only where the kernel has /proc/kcore, as runc
            if target == "/proc/kcore" and not os.access(target, os.F_OK):
                continue
            name = link[5:]
            try:
                os.symlink(target, name, dir_fd=pfd)
            except FileExistsError:
                pass
    finally:
        os.close(pfd)
