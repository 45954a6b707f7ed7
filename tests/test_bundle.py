"""The launchers' one-file bytecode bundle (ocirun/bundle.py) is only a
cache: it must never run code that differs from the sources."""
import os
import shutil
import subprocess
import sys

import pytest

from ocitest import OCIRUN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(OCIRUN)))

PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from ocirun.bundle import use_bundle, bundle_path
print("used", use_bundle())
import ocirun.cli, ocirun.linux.mounts, ocirun.errors
from ocirun import linux
print("loader", type(ocirun.cli.__spec__.loader).__name__)
print("file", ocirun.cli.__file__)
print("pkgpath", linux.__path__)
print("marker", getattr(ocirun.cli, "BUNDLE_TEST_MARKER", None))
print("columns", any(p[2] is not None for p in ocirun.cli.main.__code__.co_positions()))
print("lines", len(ocirun.cli.main.__code__.co_linetable))
import ocirun.init
print("future", "__future__" in sys.modules, ocirun.init.Init.ask.__annotations__)
print("values", ocirun.init.Init.ask.__defaults__, ocirun.cli.main.__annotations__.get("return"))
"""


def _probe(tree: str) -> dict:
    r = subprocess.run(["/usr/bin/python3", "-IS", "-c", PROBE, tree], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.splitlines())


@pytest.fixture
def tree(tmp_path):
    shutil.copytree(os.path.join(REPO, "ocirun"), tmp_path / "ocirun",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return str(tmp_path)


def _bundle(tree: str) -> str:
    d = os.path.join(tree, "ocirun", "__pycache__")
    names = [n for n in os.listdir(d) if n.startswith("bundle.") and n.endswith(".bin")] \
        if os.path.isdir(d) else []
    return os.path.join(d, names[0]) if names else ""


def test_built_on_first_use_and_modules_come_from_it(tree):
    assert not _bundle(tree)
    got = _probe(tree)
    assert got["used"] == "True" and _bundle(tree)
    assert got["loader"] == "_BundleFinder"
    assert got["file"] == os.path.join(tree, "ocirun", "cli.py")
    assert got["pkgpath"] == repr([os.path.join(tree, "ocirun", "linux")])
    assert got["columns"] == "False"  # compiled with -X no_debug_ranges: smaller code
    assert got["lines"] == "0"  # and without line tables
    # the __future__ flag without importing __future__; the lazy annotations
    # it makes are dropped (nothing reads them), the evaluated ones stay
    assert got["future"] == "False {}"
    assert got["values"] == "(b'',) <class 'int'>"


def test_an_edited_source_wins_and_the_bundle_is_rebuilt(tree):
    _probe(tree)
    first = _bundle(tree)
    cli = os.path.join(tree, "ocirun", "cli.py")
    with open(cli, "a") as f:
        f.write("\nBUNDLE_TEST_MARKER = 'edited'\n")
    got = _probe(tree)
    assert got["marker"] == "edited"  # the source, not the stale bundle
    assert got["loader"] != "_BundleFinder"
    assert not os.path.exists(first)  # removed: the next start rebuilds it
    again = _probe(tree)
    assert again["loader"] == "_BundleFinder" and again["marker"] == "edited"


def test_a_broken_bundle_falls_back(tree):
    _probe(tree)
    with open(_bundle(tree), "wb") as f:
        f.write(b"\x10\x00\x00\x00garbage")
    got = _probe(tree)
    assert got["used"] == "False" and got["loader"] == "SourceFileLoader"


def test_the_launcher_runs_containers_through_it(oci, bundle):
    bundle.args("/bin/true")
    # a fresh bundle (in an edited checkout a start removes a stale one only
    # when it imports an edited module, and `run` imports more than most)
    subprocess.run(["/usr/bin/python3", "-IS", "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                    " from ocirun import bundle; bundle.build()", REPO],
                   capture_output=True, timeout=120, check=True)
    r = subprocess.run(["/usr/bin/python3", "-X", "importtime", "-IS", OCIRUN, "--root",
                        oci.root, "run", "-b", bundle.path, "bun"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # booted from the bundle (ocirun.bundle never went through an import),
    # and the rest imported from it
    assert "ocirun.bundle" not in r.stderr and "ocirun.init" in r.stderr
    assert _bundle(REPO)


def _launch(tree: str, *args: str) -> subprocess.CompletedProcess:
    """bin/ocirun, as a copy beside the copied package."""
    os.makedirs(os.path.join(tree, "bin"), exist_ok=True)
    launcher = os.path.join(tree, "bin", "ocirun")
    shutil.copy(OCIRUN, launcher)
    return subprocess.run(["/usr/bin/python3", "-X", "importtime", "-IS", launcher, *args],
                          capture_output=True, text=True, timeout=120)


def _imported(r: subprocess.CompletedProcess) -> set:
    return {line.rpartition("|")[2].strip() for line in r.stderr.splitlines()
            if line.startswith("import time:")}


def test_the_launcher_boots_from_the_bundle_and_loads_extensions_by_path(tree):
    r = _launch(tree, "--version")  # no bundle yet: the usual import, which builds it
    assert r.returncode == 0, r.stderr
    assert "ocirun.bundle" in _imported(r) and _bundle(tree)
    r = _launch(tree, "features")
    assert r.returncode == 0, r.stderr
    got = _imported(r)
    assert "ocirun" in got and "ocirun.bundle" not in got and "ocirun.cli" in got
    # the C extensions the bundle recorded: found without the path finder,
    # which would have scanned lib-dynload for them
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from ocirun.bundle import use_bundle;"
            " use_bundle(); import _json, ocirun.cli;"
            " print(type(_json.__loader__).__name__, _json.__file__,"
            " [p for p in sys.path_importer_cache if p.endswith('lib-dynload')] or 'unscanned')")
    p = subprocess.run(["/usr/bin/python3", "-IS", "-c", code, tree],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    loader, path, scanned = p.stdout.split(None, 2)
    assert loader == "ExtensionFileLoader" and path.endswith(".so")
    assert scanned.strip() == "unscanned"


def test_an_edited_bundle_module_is_imported_from_source_and_rebuilt(tree):
    assert _launch(tree, "--version").returncode == 0
    src = os.path.join(tree, "ocirun", "bundle.py")
    with open(src, "a") as f:
        f.write("\nBUNDLE_TEST_MARKER = 'edited'\n")
    r = _launch(tree, "--version")
    assert r.returncode == 0, r.stderr
    assert "ocirun.bundle" in _imported(r)  # the stale copy did not boot: the source ran
    # ... and the bundle was rebuilt from the edited source, so the next
    # start boots from it again
    import marshal
    with open(_bundle(tree), "rb") as f:
        n = int.from_bytes(f.read(4), "little")
        index = marshal.loads(f.read(n))[0]
    assert index["ocirun.bundle"][3] == os.path.getsize(src)
    r = _launch(tree, "--version")
    assert r.returncode == 0 and "ocirun.bundle" not in _imported(r), r.stderr


# Functions of every shape the cold-code stubs must hand on exactly: their
# results say what each received.
COLD_PROBE_MODULE = """
import functools

