"""The run path stays lean (issue 7): a real `run` through the launcher,
with -X importtime, must not load the modules ocirun avoids on purpose
(ctypes is replaced by ocirun.kernel.ffi on _ctypes; re, json, argparse,
enum, signal, socket, shutil, types, importlib and resource have cheaper
stand-ins; os is ocirun.oslite, the builtin posix module plus a few helpers)."""
from __future__ import annotations

import subprocess

from ocitest import OCIRUN

AVOIDED = {"ctypes", "re", "json", "argparse", "enum", "signal", "socket", "shutil",
           "types", "importlib", "struct", "subprocess", "threading", "typing", "resource",
           "os", "posixpath", "_collections_abc", "stat"}


def _imported(args: list[str]) -> set[str]:
    r = subprocess.run(["/usr/bin/python3", "-X", "importtime", "-IS", OCIRUN, *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                mods.add(name)
    return mods


def test_run_path_imports(oci, bundle):
    bundle.args("/bin/true")
    mods = _imported(["--root", oci.root, "run", "-b", bundle.path, "lean"])
    assert "ocirun.container" in mods and "ocirun.kernel.ffi" in mods  # it did measure
    assert not mods & AVOIDED, sorted(mods & AVOIDED)
    # loaded only when the config asks for them
    assert not {m for m in mods if m.startswith(("ocirun.hooks", "ocirun.linux.terminal",
                                                 "ocirun.linux.seccomp", "ocirun.specgen"))}


def test_state_start_delete_paths_are_smaller_still(oci, bundle):
    bundle.args("sleep", "100")
    oci.ok("create", "-b", bundle.path, "lean2")
    for args in (["state", "lean2"], ["start", "lean2"], ["delete", "--force", "lean2"]):
        mods = _imported(["--root", oci.root, *args])
        assert not mods & AVOIDED, (args, sorted(mods & AVOIDED))
        assert not mods & {"ocirun.plan", "ocirun.init", "ocirun.creation"}, args
        assert "__future__" not in mods, args  # modules on these paths do without it


def test_delete_of_a_stopped_container_loads_no_cgroup_manager(oci, bundle):
    bundle.args("/bin/true")
    oci.ok("run", "-d", "-b", bundle.path, "lean3")
    oci.wait_status("lean3", "stopped")
    mods = _imported(["--root", oci.root, "delete", "lean3"])
    assert "ocirun.container" in mods
    assert not {m for m in mods if m.startswith("ocirun.cgroups")}, sorted(mods)
    assert oci.ids() == []


def test_seccomp_cache_hit_needs_neither_ctypes_nor_json(oci, bundle):
    bundle.args("/bin/true")
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO"}]}
    bundle.save()
    first = _imported(["--root", oci.root, "run", "-b", bundle.path, "sc1"])
    assert "ctypes" in first  # a miss compiles with libseccomp (full ctypes)
    again = _imported(["--root", oci.root, "run", "-b", bundle.path, "sc2"])
    assert "ocirun.linux.seccomp" in again
    assert not again & AVOIDED, sorted(again & AVOIDED)


# --- the json stand-ins print exactly what json would -------------------------
SAMPLES = [{"a": 1, "b": [1, 2, {"c": None, "d": []}], "e": {}, "f": "é\"x\n", "g": 1.5,
            "h": True, "i": -3}, [], {}, "x", [[[]]], {1: 2, True: 3, None: 4, 2.5: "x"},
           {"ociVersion": "1.3.0", "annotations": {"k": "v"}, "pid": 0}]


def test_dumps_pretty_matches_json():
    import json
    from ocirun.jsonutil import dumps_pretty
    for o in SAMPLES:
        assert dumps_pretty(o) == json.dumps(o, indent=2)


def test_dumps_canonical_matches_json():
    import json
    from ocirun.jsonutil import dumps_canonical
    for o in SAMPLES[:5] + SAMPLES[6:]:
        assert dumps_canonical(o) == json.dumps(o, sort_keys=True, separators=(",", ":"))


# --- oslite behaves as the os/posixpath functions it stands in for ------------------
PATHS = ["", "/", "//", "///", "a", "a/", "/a/b/", "a//b", "/a/./b/../c", "../x", "a/../..",
         "//a/b", "/..", "./", "a/b/../../..", "/a/b/c/../../d/"]


def test_oslite_read_bytes_reads_whole_files(tmp_path):
    import os
    import pytest
    from ocirun import oslite
    big = bytes(range(256)) * 1000  # several reads
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "empty").write_bytes(b"")
    assert oslite.read_bytes(str(tmp_path / "big")) == big
    assert oslite.read_bytes(str(tmp_path / "empty")) == b""
    assert oslite.read_bytes("/proc/self/stat").startswith(str(os.getpid()).encode())
    with pytest.raises(FileNotFoundError):
        oslite.read_bytes(str(tmp_path / "missing"))


def test_oslite_path_functions_match_posixpath(tmp_path):
    import os
    import posixpath
    from ocirun import oslite
    for p in PATHS:
        assert oslite.path.normpath(p) == posixpath.normpath(p), p
        assert oslite.path.split(p) == posixpath.split(p), p
        assert oslite.path.dirname(p) == posixpath.dirname(p), p
        assert oslite.path.basename(p) == posixpath.basename(p), p
        assert oslite.path.abspath(p or ".") == posixpath.abspath(p or "."), p
        for q in ("b", "/b", "", "b/"):
            assert oslite.path.join(p, q) == posixpath.join(p, q), (p, q)
    for p, start in [("/a/b/c", "/a"), ("/a", "/a/b/c"), ("/a/b", "/a/b"), ("/x/y", "/a/b")]:
        assert oslite.path.relpath(p, start) == posixpath.relpath(p, start)
    # realpath through relative and absolute links, "..", a missing tail and a loop
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "rel").symlink_to("d/e")
    (tmp_path / "abs").symlink_to(tmp_path / "d")
    (tmp_path / "up").symlink_to("d/e/..")
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    for name in ("rel", "abs/e", "up/e", "rel/../e/missing/x", "abs/../rel", "loop1/x", "d"):
        p = str(tmp_path / name)
        assert oslite.path.realpath(p) == os.path.realpath(p), name
    for p in ("/", str(tmp_path / "rel"), str(tmp_path / "nope")):
        assert oslite.path.exists(p) == os.path.exists(p)
        assert oslite.path.isdir(p) == os.path.isdir(p)
        assert oslite.path.isfile(p) == os.path.isfile(p)
        assert oslite.path.lexists(p) == os.path.lexists(p)


