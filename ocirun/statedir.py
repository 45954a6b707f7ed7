"""The state directory <root>/<id>/ and the container's true status.

Layout of a container's directory:
  state.json   written when the directory appears (status "creating", see
               make()) and again, atomically, when `create` has succeeded
  exec.fifo    exists while the container is `created`; `start` removes it
  .ocirun      an empty marker, for a directory made without a state (a
               container's dir is never empty: see make())
  (the dir itself is flock()ed by every command that changes the container)

Status is derived from the live process, never trusted from a file: the
init pid plus its start time (field 22 of /proc/<pid>/stat) identify the
process across pid reuse; a directory without state.json is `creating`
while its creator still holds the lock, else the leftover of a dead runtime.
"""
import fcntl
from ocirun import oslite as os

from ocirun import jsonutil
from ocirun.errors import ContainerNotFound, OciError

DEFAULT_ROOT = "/run/ocirun"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
MARKER = ".ocirun"  # keeps a container's dir non-empty from its first moment
NEW_SUFFIX = ".new"
DEL_SUFFIX = ".del"  # same length as NEW_SUFFIX
MAX_ID = 1024


def default_root() -> str:
    """$XDG_RUNTIME_DIR/ocirun for a rootless caller, /run/ocirun for root,
    by runc's rule: a non-root euid, or uid 0 inside a user namespace
    (rootless podman runs its runtime there) unless $USER is root."""
    xdg = os.getenv("XDG_RUNTIME_DIR")
    if xdg and (os.geteuid() != 0 or (os.getenv("USER") != "root" and _in_user_namespace())):
        return os.path.join(xdg, "ocirun")
    return DEFAULT_ROOT


def _in_user_namespace() -> bool:
    from ocirun.linux.namespaces import in_user_namespace
    return in_user_namespace()


def check_id(cid: str) -> None:
    """Container ids are used as path components: refuse anything that could
    traverse or confuse (same character set as runc)."""
    if not cid:
        raise OciError("invalid container id: it is empty")
    if len(cid) > MAX_ID:
        raise OciError(f"invalid container id: longer than {MAX_ID} characters")
    if cid in (".", "..") or not all(ch.isascii() and (ch.isalnum() or ch in "_+-.")
                                      for ch in cid):
        raise OciError(f"invalid container id {cid!r}: use letters, digits and _ + - .")


def proc_start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        data = os.read_bytes(f"/proc/{pid}/stat")
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return os.decimal(fields[19])


def proc_mnt_ns(pid: int) -> int | None:
    """Inode of pid's mount namespace (None if it cannot be read)."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def is_init(pid: int, data: dict) -> bool:
    """Is pid still the process this state was saved for?

    Its start time (in 10 ms clock ticks) must match, and, when recorded,
    its mount namespace: a pid reused within the same tick by a process
    outside the container is not taken for the init. A namespace that
    cannot be read (a rootless runtime and its non-dumpable init) proves
    nothing either way. A pid that is gone or a zombie is never the init,
    even when create could not record a start time (a `run` whose process
    had exited before create saved the state: both would be None)."""
    if pid <= 0:
        return False
    start = proc_start_time(pid)
    if start is None or start != data.get("start_time"):
        return False
    ns = data.get("mnt_ns")
    if ns is None:
        return True
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino == ns
    except PermissionError:
        return True
    except OSError:
        return False


def write_pid_file(path: str, pid: int) -> None:
    """The pid file appears whole, and a runtime killed half way leaves no
    temporary file in the caller's directory: the data goes to an unnamed
    O_TMPFILE inode that is linked in only when complete."""
    data = str(pid).encode()
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC,
                     0o644)
    except OSError:  # no O_TMPFILE on this filesystem
        write_atomic(path, data)
        return
    try:
        os.write(fd, data)
        from ocirun.kernel.syscalls import link_fd
        try:
            link_fd(fd, path)
        except FileExistsError:
            write_atomic(path, data)  # replacing an old pid file needs a rename
        except OSError:  # e.g. no CAP_DAC_READ_SEARCH (rootless)
            write_atomic(path, data)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Readers see the old file or the whole new one, never a part."""
    tmp = f"{path}.{os.getpid()}.tmp"
    _write_new(tmp, data, mode)
    os.rename(tmp, path)


