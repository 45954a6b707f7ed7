"""All of ocirun's bytecode in one file, for the launchers.

Importing a module the usual way costs the path finder's directory scans
and an open/fstat/read/close of its .pyc: ~25 µs of the ~9 ms interpreter
start per module, and `run` needs ~45 of them (~1 ms). The launchers call
use_bundle() first: ocirun's modules then come from one file,
`__pycache__/bundle.<tag>.opt-<N>.bin` beside the package, with one pread
each.

The file is only a cache: a module whose source changed since the bundle
was built (mtime or size) is imported the usual way, and the stale bundle
is removed so that the next start rebuilds it. A missing bundle is built
at start when its directory is writable (as root, like the .pyc files).
Programs that import ocirun as a library never use it.

Layout: 4-byte little-endian length N, marshal of
{module: (is_package, source path, mtime_ns, size, offset, length)},
then each module's marshalled code object at N + 4 + offset.
"""
import sys

import marshal
import posix

_VERSION = 1
_PKG_DIR = __file__.rpartition("/")[0]


def bundle_path(pkg_dir: str = _PKG_DIR, optimize: int | None = None) -> str:
    tag = sys.implementation.cache_tag
    level = sys.flags.optimize if optimize is None else optimize
    return f"{pkg_dir}/__pycache__/bundle.{tag}.opt-{level}.v{_VERSION}.bin"


def _sources(pkg_dir: str):
    """(module name, path) of every .py file in the package."""
    base = pkg_dir.rpartition("/")[2]
    todo = [(pkg_dir, base)]
    while todo:
        d, mod = todo.pop()
        for e in posix.scandir(d):
            if e.is_dir(follow_symlinks=False):
                if e.name != "__pycache__" and posix.access(f"{e.path}/__init__.py", posix.F_OK):
                    todo.append((e.path, f"{mod}.{e.name}"))
            elif e.name.endswith(".py"):
                stem = e.name[:-3]
                yield (mod if stem == "__init__" else f"{mod}.{stem}"), e.path, stem == "__init__"


_FUTURE_LINE = b"from __future__ import annotations\n"


def build(pkg_dir: str = _PKG_DIR, optimize: int | None = None) -> str:
    """Compile every module of the package (at this interpreter's -O level)
    into the bundle; written atomically. Returns its path.

    Compiled under -X no_debug_ranges (in a child interpreter if this one
    is not) and without line tables (see _without_line_table): what only
    serves tracebacks is ~25 % of the code, in the file and in the memory
    of every command."""
    if optimize is None:
        optimize = sys.flags.optimize
    if not sys._xoptions.get("no_debug_ranges"):
        return _build_in_child(pkg_dir, optimize)
    import __future__
    index, chunks, off = {}, [], 0
    for name, path, is_pkg in sorted(_sources(pkg_dir)):
        with open(path, "rb") as f:
            st = posix.fstat(f.fileno())
            src = f.read()
        # the same lazy annotations, without importing the __future__ module
        # (a .py file of the stdlib) at run time: the flag instead of the line
        flags = 0
        if _FUTURE_LINE in src:
            src = src.replace(_FUTURE_LINE, b"\n", 1)
            flags = __future__.annotations.compiler_flag
        code = marshal.dumps(_without_line_table(
            compile(src, path, "exec", flags=flags, dont_inherit=True, optimize=optimize)))
        index[name] = (is_pkg, path, st.st_mtime_ns, st.st_size, off, len(code))
        chunks.append(code)
        off += len(code)
    head = marshal.dumps(index)
    out = bundle_path(pkg_dir, optimize)
    try:
        posix.mkdir(out.rpartition("/")[0], 0o755)
    except FileExistsError:
        pass
    tmp = f"{out}.{posix.getpid()}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o644)
    try:
        data = len(head).to_bytes(4, "little") + head + b"".join(chunks)
        while data:
            data = data[posix.write(fd, data):]
    finally:
        posix.close(fd)
    posix.rename(tmp, out)
    return out


def _without_line_table(code):
    """The code with an empty line table (recursively): ~18 % less. A
    traceback then says "line -1"; the launchers print none (errors are
    one line, see cli.main), and library users import the .py files."""
    consts = tuple(_without_line_table(c) if isinstance(c, type(code)) else c
                   for c in code.co_consts)
    return code.replace(co_linetable=b"", co_consts=consts)


def _build_in_child(pkg_dir: str, optimize: int) -> str:
    exe = sys.executable
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from ocirun import bundle; "
            "bundle.build(sys.argv[2], int(sys.argv[3]))")
    pid = posix.posix_spawn(exe, [exe, "-I", "-S", "-X", "no_debug_ranges", "-c", code,
                                  pkg_dir.rpartition("/")[0], pkg_dir, str(optimize)], {})
    if posix.waitpid(pid, 0)[1] != 0:
        raise OSError(f"building {bundle_path(pkg_dir, optimize)} failed")
    return bundle_path(pkg_dir, optimize)


class _BundleFinder:
    """A meta path finder and loader for the modules in the bundle."""

    def __init__(self, fd: int, index: dict, base: int, path: str) -> None:
        self.fd, self.index, self.base, self.path = fd, index, base, path
        self.spec_type = sys.modules["_frozen_importlib"].ModuleSpec
        self.pid = posix.getpid()

    def find_spec(self, name: str, path=None, target=None):
        e = self.index.get(name)
        if e is None or posix.getpid() != self.pid:
            # (a forked init may be past pivot_root: paths are the container's)
            return None
        try:
            st = posix.stat(e[1])
            fresh = st.st_mtime_ns == e[2] and st.st_size == e[3]
        except OSError:
            fresh = False
        if not fresh:  # edited (or gone): the usual import; rebuilt next start
            try:
                posix.unlink(self.path)
            except OSError:
                pass
            return None
        spec = self.spec_type(name, self, origin=e[1], is_package=e[0])
        if e[0]:
            spec.submodule_search_locations = [e[1].rpartition("/")[0]]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        e = self.index[module.__spec__.name]
        code = marshal.loads(posix.pread(self.fd, e[5], self.base + e[4]))
        exec(code, module.__dict__)


def use_bundle(pkg_dir: str = _PKG_DIR) -> bool:
    """Import the package's modules from the bundle from now on (building it
    if it is missing and we may write it). False: the usual imports."""
    path = bundle_path(pkg_dir)
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except FileNotFoundError:
        try:
            build(pkg_dir)
            fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
        except (OSError, SyntaxError):
            return False
    except OSError:
        return False
    try:
        n = int.from_bytes(posix.pread(fd, 4, 0), "little")
        index = marshal.loads(posix.pread(fd, n, 4))
    except (OSError, ValueError, EOFError, TypeError):
        posix.close(fd)
        return False
    sys.meta_path.insert(0, _BundleFinder(fd, index, 4 + n, path))
    return True


if __name__ == "__main__":
    print(build())
