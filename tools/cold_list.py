#!/usr/bin/python3
"""Write ocirun/bundle_cold.txt: the functions a container `run` never
calls, in the modules it imports. The bundle keeps their code apart and
loads it on a first call (see ocirun/bundle_build.py), so a `run` neither
unmarshals nor keeps it.

    tools/cold_list.py            (as root: it runs one busybox container)
    tools/cold_list.py --check    list what the committed list gets wrong
    tools/cold_list.py --mark-hot [--systemd-cgroup]
                                  move what a run here calls to the list's
                                  hot part (for a kind of host the list was
                                  not made on, e.g. cgroup v2: see
                                  tools/vm/cold-list-v2.sh)

A stale list costs speed, never correctness: a listed function that a run
does call is loaded then (tests/test_bundle.py checks there is none).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIST = os.path.join(REPO, "ocirun", "bundle_cold.txt")
HEADER = """\
# Functions a `run` of a container never calls, in modules it imports: the
# launchers' bundle loads their code on a first call only. Written by
# tools/cold_list.py; regenerate it after changing the run path.
"""

HOT_HEADER = """\
# Called by a run on another kind of host (tools/cold_list.py --mark-hot):
# never listed cold.
"""

# Run in a fresh interpreter with the launchers' flags: bin/ocirun's run
# path (the bundle, run_and_exit), each function's first call written out
# at once, by the runtime and by the container's init until its execve.
_TRACER = r"""
import os, sys
out, root, bundle = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, sys.argv[4])
from ocirun.bundle import use_bundle
if not use_bundle():
    sys.exit("no bundle")
called = set()
def prof(frame, event, arg):
    if event == "call":
        key = (frame.f_code.co_filename, frame.f_code.co_qualname)
        if key not in called:
            called.add(key)
            os.write(out, ("%s %s\n" % key).encode())
from ocirun.cli import run_and_exit
# (the modules loaded so far count as imported by the run: their bodies ran
# before the profile hook)
for name, mod in list(sys.modules.items()):
    if name.split(".")[0] == "ocirun" and getattr(mod, "__file__", None):
        os.write(out, ("%s <module>\n" % mod.__file__).encode())
sys.argv = ["ocirun", "--root", root, *sys.argv[5:], "run", "-b", bundle, "coldlist%d" % os.getpid()]
sys.setprofile(prof)
run_and_exit()
"""


def trace_run(repo: str = REPO, global_args: tuple = ()) -> tuple[set, dict]:
    """({(source file, qualname) called}, {module: source file}) of one
    real `run` of /bin/true (global_args: e.g. --systemd-cgroup)."""
    sys.path.insert(0, os.path.join(repo, "tools"))
    import mkbundle
    with tempfile.TemporaryDirectory(prefix="ocirun-cold-") as tmp:
        bundle, root = os.path.join(tmp, "bundle"), os.path.join(tmp, "root")
        mkbundle.make_bundle(bundle, ["/bin/true"], tty=False)
        # the bundle first, so that its build is not traced
        subprocess.run(["/usr/bin/python3", "-IS", "-c", "import sys; sys.path.insert(0, "
                        "sys.argv[1]); from ocirun.bundle import build; build()", repo],
                       check=True)
        rd, wr = os.pipe()
        proc = subprocess.Popen(["/usr/bin/python3", "-IS", "-c", _TRACER, str(wr), root,
                                 bundle, repo, *global_args], pass_fds=(wr,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)
        os.close(wr)
        with os.fdopen(rd) as f:
            text = f.read()
        if proc.wait(timeout=60) != 0:
            raise SystemExit(f"tracing a run failed (exit {proc.returncode})")
    called = {tuple(line.split(" ", 1)) for line in text.splitlines()}
    pkg = os.path.join(repo, "ocirun") + "/"
    modules = {}
    for path, qualname in called:
        if qualname == "<module>" and path.startswith(pkg):
            rel = path[len(pkg):-3].replace("/", ".")
            name = "ocirun" if rel == "__init__" else "ocirun." + rel.removesuffix(".__init__")
            modules[name] = path
    return called, modules


@functools.lru_cache(maxsize=None)
def defined_functions(path: str) -> tuple:
    """(qualname) of the functions at module or class level in a source."""
    from ocirun import bundle_build
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    out: list = []
    bundle_build._walk_defs(code, lambda c: out.append(c.co_qualname) if not c.co_freevars else None)
    return tuple(out)


def cold_functions(called: set, modules: dict) -> list[tuple[str, str]]:
    rows = []
    for mod, path in sorted(modules.items()):
        if mod == "ocirun.bundle" or not path.endswith(".py"):
            continue
        rows += [(mod, q) for q in defined_functions(path) if (path, q) not in called]
    return sorted(set(rows))


def _write_list(cold, hot) -> None:
    with open(LIST + ".tmp", "w") as f:
        f.write(HEADER + "".join(f"{m} {q}\n" for m, q in sorted(cold)))
        if hot:
            f.write(HOT_HEADER + "".join(f"! {m} {q}\n" for m, q in sorted(hot)))
    os.replace(LIST + ".tmp", LIST)


def _defined(pkg: str, mod: str, q: str) -> bool:
    rel = mod.split(".", 1)[1].replace(".", "/") if "." in mod else "__init__"
    for path in (f"{pkg}/{rel}.py", f"{pkg}/{rel}/__init__.py"):
        if os.path.exists(path):
            return q in defined_functions(path)
    return False


def main(argv: list[str]) -> int:
    sys.path.insert(0, REPO)
    global_args = tuple(a for a in argv if a in ("--systemd-cgroup",))
    called, modules = trace_run(global_args=global_args)
    from ocirun.bundle_build import read_cold_list
    listed, hot = read_cold_list(LIST)
    ran = {(m, q) for m, p in modules.items() for (path, q) in called if path == p}
    if "--check" in argv or "--mark-hot" in argv:
        pkg = os.path.join(REPO, "ocirun")
        wrong = sorted(listed & ran)
        if "--mark-hot" in argv:
            _write_list(listed - set(wrong), hot | set(wrong))
            print(f"{LIST}: {len(wrong)} functions marked hot")
            return 0
        gone = sorted(e for e in listed if not _defined(pkg, *e))
        for m, q in wrong:
            print(f"listed but called by a run: {m} {q}")
        for m, q in gone:
            print(f"listed but not defined any more: {m} {q}")
        return 1 if wrong or gone else 0
    cold = set(cold_functions(called, modules)) - hot
    _write_list(cold, hot)
    print(f"{LIST}: {len(cold)} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
