"""/proc/self/mountinfo (proc(5)): its field escapes, and the mounts below
a path. Shared by the cgroup layout detection and the mounts code."""
from __future__ import annotations


def unescape(s: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space, \\134 for a backslash...)."""
    return _unescape_octal(s) if "\\" in s else s


def _unescape_octal(s: str) -> str:
    """unescape() of a field that has escapes (rare: a mount point with a
    blank or a backslash in it)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit() and len(s[i + 1:i + 4]) == 3:
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def holding_mount(path: str, info: str = "/proc/self/mountinfo") -> tuple[str, bool]:
    """The mount point of the mount path lies in (the longest mount point at
    or above it; of mounts stacked on one point, the last listed, the top
    one), and whether that mount is shared. path: absolute, resolved."""
    best, shared = "/", False
    with open(info, "rb") as f:
        for line in f:
            fields = line.partition(b" - ")[0].split(b" ")
            point = unescape(fields[4].decode(errors="surrogateescape"))
            if (path == point or path.startswith(point.rstrip("/") + "/")) \
                    and len(point) >= len(best):
                best, shared = point, any(o.startswith(b"shared:") for o in fields[6:])
    return best, shared


def ids_under(root: str, path: str = "/proc/self/mountinfo") -> dict[int, str]:
    """Mount id -> mount point, for the mounts at or below root."""
    prefix = root.rstrip("/") + "/"
    out = {}
    with open(path, "rb") as f:
        for line in f:
            fields = line.split(b" ", 5)
            point = unescape(fields[4].decode(errors="surrogateescape"))
            if point == root or point.startswith(prefix):
                out[int(fields[0])] = point
    return out


def whole_proc_sys_outside(root: str, path: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, its parent's mount point) of the whole proc and sysfs
    mounts (their root is "/") that are not at or below root: what lets a
    --no-pivot container mount a new proc (the kernel allows it while a full
    one is visible in the namespace)."""
    prefix = root.rstrip("/") + "/"
    points, found = {}, []
    with open(path, "rb") as f:
        for line in f:
            pre, _, post = line.partition(b" - ")
            fields = pre.split(b" ", 5)
            point = unescape(fields[4].decode(errors="surrogateescape"))
            points[fields[0]] = point
            if fields[3] != b"/" or post.split(b" ", 1)[0] not in (b"proc", b"sysfs"):
                continue
            if point != root and not point.startswith(prefix):
                found.append((point, fields[1]))
    return [(point, points.get(parent, "/")) for point, parent in found]
