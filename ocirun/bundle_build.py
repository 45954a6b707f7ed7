"""Building the bundle that ocirun.bundle loads (see there): every module
of the package compiled into one file. Only on a missing or stale bundle, so
the commands themselves never load this code."""
import sys

import marshal
import posix

from ocirun.bundle import _PKG_DIR, bundle_path


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
    index, chunks, off, imported = {}, [], 0, set()
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
        code = _without_line_table(
            compile(src, path, "exec", flags=flags, dont_inherit=True, optimize=optimize))
        imported |= _imported_names(code)
        code = marshal.dumps(code)
        index[name] = (is_pkg, path, st.st_mtime_ns, st.st_size, off, len(code))
        chunks.append(code)
        off += len(code)
    head = marshal.dumps((index, _extension_paths(imported)))
    out = bundle_path(pkg_dir, optimize)
    try:
        posix.mkdir(out.rpartition("/")[0], 0o755)
    except FileExistsError:
        pass
    _write_atomic(out, len(head).to_bytes(4, "little") + head + b"".join(chunks))
    _write_boot(out.rpartition("/")[0])
    return out


# What the launchers run first (see ocirun.bundle.boot), compiled here so
# that they need not compile it at every start: their own text stays a few
# lines (the compiler's memory is part of every command's peak RSS).
_BOOT_SRC = """
def _ocirun_boot(d):
    import marshal, posix, sys
    path = (f"{d}/ocirun/__pycache__/bundle.{sys.implementation.cache_tag}"
            f".opt-{sys.flags.optimize}.v%d.bin")
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        n = int.from_bytes(posix.pread(fd, 4, 0), "little")
        head = marshal.loads(posix.pread(fd, n, 4))
        e = head[0]["ocirun.bundle"]
        mod = type(sys)("ocirun.bundle")
        mod.__file__ = e[1]
        exec(marshal.loads(posix.pread(fd, e[5], 4 + n + e[4])), mod.__dict__)
    except BaseException:
        posix.close(fd)
        raise
    mod.boot(mod, fd, head, 4 + n, path)
_ocirun_boot(_dir)
del _ocirun_boot
"""


def boot_path(cache_dir: str) -> str:
    return f"{cache_dir}/boot.{sys.implementation.cache_tag}.bin"


def _write_boot(cache_dir: str) -> None:
    from ocirun.bundle import _VERSION
    code = marshal.dumps(_without_line_table(compile(_BOOT_SRC % _VERSION, "<ocirun boot>",
                                                     "exec", dont_inherit=True)))
    _write_atomic(boot_path(cache_dir), code)


def _write_atomic(out: str, data: bytes) -> None:
    """Readers (starting launchers) see the old file or the whole new one."""
    tmp = f"{out}.{posix.getpid()}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o644)
    try:
        while data:
            data = data[posix.write(fd, data):]
    finally:
        posix.close(fd)
    posix.rename(tmp, out)


def _without_line_table(code):
    """The code with an empty line table (recursively): ~18 % less. A
    traceback then says "line -1"; the launchers print none (errors are
    one line, see cli.main), and library users import the .py files."""
    consts = tuple(_without_line_table(c) if isinstance(c, type(code)) else c
                   for c in code.co_consts)
    return code.replace(co_linetable=b"", co_consts=consts)


def _imported_names(code) -> set:
    """The absolute module names the code (and the code in it) imports."""
    import dis
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        todo.extend(k for k in c.co_consts if isinstance(k, type(c)))
        consts = [None, None]  # IMPORT_NAME follows LOAD_CONST level, LOAD_CONST fromlist
        for ins in dis.get_instructions(c):
            if ins.opname == "LOAD_CONST":
                consts = [consts[1], ins.argval]
            elif ins.opname == "IMPORT_NAME" and consts[0] == 0:
                names.add(ins.argval)
    return names


def _extension_paths(names: set) -> dict:
    """{name: shared object} for the C extensions among the top-level
    modules the package imports (not built into the interpreter), as this
    interpreter finds them now: the launchers load them from there."""
    from importlib.machinery import EXTENSION_SUFFIXES, PathFinder
    out = {}
    for name in sorted(names):
        if "." in name or name in sys.builtin_module_names:
            continue
        spec = PathFinder.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(tuple(EXTENSION_SUFFIXES)):
            out[name] = origin
    return out


def _build_in_child(pkg_dir: str, optimize: int) -> str:
    exe = sys.executable
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from ocirun import bundle_build; "
            "bundle_build.build(sys.argv[2], int(sys.argv[3]))")
    pid = posix.posix_spawn(exe, [exe, "-I", "-S", "-X", "no_debug_ranges", "-c", code,
                                  pkg_dir.rpartition("/")[0], pkg_dir, str(optimize)], {})
    if posix.waitpid(pid, 0)[1] != 0:
        raise OSError(f"building {bundle_path(pkg_dir, optimize)} failed")
    return bundle_path(pkg_dir, optimize)
