"""The container process: rlimits, user and groups, environment, the
executable lookup and the final execve."""
from __future__ import annotations

from ocirun import oslite as os
import _stat as stat  # the C module: `stat` adds only a .py wrapper

from ocirun.errors import OciError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def set_rlimits(rlimits: list[dict]) -> None:
    if not rlimits:
        return
    from ocirun.kernel import syscalls as k
    for r in rlimits:
        num = k.RLIMITS.get(r["type"])
        if num is None:
            raise OciError(f"rlimit {r['type']} is not known to this kernel")
        soft, hard = min(r["soft"], k.RLIM_INFINITY), min(r["hard"], k.RLIM_INFINITY)
        try:
            k.setrlimit(num, soft, hard)
        except OSError as e:
            raise OciError(f"cannot set {r['type']} to {r['soft']}/{r['hard']}: "
                           f"{os.strerror(e.errno)}") from None


def set_oom_score_adj(value: int | None, pid: int | str = "self") -> None:
    """pid: a process of ours other than this one. Inside a user namespace
    the process's own /proc files are not its root's to write (and only the
    host's root may lower the value), so there the runtime writes it for
    the init from outside, and exec's child before it enters the namespace
    (as runc does it before its init enters one)."""
    if value is not None:
        _write_oom_score_adj(value, pid)


def _write_oom_score_adj(value: int, pid: int | str = "self") -> None:
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise OciError(f"cannot set oomScoreAdj {value}: {e.strerror}") from None


def switch_user(uid: int, gid: int, additional: list[int], in_userns_no_setgroups: bool) -> None:
    """setgroups, then gid, then uid (the order that keeps the right to change)."""
    try:
        if not in_userns_no_setgroups:
            try:
                os.setgroups(additional)
            except PermissionError:
                # a joined user namespace whose setgroups is "deny" (as
                # `unshare --map-root-user` makes it): fine with no extra groups
                if additional or not _setgroups_denied():
                    raise
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise OciError(f"cannot change to uid {uid} gid {gid}: {e.strerror}"
                       " (is the id mapped in the user namespace?)") from None


def fix_stdio_owner(uid: int, gid: int) -> None:
    """Give the process's stdio to its user and group (as crun does), so a
    non-root process can reopen /dev/stdout when it is a pipe or a file. A
    terminal keeps its group (devpts' gid=5, tty), as runc and login do.
    /dev/null is left alone; an owner not mapped in a user namespace
    (EINVAL, EPERM) or a read-only file system is skipped, as runc does."""
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        want_gid = gid
        if stat.S_ISCHR(st.st_mode):
            if st.st_rdev == os.makedev(1, 3):
                continue
            want_gid = st.st_gid
        if (st.st_uid, st.st_gid) != (uid, want_gid):
            _chown_stdio(fd, uid, want_gid)


def _chown_stdio(fd: int, uid: int, gid: int) -> None:
    """fix_stdio_owner for one fd that is not its user's yet."""
    try:
        os.fchown(fd, uid, gid)
    except OSError as e:
        if e.errno not in (1, 22, 30):  # EPERM, EINVAL (unmapped owner), EROFS
            raise OciError(f"cannot give fd {fd} to uid {uid}: {e.strerror}") from None


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


_PASSWD_MAX = 4 << 20


def home_of(uid: int) -> str:
    """HOME for uid from the container's /etc/passwd (runc sets it if unset)."""
    try:
        fd = os.open("/etc/passwd", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return "/"
    try:  # (a regular file, and a sane size: the image is not trusted)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _PASSWD_MAX:
            return "/"
        text = os.read(fd, st.st_size)
    except OSError:
        return "/"
    finally:
        os.close(fd)
    want = str(uid)
    for line in text.decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[2] == want:
            return parts[5] or "/"
    return "/"


def build_env(env: list[str], uid: int) -> list[str]:
    out = list(env)
    if not any(e.startswith("HOME=") for e in env):
        out.append("HOME=" + home_of(uid))
    return out


def find_executable(name: str, env: list[str]) -> str:
    """Resolve args[0] like execvp, inside the container's root (runc's wording)."""
    if "/" in name:
        _check_exec(name, name)
        return name
    return _search_path(name, env)


def _search_path(name: str, env: list[str]) -> str:
    """A name without a slash: the first executable file of that name in
    the environment's PATH (DEFAULT_PATH without one)."""
    path = DEFAULT_PATH
    for e in env:
        if e.startswith("PATH="):
            path = e[5:]
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        try:
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
        except OSError:
            continue
    raise OciError(f'exec: "{name}": executable file not found in $PATH')


def _check_exec(path: str, name: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise OciError(f'exec: "{name}": stat {path}: no such file or directory') from None
    except OSError as e:
        raise OciError(f'exec: "{name}": {e.strerror}') from None
    if stat.S_ISDIR(st.st_mode):
        raise OciError(f'exec: "{name}": is a directory')
    if not os.access(path, os.X_OK):
        raise OciError(f'exec: "{name}": permission denied')
