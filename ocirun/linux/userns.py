"""User namespace id maps: checking them, writing them from outside (as
root, or through newuidmap/newgidmap), and user namespaces made only to
carry the maps of an idmapped mount. Loaded only by configs that use them
(the runtime imports it before the fork when the init will: see
forkinit._spawn)."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import ConfigError, OciError
from ocirun.linux.namespaces import write_proc_file as _write


MAX_MAP_LINES = 340  # the kernel's limit per uid_map/gid_map


def check_id_maps(maps: list[dict], where: str, kind: str = "uid") -> None:
    """Before anything exists: sizes, overlaps (the kernel would refuse
    them with a bare EINVAL), and for a non-root caller the ranges
    /etc/subuid (/etc/subgid) grants it, which newuidmap would refuse."""
    if len(maps) > MAX_MAP_LINES:
        raise ConfigError(where, f"at most {MAX_MAP_LINES} ranges, got {len(maps)}")
    for i, m in enumerate(maps):
        if m["size"] <= 0:
            raise ConfigError(f"{where}[{i}].size", "must be at least 1")
        for key in ("containerID", "hostID"):
            if m[key] + m["size"] > 1 << 32:
                raise ConfigError(f"{where}[{i}]", f"{key} range ends past 2^32")
    for key in ("containerID", "hostID"):
        spans = sorted((m[key], m[key] + m["size"], i) for i, m in enumerate(maps))
        for (s1, e1, i1), (s2, e2, i2) in zip(spans, spans[1:]):
            if s2 < e1:
                raise ConfigError(f"{where}[{max(i1, i2)}]",
                                  f"{key} range overlaps {where}[{min(i1, i2)}]")
    if os.geteuid() == 0 or not maps:
        return
    me = os.geteuid() if kind == "uid" else os.getegid()
    allowed = [(me, me + 1)] + subordinate_ranges(kind)
    for i, m in enumerate(maps):
        lo, hi = m["hostID"], m["hostID"] + m["size"]
        if not any(a <= lo and hi <= b for a, b in allowed):
            granted = ", ".join(f"{a}-{b - 1}" for a, b in allowed)
            raise ConfigError(f"{where}[{i}]",
                              f"host {kind}s {lo}-{hi - 1} are not yours to map "
                              f"(allowed: {granted}; see /etc/sub{kind})")


def subordinate_ranges(kind: str = "uid") -> list[tuple[int, int]]:
    """[start, end) ranges /etc/subuid (or /etc/subgid) grants the caller."""
    import pwd
    uid = os.geteuid()
    names = {str(uid)}
    try:
        names.add(pwd.getpwuid(uid).pw_name)
    except KeyError:
        pass
    out = []
    try:
        with open(f"/etc/sub{kind}") as f:
            for ln in f:
                parts = ln.strip().split(":")
                if len(parts) == 3 and parts[0] in names:
                    try:
                        start, count = int(parts[1]), int(parts[2])
                    except ValueError:
                        continue
                    out.append((start, start + count))
    except OSError:
        pass
    return out


def default_id_map(kind: str, container_id: int) -> list[dict]:
    """The map of a new user namespace whose config has none (crun's
    default; runc refuses such a config). The process's id (process.user)
    is the runtime's own; with a range in /etc/subuid (/etc/subgid) (and,
    not as root, newuidmap/newgidmap to write it), the ids below it and
    the rest of the range come from there, else a runtime that is root
    maps only 0 to itself."""
    own = os.geteuid() if kind == "uid" else os.getegid()
    ranges = subordinate_ranges(kind)
    if ranges and os.geteuid() != 0 and not _on_path(f"new{kind}map"):
        ranges = []  # (as crun: the single mapping a user may write itself)
    if not ranges:
        if own == 0:
            container_id = 0
        return [{"containerID": container_id, "hostID": own, "size": 1}]
    start, end = ranges[0]
    out = []
    below = min(container_id, end - start)
    if below:
        out.append({"containerID": 0, "hostID": start, "size": below})
        start += below
    out.append({"containerID": container_id, "hostID": own, "size": 1})
    if end > start:
        out.append({"containerID": container_id + 1, "hostID": start, "size": end - start})
    return out


def _on_path(name: str) -> bool:
    """Will the helper run (subprocess looks it up in our PATH)?"""
    from ocirun.linux.process import find_executable
    try:
        find_executable(name, [f"PATH={os.getenv('PATH', '/usr/bin:/bin')}"])
    except OciError:
        return False
    return True


def write_id_maps(pid: int, uid_maps: list[dict], gid_maps: list[dict],
                  where: str = "linux") -> None:
    """Write uid_map/gid_map of a child's new user namespace from outside.
    Needs root (or newuidmap/newgidmap for a non-root caller with several ranges)."""
    def fmt(maps):
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)

    check_id_maps(uid_maps, f"{where}.uidMappings", "uid")
    check_id_maps(gid_maps, f"{where}.gidMappings", "gid")
    if os.geteuid() != 0:
        if _is_self_only(uid_maps, os.geteuid()) and _is_self_only(gid_maps, os.getegid()):
            _write(f"/proc/{pid}/setgroups", "deny")
        else:
            _run_helper("newuidmap", pid, uid_maps, f"{where}.uidMappings")
            _run_helper("newgidmap", pid, gid_maps, f"{where}.gidMappings")
            return
    if uid_maps:
        _write(f"/proc/{pid}/uid_map", fmt(uid_maps))
    if gid_maps:
        _write(f"/proc/{pid}/gid_map", fmt(gid_maps))


def _is_self_only(maps: list[dict], me: int) -> bool:
    return len(maps) <= 1 and all(m["hostID"] == me and m["size"] == 1 for m in maps)


def _run_helper(helper: str, pid: int, maps: list[dict], where: str) -> None:
    import subprocess
    args = [helper, str(pid)]
    for m in maps:
        args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    try:
        r = subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError:
        raise OciError(f"{where}: {helper} not found: needed to map several id ranges "
                       "as non-root (package uidmap)") from None
    if r.returncode:
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
        raise OciError(f"{where}: {msg if msg.startswith(helper) else helper + ': ' + msg}")


def idmap_userns(step, plan) -> int:
    """The user namespace fd of an idmapped mount: its own mappings, else the
    container's (for MOUNT_ATTR_IDMAP)."""
    uid_maps = step.uid_mappings or plan.uid_maps
    gid_maps = step.gid_mappings or plan.gid_maps
    if not uid_maps or not gid_maps:
        raise OciError(f"{step.path}: an idmapped mount needs uidMappings and gidMappings "
                       "(on the mount or in linux)")
    return userns_fd_with_maps(uid_maps, gid_maps)


def userns_fd_with_maps(uid_maps: list[dict], gid_maps: list[dict],
                        where: str = "idmapped mount") -> int:
    """An fd of a new user namespace with these mappings (for idmapped mounts):
    a short-lived child unshares it, we write its maps and keep the fd."""
    from ocirun.kernel import syscalls as k
    r, w = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.close(w2)
            # our pid as the mounted /proc sees it: in the container's init
            # before pivot_root that is the host's proc, not our pid namespace
            me = os.readlink("/proc/self").encode()
            k.unshare(k.CLONE_NEWUSER)
            os.write(w, me)
            os.read(r2, 1)  # wait until the parent has opened our namespace
        finally:
            os._exit(0)
    os.close(w)
    os.close(r2)
    try:
        got = os.read(r, 32)
        if not got.isdigit():
            raise OciError("cannot create a user namespace for an idmapped mount")
        write_id_maps(int(got), uid_maps, gid_maps, where)
        return os.open(f"/proc/{int(got)}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r)
        os.close(w2)
        os.waitpid(pid, 0)
