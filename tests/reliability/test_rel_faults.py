"""Error reporting under faults: a read-only state root, a full state root,
and a storm of signals whose default action is to be ignored. Every failure
is one clear line, with no partial state and nothing left behind. Mounts
are made only inside private mount namespaces (unshare -m) that die with
the command."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import pytest

from relutil import OCIRUN, area, one_line_error, state  # noqa: F401


def _in_private_ns(area, setup: str, *args: str) -> subprocess.CompletedProcess:
    """Run `setup` then ocirun ARGS in a private mount namespace."""
    q = " ".join("'" + a.replace("'", "'\\''") + "'" for a in (OCIRUN, *args))
    script = f"set -e; {setup}; exec {q}"
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60, env=area.env(),
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("how", ["ro-tmpfs", "ro-bind"])
def test_read_only_state_root(area, tmp_path, how):
    root = tmp_path / "rostate"
    root.mkdir()
    (root / "state").mkdir()
    if how == "ro-tmpfs":
        setup = f"mount -t tmpfs -o ro,size=64k tmpfs {root}"
        sroot = f"{root}/state"
    else:
        setup = f"mount --bind {root} {root} && mount -o remount,bind,ro {root}"
        sroot = f"{root}/state"
    cid = area.cid("ro")
    p = _in_private_ns(area, setup, "--root", sroot, "create", "-b", area.bundle, cid)
    line = one_line_error(p)
    assert "Read-only file system" in line or "read-only" in line.lower(), line
    assert not area.wait_clean(cid)
    assert os.listdir(root / "state") == []


def test_full_state_root(area, tmp_path):
    """A one-page tmpfs: the first state.json fits, its atomic rewrite after
    the init is forked does not (ENOSPC) -- the failure is one line and the
    init, its cgroup and the state dir are gone."""
    root = tmp_path / "full"
    root.mkdir()
    cid = area.cid("full")
    p = _in_private_ns(area, f"mount -t tmpfs -o size=4k tmpfs {root}",
                       "--root", f"{root}/state", "create", "-b", area.bundle, cid)
    line = one_line_error(p)
    assert "No space left on device" in line, line
    assert not area.wait_clean(cid)


def test_full_state_root_big_annotations(area, tmp_path):
    """The first save already does not fit."""
    area.config["annotations"] = {f"k{i}": "v" * 100 for i in range(100)}
    area.save()
    root = tmp_path / "full2"
    root.mkdir()
    cid = area.cid("full2")
    p = _in_private_ns(area, f"mount -t tmpfs -o size=4k tmpfs {root}",
                       "--root", f"{root}/state", "create", "-b", area.bundle, cid)
    line = one_line_error(p)
    assert "No space left on device" in line, line
    assert not area.wait_clean(cid)


# SIGWINCH, SIGCHLD, SIGURG and SIGCONT are ignored by default: they only
# interrupt system calls (EINTR). SIGUSR1/SIGTERM would simply kill the
# runtime (crash safety covers that).
STORM = (signal.SIGWINCH, signal.SIGCHLD, signal.SIGURG, signal.SIGCONT)


@pytest.mark.parametrize("cmd", ["create", "run-d", "run"])
def test_signal_storm_during_create(area, cmd):
    area.set_args("true") if cmd == "run" else area.set_args("sleep", "60")
    sent = 0
    for i in range(10):
        cid = area.cid(f"storm{cmd}{i}")
        args = {"create": ("create",), "run-d": ("run", "-d"), "run": ("run",)}[cmd]
        # files, not pipes: a created container keeps the caller's stdio open
        errf = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(area.cmd(*args, "-b", area.bundle, cid),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errf, text=True, env=area.env())
        while proc.poll() is None:
            for s in STORM:
                try:
                    os.kill(proc.pid, s)
                    sent += 1
                except ProcessLookupError:
                    break
            time.sleep(0.0005)
        proc.wait(timeout=60)
        errf.seek(0)
        err = errf.read()
        errf.close()
        assert proc.returncode == 0, f"{cmd} {cid}: rc={proc.returncode} {err}"
        assert "Traceback" not in err and not err.strip(), err
        if cmd != "run":
            st = state(area, cid)
            assert st["status"] == ("created" if cmd == "create" else "running"), st
            assert area.run("delete", "--force", cid).returncode == 0
        assert not area.wait_clean(cid)
    print(f"signal storm ({cmd}): {sent} signals sent")
    assert sent > 100
