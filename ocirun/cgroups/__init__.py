"""cgroups for ocirun: v1, hybrid and v2 (cgroupfs), and the systemd driver.

    layout = detect()
    mgr = new_manager(spec_cgroups_path, container_id, systemd=False)
    mgr.create(); mgr.apply(spec["linux"]["resources"]); mgr.add_pid(pid)
    state["cgroup"] = mgr.to_state()   ...later: manager_from_state(state["cgroup"])

See docs/cgroups.md for path rules, conversions and what is unsupported.
"""
from ocirun import oslite as os

from ocirun.errors import ConfigError

__all__ = ["Layout", "detect", "new_manager", "manager_from_state",
           "default_device_rules"]

JPATH = "linux.cgroupsPath"


def __getattr__(name: str):
    # layout detection is loaded on first use: commands that act on an
    # existing container rebuild their manager from the state instead
    if name == "Layout":
        from ocirun.cgroups import layout
        return getattr(layout, name)
    raise AttributeError(name)


def detect(mountinfo: str = "/proc/self/mountinfo"):
    """The host's cgroup layout (see ocirun.cgroups.layout.detect)."""
    from ocirun.cgroups.layout import detect
    return detect(mountinfo)


def _clean(p: str) -> str:
    """Reject traversal; collapse '//' and '.'; keep absolute/relative."""
    if "\0" in p:
        raise ConfigError(JPATH, "must not contain NUL")
    parts = []
    for c in p.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            raise ConfigError(JPATH, f"{p!r}: '..' is not allowed")
        parts.append(c)
    rel = "/".join(parts)
    return "/" + rel if p.startswith("/") else rel


def _under(own: str, mount_root: str, rel: str) -> str:
    """own cgroup path (as in /proc/self/cgroup) joined with rel, relative to the mount."""
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root):] or "/"
    return os.path.join(own, rel) if rel else own


def new_manager(cgroups_path: str | None, container_id: str, *, systemd: bool = False,
                rootless: bool = False, layout: "Layout | None" = None):
    """Resolve the container's cgroup(s); pure: reads mountinfo/proc, writes nothing.

    cgroupfs: absolute paths are below each hierarchy's mountpoint; relative
    ones (and the default, '<container_id>') below the runtime's own cgroup
    (pure v2: below its parent), as runc. systemd: 'slice:prefix:name' (default 'system.slice:ocirun:<id>',
    user.slice when rootless) -> unit '<prefix>-<name>.scope' in that slice.
    """
    if cgroups_path is not None and not isinstance(cgroups_path, str):
        raise ConfigError(JPATH, "must be a string")
    if not container_id or "/" in container_id or container_id in (".", ".."):
        raise ConfigError(JPATH, f"invalid container id {container_id!r}")
    layout = layout or detect()
    if systemd:
        return _new_systemd_manager(cgroups_path, container_id, rootless, layout)
    inner = _clean(cgroups_path) if cgroups_path else container_id
    if inner in ("", "/"):
        raise ConfigError(JPATH, "must not be the root cgroup")
    own = layout.own_cgroups() if not inner.startswith("/") else {}
    if layout.mode == "v2" and own.get("", "/") != "/":
        # as runc: the parent of our own cgroup. Ours has processes (us), and v2's
        # no-internal-processes rule then refuses controllers (and joins) below it.
        own[""] = os.path.dirname(own[""].rstrip("/")) or "/"

    def resolve(key: str, mountpoint: str, mroot: str) -> str:
        if inner.startswith("/"):
            return mountpoint + inner
        return mountpoint + _under(own.get(key, "/"), mroot, inner)

    if layout.mode == "v2":
        from ocirun.cgroups.fs_v2 import FsV2Manager
        return FsV2Manager(inner, layout.unified,
                           resolve("", layout.unified, layout.unified_root), rootless)
    paths, mounts = {}, {}
    for h in layout.hierarchies:
        paths[h.key] = resolve(h.key, h.mountpoint, h.root)
        mounts[h.key] = h.mountpoint
    if layout.unified:
        paths[""] = resolve("", layout.unified, layout.unified_root)
        mounts[""] = layout.unified
    from ocirun.cgroups.fs_v1 import FsV1Manager
    return FsV1Manager(inner, paths, mounts, rootless)


def _new_systemd_manager(cgroups_path: str | None, container_id: str, rootless: bool,
                         layout: "Layout"):
    from ocirun.cgroups import systemd as sd
    slice_, prefix, name = sd.parse_path(cgroups_path, container_id, rootless)
    return sd.SystemdManager(slice_, prefix, name, layout, rootless)


def manager_from_state(d: dict):
    """Rebuild the manager saved by to_state() (no fs access)."""
    if d.get("driver") == "systemd":
        from ocirun.cgroups.systemd import SystemdManager
        mgr = SystemdManager.from_state(d)
    elif d.get("version") == "v2":
        from ocirun.cgroups.fs_v2 import FsV2Manager
        mgr = FsV2Manager(d["path"], d["mountpoint"], d["dir"], d.get("rootless", False))
        mgr.undelegated = d.get("undelegated", False) is True
    else:
        from ocirun.cgroups.fs_v1 import FsV1Manager
        mgr = FsV1Manager(d["path"], d["paths"], d["mounts"], d.get("rootless", False))
        mgr.skipped = set(d.get("skipped") or ())
    mgr.shared = d.get("shared", False)
    return mgr


def default_device_rules() -> list[dict]:
    """runc's always-allowed devices, as linux.resources.devices entries.

    The runtime appends them after the spec's rules when it creates the
    container (a deny-all spec still gets /dev/null, /dev/tty, ptys ...).
    """
    from ocirun.cgroups.devices import default_rules
    return [{"allow": r.allow, "type": r.type,
             **({"major": r.major} if r.major is not None else {}),
             **({"minor": r.minor} if r.minor is not None else {}),
             "access": r.access} for r in default_rules()]


def prewarm_migration(layout: "Layout | None" = None) -> None:
    """Pay the kernel's cgroup-migration fence early, off the critical path.

    The first write to any cgroup.procs after a quiet spell waits for an RCU
    grace period (cgroup_threadgroup_rwsem goes into writer mode: 6-20 ms
    here); writes soon after it are fast. Where the runtime still has to
    write a pid (pure v2, systemd; v1 and hybrid use manager.SelfJoin), a
    short-lived child calls this at the start of create/exec, in parallel
    with the config parsing and the init's setup: it "moves" itself into the
    cgroup it is already in (a no-op migration that takes the same lock), so
    the real join later is quick.
    """
    layout = layout or detect()
    own = layout.own_cgroups()
    if layout.unified and "" in own:
        mnt, path = layout.unified, own[""]
        root = layout.unified_root
    elif layout.hierarchies:
        h = layout.hierarchies[0]
        mnt, root = h.mountpoint, h.root
        path = own.get(h.key, "/")
    else:
        return
    rel = path[len(root):] if root != "/" and path.startswith(root) else path
    try:
        fd = os.open(os.path.join(mnt, rel.lstrip("/"), "cgroup.procs"),
                     os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # not ours to write (rootless, read-only): only a lost optimisation
