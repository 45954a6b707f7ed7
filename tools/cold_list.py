#!/usr/bin/python3
"""Write ocirun/bundle_cold.txt: the functions a container `run` never
calls, in the modules it imports. The bundle keeps their code apart and
loads it on a first call (see ocirun/bundle_build.py), so a `run` neither
unmarshals nor keeps it.

    tools/cold_list.py            (as root: it runs one busybox container)
    tools/cold_list.py --check    list what the committed list gets wrong

A stale list costs speed, never correctness: a listed function that a run
does call is loaded then (tests/test_bundle.py checks there is none).
"""
from __future__ import annotations

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
sys.argv = ["ocirun", "--root", root, "run", "-b", bundle, "coldlist%d" % os.getpid()]
sys.setprofile(prof)
run_and_exit()
"""


def trace_run(repo: str = REPO) -> tuple[set, dict]:
    """({(source file, qualname) called}, {module: source file}) of one
    real `run` of /bin/true."""
    sys.path.insert(0, os.path.join(repo, "tools"))
    import mkbundle
    with tempfile.TemporaryDirectory(prefix="ocirun-cold-") as tmp:
        bundle, root = os.path.join(tmp, "bundle"), os.path.join(tmp, "root")
        mkbundle.make_bundle(bundle, ["/bin/true"], tty=False)
        # the bundle first, so that its build is not traced
        subprocess.run(["/usr/bin/python3", "-ISOO", "-c", "import sys; sys.path.insert(0, "
                        "sys.argv[1]); from ocirun.bundle import build; build()", repo],
                       check=True)
        rd, wr = os.pipe()
        proc = subprocess.Popen(["/usr/bin/python3", "-ISOO", "-c", _TRACER, str(wr), root,
                                 bundle, repo], pass_fds=(wr,), stdin=subprocess.DEVNULL,
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


def defined_functions(path: str):
    """(qualname) of the functions at module or class level in a source."""
    from ocirun import bundle_build
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    out: list = []
    bundle_build._walk_defs(code, lambda c: out.append(c.co_qualname) if not c.co_freevars else None)
    return out


def cold_functions(called: set, modules: dict) -> list[tuple[str, str]]:
    rows = []
    for mod, path in sorted(modules.items()):
        if mod == "ocirun.bundle" or not path.endswith(".py"):
            continue
        rows += [(mod, q) for q in defined_functions(path) if (path, q) not in called]
    return sorted(set(rows))


def main(argv: list[str]) -> int:
    sys.path.insert(0, REPO)
    called, modules = trace_run()
    cold = cold_functions(called, modules)
    if "--check" in argv:
        from ocirun.bundle_build import _cold_list
        listed = {(m, q) for m, qs in _cold_list(os.path.join(REPO, "ocirun")).items() for q in qs}
        wrong = sorted(listed - set(cold))
        for m, q in wrong:
            print(f"listed but called by a run (or gone): {m} {q}")
        return 1 if wrong else 0
    with open(LIST + ".tmp", "w") as f:
        f.write(HEADER + "".join(f"{m} {q}\n" for m, q in cold))
    os.replace(LIST + ".tmp", LIST)
    print(f"{LIST}: {len(cold)} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
