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


def build(pkg_dir: str = _PKG_DIR, optimize: int | None = None) -> str:
    """Compile the package into the bundle (see ocirun.bundle_build, loaded
    only then); returns its path."""
    from ocirun.bundle_build import build
    return build(pkg_dir, optimize)


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
