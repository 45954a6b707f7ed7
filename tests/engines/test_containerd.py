"""containerd 1.6 through its runc v2 shim (the path Kubernetes nodes use
through CRI), driven with ctr, once with ocirun and once with runc.

`ctr run --runc-binary WRAPPER` makes the shim call that binary for the
task's whole life. The `ctr` fixture fails the test if anything of its
containers is left.
"""
from __future__ import annotations

import re
import time

import pytest

import enginekit as ek

pytestmark = pytest.mark.engines
IMG = ek.IMAGE


def _cid(ctr, what: str) -> str:
    return f"oe-{what}-{ctr.runtime}"


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_run_rm_output_and_exit_code(ctr):
    # shim: create --bundle --pid-file, start, delete, delete --force
    r = ctr.run("--rm", IMG, _cid(ctr, "rm"), "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.rc == 7, str(r)
    assert r.out == "out\n", str(r)
    assert "err" in r.err, str(r)
    calls = ctr.calls()
    assert ctr.subcommands()[:2] == ["create", "start"], calls
    glob = calls[0][2]
    assert glob[:2] == ["--root", ctr.engine.runtime_root()], glob
    assert "--log-format" in glob, glob


def test_run_detached_exec_kill_delete(ctr):
    cid = _cid(ctr, "d")
    r = ctr.run("-d", IMG, cid, "sleep", "1000")
    assert r.rc == 0, str(r)
    assert ctr.wait_status(cid, "RUNNING") == "RUNNING"
    # shim: exec --process /tmp/runc-processN --detach --pid-file B/<exec-id>.pid
    r = ctr("tasks", "exec", "--exec-id", "x1", cid, "sh", "-c", "echo exec-ok; exit 3")
    assert r.rc == 3, str(r)
    assert r.out == "exec-ok\n", str(r)
    # shim: kill ID 15
    ctr.ok("tasks", "kill", cid)
    # sleep as pid 1 ignores TERM: then KILL to all
    time.sleep(0.3)
    if ctr.task_status(cid) != "STOPPED":
        ctr.ok("tasks", "kill", "-a", "-s", "SIGKILL", cid)
    assert ctr.wait_status(cid, "STOPPED") == "STOPPED"
    # shim: delete ID
    ctr.ok("tasks", "delete", cid)
    ctr.ok("containers", "delete", cid)
    subs = ctr.subcommands()
    for s in ("create", "start", "exec", "kill", "delete"):
        assert s in subs, subs
    kills = [ek.subcommand(a)[1] for _c, _r, a in ctr.calls() if ek.subcommand(a)[0] == "kill"]
    assert [cid, "15"] in kills, kills


def test_kill_signal_exit_status(ctr):
    """ctr run (foreground) returns the task's exit status after a signal
    that the container handles; the shim reads it from the runtime's child."""
    import subprocess
    cid = _cid(ctr, "sig")
    argv = ["ctr", "--address", ctr.engine.sock, "-n", ctr.engine.NS, "run", "--rm",
            "--runc-binary", ctr.wrapper, IMG, cid, "sh", "-c",
            "trap 'exit 42' USR1; while :; do sleep 0.1; done"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        assert ctr.wait_status(cid, "RUNNING") == "RUNNING"
        time.sleep(0.3)
        ctr.ok("tasks", "kill", "-s", "SIGUSR1", cid)
        assert p.wait(timeout=20) == 42
    finally:
        if p.poll() is None:
            ek.kill_pid(p.pid, wait=2)


def test_exec_missing_binary(ctr):
    cid = _cid(ctr, "xbad")
    assert ctr.run("-d", IMG, cid, "sleep", "1000").rc == 0
    r = ctr("tasks", "exec", "--exec-id", "xb", cid, "nosuchbinary")
    assert r.rc != 0, str(r)
    assert "nosuchbinary" in r.err, str(r)
    assert "Traceback" not in r.err, str(r)
    assert ctr("tasks", "exec", "--exec-id", "xc", cid, "echo", "still").out == "still\n"


def test_run_tty(ctr):
    # shim: create --console-socket /tmp/ptyN/pty.sock
    # ctr -t needs a terminal of its own: run it on a pty
    r = ctr.run("--rm", "-t", IMG, _cid(ctr, "tty"), "sh", "-c", "tty; echo done", tty=True)
    assert r.rc == 0, str(r)
    out = [ln.strip("\x00") for ln in _lines(r.out.replace("\r", "").replace("^@", ""))]
    assert out[0].startswith("/dev/pts/"), str(r)
    assert out[-1] == "done", str(r)
    create = next(a for _c, _r, a in ctr.calls() if ek.subcommand(a)[0] == "create")
    assert "--console-socket" in create, create


def test_exec_tty(ctr):
    cid = _cid(ctr, "xtty")
    assert ctr.run("-d", IMG, cid, "sleep", "1000").rc == 0
    r = ctr("tasks", "exec", "-t", "--exec-id", "xt", cid, "tty", tty=True)
    assert r.rc == 0, str(r)
    assert "/dev/pts/" in r.out, str(r)
    ex = next(a for _c, _r, a in ctr.calls() if ek.subcommand(a)[0] == "exec")
    assert "--console-socket" in ex, ex


def test_pause_resume(ctr):
    cid = _cid(ctr, "pause")
    assert ctr.run("-d", IMG, cid, "sleep", "1000").rc == 0
    assert ctr.wait_status(cid, "RUNNING") == "RUNNING"
    ctr.ok("tasks", "pause", cid)
    assert ctr.task_status(cid) == "PAUSED"
    pid = _task_pid(ctr, cid)
    assert ek.freezer_state(pid) == "FROZEN"
    ctr.ok("tasks", "resume", cid)
    assert ctr.task_status(cid) == "RUNNING"
    assert ek.freezer_state(pid) == "THAWED"
    subs = ctr.subcommands()
    assert "pause" in subs and "resume" in subs, subs


def _task_pid(ctr, cid: str) -> int:
    for ln in ctr("tasks", "ls").out.splitlines()[1:]:
        f = ln.split()
        if f and f[0] == cid:
            return int(f[1])
    raise LookupError(cid)


def test_ps(ctr):
    cid = _cid(ctr, "ps")
    assert ctr.run("-d", IMG, cid, "sh", "-c", "sleep 1000 & sleep 1000").rc == 0
    time.sleep(0.3)
    # shim: ps --format json ID
    out = ctr.ok("tasks", "ps", cid)
    pids = [int(ln.split()[0]) for ln in out.splitlines()[1:] if ln.strip()]
    assert len(pids) == 2 and _task_pid(ctr, cid) in pids, out
    assert "ps" in ctr.subcommands()


def test_metrics(ctr):
    cid = _cid(ctr, "met")
    assert ctr.run("-d", "--memory-limit", str(16 * 1024 * 1024), IMG, cid, "sleep", "1000").rc == 0
    assert ctr.wait_status(cid, "RUNNING") == "RUNNING"
    out = ctr.ok("tasks", "metrics", cid)
    m = dict(re.findall(r"^(\S+)\s+(\S+)\s*$", out, re.M))
    assert m.get("memory.limit_in_bytes") == str(16 * 1024 * 1024), out
    assert m.get("pids.current") == "1", out


def test_memory_limit(ctr):
    """A task starts under a 4 MiB limit; ctr's spec gives the container an
    empty /sys/fs/cgroup here, so the limit is read from the host."""
    cid = _cid(ctr, "mem")
    r = ctr.run("-d", "--memory-limit", str(4 * 1024 * 1024), IMG, cid, "sleep", "1000")
    assert r.rc == 0, str(r)
    assert ctr.wait_status(cid, "RUNNING") == "RUNNING"
    cg = ek.cgroup_of(_task_pid(ctr, cid), "memory")
    assert cg.endswith(f"/{ctr.engine.NS}/{cid}"), cg
    with open(f"{cg}/memory.limit_in_bytes") as f:
        assert f.read().strip() == str(4 * 1024 * 1024)
    r = ctr("tasks", "exec", "--exec-id", "m1", cid, "echo", "fits")
    assert r.rc == 0 and r.out == "fits\n", str(r)


def test_missing_binary(ctr):
    """The runtime's error reaches the user through the shim (which shows the
    last line of log.json); nothing is left behind."""
    r = ctr.run("--rm", IMG, _cid(ctr, "bad"), "nosuchbinary")
    assert r.rc != 0, str(r)
    assert "Traceback" not in r.err, str(r)
    lines = _lines(r.err)
    assert len(lines) == 1, str(r)
    assert lines[0].startswith("ctr: ") and "nosuchbinary" in lines[0], str(r)
    assert "OCI runtime create failed" in lines[0], str(r)
