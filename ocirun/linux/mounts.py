"""Mounts: config -> a list of MountStep (pure), and the code that applies
them inside the container's mount namespace (before pivot_root).

Every destination is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT)
and mounted onto that fd through /proc/self/fd/N, so a symlink planted in
the rootfs can never make a mount land outside it. Bind mounts use the new
mount API (open_tree + mount_setattr + move_mount): flags are applied to the
detached copy, which also keeps the locked flags of a user namespace intact.
"""
from __future__ import annotations

from ocirun import oslite as os
import _stat as stat  # the C module: `stat` adds only a .py wrapper

from ocirun.errors import ConfigError, OciError

# option -> (flags to set, flags to clear); values are MS_* constants
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_SYNC = 1, 2, 4, 8, 16
_MS_REMOUNT, _MS_MAND, _MS_DIRSYNC, _MS_NOSYMFOLLOW = 32, 64, 128, 256
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC = 1024, 2048, 4096, 16384
_MS_SILENT, _MS_RELATIME, _MS_IVERSION = 32768, 1 << 21, 1 << 23
_MS_STRICTATIME, _MS_LAZYTIME = 1 << 24, 1 << 25
_MS_POSIXACL = 1 << 16

FLAG_OPTIONS = {
    "acl": (_MS_POSIXACL, 0), "noacl": (0, _MS_POSIXACL),
    "async": (0, _MS_SYNC), "sync": (_MS_SYNC, 0),
    "atime": (0, _MS_NOATIME), "noatime": (_MS_NOATIME, 0),
    "defaults": (0, 0),
    "dev": (0, _MS_NODEV), "nodev": (_MS_NODEV, 0),
    "diratime": (0, _MS_NODIRATIME), "nodiratime": (_MS_NODIRATIME, 0),
    "dirsync": (_MS_DIRSYNC, 0),
    "exec": (0, _MS_NOEXEC), "noexec": (_MS_NOEXEC, 0),
    "iversion": (_MS_IVERSION, 0), "noiversion": (0, _MS_IVERSION),
    "lazytime": (_MS_LAZYTIME, 0), "nolazytime": (0, _MS_LAZYTIME),
    "loud": (0, _MS_SILENT), "silent": (_MS_SILENT, 0),
    "mand": (_MS_MAND, 0), "nomand": (0, _MS_MAND),
    "relatime": (_MS_RELATIME, 0), "norelatime": (0, _MS_RELATIME),
    "strictatime": (_MS_STRICTATIME, 0), "nostrictatime": (0, _MS_STRICTATIME),
    "suid": (0, _MS_NOSUID), "nosuid": (_MS_NOSUID, 0),
    "symfollow": (0, _MS_NOSYMFOLLOW), "nosymfollow": (_MS_NOSYMFOLLOW, 0),
    "ro": (_MS_RDONLY, 0), "rw": (0, _MS_RDONLY),
    "remount": (_MS_REMOUNT, 0),
    "bind": (_MS_BIND, 0), "rbind": (_MS_BIND | _MS_REC, 0),
}
PROPAGATION_OPTIONS = {
    "private": 1 << 18, "rprivate": (1 << 18) | _MS_REC,
    "shared": 1 << 20, "rshared": (1 << 20) | _MS_REC,
    "slave": 1 << 19, "rslave": (1 << 19) | _MS_REC,
    "unbindable": 1 << 17, "runbindable": (1 << 17) | _MS_REC,
}
# mount_setattr attributes (MOUNT_ATTR_*); atime is a 3-bit field (0x70)
_ATTR_RDONLY, _ATTR_NOSUID, _ATTR_NODEV, _ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
_ATTR_ATIME, _ATTR_NOATIME, _ATTR_STRICTATIME = 0x70, 0x10, 0x20
_ATTR_NODIRATIME, _ATTR_NOSYMFOLLOW = 0x80, 0x200000
# recursive options (spec 1.1: "rro", "rnosuid", ...) -> (attr_set, attr_clr)
RECURSIVE_OPTIONS = {
    "rro": (_ATTR_RDONLY, 0), "rrw": (0, _ATTR_RDONLY),
    "rnosuid": (_ATTR_NOSUID, 0), "rsuid": (0, _ATTR_NOSUID),
    "rnodev": (_ATTR_NODEV, 0), "rdev": (0, _ATTR_NODEV),
    "rnoexec": (_ATTR_NOEXEC, 0), "rexec": (0, _ATTR_NOEXEC),
    "rnodiratime": (_ATTR_NODIRATIME, 0), "rdiratime": (0, _ATTR_NODIRATIME),
    "rrelatime": (0, _ATTR_ATIME), "rnorelatime": (0, 0),
    "rnoatime": (_ATTR_NOATIME, _ATTR_ATIME), "ratime": (0, _ATTR_ATIME),
    "rstrictatime": (_ATTR_STRICTATIME, _ATTR_ATIME), "rnostrictatime": (0, 0),
    "rnosymfollow": (_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, _ATTR_NOSYMFOLLOW),
}
EXTRA_OPTIONS = ("tmpcopyup", "idmap", "ridmap", "copy-symlink", "notmpcopyup")
BIND_TYPES = ("bind", "rbind", "none", "")


