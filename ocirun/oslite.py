"""The part of `os` the runtime's hot paths use, without importing `os`.

`import os` costs ~1.4 ms of a ~9 ms interpreter start (it builds
`_collections_abc`, `stat`, `posixpath` and the `os.environ` mapping) and
~150 KiB of memory. Every ocirun command pays it, so the modules on the
create/start/run/exec/kill/delete/state paths import this instead:

    from ocirun import oslite as os

It is the builtin `posix` module plus the few helpers those modules need
(`path`, `makedirs`, `walk`, `fsencode`, `getenv`), with the semantics of
their `os`/`posixpath` namesakes, and `decimal` (int() of a decimal string,
without what int() sets up on first use: see there). Modules off the hot paths keep `import os`;
both see the same process, so mixing them is safe.
"""
import sys

import posix


def __getattr__(name: str):
    """Everything else is posix's, looked up on first use and then kept
    here (copying all ~300 names at import would cost ~0.2 ms)."""
    if name != "environ":  # (bytes keys: use getenv() or environ_copy())
        try:
            value = getattr(posix, name)
        except AttributeError:
            pass
        else:
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


error = OSError
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
sep = "/"


def fsencode(name) -> bytes:
    """str -> bytes as os.fsencode does on Linux (utf-8, surrogateescape)."""
    if isinstance(name, bytes):
        return name
    return name.encode("utf-8", "surrogateescape")


def getenv(key: str, default=None):
    """os.environ.get(key): through `os` when a program has loaded it (so
    that its changes are seen), else from the process's environment."""
    real = sys.modules.get("os")
    if real is not None and real is not sys.modules.get(__name__):
        return real.environ.get(key, default)
    v = posix.environ.get(key.encode("utf-8", "surrogateescape"))
    return default if v is None else v.decode("utf-8", "surrogateescape")


def environ_copy() -> dict:
    """A snapshot of the environment as a str dict (like dict(os.environ))."""
    real = sys.modules.get("os")
    if real is not None:
        return dict(real.environ)
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
            for k, v in posix.environ.items()}


def decimal(s: str | bytes) -> int:
    """int(s) of a decimal integer (ASCII digits, an optional minus sign),
    without int() of a string: the first one in a process makes CPython
    set up its base table with libm's log(), which maps ~190 KiB of libm
    and of the interpreter (part of every container start's peak RSS)."""
    b = s.encode() if isinstance(s, str) else s
    digits = b[1:] if b[:1] == b"-" else b
    if not digits.isdigit():
        raise ValueError(f"invalid literal for int() with base 10: {s!r}")
    n = 0
    for c in digits:
        n = n * 10 + c - 48
    return -n if digits is not b else n


def read_bytes(path: str) -> bytes:
    """The whole file: open, read to EOF, close; none of open()'s io
    objects and their fstat/ioctl/lseek calls (state and /proc files on
    every command)."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = posix.read(fd, 16384)  # (64 KiB moved the heap's top: 2 brk calls)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        posix.close(fd)


def makedirs(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """os.makedirs: create name and any missing parents."""
    head, tail = path.split(name)
    if not tail:
        head, tail = path.split(head)
    if head and tail and not path.exists(head):
        try:
            makedirs(head, mode, exist_ok=True)
        except FileExistsError:
            pass
    try:
        posix.mkdir(name, mode)
    except OSError:
        if not exist_ok or not path.isdir(name):
            raise


def walk(top: str):
    """os.walk(top), top-down, errors ignored, symlinks not followed."""
    try:
        entries = list(posix.scandir(top))
    except OSError:
        return
    dirs, files = [], []
    for e in entries:
        try:
            (dirs if e.is_dir(follow_symlinks=False) else files).append(e.name)
        except OSError:
            files.append(e.name)
    yield top, dirs, files
    for d in dirs:
        yield from walk(path.join(top, d))


def _mode(p, follow: bool = True):
    try:
        return posix.stat(p, follow_symlinks=follow).st_mode
    except (OSError, ValueError):
        return None


class path:
    """posixpath's functions that the hot paths use (str paths only)."""

    @staticmethod
    def join(a: str, *parts: str) -> str:
        out = a
        for b in parts:
            if b.startswith("/"):
                out = b
            elif not out or out.endswith("/"):
                out += b
            else:
                out += "/" + b
        return out

    @staticmethod
    def split(p: str) -> tuple[str, str]:
        i = p.rfind("/") + 1
        head, tail = p[:i], p[i:]
        if head and head != "/" * len(head):
            head = head.rstrip("/")
        return head, tail

    @staticmethod
    def dirname(p: str) -> str:
        return path.split(p)[0]

    @staticmethod
    def basename(p: str) -> str:
        return p[p.rfind("/") + 1:]

    @staticmethod
    def isabs(p: str) -> bool:
        return p.startswith("/")

    @staticmethod
    def normpath(p: str) -> str:
        if not p:
            return "."
        initial = 1 if p.startswith("/") else 0
        if initial and p.startswith("//") and not p.startswith("///"):
            initial = 2
        out: list[str] = []
        for c in p.split("/"):
            if c in ("", "."):
                continue
            if c != ".." or (not initial and not out) or (out and out[-1] == ".."):
                out.append(c)
            elif out:
                out.pop()
        s = "/".join(out)
        if initial:
            s = "/" * initial + s
        return s or "."

    @staticmethod
    def abspath(p: str) -> str:
        if not p.startswith("/"):
            p = path.join(posix.getcwd(), p)
        return path.normpath(p)

    @staticmethod
    def exists(p) -> bool:
        return _mode(p) is not None

    @staticmethod
    def lexists(p) -> bool:
        return _mode(p, follow=False) is not None

    @staticmethod
    def isdir(p) -> bool:
        m = _mode(p)
        return m is not None and (m & 0o170000) == 0o040000

    @staticmethod
    def isfile(p) -> bool:
        m = _mode(p)
        return m is not None and (m & 0o170000) == 0o100000

    @staticmethod
    def islink(p) -> bool:
        m = _mode(p, follow=False)
        return m is not None and (m & 0o170000) == 0o120000

    @staticmethod
    def realpath(p: str) -> str:
        """posixpath.realpath (non-strict): symlinks resolved component by
        component; missing components are kept as they are."""
        resolved = ""  # "" is "/"
        if not p.startswith("/"):  # (not normalised: ".." is taken after the links)
            p = posix.getcwd() + "/" + p
        todo = p.split("/")[::-1]
        hops = 0
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                resolved = resolved.rpartition("/")[0]
                continue
            new = resolved + "/" + name
            try:
                link = (posix.lstat(new).st_mode & 0o170000) == 0o120000
            except OSError:
                link = False
            if not link or hops >= 40:  # 40: the kernel's own limit (ELOOP)
                resolved = new
                continue
            hops += 1
            target = posix.readlink(new)
            if target.startswith("/"):
                resolved = ""
            todo.extend(target.split("/")[::-1])
        return resolved or "/"

    @staticmethod
    def relpath(p: str, start: str = ".") -> str:
        a = [x for x in path.abspath(p).split("/") if x]
        b = [x for x in path.abspath(start).split("/") if x]
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        rel = [".."] * (len(b) - n) + a[n:]
        return "/".join(rel) or "."
