"""The container's own /sys/fs/cgroup (a mount of type "cgroup").

  with a cgroup namespace: real cgroup / cgroup2 mounts, which show the
      namespace root, i.e. the container's own cgroup (the init joins its
      cgroup and unshares the namespace first);
  without one: bind mounts of the container's cgroup directories. The
      runtime names them (planned_binds), so the init mounts them before
      it joins (it joins as late as it can) and reads nothing; where the
      runtime cannot name them, the init joins first and binds what
      /proc/self/cgroup says.
On v1 and hybrid hosts /sys/fs/cgroup is a tmpfs holding one directory per
hierarchy, as the host has it.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.linux import mounts

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_ROOT = "/sys/fs/cgroup"


def host_hierarchies() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, super options) of every cgroup mount we can see."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _src, sopts = (right.split() + ["", "", ""])[:3]
            # (the root field is not checked: inside a new cgroup namespace
            # it shows paths like /.. relative to the namespace root)
            if fstype in ("cgroup", "cgroup2") and all(o[0] != fields[4] for o in out):
                out.append((fields[4], fstype, sopts))
    return out


def own_cgroups() -> dict[str, str]:
    """hierarchy key -> our cgroup path ("" key for v2)."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _v1_options(sopts: str) -> list[str]:
    return [o for o in sopts.split(",") if o not in ("rw", "ro") and not o.startswith("release_agent")]


def planned_binds(mgr) -> list[tuple[str, str, str]] | None:
    """(host mountpoint, fstype, the container's directory there) for every
    hierarchy, from the runtime's cgroup manager. None where the manager
    cannot say for sure: another driver than cgroupfs, or rootless (a
    hierarchy may be left out)."""
    if mgr is None or mgr.driver != "cgroupfs" or mgr.rootless:
        return None
    st = mgr.to_state()
    if st.get("paths") is None:
        return [(st["mountpoint"], "cgroup2", st["dir"])]
    return [(st["mounts"][key], "cgroup2" if key == "" else "cgroup", d)
            for key, d in st["paths"].items()]


def mount(rootfd: int, step, cgroupns: bool,
          planned: list[tuple[str, str, str]] | None = None) -> None:
    if step.fstype != "cgroup" and step.fstype != "cgroup2":
        mounts.apply_mount(rootfd, step)
        return
    from ocirun.kernel import syscalls as k
    if planned is not None and not cgroupns and _bind_planned(k, rootfd, step, planned):
        return
    _mount_from_own_cgroups(k, rootfd, step, cgroupns)


def _mount_from_own_cgroups(k, rootfd: int, step, cgroupns: bool) -> None:
    """The general case of mount(): the layout of the host's hierarchies
    and the init's cgroups read from /proc (the runtime could not name
    them, or there is a cgroup namespace)."""
    flags = step.flags
    hier = host_hierarchies()
    own = own_cgroups()
    unified_only = len(hier) == 1 and hier[0][1] == "cgroup2" and hier[0][0] == "/sys/fs/cgroup"
    if unified_only or step.fstype == "cgroup2":
        mnt = hier[0][0] if unified_only else next((h[0] for h in hier if h[1] == "cgroup2"), None)
        _mount_one(k, rootfd, step.dest, "cgroup2", "", mnt, own.get("", "/"), flags, cgroupns)
        return
    _mount_tmpfs(k, rootfd, step.dest)
    for mnt, fstype, sopts in hier:
        if not mnt.startswith("/sys/fs/cgroup/"):
            continue
        name = mnt[len("/sys/fs/cgroup/"):]
        sub = f"{step.dest.rstrip('/')}/{name}"
        if fstype == "cgroup2":
            _mount_one(k, rootfd, sub, "cgroup2", "", mnt, own.get("", "/"), flags, cgroupns)
            continue
        opts = _v1_options(sopts)
        key = next((o for o in opts if o in own), None) or next(
            (o for o in opts if o.startswith("name=") and o in own), None)
        path = own.get(key, "/") if key else "/"
        _mount_one(k, rootfd, sub, "cgroup", ",".join(opts), mnt, path, flags, cgroupns)
        if "," in name:
            pfd = mounts.resolve(rootfd, step.dest)
            try:
                _link_parts(name, pfd)
            finally:
                os.close(pfd)
    if flags & _MS_RDONLY:
        tfd = mounts.resolve(rootfd, step.dest)
        try:
            k.mount_setattr(tfd, "", k.AT_EMPTY_PATH, _MS_RDONLY, 0)
        finally:
            os.close(tfd)