def _write_new(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class StateDir:
    """One container's directory under the runtime root."""

    __slots__ = ("root", "id", "path", "_lockfd", "_data")

    def __init__(self, root: str, cid: str) -> None:
        check_id(cid)
        self.root = root
        self.id = cid
        self.path = os.path.join(root, cid)
        self._lockfd = -1
        self._data: dict | None = None

    # -- lifetime -----------------------------------------------------------
    def make(self, state: dict | None = None) -> None:
        """Create the directory, already locked when it appears: it is made
        under a hidden name, locked, given its first state.json (or, without
        one, a marker file) and renamed into place. rename() onto an existing
        directory fails unless that one is empty, and a container's
        directory never is, so the rename is the atomic 'id is free' test.
        (A plain mkdir + flock left a moment in which a parallel
        `state`/`delete` saw an unlocked, empty dir: a live create reported
        as "stopped", and deletable.)"""
        from ocirun.errors import ContainerExists
        if not os.path.isdir(self.root):
            _make_root(self.root)
        if os.path.lexists(self.path):
            raise ContainerExists(self.id)
        tmp = os.path.join(self.root, f".{self.id}.{os.getpid()}{NEW_SUFFIX}")
        try:
            _mkdir_fresh(tmp)
            self._lockfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(self._lockfd, fcntl.LOCK_EX)
            if state is not None:  # (whole, even here: a reader may look)
                write_atomic(os.path.join(tmp, STATE_FILE), jsonutil.dumps(state).encode())
                self._data = state
            else:
                _make_marker(tmp)
            os.rename(tmp, self.path)
        except OSError as e:
            raise self._make_failed(tmp, e) from None

    def _make_failed(self, tmp: str, e: OSError) -> OciError:
        """Undo a make() that failed; the error to raise."""
        import errno
        from ocirun.errors import ContainerExists
        try:
            remove_tree(tmp)
        except OSError:
            pass
        self.unlock()
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            return ContainerExists(self.id)
        return OciError(f"cannot create state dir {self.path}: {e.strerror}")

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def lock(self, blocking: bool = True) -> bool:
        if self._lockfd < 0:
            try:
                self._lockfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ContainerNotFound(self.id) from None
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def unlock(self) -> None:
        if self._lockfd >= 0:
            os.close(self._lockfd)
            self._lockfd = -1

    def remove(self) -> None:
        """Renamed out of sight first: readers see the whole dir or none
        (never a locked dir without state.json, which reads as "creating").
        The files ocirun makes go by name; a listing only if more is there."""
        gone = os.path.join(self.root, f".{self.id}.{os.getpid()}{DEL_SUFFIX}")
        try:
            os.rename(self.path, gone)
        except OSError:  # (a leftover of a killed delete that had our pid)
            try:
                remove_tree(gone)
                os.rename(self.path, gone)
            except OSError:
                gone = self.path
        for name in (STATE_FILE, MARKER):
            try:
                os.unlink(os.path.join(gone, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(gone)
        except FileNotFoundError:
            pass
        except OSError:  # ENOTEMPTY: the fifo, a notify socket dir, ...
            remove_tree(gone)
        self.unlock()

    def sweep(self) -> None:
        """Remove what killed creates and deletes left under the root (see
        _sweep_new_dirs); `delete` does, a `run`'s own delete does not."""
        _sweep_new_dirs(self.root)

    # -- content ------------------------------------------------------------
    def save(self, data: dict, replacing: bool = False) -> None:
        """replacing: there is a state.json (create's second save). ext4
        writes a file out at once when a rename replaces another (its
        auto_da_alloc), and unlinking it a moment later, at delete, then
        waits for that I/O: ~0.15 ms of a `run`. Swapping the two with
        RENAME_EXCHANGE and unlinking the old one costs neither (the caller
        has loaded ocirun.kernel already)."""
        self._data = data
        path = os.path.join(self.path, STATE_FILE)
        if not replacing:
            write_atomic(path, jsonutil.dumps(data).encode())
            return
        from ocirun.kernel.syscalls import rename_exchange
        tmp = f"{path}.{os.getpid()}.tmp"
        _write_new(tmp, jsonutil.dumps(data).encode())
        try:
            rename_exchange(tmp, path)
        except OSError:  # (a filesystem without RENAME_EXCHANGE)
            os.rename(tmp, path)
            return
        os.unlink(tmp)

    def load(self) -> dict | None:
        """The saved state, or None while (or if) create has not finished."""
        if self._data is None:
            self._data = self._read_state()
        return self._data

    def _read_state(self) -> dict | None:
        """(Not in a `run`: it keeps the state create saved.)"""
        try:
            data = jsonutil.loads(os.read_bytes(os.path.join(self.path, STATE_FILE)))
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise ContainerNotFound(self.id) from None
            return None
        except ValueError:
            return None
        if not _well_formed(data):
            return None  # (not what ocirun writes: as a create that never finished)
        return data

    @property
    def fifo(self) -> str:
        return os.path.join(self.path, FIFO)

    def status(self, exact: bool = True) -> str:
        """exact=False: an existing exec fifo is taken for "created" without
        looking at the init's fds (start confirms it only if the init stays
        silent: see container._release_init)."""
        data = self.load()
        if data is None or data.get("status") == "creating":
            return self._unfinished_status()
        pid = data.get("pid", 0)
        if not is_init(pid, data):
            return "stopped"
        return self._live_status(data, pid, exact)

    def _unfinished_status(self) -> str:
        """No state of a created container: create still running (it holds
        the lock) or died half way."""
        if self._lockfd >= 0:
            return "stopped"
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return "stopped"
        except BlockingIOError:
            return "creating"
        finally:
            os.close(fd)

    def _live_status(self, data: dict, pid: int, exact: bool) -> str:
        if data.get("cgroup") and _frozen(data["cgroup"]):
            # (before the fifo test: runc can pause a created container)
            return "paused"
        if os.path.exists(self.fifo) and (not exact or init_waits(pid, self.path, self.fifo)):
            return "created"
        return "running"


def _frozen(cg: dict) -> bool:
    """Is the container's cgroup frozen? Read straight from the files the
    saved cgroup state names (state/start/kill run on every engine call and
    need not load the cgroup managers); other drivers ask their manager."""
    try:
        paths = cg.get("paths")
        if cg.get("driver") == "cgroupfs" and paths is not None:  # v1 / hybrid
            d = next((v for k, v in paths.items() if "freezer" in k.split(",")), None)
            if d is None:
                return False
            return os.read_bytes(os.path.join(d, "freezer.state")).strip() == b"FROZEN"
        if cg.get("driver") == "cgroupfs" and cg.get("dir"):  # v2
            return b"frozen 1" in os.read_bytes(os.path.join(cg["dir"], "cgroup.events"))
    except OSError:
        return False
    from ocirun.container import cgroup_manager
    mgr = cgroup_manager({"cgroup": cg})
    return mgr is not None and mgr.frozen()


def init_waits(pid: int, path: str, fifo: str) -> bool:
    """True while the init has not exec'd: until execve it holds an fd on
    the state dir (then on the exec fifo); both are O_CLOEXEC. The fifo alone
    is not enough: a `start` killed after the exec but before it removed the
    fifo would leave a running container that looks "created" forever (and
    a second start would wait on the fifo for ever)."""
    try:
        ids = {(st.st_dev, st.st_ino) for st in (os.stat(path), os.stat(fifo))}
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot look (not ours to inspect): trust the fifo, as runc
    for n in names:
        try:
            st = os.stat(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in ids:
            return True
    return False


# the fields the commands read, and their JSON types (None: may be null)
_STATE_FIELDS = (("id", str), ("pid", int), ("bundle", str), ("rootfs", str), ("created", str),
                 ("owner", str), ("status", str), ("mnt_ns", (int, type(None))),
                 ("start_time", (int, type(None))),
                 ("annotations", dict), ("hooks", dict), ("config", dict),
                 ("cgroup", (dict, type(None))), ("host_mounts", dict))


def _well_formed(data) -> bool:
    """A state.json ocirun could have written (a damaged or foreign one must
    not turn into a crash of every command that reads it)."""
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return False
    for key, typ in _STATE_FIELDS:
        v = data.get(key, ...)
        if v is not ... and (not isinstance(v, typ) or isinstance(v, bool)):
            return False
    return data["pid"] >= 0


def _make_root(root: str) -> None:
    try:
        os.makedirs(root, 0o711, exist_ok=True)
    except OSError as e:
        raise OciError(f"cannot create state root {root}: {e.strerror}") from None


def _mkdir_fresh(path: str) -> None:
    """mkdir; what is in the way is a killed create's of a process that had
    our pid: removed first."""
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        remove_tree(path)
        os.mkdir(path, 0o711)


def _make_marker(dirpath: str) -> None:
    os.close(os.open(os.path.join(dirpath, MARKER),
                     os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def remove_tree(path: str) -> None:
    """rm -rf without shutil (whose import costs ~3 ms): state dirs are shallow."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            remove_tree(e.path)
        else:
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _sweep_new_dirs(root: str) -> None:
    """Remove the hidden dirs (.<id>.<pid>.new / .del) that a create or a
    delete killed half way left: those whose process is gone."""
    try:
        names = [n for n in os.listdir(root) if n.startswith(".") and
                 (n.endswith(NEW_SUFFIX) or n.endswith(DEL_SUFFIX))]
    except OSError:
        return
    for n in names:
        _sweep_if_orphaned(root, n)


def _sweep_if_orphaned(root: str, name: str) -> None:
    pid = name[:-len(NEW_SUFFIX)].rpartition(".")[2]
    if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
        return  # its owner may be alive (a reused pid only delays the sweep)
    try:
        remove_tree(os.path.join(root, name))
    except OSError:
        pass


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isdir(os.path.join(root, n)) and not n.startswith("."))