class MountStep:
    """One mount, fully parsed: the child only executes it."""

    __slots__ = ("source", "dest", "fstype", "flags", "clear", "data", "propagation",
                 "rec_set", "rec_clr", "bind", "recursive", "extra", "path",
                 "uid_mappings", "gid_mappings")

    def __init__(self, **kw) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __repr__(self) -> str:
        return f"MountStep({self.fstype} {self.source} -> {self.dest})"


def parse_options(options: list[str]) -> tuple[int, int, list[int], int, int, list[str], set]:
    """Split mount options into MS_* flags, propagation, recursive attrs and
    filesystem data (anything unknown is data, as mount(8) does)."""
    flags = clear = rec_set = rec_clr = 0
    prop: list[int] = []
    data: list[str] = []
    extra: set = set()
    for o in options:
        if o in FLAG_OPTIONS:
            s, c = FLAG_OPTIONS[o]
            flags = (flags | s) & ~c
            clear = (clear | c) & ~s
        elif o in PROPAGATION_OPTIONS:
            prop.append(PROPAGATION_OPTIONS[o])
        elif o in RECURSIVE_OPTIONS:
            s, c = RECURSIVE_OPTIONS[o]
            # atime is a field: "rnoatime" sets 0x10 *and* clears all of 0x70
            # (the kernel wants the whole field in attr_clr), so clear first
            rec_set = (rec_set & ~c) | s
            rec_clr = (rec_clr & ~s) | c
        elif o in EXTRA_OPTIONS:
            extra.add(o)
        else:
            data.append(o)
    return flags, clear, prop, rec_set, rec_clr, data, extra


def plan_mounts(mounts: list[dict], bundle: str) -> list[MountStep]:
    """Pure: turn config.json's mounts into MountSteps (validated)."""
    steps = []
    for i, m in enumerate(mounts):
        path = f"mounts[{i}]"
        dest = m["destination"]
        if not dest.startswith("/"):
            dest = "/" + dest  # spec 1.2: relative to the container's root
        if any(p == ".." for p in dest.split("/")):
            raise ConfigError(f"{path}.destination", f"must not contain '..': {m['destination']!r}")
        fstype = m.get("type") or ""
        opts = m.get("options") or []
        flags, clear, prop, rec_set, rec_clr, data, extra = parse_options(opts)
        bind = bool(flags & _MS_BIND) or fstype in ("bind", "rbind")
        source = m.get("source") or ""
        if bind:
            source, recursive = _plan_bind_source(path, source, bundle, flags, fstype)
        else:
            if not fstype or fstype == "none":
                raise ConfigError(f"{path}.type", "is required for a mount that is not a bind mount")
            recursive = False
            if not source:
                source = fstype
        if ("idmap" in extra or "ridmap" in extra or m.get("uidMappings")) and not bind:
            raise ConfigError(f"{path}.options", "idmapped mounts need a bind mount")
        steps.append(MountStep(
            source=source, dest=dest, fstype=fstype,
            flags=flags & ~(_MS_BIND | _MS_REC), clear=clear, data=",".join(data),
            propagation=prop, rec_set=rec_set, rec_clr=rec_clr, bind=bind,
            recursive=recursive, extra=extra, path=path,
            uid_mappings=m.get("uidMappings"), gid_mappings=m.get("gidMappings")))
    return steps


def _plan_bind_source(path: str, source: str, bundle: str, flags: int,
                      fstype: str) -> tuple[str, bool]:
    """A bind mount's source (a relative one is under the bundle) and
    whether it is recursive."""
    if not source:
        raise ConfigError(f"{path}.source", "a bind mount needs a source")
    if not source.startswith("/"):
        source = os.path.join(bundle, source)
    return source, bool(flags & _MS_REC) or fstype == "rbind"