def _mount_one(k, rootfd: int, dest: str, fstype: str, data: str, host_mnt: str | None,
               own_path: str, flags: int, cgroupns: bool) -> None:
    tfd = mounts.make_path(rootfd, dest, True)
    try:
        if cgroupns or host_mnt is None:
            k.mount(fstype, mounts.fdpath(tfd), fstype,
                    flags | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, data or None)
        else:
            src = host_mnt + (own_path if own_path != "/" else "")
            mounts.attach(mounts.bind_tree(src, False, flags | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC),
                          tfd)
    finally:
        os.close(tfd)


def _bind_planned(k, rootfd: int, step, planned: list[tuple[str, str, str]]) -> bool:
    """The bind mounts of `planned` (see planned_binds); False if they do
    not fit this mount (the general code then decides)."""
    flags = step.flags | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if step.fstype == "cgroup2" or (len(planned) == 1 and planned[0][0] == _ROOT):
        return _bind_planned_unified(rootfd, step, planned, flags)
    names = [(mnt[len(_ROOT) + 1:], src) for mnt, _, src in planned
             if mnt.startswith(_ROOT + "/")]
    if any("/" in name for name, _ in names):
        return False  # nested mountpoints: the general code's make_path
    _mount_tmpfs(k, rootfd, step.dest)
    # a fresh tmpfs that only this process sees: its names need no
    # RESOLVE_IN_ROOT walk, and one recursive mount_setattr flags all binds
    dfd = mounts.resolve(rootfd, step.dest)
    try:
        for name, src in names:
            os.mkdir(name, 0o755, dir_fd=dfd)
            tree = k.open_tree(-100, src, k.OPEN_TREE_CLONE | k.OPEN_TREE_CLOEXEC)
            try:
                k.move_mount(tree, "", dfd, name, k.MOVE_MOUNT_F_EMPTY_PATH)
            finally:
                os.close(tree)
            if "," in name:
                _link_parts(name, dfd)
        attr_set, attr_clr = mounts.attrs_from_flags(flags, 0)
        k.mount_setattr(dfd, "", k.AT_EMPTY_PATH | k.AT_RECURSIVE, attr_set, attr_clr)
    finally:
        os.close(dfd)
    return True


def _bind_planned_unified(rootfd: int, step, planned: list[tuple[str, str, str]],
                          flags: int) -> bool:
    """_bind_planned for a cgroup2 mount or a v2-only host: one bind of the
    container's cgroup2 directory."""
    v2 = [src for mnt, fstype, src in planned if fstype == "cgroup2"]
    if len(v2) != 1:
        return False
    tfd = mounts.make_path(rootfd, step.dest, True)
    try:
        mounts.attach(mounts.bind_tree(v2[0], False, flags), tfd)
    finally:
        os.close(tfd)
    return True


def _mount_tmpfs(k, rootfd: int, dest: str) -> None:
    """The tmpfs that holds one directory per hierarchy (v1, hybrid)."""
    tfd = mounts.make_path(rootfd, dest, True)
    try:
        k.mount("tmpfs", mounts.fdpath(tfd), "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                "mode=755")
    finally:
        os.close(tfd)


def _link_parts(name: str, dirfd: int) -> None:
    """cpu,cpuacct -> cpu and cpuacct symlinks, as on the host."""
    for part in name.split(","):
        try:
            os.symlink(name, part, dir_fd=dirfd)
        except FileExistsError:
            pass
