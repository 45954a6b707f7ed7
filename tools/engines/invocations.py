#!/usr/bin/python3
"""Summarise the runtime invocations recorded by the engine tests.

The engine tests put a wrapper in front of each runtime that logs the
caller (conmon, podman, containerd-shim) and the argv of every call to
build/engines/argv.log (kept after each `pytest -m engines` session). This
tool normalises the variable parts (ids, temporary paths, random suffixes)
and prints one Markdown table per engine: each distinct invocation, the
runtimes it was seen with, and the tests that made it.

    tools/engines/invocations.py [LOG]            # Markdown tables
    tools/engines/invocations.py --check DOC [LOG]
        # exit 1 if LOG holds an invocation that DOC (docs/engines.md) lacks
"""
from __future__ import annotations

import os
import re
import sys

US = "\x1f"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_LOG = os.path.join(REPO, "build", "engines", "argv.log")

ENGINE_OF = {"conmon": "podman", "podman": "podman", "containerd-shim": "containerd"}
# the engine a test drives, from its marker line ("docker tests/...::test_x"):
# dockerd's calls come from a containerd-shim too
ENGINES = ("podman", "containerd", "docker", "rootless-podman")
TEST_FILES = {"rootless-podman": "test_podman_rootless.py"}

_SUBS = [
    (re.compile(r"/tmp/ocirun-eng-[^/\s]+"), "$T"),
    (re.compile(r"\$T/docker-remap/"), "$T/docker/"),  # (the userns-remap dockerd)
    (re.compile(r"\b[0-9a-f]{64}\b"), "<id>"),
    (re.compile(r"\bo[ed]-[\w-]+?-(?:ocirun|runc)\b"), "<id>"),
    (re.compile(r"/run/containerd/runc/[\w.-]+"), "/run/containerd/runc/<ns>"),
    (re.compile(r"(io\.containerd\.runtime\.v2\.task)/[\w.-]+/"), r"\1/<ns>/"),
    (re.compile(r"conmon-term\.\w+"), "conmon-term.<rand>"),
    (re.compile(r"runc-process\d+"), "runc-process<N>"),
    (re.compile(r"/tmp/pty\d+/"), "/tmp/pty<N>/"),
    (re.compile(r"exec-process-\d+"), "exec-process-<N>"),
    (re.compile(r"/tmp/podman\d+"), "/tmp/podman<N>"),
    (re.compile(r"/userdata/<id>/"), "/userdata/<exec-id>/"),
    (re.compile(r"(/<id>)/(?!init\.pid)(?:[\w-]+|<id>)\.pid\b"), r"\1/<exec-id>.pid"),
]


def normalise(argv: list[str]) -> str:
    text = " ".join(argv)
    for rx, rep in _SUBS:
        text = rx.sub(rep, text)
    return text


def short_test(label: str) -> str:
    """'podman tests/engines/test_podman.py::test_x[ocirun]' -> 'test_podman.py::test_x'"""
    node = label.split(" ", 1)[-1]
    node = re.sub(r"\[.*\]$", "", node)
    return node.rsplit("/", 1)[-1]


def collect(path: str) -> dict:
    """{engine: {invocation: {"runtimes": set, "tests": set, "callers": set}}}"""
    table: dict = {}
    test, marked = "(session set-up)", ""
    with open(path) as f:
        for ln in f:
            parts = ln.rstrip("\n").split(US)
            if parts[0] == "#":
                test = short_test(parts[1])
                marked = parts[1].split(" ", 1)[0]
                continue
            if len(parts) < 2:
                continue
            caller, runtime, argv = parts[0], parts[1], parts[2:]
            engine = marked if marked in ENGINES else ENGINE_OF.get(caller, caller)
            inv = normalise(argv)
            row = table.setdefault(engine, {}).setdefault(
                inv, {"runtimes": set(), "tests": set(), "callers": set()})
            row["runtimes"].add(runtime)
            row["tests"].add(test)
            row["callers"].add(caller)
    return table


def _sort_key(inv: str) -> tuple:
    order = ["--version", "create", "start", "exec", "ps", "pause", "resume", "update",
             "kill", "delete"]
    for i, word in enumerate(order):
        if f" {word} " in f" {inv} ":
            return (i, inv)
    return (len(order), inv)


def markdown(table: dict) -> str:
    out = []
    for engine in sorted(table):
        tests = TEST_FILES.get(engine, f"test_{engine}.py")
        out.append(f"### {engine} (tests in tests/engines/{tests})\n")
        out.append("| caller | runtime invocation (RT = the runtime) | seen with | tests |")
        out.append("|---|---|---|---|")
        for inv in sorted(table[engine], key=_sort_key):
            row = table[engine][inv]
            names = sorted(row["tests"], key=lambda t: (len(t), t))
            tests = ", ".join(f"`{t.split('::')[-1]}`" for t in names[:3])
            if len(names) > 3:
                tests += f" (+{len(names) - 3} more)"
            out.append(f"| {', '.join(sorted(row['callers']))} | `RT {inv}` | "
                       f"{', '.join(sorted(row['runtimes']))} | {tests} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        doc = argv[1]
        log = argv[2] if len(argv) > 2 else DEFAULT_LOG
        with open(doc) as f:
            text = f.read()
        missing = [(e, inv) for e, rows in collect(log).items() for inv in rows
                   if f"`RT {inv}`" not in text]
        for e, inv in missing:
            print(f"undocumented {e} invocation: RT {inv}")
        return 1 if missing else 0
    log = argv[0] if argv else DEFAULT_LOG
    print(markdown(collect(log)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
