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
    """Compile every module of the package (at bundle.OPTIMIZE unless told)
    into the bundle; written atomically. Returns its path.

    Compiled under -X no_debug_ranges (in a child interpreter if this one
    is not) and without line tables (see _slimmed): what only
    serves tracebacks is ~25 % of the code, in the file and in the memory
    of every command."""
    if optimize is None:
        from ocirun.bundle import OPTIMIZE
        optimize = OPTIMIZE
    if not sys._xoptions.get("no_debug_ranges"):
        return _build_in_child(pkg_dir, optimize)
    import __future__
    cold_names = _cold_list(pkg_dir)
    index, codes, imported, cold = {}, [], set(), _ColdArea()
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
        code = _slimmed(
            compile(src, path, "exec", flags=flags, dont_inherit=True, optimize=optimize))
        imported |= _imported_names(code)
        # (ocirun.bundle itself runs before any loader of cold code exists)
        code, table = cold.defer(code, cold_names.get(name, ()) if name != "ocirun.bundle" else ())
        codes.append((name, is_pkg, path, st, marshal.dumps(code), table))
    chunks, off = cold.chunks, cold.size
    for name, is_pkg, path, st, code, table in codes:
        index[name] = (is_pkg, path, st.st_mtime_ns, st.st_size, off, len(code), table)
        chunks.append(code)
        off += len(code)
    head = marshal.dumps((index, _extension_paths(imported), _cold_list_stat(pkg_dir)))
    out = bundle_path(pkg_dir, optimize)
    try:
        posix.mkdir(out.rpartition("/")[0], 0o755)
    except FileExistsError:
        pass
    _write_atomic(out, len(head).to_bytes(4, "little") + head + b"".join(chunks))
    _write_boot(out.rpartition("/")[0])
    return out


# Cold functions: what a `run` never calls (kill, state, the error paths,
# ...) but whose modules it imports. Their code goes to the bundle apart;
# in the module a stub of the same signature stands in, which loads the
# real code on its first call (ocirun.bundle._Cold). Unmarshalling and
# keeping that code was a fifth of the run path's code: time and peak RSS of
# every container start. The list is tools/cold_list.py's, committed.
COLD_LIST = "bundle_cold.txt"
_CO_OPTIMIZED, _CO_NEWLOCALS, _CO_VARARGS, _CO_VARKEYWORDS = 0x1, 0x2, 0x4, 0x8
# bytes of marshalled code a stub must save to be worth one: in memory a
# stub is ~350 bytes, a function ~250 + 0.9 x its marshalled size
_MIN_GAIN = 200


def read_cold_list(path: str) -> tuple[set, set]:
    """({(module, qualname)} listed cold, {(module, qualname)} marked hot)
    from the list's "module qualname" and "! module qualname" lines."""
    cold, hot = set(), set()
    try:
        with open(path) as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) == 2:
                    cold.add(tuple(parts))
                elif len(parts) == 3 and parts[0] == "!":
                    hot.add(tuple(parts[1:]))
    except FileNotFoundError:
        pass
    return cold, hot


def _cold_list(pkg_dir: str) -> dict:
    """{module: {qualname}} of the functions listed cold."""
    out: dict = {}
    for mod, qualname in read_cold_list(f"{pkg_dir}/{COLD_LIST}")[0]:
        out.setdefault(mod, set()).add(qualname)
    return out


def _cold_list_stat(pkg_dir: str) -> tuple:
    """What ocirun.bundle compares to see that the list changed since."""
    path = f"{pkg_dir}/{COLD_LIST}"
    try:
        st = posix.stat(path)
    except FileNotFoundError:
        return (path, 0, -1)
    return (path, st.st_mtime_ns, st.st_size)


class _ColdArea:
    """The cold functions' code, each marshalled on its own at the start of
    the bundle's code area (offsets from there), and their stubs."""

    def __init__(self) -> None:
        self.chunks: list = []
        self.size = 0

    def defer(self, module_code, names: set) -> tuple:
        """(module_code with the listed functions (at module or class level,
        no closure, their qualname unique in the module) as stubs, the
        module's table: where stub i's code is, 4-byte offset and size at
        8 * i)."""
        if not names:
            return module_code, b""
        seen: dict = {}
        _walk_defs(module_code, lambda c: seen.__setitem__(c.co_qualname,
                                                           seen.get(c.co_qualname, 0) + 1))
        chosen = {q for q in names if seen.get(q) == 1}
        table: list = []
        shared: dict = {}
        code = _map_defs(module_code, lambda c: self._stub_for(c, table, shared)
                         if c.co_qualname in chosen and not c.co_freevars else c)
        return code, b"".join(off.to_bytes(4, "little") + size.to_bytes(4, "little")
                              for off, size in table)

    def _stub_for(self, code, table: list, shared: dict):
        real = marshal.dumps(code)
        stub = _stub(code, len(table))
        if len(real) - len(marshal.dumps(stub)) < _MIN_GAIN:
            return code
        # the module's stubs share their equal constants and names (one
        # object each in the marshalled module, so in memory)
        stub = stub.replace(co_consts=shared.setdefault(("c", stub.co_consts), stub.co_consts),
                            co_names=shared.setdefault(("n", stub.co_names), stub.co_names))
        table.append((self.size, len(real)))
        self.chunks.append(real)
        self.size += len(real)
        return stub