def defer_dev_readonly(steps: list[MountStep]) -> bool:
    """A read-only /dev that is not a bind is mounted read-write, and made
    read-only once its nodes, symlinks and devpts are in (as runc does);
    True if there is one."""
    found = False
    for s in steps:
        if not s.bind and s.flags & _MS_RDONLY and os.path.normpath(s.dest) == "/dev":
            s.flags &= ~_MS_RDONLY
            found = True
    return found


def split_deferred(steps: list[MountStep]) -> tuple[list[MountStep], list[MountStep]]:
    """cgroup mounts (and anything mounted under one) wait until the init has
    joined its cgroup, so they show the container's own cgroup."""
    now, later = [], []
    roots: list[str] = []
    for s in steps:
        if s.fstype == "cgroup" or s.fstype == "cgroup2" or any(
                s.dest == r or s.dest.startswith(r + "/") for r in roots):
            if s.fstype in ("cgroup", "cgroup2"):
                roots.append(s.dest.rstrip("/") or "/")
            later.append(s)
        else:
            now.append(s)
    return now, later


# ---------------------------------------------------------------------------
# Execution (in the container's mount namespace, before pivot_root)
# ---------------------------------------------------------------------------
def _sys():
    from ocirun.kernel import syscalls
    return syscalls


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def resolve(rootfd: int, path: str, nofollow_last: bool = False) -> int:
    """O_PATH fd of `path` resolved as if rootfd were '/': no escape."""
    k = _sys()
    res = k.RESOLVE_IN_ROOT | k.RESOLVE_NO_MAGICLINKS
    if nofollow_last:
        res |= k.RESOLVE_NO_SYMLINKS
    return k.openat2(rootfd, path.lstrip("/") or ".", k.O_PATH, res)


def make_path(rootfd: int, path: str, is_dir: bool = True, mode: int = 0o755) -> int:
    """Create `path` (and parents) inside the root if missing; return an O_PATH fd.

    A dangling symlink on the way is followed the way the kernel will follow
    it inside the container: its target is created under the root (as runc
    does), never on the host. Every lookup is RESOLVE_IN_ROOT, so neither an
    absolute target nor "../.." can leave the root."""
    try:
        return resolve(rootfd, path)
    except FileNotFoundError:
        pass
    if _make_leaf(rootfd, path, is_dir, mode):
        return resolve(rootfd, path)
    return _make_path_walk(rootfd, path, is_dir, mode)


def _make_path_walk(rootfd: int, path: str, is_dir: bool, mode: int) -> int:
    """make_path's general case, one component at a time: several names
    missing, or a dangling symlink to follow."""
    links = 0
    todo = [p for p in path.split("/") if p and p != "."]
    cur = ""
    while todo:
        part = todo.pop(0)
        nxt = f"{cur}/{part}"
        try:
            os.close(resolve(rootfd, nxt))
            cur = nxt
            continue
        except FileNotFoundError:
            pass
        pfd = resolve(rootfd, cur or "/")
        try:
            try:
                target = os.readlink(part, dir_fd=pfd)
            except OSError:
                target = None  # missing (not a dangling symlink): create it
            if target is not None:
                links += 1
                if links > 40:
                    raise OciError(f"{path}: too many levels of symbolic links")
                if target.startswith("/"):
                    cur = ""
                todo[:0] = [p for p in target.split("/") if p and p != "."]
                continue
            last = not todo
            if is_dir or not last:
                try:
                    os.mkdir(part, mode, dir_fd=pfd)
                except FileExistsError:
                    pass
            else:
                try:
                    _create_file(pfd, part)
                except FileExistsError:
                    pass
        finally:
            os.close(pfd)
        cur = nxt
    return resolve(rootfd, path)


def _make_leaf(rootfd: int, path: str, is_dir: bool, mode: int) -> bool:
    """The common case of make_path, in three lookups instead of one per
    component: the parent exists and only the last name is missing (e.g.
    the /sys/fs/cgroup/<hierarchy> dirs on a fresh tmpfs). False when that
    is not the case, or the name is a dangling symlink (mkdir and O_EXCL
    do not follow it): the caller's walk handles those."""
    head, _, leaf = path.rstrip("/").rpartition("/")
    if leaf in ("", ".", ".."):
        return False
    try:
        pfd = resolve(rootfd, head or "/")
    except FileNotFoundError:
        return False
    try:
        if is_dir:
            os.mkdir(leaf, mode, dir_fd=pfd)
        else:
            _create_file(pfd, leaf, exclusive=True)
    except FileExistsError:
        return False
    finally:
        os.close(pfd)
    return True


