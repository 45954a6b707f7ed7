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
print("future", "__future__" in sys.modules, ocirun.init.Init.ask.__annotations__["verb"])
"""


def _probe(tree: str) -> dict:
    r = subprocess.run(["/usr/bin/python3", "-ISOO", "-c", PROBE, tree], capture_output=True,
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
    assert got["future"] == "False str"  # lazy annotations without importing __future__


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
    subprocess.run(["/usr/bin/python3", "-ISOO", "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                    " from ocirun import bundle; bundle.build()", REPO],
                   capture_output=True, timeout=120, check=True)
    r = subprocess.run(["/usr/bin/python3", "-X", "importtime", "-ISOO", OCIRUN, "--root",
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
    return subprocess.run(["/usr/bin/python3", "-X", "importtime", "-ISOO", launcher, *args],
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
    p = subprocess.run(["/usr/bin/python3", "-ISOO", "-c", code, tree],
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
        index, _ = marshal.loads(f.read(n))
    assert index["ocirun.bundle"][3] == os.path.getsize(src)
    r = _launch(tree, "--version")
    assert r.returncode == 0 and "ocirun.bundle" not in _imported(r), r.stderr
