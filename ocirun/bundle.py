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

Imports from the bundle skip importlib's general machinery too (~15 µs a
module: module locks, the meta path walk, spec-driven attribute set-up):
use_bundle() puts a narrow `_find_and_load` in front of importlib's, for
the bundle's modules, for the few C extensions ocirun imports (their
paths recorded at build time: no directory scans of the stdlib) and for
modules built into the interpreter (errno, fcntl, gc, select, _struct: the
usual way costs ~15 µs more each). Anything else, and every miss, goes the
usual way. ocirun starts no threads, so the module locks guard nothing here.

Functions a `run` never calls (the committed list bundle_cold.txt, made
by tools/cold_list.py) are not in their module's code: a stub of the same
signature stands in and loads the real code on its first call (_Cold).
That is a fifth of the code on the run path, which every container start
would otherwise unmarshal and keep (time, and the runtime's peak RSS).

Layout: 4-byte little-endian length N, marshal of
({module: (is_package, source path, mtime_ns, size, offset, length,
           table of its cold functions (bytes, see _Cold; b"" if none))},
 {extension module: path of its shared object},
 (cold list path, mtime_ns, size)),
then at N + 4 the cold functions' code objects, each marshalled alone,
then each module's marshalled code object at N + 4 + offset.
"""
import sys

import _imp
import marshal
import posix

_VERSION = 4
_PKG_DIR = __file__.rpartition("/")[0]
# The bundle's code is compiled without docstrings or asserts whatever the
# interpreter's flags: the launchers run without -O, under which a stdlib
# module without its .opt-N.pyc (Debian ships none) is compiled at every
# start where its cache is not writable (~3 ms a start, rootless).
OPTIMIZE = 2


def bundle_path(pkg_dir: str = _PKG_DIR, optimize: int | None = None) -> str:
    tag = sys.implementation.cache_tag
    level = OPTIMIZE if optimize is None else optimize
    return f"{pkg_dir}/__pycache__/bundle.{tag}.opt-{level}.v{_VERSION}.bin"


def build(pkg_dir: str = _PKG_DIR, optimize: int | None = None) -> str:
    """Compile the package into the bundle (see ocirun.bundle_build, loaded
    only then); returns its path."""
    from ocirun.bundle_build import build
    return build(pkg_dir, optimize)


class _BundleFinder:
    """A meta path finder and loader for the modules in the bundle, and the
    fast path in front of importlib (find_and_load)."""

    def __init__(self, fd: int, index: dict, exts: dict, base: int, path: str) -> None:
        self.fd, self.index, self.exts, self.base, self.path = fd, index, exts, base, path
        bootstrap = sys.modules["_frozen_importlib"]
        self.spec_type, self.builtin_importer = bootstrap.ModuleSpec, bootstrap.BuiltinImporter
        self.builtin_names = sys.builtin_module_names
        self.module_type = type(sys)
        self.slow_find_and_load = None
        self.mapped = None  # see pin_code
        # a forked init may be past pivot_root, where these paths are the
        # container's: children import the usual way (and import nothing)
        self.active = True
        posix.register_at_fork(after_in_child=self._deactivate)

    def _deactivate(self) -> None:
        self.active = False

    def _fresh(self, e: tuple) -> bool:
        try:
            st = posix.stat(e[1])
            if st.st_mtime_ns == e[2] and st.st_size == e[3]:
                return True
        except OSError:
            pass
        # edited (or gone): the usual import; rebuilt at the next start
        _unlink(self.path)
        return False

    def read(self, size: int, off: int):
        """size bytes at off (from base): one pread, or a slice of the
        mapping pin_code() made."""
        if self.mapped is not None:
            return self.mapped[self.base + off:self.base + off + size]
        return posix.pread(self.fd, size, self.base + off)

    def _code(self, e: tuple):
        return marshal.loads(self.read(e[5], e[4]))

    def _exec(self, e: tuple, d: dict) -> None:
        if e[6]:
            d["__ocirun_cold__"] = _Cold(self, d, e[6])
        exec(self._code(e), d)

    def _spec(self, name: str, e: tuple):
        spec = self.spec_type(name, self, origin=e[1], is_package=e[0])
        if e[0]:
            spec.submodule_search_locations = [e[1].rpartition("/")[0]]
        spec.has_location = True
        return spec

    def find_spec(self, name: str, path=None, target=None):
        e = self.index.get(name) if self.active else None
        if e is None or not self._fresh(e):
            return None
        return self._spec(name, e)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        self._exec(self.index[module.__spec__.name], module.__dict__)

    def find_and_load(self, name: str, import_):
        """importlib._bootstrap._find_and_load (called by the interpreter for
        a module not in sys.modules yet), direct for the bundle's modules
        and the recorded extensions; the rest goes to importlib's."""
        e = self.index.get(name) if self.active else None
        if e is None:
            if name in self.builtin_names:
                return self._load_builtin(name)
            ext = self.exts.get(name) if self.active else None
            if ext is not None:
                mod = self._load_extension(name, ext)
                if mod is not None:
                    return mod
            return self.slow_find_and_load(name, import_)
        if not self._fresh(e):
            return self.slow_find_and_load(name, import_)
        modules = sys.modules
        parent, _, child = name.rpartition(".")
        if parent and parent not in modules:
            import_(parent)
            if name in modules:  # the parent's body imported it
                return modules[name]
        spec = self._spec(name, e)
        mod = self.module_type(name)
        d = mod.__dict__
        d["__spec__"], d["__loader__"], d["__file__"] = spec, self, e[1]
        d["__package__"] = name if e[0] else parent
        if e[0]:
            d["__path__"] = spec.submodule_search_locations
        modules[name] = mod
        try:
            self._exec(e, d)
        except BaseException:
            modules.pop(name, None)
            raise
        mod = modules[name]  # (a module may put something else there)
        if parent:
            setattr(modules[parent], child, mod)
        return mod

    def _load_builtin(self, name: str):
        """A module built into the interpreter, set up as BuiltinImporter
        would (it is found the same way after a fork, so no `active` test)."""
        spec = self.spec_type(name, self.builtin_importer, origin="built-in")
        mod = _imp.create_builtin(spec)
        mod.__spec__, mod.__loader__, mod.__package__ = spec, self.builtin_importer, ""
        return _executed(name, mod, _imp.exec_builtin)

    def _load_extension(self, name: str, path: str):
        """A C extension from the path the build recorded; None if it is not
        there any more (the usual search then finds wherever it went)."""
        ext_loader = sys.modules["_frozen_importlib_external"].ExtensionFileLoader(name, path)
        spec = self.spec_type(name, ext_loader, origin=path)
        spec.has_location = True
        try:
            mod = ext_loader.create_module(spec)
        except (ImportError, OSError):
            return None
        mod.__spec__, mod.__loader__, mod.__file__ = spec, ext_loader, path
        return _executed(name, mod, ext_loader.exec_module)


def _executed(name: str, mod, execute):
    """mod in sys.modules while execute(mod) runs (taken out again if that
    fails), as importlib does; what sys.modules then holds."""
    sys.modules[name] = mod
    try:
        execute(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return sys.modules[name]


class _Cold:
    """A module's loader of its cold functions (see bundle_build): stub i
    calls it with i and calls what it returns; where function i's code is:
    the module's table (4-byte offset and size at 8 * i). Works in a forked
    or vforked init too (one pread on the bundle's fd, which stays open
    until execve; or the mapping of pin_code)."""

    __slots__ = ("finder", "globals", "table", "done")

    def __init__(self, finder: _BundleFinder, module_globals: dict, table: bytes) -> None:
        self.finder, self.globals, self.table, self.done = finder, module_globals, table, {}

    def __call__(self, i: int):
        fn = self.done.get(i)
        if fn is None:
            t = self.table
            off = int.from_bytes(t[8 * i:8 * i + 4], "little")
            size = int.from_bytes(t[8 * i + 4:8 * i + 8], "little")
            fn = self.done[i] = _Function(marshal.loads(self.finder.read(size, off)),
                                          self.globals)
        return fn


def _unlink(path: str) -> None:
    try:
        posix.unlink(path)
    except OSError:
        pass


_Function = type(_unlink)


def _check_cold_list(head: tuple, path: str) -> None:
    """A changed cold list: this bundle still works (stubs only defer), the
    next start rebuilds it."""
    lst, mtime, size = head[2]
    try:
        st = posix.stat(lst)
        now = (st.st_mtime_ns, st.st_size)
    except OSError:
        now = (0, -1)
    if now != (mtime, size):
        _unlink(path)


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
        head = marshal.loads(posix.pread(fd, n, 4))
        index, exts, _ = head
    except (OSError, ValueError, EOFError, TypeError):
        posix.close(fd)
        return False
    finder = _BundleFinder(fd, index, exts, 4 + n, path)
    _check_cold_list(head, path)
    e = index.get(__name__)
    if e is not None and not finder._fresh(e):
        # (the launchers' boot() found this module stale: its source is
        # what runs now, and the unlinked bundle is rebuilt next time)
        posix.close(fd)
        return use_bundle(pkg_dir)
    _install(finder)
    return True


def boot(me, fd: int, head: tuple, base: int, path: str) -> None:
    """The launchers' start: the boot code they run (compiled at build
    time, see bundle_build._BOOT_SRC) reads the bundle's head and runs this
    module's code from it into a module object of its own, `me` (no path
    finder: its directory scans and .pyc reads of `ocirun` and
    `ocirun.bundle` cost ~0.3 ms). Makes `me` and the package what a usual
    import would have made them; raises (and closes fd) if this module's
    source changed since the bundle was built: the launcher then imports it
    the usual way."""
    try:
        finder = _BundleFinder(fd, head[0], head[1], base, path)
        e = finder.index[__name__]
        if not finder._fresh(e):
            raise ImportError(f"{path}: stale")
        _check_cold_list(head, path)
    except BaseException:
        posix.close(fd)
        raise
    me.__spec__, me.__loader__ = finder._spec(__name__, e), finder
    sys.modules[__name__] = me
    _install(finder)
    # cli.main() turns the collector off for every command; off from here,
    # the imports before it trigger no collection either (~60 µs)
    import gc
    gc.disable()
    import ocirun
    ocirun.bundle = me


_active: list = []  # the finder _install() put in place (none: a library's usual imports)


def pin_code() -> None:
    """Before a seccomp filter: the code still to load (cold functions, the
    error paths among them) comes from a read-only mapping of the bundle
    from now on. A filter may refuse pread; a page fault it cannot see.
    (A mapping costs nothing until read: only what is loaded is resident.)"""
    if not _active or _active[0].mapped is not None:
        return
    finder = _active[0]
    from ocirun.kernel.syscalls import map_file
    finder.mapped = map_file(finder.fd, posix.fstat(finder.fd).st_size)


def _install(finder: _BundleFinder) -> None:
    _active[:] = [finder]
    sys.meta_path.insert(0, finder)
    bootstrap = sys.modules["_frozen_importlib"]
    slow = getattr(bootstrap, "_find_and_load", None)
    if slow is not None:  # (CPython's; its signature is (name, import_) since 3.3)
        finder.slow_find_and_load = slow
        bootstrap._find_and_load = finder.find_and_load


if __name__ == "__main__":
    print(build())