def _create_file(dir_fd: int, name: str, exclusive: bool = False) -> None:
    """An empty file to mount a file on (never through a symlink)."""
    flags = os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if exclusive:
        flags |= os.O_EXCL
    os.close(os.open(name, flags, 0o644, dir_fd=dir_fd))


def attrs_from_flags(flags: int, clear: int) -> tuple[int, int]:
    """MS_* flags to set and to clear -> mount_setattr's (attr_set, attr_clr)."""
    s = c = 0
    for ms, attr in ((_MS_RDONLY, _ATTR_RDONLY), (_MS_NOSUID, _ATTR_NOSUID),
                     (_MS_NODEV, _ATTR_NODEV), (_MS_NOEXEC, _ATTR_NOEXEC),
                     (_MS_NODIRATIME, _ATTR_NODIRATIME), (_MS_NOSYMFOLLOW, _ATTR_NOSYMFOLLOW)):
        if flags & ms:
            s |= attr
        if clear & ms:
            c |= attr
    if flags & _MS_NOATIME:
        s, c = s | _ATTR_NOATIME, c | _ATTR_ATIME
    elif flags & _MS_STRICTATIME:
        s, c = s | _ATTR_STRICTATIME, c | _ATTR_ATIME
    elif flags & _MS_RELATIME:
        c |= _ATTR_ATIME
    return s, c