_NEVER = None

def plain(a, b=2, *rest, c, d=4, **kw):
    if _NEVER:
PAD
    return ("plain", a, b, rest, c, d, sorted(kw.items()))

def posonly(a, b=7, /, c=8):
    if _NEVER:
PAD
    return ("posonly", a, b, c)

def gen(n):
    if _NEVER:
PAD
    yield from range(n)

def wrapped(f):
    @functools.wraps(f)
    def w(*a, **k):
        return ("wrapped", f(*a, **k))
    return w

@wrapped
def decorated(x, *, y=1):
    if _NEVER:
PAD
    return x + y

def closure_maker(x):
    if _NEVER:
PAD
    def inner():
        return x
    return inner

class K:
    factor = 3

    def __init__(self, v=5):
        if _NEVER:
PAD
        self.v = v

    def method(self, m, *, scale=None):
        if _NEVER:
PAD
        return self.v * m * (scale or self.factor)

    @staticmethod
    def static(a, b=1):
        if _NEVER:
PAD
        return ("static", a, b)

    @classmethod
    def klass(cls, n=2):
        if _NEVER:
PAD
        return (cls.__name__, n)

    @property
    def prop(self):
        if _NEVER:
PAD
        return self.v + 100

    def supered(self):
        if _NEVER:
PAD
        return super().__repr__()[:1]

def raising(x):
    if _NEVER:
PAD
    raise ValueError(f"bad {x}")
""".replace("PAD\n", "".join(f"            print({i}, 'padding: a stub must save some code to be made')\n"
                               for i in range(6)))

COLD_PROBE_LIST = """# probe
ocirun._coldprobe plain
ocirun._coldprobe posonly
ocirun._coldprobe gen
ocirun._coldprobe decorated
ocirun._coldprobe closure_maker
ocirun._coldprobe K.__init__
ocirun._coldprobe K.method
ocirun._coldprobe K.static
ocirun._coldprobe K.klass
ocirun._coldprobe K.prop
ocirun._coldprobe K.supered
ocirun._coldprobe raising
ocirun._coldprobe no_such_function
"""

COLD_PROBE_CALLS = r"""
import sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "bundle":
    from ocirun.bundle import use_bundle
    if not use_bundle():  # (no assert: the bundle's code has none)
        sys.exit("no bundle")
from ocirun import _coldprobe as m
out = []
def call(f, *a, **k):
    try:
        out.append(repr(f(*a, **k)))
    except Exception as e:
        out.append(f"{type(e).__name__}: {e}")
