"""The container's own /sys/fs/cgroup (a mount of type "cgroup").

  with a cgroup namespace: real cgroup / cgroup2 mounts, which show the
      namespace root, i.e. the container's own cgroup (so the init joins
      its cgroup and unshares the namespace first);
  without one: bind mounts of the container's cgroup directories, which
      the runtime names (planned_sources), so the init joins later.
On v1 and hybrid hosts /sys/fs/cgroup is a tmpfs holding one directory per
hierarchy, as the host has it.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.linux import mounts

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8


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


def planned_sources(mgr) -> dict[str, str] | None:
    """Host cgroup mountpoint -> the container's directory in it, from the
    runtime's cgroup manager. None (the init joins first and reads
    /proc/self/cgroup) where the manager cannot say for sure: another driver
    than cgroupfs, or rootless (a hierarchy may be left out)."""
    if mgr is None or mgr.driver != "cgroupfs" or mgr.rootless:
        return None
    st = mgr.to_state()
    if st.get("paths") is None:
        return {st["mountpoint"]: st["dir"]}
    return {st["mounts"][key]: d for key, d in st["paths"].items()}


def _v1_options(sopts: str) -> list[str]:
    return [o for o in sopts.split(",") if o not in ("rw", "ro") and not o.startswith("release_agent")]


def mount(rootfd: int, step, cgroupns: bool, sources: dict[str, str] | None = None) -> None:
    if step.fstype != "cgroup" and step.fstype != "cgroup2":
        mounts.apply_mount(rootfd, step)
        return
    from ocirun.kernel import syscalls as k
    flags = step.flags
    hier = host_hierarchies()
    own = own_cgroups()  # (hierarchies the runtime did not name stay the runtime's)
    sources = sources or {}
    unified_only = len(hier) == 1 and hier[0][1] == "cgroup2" and hier[0][0] == "/sys/fs/cgroup"
    if unified_only or step.fstype == "cgroup2":
        mnt = hier[0][0] if unified_only else next((h[0] for h in hier if h[1] == "cgroup2"), None)
        _mount_one(k, rootfd, step.dest, "cgroup2", "", mnt, own.get("", "/"), flags, cgroupns,
                   sources.get(mnt))
        return
    tfd = mounts.make_path(rootfd, step.dest, True)
    try:
        k.mount("tmpfs", mounts.fdpath(tfd), "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                "mode=755")
    finally:
        os.close(tfd)
    for mnt, fstype, sopts in hier:
        if not mnt.startswith("/sys/fs/cgroup/"):
            continue
        name = mnt[len("/sys/fs/cgroup/"):]
        sub = f"{step.dest.rstrip('/')}/{name}"
        if fstype == "cgroup2":
            _mount_one(k, rootfd, sub, "cgroup2", "", mnt, own.get("", "/"), flags, cgroupns,
                       sources.get(mnt))
            continue
        opts = _v1_options(sopts)
        key = next((o for o in opts if o in own), None) or next(
            (o for o in opts if o.startswith("name=") and o in own), None)
        path = own.get(key, "/") if key else "/"
        _mount_one(k, rootfd, sub, "cgroup", ",".join(opts), mnt, path, flags, cgroupns,
                   sources.get(mnt))
        if "," in name:  # cpu,cpuacct -> cpu and cpuacct symlinks, as on the host
            pfd = mounts.resolve(rootfd, step.dest)
            try:
                for part in name.split(","):
                    try:
                        os.symlink(name, part, dir_fd=pfd)
                    except FileExistsError:
                        pass
            finally:
                os.close(pfd)
    if flags & _MS_RDONLY:
        tfd = mounts.resolve(rootfd, step.dest)
        try:
            k.mount_setattr(tfd, "", k.AT_EMPTY_PATH, _MS_RDONLY, 0)
        finally:
            os.close(tfd)


def _mount_one(k, rootfd: int, dest: str, fstype: str, data: str, host_mnt: str | None,
               own_path: str, flags: int, cgroupns: bool, source: str | None = None) -> None:
    tfd = mounts.make_path(rootfd, dest, True)
    try:
        if cgroupns or host_mnt is None:
            k.mount(fstype, mounts.fdpath(tfd), fstype,
                    flags | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, data or None)
        else:
            src = source or host_mnt + (own_path if own_path != "/" else "")
            mounts.attach(mounts.bind_tree(src, False, flags | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC),
                          tfd)
    finally:
        os.close(tfd)