def bind_tree(source: str | int, recursive: bool, flags: int = 0, clear: int = 0,
              rec_set: int = 0, rec_clr: int = 0, userns_fd: int = -1) -> int:
    """A detached copy of `source` with the flags applied; returns its fd."""
    k = _sys()
    tflags = k.OPEN_TREE_CLONE | k.OPEN_TREE_CLOEXEC | (k.AT_RECURSIVE if recursive else 0)
    if isinstance(source, int):
        fd = k.open_tree(source, "", tflags | k.AT_EMPTY_PATH)
    else:
        fd = k.open_tree(-100, source, tflags)
    try:
        s, c = attrs_from_flags(flags, clear)
        if userns_fd >= 0:
            k.mount_setattr(fd, "", k.AT_EMPTY_PATH | (k.AT_RECURSIVE if recursive else 0),
                            k.MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        if s or c:
            k.mount_setattr(fd, "", k.AT_EMPTY_PATH, s, c)
        if rec_set or rec_clr:
            k.mount_setattr(fd, "", k.AT_EMPTY_PATH | k.AT_RECURSIVE, rec_set, rec_clr)
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach(tree_fd: int, target_fd: int) -> None:
    k = _sys()
    k.move_mount(tree_fd, "", target_fd, "", k.MOVE_MOUNT_F_EMPTY_PATH | k.MOVE_MOUNT_T_EMPTY_PATH)
    os.close(tree_fd)


def is_idmapped(step: MountStep) -> bool:
    return bool(step.uid_mappings) or "idmap" in step.extra or "ridmap" in step.extra


def reachable(path: str) -> bool:
    """Can this process see `path`? (In a user namespace whose root is not
    host root, a source under a closed directory is not: see prepare_bind.)"""
    try:
        os.stat(path)
    except PermissionError:
        return False
    except OSError:
        pass  # missing etc.: prepare_bind reports it
    return True


def prepare_bind(step: MountStep, userns_fd: int = -1) -> int:
    """A bind mount's detached tree, flags, idmap and propagation applied;
    returns its fd. The init does this itself, except in a user namespace for
    an idmapped mount or a source it cannot reach: then the runtime does it
    on the host and passes the fd (as runc does)."""
    k = _sys()
    try:
        os.stat(step.source)
        tree = bind_tree(step.source, step.recursive, step.flags, step.clear,
                         step.rec_set, step.rec_clr, userns_fd)
    except OSError as e:
        raise OciError(f"{step.path}: bind source {step.source}: {e.strerror}") from None
    try:
        for p in step.propagation:
            k.mount_setattr(tree, "", k.AT_EMPTY_PATH | (k.AT_RECURSIVE if p & _MS_REC else 0),
                            0, 0, p & ~_MS_REC)
    except BaseException:
        os.close(tree)
        raise
    return tree


def apply_mount(rootfd: int, step: MountStep, userns_fd: int = -1, tree: int = -1) -> None:
    """Execute one MountStep under the root opened as rootfd (a bind from
    `tree` when the runtime prepared it)."""
    if step.bind:
        _apply_bind(rootfd, step, userns_fd, tree)
        return
    k = _sys()
    if step.fstype in ("proc", "sysfs"):
        # CVE-2019-16884 class: never mount proc/sys through a symlink
        try:
            tfd = resolve(rootfd, step.dest, nofollow_last=True)
        except OSError as e:
            tfd = _kernel_fs_dest_unresolved(rootfd, step, e)
        if not stat.S_ISDIR(os.fstat(tfd).st_mode):
            os.close(tfd)
            raise OciError(f"{step.path}: {step.fstype} destination {step.dest} is not a directory")
    elif step.fstype == "tmpfs":
        tfd = _tmpfs_target(rootfd, step)
    else:
        tfd = make_path(rootfd, step.dest, True)
    try:
        if "tmpcopyup" in step.extra and step.fstype == "tmpfs":
            _mount_tmpfs_copyup(k, rootfd, step, tfd)
        else:
            _mount_fs(k, step, fdpath(tfd))
    finally:
        os.close(tfd)
    if step.propagation or step.rec_set or step.rec_clr:
        _apply_propagation(k, rootfd, step)


def _tmpfs_target(rootfd: int, step: MountStep) -> int:
    """A tmpfs on a directory that exists takes that directory's mode unless
    its options give one, as runc does (a new directory: tmpfs's 1777)."""
    if "mode=" in step.data and any(o.startswith("mode=") for o in step.data.split(",")):
        return make_path(rootfd, step.dest, True)
    try:
        tfd = resolve(rootfd, step.dest)
    except FileNotFoundError:
        return make_path(rootfd, step.dest, True)
    mode = f"mode={os.fstat(tfd).st_mode & 0o7777:04o}"
    step.data = f"{mode},{step.data}" if step.data else mode
    return tfd


def _apply_bind(rootfd: int, step: MountStep, userns_fd: int, tree: int) -> None:
    """apply_mount for a bind mount (from `tree` when the runtime prepared it)."""
    if tree < 0:
        tree = prepare_bind(step, userns_fd)
    try:
        tfd = make_path(rootfd, step.dest, stat.S_ISDIR(os.fstat(tree).st_mode))
    except BaseException:
        os.close(tree)
        raise
    try:
        attach(tree, tfd)
    except OSError as e:
        raise OciError(f"{step.path}: cannot mount {step.source} on {step.dest}: "
                       f"{e.strerror}") from None
    finally:
        os.close(tfd)


def _kernel_fs_dest_unresolved(rootfd: int, step: MountStep, err: OSError) -> int:
    """A proc/sysfs destination the no-symlink lookup did not open: a
    missing one is created (an O_PATH fd of it is returned), a symlink is
    refused, any other error is raised again."""
    if isinstance(err, FileNotFoundError):
        return make_path(rootfd, step.dest, True)
    import errno
    if err.errno == errno.ELOOP:
        raise OciError(f"{step.path}: {step.dest} is a symlink; "
                       f"{step.fstype} must be mounted on ordinary directory") from None
    raise err


def _mount_tmpfs_copyup(k, rootfd: int, step: MountStep, tfd: int) -> None:
    """tmpcopyup: the new tmpfs starts with what the directory held before."""
    src_dir = os.open(fdpath(tfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _mount_fs(k, step, fdpath(tfd))
        newfd = resolve(rootfd, step.dest)
        try:
            _copy_tree(src_dir, fdpath(newfd))
        finally:
            os.close(newfd)
    finally:
        os.close(src_dir)


def _apply_propagation(k, rootfd: int, step: MountStep) -> None:
    """A mount's propagation options and recursive attributes ("rro"...),
    set on the mount just made."""
    nfd = resolve(rootfd, step.dest)
    try:
        for p in step.propagation:
            k.mount(None, fdpath(nfd), None, p)
        if step.rec_set or step.rec_clr:
            k.mount_setattr(nfd, "", k.AT_EMPTY_PATH | k.AT_RECURSIVE, step.rec_set, step.rec_clr)
    finally:
        os.close(nfd)


def _mount_fs(k, step: MountStep, target: str) -> None:
    try:
        k.mount(step.source, target, step.fstype, step.flags, step.data or None)
    except OSError as e:
        _mount_fs_failed(k, step, target, e)


def _mount_fs_failed(k, step: MountStep, target: str, err: OSError) -> None:
    """mount(2) refused: a rootless sysfs falls back to a bind of the
    host's /sys; anything else becomes an OciError naming the mount."""
    import errno
    if err.errno == errno.EPERM and step.fstype == "sysfs":
        # no network namespace of our own (rootless): bind the host's /sys
        # (target is /proc/self/fd/N, resolved inside the rootfs: follow it)
        # (recursive: every mount below the host's /sys gets the flags too)
        rec = _ATTR_NOSUID | _ATTR_NODEV | _ATTR_NOEXEC | \
            (_ATTR_RDONLY if step.flags & _MS_RDONLY else 0)
        tree = bind_tree("/sys", True, step.flags | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                         rec_set=rec)
        try:
            k.move_mount(tree, "", -100, target,
                         k.MOVE_MOUNT_F_EMPTY_PATH | k.MOVE_MOUNT_T_SYMLINKS)
        except OSError as e2:
            raise OciError(f"{step.path}: bind of the host's /sys on {step.dest} "
                           f"(sysfs refused: no network namespace of our own): "
                           f"{e2.strerror}") from None
        finally:
            os.close(tree)
        return
    if err.errno == errno.ENODEV:
        raise OciError(f"{step.path}: unknown filesystem type {step.fstype!r}") from None
    raise OciError(f"{step.path}: mount {step.fstype} on {step.dest}: {err.strerror}") from None


def _copy_tree(src_fd: int, dst: str) -> None:
    """tmpcopyup: fill a new tmpfs with what the directory held before,
    owners and modes kept (as runc). The tmpfs's own root keeps its mode:
    the directory's when it was there before (see _tmpfs_target), tmpfs's
    1777 when the runtime made it."""
    _copy_entries(fdpath(src_fd), dst)


def _copy_entries(src: str, dst: str) -> None:
    import shutil
    for e in os.scandir(src):
        s, d = os.path.join(src, e.name), os.path.join(dst, e.name)
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(d, stat.S_IMODE(st.st_mode))
            _copy_entries(s, d)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(s, d)
        else:  # device nodes, fifos, sockets
            os.mknod(d, st.st_mode, st.st_rdev)
        os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(d, stat.S_IMODE(st.st_mode))  # (after chown, which clears set-id bits)


# ---------------------------------------------------------------------------
# After pivot_root
# ---------------------------------------------------------------------------
def mask_path(path: str) -> None:
    """maskedPaths: /dev/null over files, an empty read-only tmpfs over dirs."""
    k = _sys()
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            k.mount("tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                    "size=0")
        else:
            k.mount("/dev/null", path, None, _MS_BIND)
    except OSError as e:
        raise OciError(f"cannot mask {path}: {e.strerror}") from None


def readonly_path(path: str) -> None:
    """readonlyPaths: a read-only bind of the path over itself, submounts
    too; nothing else changes (a read-only /bin still runs programs, as
    with runc and crun)."""
    try:
        tree = bind_tree(path, True, rec_set=_ATTR_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return
    k = _sys()
    k.move_mount(tree, "", -100, path, k.MOVE_MOUNT_F_EMPTY_PATH)
    os.close(tree)


def remount_root_readonly() -> None:
    _sys().mount_setattr(-100, "/", 0, _ATTR_RDONLY, 0)


def remount_dev_readonly() -> None:
    """(see defer_dev_readonly; only /dev itself: /dev/pts, /dev/shm stay)"""
    _sys().mount_setattr(-100, "/dev", 0, _ATTR_RDONLY, 0)


# ---------------------------------------------------------------------------
# Without a mount namespace (runtime side): the container's mounts are made
# in the runtime's own namespace, under the rootfs; delete removes them.
# ---------------------------------------------------------------------------
def detach_new_under(root: str, before: set[int] | list[int]) -> None:
    """Lazily unmount what was mounted at or below root since `before` (the
    ids then). Each mount point is resolved inside root (a symlink planted
    by the container cannot point the unmount at a host mount) and unmounted
    through its fd; stacked mounts take one round each."""
    from ocirun.linux.mountinfo import ids_under
    k = _sys()
    before = set(before)
    try:
        rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for _ in range(64):
            new = sorted((p for i, p in ids_under(root).items() if i not in before),
                         key=len)
            if not new:
                return
            for point in new:
                try:
                    fd = resolve(rootfd, point[len(root):], nofollow_last=True)
                except OSError:
                    continue  # gone already (under a detached parent)
                try:
                    k.umount2(fdpath(fd), k.MNT_DETACH)
                except OSError:
                    pass
                finally:
                    os.close(fd)
        raise OciError(f"cannot remove the container's mounts under {root}")
    finally:
        os.close(rootfd)