def test_oslite_environment_and_makedirs(tmp_path, monkeypatch):
    import os
    from ocirun import oslite
    monkeypatch.setenv("OCIRUN_OSLITE_TEST", "x\udcff")
    assert oslite.getenv("OCIRUN_OSLITE_TEST") == os.environ["OCIRUN_OSLITE_TEST"]
    assert oslite.getenv("OCIRUN_OSLITE_UNSET", "d") == "d"
    assert oslite.environ_copy() == dict(os.environ)
    assert not hasattr(oslite, "environ")  # posix's bytes dict would mislead
    d = tmp_path / "a" / "b" / "c"
    oslite.makedirs(str(d), 0o711)
    assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o711
    oslite.makedirs(str(d), exist_ok=True)
    try:
        oslite.makedirs(str(d))
        raise AssertionError("makedirs of an existing dir must fail without exist_ok")
    except FileExistsError:
        pass
    assert sorted(x[0] for x in oslite.walk(str(tmp_path / "a"))) == \
        sorted(x[0] for x in os.walk(str(tmp_path / "a")))


def test_no_asserts_or_docstring_use_since_the_bundle_is_optimized():
    """The launchers' bundle is compiled with optimize=2 (no docstrings to
    load): asserts would vanish and __doc__ would be None there."""
    import ast
    import pathlib
    pkg = pathlib.Path(OCIRUN).resolve().parent.parent / "ocirun"
    for f in pkg.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Assert), f"{f}:{node.lineno}: assert, optimized away"
            assert not (isinstance(node, ast.Attribute) and node.attr == "__doc__"), \
                f"{f}:{node.lineno}: __doc__ is None in the bundle"


def test_the_launcher_runs_without_O():
    """-I -S, no -O: under -O the interpreter looks for .opt-N.pyc of its own
    start-up modules (encodings), which Debian does not ship; where a user
    cannot write them they are compiled at every start (~3 ms)."""
    assert open(OCIRUN).readline().split()[1:] == ["-IS"]
    r = subprocess.run([OCIRUN, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("ocirun version"), r.stderr
    # and the bundle's code has no docstrings all the same
    from ocirun import bundle
    assert bundle.OPTIMIZE == 2
    assert bundle.bundle_path().endswith(f".opt-2.v{bundle._VERSION}.bin")
