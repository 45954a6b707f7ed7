"""Reading and writing cgroup control files, with errors that name the spec field.

A failed write is reported as a ConfigError on the linux.resources field that
asked for it, so the user sees which setting the kernel refused.
"""
from ocirun import oslite as os
import time

from ocirun.errors import ConfigError

# While True, write() only checks that the file can be opened for writing:
# Manager.check() runs apply() this way so an update validates every field
# before it changes any (see Manager.update).
DRY_RUN = False


def write(dirpath: str, name: str, value: str | int, jpath: str) -> None:
    """Write one value to dirpath/name (a single write(2), as the kernel wants)."""
    write_each(dirpath, [(name, value, jpath)])


def write_each(dirpath: str, writes: list[tuple[str, str | int, str]]) -> None:
    """write() of each (name, value, jpath) in order, each file opened once
    (v1 devices: a dozen rules, one write each, on devices.allow)."""
    fds: dict[str, int] = {}
    try:
        for name, value, jpath in writes:
            fd = fds.get(name)
            if fd is None:
                fd = fds[name] = _open_for_write(dirpath, name, jpath)
            if DRY_RUN:
                continue
            data = str(value).encode()
            try:
                os.write(fd, data)
            except OSError as e:
                raise ConfigError(jpath, f"writing {data.decode()!r} to "
                                  f"{os.path.join(dirpath, name)}: {os.strerror(e.errno)}") from None
    finally:
        for fd in fds.values():
            os.close(fd)


def _open_for_write(dirpath: str, name: str, jpath: str) -> int:
    try:
        return os.open(os.path.join(dirpath, name), os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _missing_file(dirpath, name, jpath) from None


def _missing_file(dirpath: str, name: str, jpath: str) -> ConfigError:
    if not os.path.isdir(dirpath):
        return ConfigError(jpath, f"cgroup {dirpath} does not exist")
    return ConfigError(jpath, f"not supported: {name} does not exist in {dirpath} "
                       "(controller missing, not enabled, or kernel too old)")


def read(dirpath: str, name: str) -> str:
    return os.read_bytes(os.path.join(dirpath, name)).decode()


def read_int(dirpath: str, name: str, default: int = 0) -> int:
    """An integer file; 'max' reads as 2**64-1 (what runc's stats report for unlimited)."""
    try:
        s = read(dirpath, name).strip()
    except OSError:
        return default
    if s == "max":
        return 0xFFFFFFFFFFFFFFFF
    try:
        return int(s)
    except ValueError:
        return default


def read_kv(dirpath: str, name: str) -> dict[str, int]:
    """Flat keyed files such as memory.stat / cpu.stat / memory.events."""
    out: dict[str, int] = {}
    try:
        text = read(dirpath, name)
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def mkdir_p(path: str) -> list[str]:
    """mkdir -p; returns the directories it created (outermost first).
    The mkdir comes first: a container's cgroup is new and its parent is
    there (no stat of each level on every create)."""
    try:
        os.mkdir(path, 0o755)
        return [path]
    except FileExistsError:
        return []
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
    made = mkdir_p(parent)
    try:
        os.mkdir(path, 0o755)
        made.append(path)
    except FileExistsError:
        pass
    return made


def procs(dirpath: str, recursive: bool = True) -> list[int]:
    """Pids listed in cgroup.procs of dirpath (and every descendant)."""
    out: list[int] = []
    for d, subdirs, _ in (os.walk(dirpath) if recursive else [(dirpath, [], [])]):
        try:
            out.extend(int(x) for x in os.read_bytes(os.path.join(d, "cgroup.procs")).split())
        except OSError:
            pass
    return sorted(set(out))


def rmdir_tree(path: str, timeout: float = 10.0) -> None:
    """Remove a cgroup directory and its sub-cgroups, deepest first.

    rmdir of a cgroup fails with EBUSY while a dying process is still
    charged to it; retry, for up to 10 s (a killed process with much memory
    on a slow or emulated machine takes seconds). A missing directory is
    fine (idempotent).
    """
    try:
        os.rmdir(path)  # the usual case: no sub-cgroups, nothing charged
        return
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        import errno
        if e.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.EAGAIN):
            raise
    dirs = [d for d, _, _ in os.walk(path)]
    deadline = time.monotonic() + timeout
    delay = 0.005
    for d in reversed(dirs):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.EAGAIN) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