call(m.plain, 1, c=3)
call(m.plain, 1, 5, 6, 7, c=3, d=9, z=0)
call(m.plain, 1)
call(m.plain, a=1, b=2, c=3)
call(m.posonly, 1)
call(m.posonly, 1, 2, c=3)
call(m.posonly, a=1)
call(lambda: list(m.gen(3)))
call(m.decorated, 1, y=5)
call(m.decorated, 1, 2)
call(m.closure_maker(42))
k = m.K()
call(k.method, 2)
call(k.method, 2, scale=10)
call(m.K.method, m.K(1), 3)
call(m.K.static, 4)
call(k.static, 4, b=5)
call(m.K.klass)
call(lambda: k.prop)
call(k.supered)
call(m.raising, 7)
call(lambda: (m.plain.__name__, m.plain.__qualname__, m.K.method.__qualname__,
              m.decorated.__name__, m.plain.__defaults__, m.plain.__kwdefaults__))
print("\n".join(out))
stubs = sorted(q for q, f in [("plain", m.plain), ("posonly", m.posonly), ("gen", m.gen),
                              ("K.__init__", m.K.__init__), ("K.method", m.K.method),
                              ("K.static", m.K.static), ("K.klass", m.K.klass.__func__),
                              ("K.prop", m.K.prop.fget), ("raising", m.raising),
                              ("closure_maker", m.closure_maker), ("K.supered", m.K.supered)]
               if "__ocirun_cold__" in f.__code__.co_names)
print("STUBS", " ".join(stubs))
"""


def _cold_probe(tree: str, how: str) -> tuple[list, str]:
    r = subprocess.run(["/usr/bin/python3", "-IS", "-c", COLD_PROBE_CALLS, tree, how],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    *lines, stubs = r.stdout.splitlines()
    return lines, stubs


def test_cold_functions_are_stubs_that_behave_as_the_source(tree):
    pkg = os.path.join(tree, "ocirun")
    with open(os.path.join(pkg, "_coldprobe.py"), "w") as f:
        f.write(COLD_PROBE_MODULE)
    with open(os.path.join(pkg, "bundle_cold.txt"), "w") as f:
        f.write(COLD_PROBE_LIST)
    from_source, _ = _cold_probe(tree, "source")
    from_bundle, stubs = _cold_probe(tree, "bundle")
    assert _bundle(tree)
    assert from_bundle == from_source
    # every listed function became a stub but the one using super() (its
    # __class__ cell makes it a closure)
    assert stubs == "STUBS K.__init__ K.klass K.method K.prop K.static closure_maker gen plain posonly raising"
    assert "TypeError: plain() missing 1 required keyword-only argument: 'c'" in from_bundle
    assert "ValueError: bad 7" in from_source


def test_a_changed_cold_list_makes_the_next_start_rebuild(tree):
    _probe(tree)
    first = _bundle(tree)
    with open(os.path.join(tree, "ocirun", "bundle_cold.txt"), "a") as f:
        f.write("ocirun.cli main\n")
    got = _probe(tree)
    assert got["loader"] == "_BundleFinder"  # the old one still serves this start
    assert not os.path.exists(first)
    _probe(tree)
    assert _bundle(tree)


def test_the_cold_list_holds_nothing_a_run_calls():
    """tools/cold_list.py --check traces a real `run` (bin/ocirun's path: the
    bundle, the vforked init) and lists the functions on the committed list
    that it called. Any such is loaded late at every start: regenerate the
    list (tools/cold_list.py) after changing the run path."""
    r = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tools", "cold_list.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


COLD_AFTER_SECCOMP = r"""
import sys
sys.path.insert(0, sys.argv[1])
from ocirun import bundle
if not bundle.use_bundle():
    sys.exit("no bundle")
from ocirun import _coldprobe as m
from ocirun.kernel import syscalls as k
from ocirun.linux import seccomp
flt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["pread64"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}, cache_dir=None)
if sys.argv[2] == "pinned":
    bundle.pin_code()
k.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
seccomp.load(flt)
try:
    print(m.plain(1, c=3))
except PermissionError:
    print("pread refused")
"""


def test_cold_code_loads_after_a_seccomp_filter_that_refuses_pread(tree):
    """The init (and exec's process) may call cold functions after loading
    the container's seccomp filter (the wait for `start`, error reports):
    launch._load_seccomp pins the code first, and the stubs then read a
    mapping of the bundle, not the file."""
    pkg = os.path.join(tree, "ocirun")
    with open(os.path.join(pkg, "_coldprobe.py"), "w") as f:
        f.write(COLD_PROBE_MODULE)
    with open(os.path.join(pkg, "bundle_cold.txt"), "w") as f:
        f.write(COLD_PROBE_LIST)
    _probe(tree)  # builds the bundle
    out = {}
    for how in ("unpinned", "pinned"):
        r = subprocess.run(["/usr/bin/python3", "-IS", "-c", COLD_AFTER_SECCOMP, tree, how],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out[how] = r.stdout.strip()
    assert out["unpinned"] == "pread refused"  # (the filter bites)
    assert out["pinned"] == "('plain', 1, 2, (), 3, 4, [])"