def _is_function(code) -> bool:
    return code.co_flags & (_CO_OPTIMIZED | _CO_NEWLOCALS) == _CO_OPTIMIZED | _CO_NEWLOCALS


def _walk_defs(code, visit) -> None:
    """visit() each function defined at module or class level."""
    for c in code.co_consts:
        if isinstance(c, type(code)):
            if _is_function(c):
                visit(c)
            else:
                _walk_defs(c, visit)


def _map_defs(code, fn):
    consts = tuple((fn(c) if _is_function(c) else _map_defs(c, fn))
                   if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_consts=consts)


def _stub(code, index: int):
    """A function code of code's signature that hands every argument on to
    the real code (the module's cold function number `index`), loaded by
    the module's __ocirun_cold__. Defaults and decorators are the stub's:
    they come from where the module defines it."""
    flags = code.co_flags
    npos, nkw = code.co_argcount, code.co_kwonlyargcount
    names = code.co_varnames
    pos, kwonly, rest = names[:npos], names[npos:npos + nkw], list(names[npos + nkw:])
    star = rest.pop(0) if flags & _CO_VARARGS else None
    starstar = rest.pop(0) if flags & _CO_VARKEYWORDS else None
    params = list(pos)
    if code.co_posonlyargcount:
        params.insert(code.co_posonlyargcount, "/")
    if star or kwonly:
        params.append(f"*{star or ''}")
    params += kwonly
    args = list(pos) + ([f"*{star}"] if star else []) + [f"{k}={k}" for k in kwonly]
    if starstar:
        params.append(f"**{starstar}")
        args.append(f"**{starstar}")
    src = (f"def _({', '.join(params)}):\n"
           f"    return __ocirun_cold__({index})({', '.join(args)})\n")
    stub = next(c for c in compile(src, code.co_filename, "exec", dont_inherit=True).co_consts
                if isinstance(c, type(code)))
    return stub.replace(co_name=code.co_name, co_qualname=code.co_qualname,
                        co_firstlineno=code.co_firstlineno, co_linetable=b"")


# What the launchers run first (see ocirun.bundle.boot), compiled here so
# that they need not compile it at every start: their own text stays a few
# lines (the compiler's memory is part of every command's peak RSS).
_BOOT_SRC = """
def _ocirun_boot(d):
    import marshal, posix, sys
    path = (f"{d}/ocirun/__pycache__/bundle.{sys.implementation.cache_tag}"
            ".opt-%d.v%d.bin")
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
    from ocirun.bundle import _VERSION, OPTIMIZE
    code = marshal.dumps(_slimmed(compile(_BOOT_SRC % (OPTIMIZE, _VERSION), "<ocirun boot>",
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


def _slimmed(code):
    """The code without its line table and function annotations
    (recursively): ~18 % and ~3 % less. A traceback then says "line -1";
    the launchers print none (errors are one line, see cli.main), and
    nothing in ocirun reads a function's __annotations__ (library users
    import the .py files, which keep both)."""
    consts = tuple(_slimmed(c) if isinstance(c, type(code)) else c
                   for c in code.co_consts)
    empty = _annotation_consts(code)
    if empty:
        consts = tuple(() if i in empty else c for i, c in enumerate(consts))
    return code.replace(co_linetable=b"", co_consts=consts)


def _annotation_consts(code) -> set:
    """Indexes of the constants that are only ever a MAKE_FUNCTION's
    annotations: with lazy annotations (the __future__ flag) a tuple of
    (name, "annotation") strings, loaded right before the function's code
    (and its closure). An empty tuple there gives an empty __annotations__."""
    import dis
    ins = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]
    annotations, loaded = set(), set()
    for n, i in enumerate(ins):
        if i.opname == "LOAD_CONST":
            loaded.add(n)
        if i.opname != "MAKE_FUNCTION" or not i.arg & 0x04:
            continue
        j = n - 2  # before LOAD_CONST <code>
        if i.arg & 0x08:  # the closure: BUILD_TUPLE k of k LOAD_CLOSUREs
            if j < 0 or ins[j].opname != "BUILD_TUPLE":
                continue
            j -= ins[j].arg + 1
        if j >= 0 and ins[j].opname == "LOAD_CONST":
            v = ins[j].argval
            if type(v) is tuple and len(v) % 2 == 0 and all(type(x) is str for x in v):
                annotations.add(j)
    chosen = {ins[j].arg for j in annotations}
    # (a constant also loaded elsewhere stays: it is a value there)
    return chosen - {ins[n].arg for n in loaded - annotations}


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
