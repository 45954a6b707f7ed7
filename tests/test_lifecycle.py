"""runtime.md lifecycle: create / start / state / kill / delete / run / list,
every transition and every error, with real containers."""
import json
import os
import shutil
import subprocess
import time

import pytest

from ocitest import OCIRUN


def test_run_prints_from_inside_and_cleans_up(oci, bundle):
    bundle.sh("echo hello; echo pid=$$; hostname")
    r = oci.run(bundle, "t1")
    assert r.rc == 0, r
    assert r.out.split() == ["hello", "pid=1", "ocirun"]
    assert oci.ids() == []  # run deletes the container when it exits


def test_run_keep_leaves_the_stopped_container(oci, bundle):
    """run --keep (runc's): the exit status as usual, then the container
    stays, stopped, with its cgroup, until delete."""
    bundle.sh("exit 3")
    cid = f"k{os.getpid()}"
    assert oci("run", "--keep", "-b", bundle.path, cid).rc == 3
    st = oci.state(cid)
    assert st["status"] == "stopped" and st["pid"] == 0
    with open(os.path.join(oci.root, cid, "state.json")) as f:
        cg = json.load(f)["cgroup"]
    dirs = list(cg["paths"].values()) if cg.get("paths") else [cg["dir"]]
    assert dirs and all(os.path.isdir(d) for d in dirs), dirs
    oci.ok("delete", cid)
    assert oci.ids() == [] and not any(os.path.exists(d) for d in dirs)


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_run_returns_exit_status(oci, bundle, code):
    bundle.sh(f"exit {code}")
    assert oci.run(bundle, "t").rc == code


def test_run_killed_by_signal_returns_128_plus_n(oci, bundle, tmp_path):
    bundle.args("sleep", "60")
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "run", "-b", bundle.path, "sig"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        oci.wait_status("sig", "running")
        oci.ok("kill", "sig", "KILL")
        assert p.wait(timeout=20) == 137
    finally:
        p.kill()
        p.wait()


def test_create_start_state_kill_delete(oci, bundle, tmp_path):
    bundle.args("sleep", "60")
    pidfile = tmp_path / "init.pid"
    oci.ok("create", "--bundle", bundle.path, "--pid-file", str(pidfile), "c1")
    st = oci.state("c1")
    assert st["status"] == "created"
    assert st["id"] == "c1" and st["bundle"] == bundle.path
    assert st["rootfs"] == bundle.rootfs
    assert int(pidfile.read_text()) == st["pid"] > 0
    assert os.path.exists(f"/proc/{st['pid']}")
    assert st["created"].endswith("Z") and "ociVersion" in st and "owner" in st
    # the init waits: nothing of the user's process has run yet
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()
    assert "cannot start" not in oci.ok("start", "c1")
    st = oci.state("c1")
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    assert "running" in oci.fail("start", "c1")
    assert "not stopped" in oci.fail("delete", "c1")
    oci.ok("kill", "c1", "TERM")  # PID 1 without a handler: SIGTERM is ignored
    oci.ok("kill", "c1", "SIGKILL")
    oci.wait_status("c1", "stopped")
    assert oci.state("c1")["pid"] == 0
    assert "not running" in oci.fail("kill", "c1", "9")
    oci.ok("kill", "--all", "c1", "0")  # runc: --all of a stopped container is no error
    assert "stopped" in oci.fail("start", "c1")
    oci.ok("delete", "c1")
    assert "does not exist" in oci.fail("state", "c1")
    assert "does not exist" in oci.fail("delete", "c1")
    assert oci.ids() == []


def test_kill_created_container_and_signal_forms(oci, bundle):
    bundle.args("sleep", "60")
    oci.ok("create", "-b", bundle.path, "k")
    oci.ok("kill", "k", "15")  # the waiting init honours TERM like the process would
    oci.wait_status("k", "stopped")
    oci.ok("delete", "k")
    for sig in ("KILL", "SIGKILL", "9", "kill"):
        oci.ok("create", "-b", bundle.path, "k")
        oci.ok("kill", "k", sig)
        oci.wait_status("k", "stopped")
        oci.ok("delete", "k")
    oci.ok("create", "-b", bundle.path, "k")
    assert 'unknown signal "NOSIG"' in oci.fail("kill", "k", "NOSIG")
    assert "invalid signal number 65" in oci.fail("kill", "k", "65")
    oci.ok("kill", "k", "0")  # (as runc and crun: only checks the init is there)
    assert oci.state("k")["status"] == "created"


def test_delete_created_container_without_force(oci, bundle):
    bundle.args("sleep", "60")
    oci.ok("create", "-b", bundle.path, "d")
    pid = oci.state("d")["pid"]
    oci.ok("delete", "d")
    assert not os.path.exists(f"/proc/{pid}/cmdline") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert oci.ids() == []


def test_delete_force_running(oci, bundle):
    bundle.args("sleep", "60")
    oci.ok("run", "-d", "-b", bundle.path, "f")
    assert oci.state("f")["status"] == "running"
    oci.ok("delete", "--force", "f")
    assert oci.ids() == []


def test_run_detach_keeps_running(oci, bundle, tmp_path):
    bundle.args("sleep", "60")
    t = time.monotonic()
    oci.ok("run", "-d", "--pid-file", str(tmp_path / "p"), "-b", bundle.path, "det")
    assert time.monotonic() - t < 10
    st = oci.state("det")
    assert st["status"] == "running"
    assert int((tmp_path / "p").read_text()) == st["pid"]


def test_start_runs_process_after_start_only(oci, bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    bundle.config["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                                    "options": ["rbind"]})
    bundle.sh("echo started > /out/mark")
    bundle.save()
    oci.ok("create", "-b", bundle.path, "s")
    time.sleep(0.2)
    assert not (out / "mark").exists()
    oci.ok("start", "s")
    oci.wait_status("s", "stopped")
    assert (out / "mark").read_text() == "started\n"


def test_duplicate_id(oci, bundle):
    bundle.args("sleep", "60")
    oci.ok("create", "-b", bundle.path, "dup")
    line = oci.fail("create", "-b", bundle.path, "dup")
    assert "dup" in line and "exists" in line
    assert oci.state("dup")["status"] == "created"


@pytest.mark.parametrize("cid", ["", "a/b", "..", ".", "../x", "x" * 1025, "a b", "é"])
def test_bad_ids(oci, bundle, cid):
    line = oci.fail("create", "-b", bundle.path, cid)
    assert "container id" in line
    assert oci.ids() == []


def test_list_formats(oci, bundle):
    bundle.args("sleep", "60")
    assert oci.ok("list", "--format", "json").strip() == "null"
    oci.ok("create", "-b", bundle.path, "l1")
    oci.ok("run", "-d", "-b", bundle.path, "l2")
    table = oci.ok("list").splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = {ln.split()[0]: ln.split() for ln in table[1:]}
    assert rows["l1"][2] == "created" and rows["l2"][2] == "running"
    assert oci.ok("list", "-q").split() == ["l1", "l2"]
    out = oci.ok("list", "--format", "json")
    assert out.count("\n") == 1 and '"id":"l1"' in out  # one line, as runc's
    js = json.loads(out)
    assert {s["id"]: s["status"] for s in js} == {"l1": "created", "l2": "running"}
    # the owner by name, in both formats (runc's list; `state` keeps the uid)
    assert rows["l1"][5] == "root" and {s["owner"] for s in js} == {"root"}
    assert json.loads(oci.ok("state", "l1"))["owner"] == ""


@pytest.mark.parametrize("same_tick", [False, True], ids=["other-tick", "same-tick"])
def test_stopped_status_survives_pid_reuse(oci, bundle, same_tick):
    """A stale state.json whose pid now belongs to another process is
    'stopped', and neither kill nor delete touches that process. Start times
    have 10 ms resolution: one started in the same tick as the init is told
    apart by its mount namespace."""
    bundle.args("true")
    oci.ok("create", "-b", bundle.path, "r")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        path = os.path.join(oci.root, "r", "state.json")
        data = json.load(open(path))
        assert isinstance(data["mnt_ns"], int)
        data["pid"] = sleeper.pid  # a live process that is not our init
        if same_tick:
            with open(f"/proc/{sleeper.pid}/stat") as f:
                data["start_time"] = int(f.read().rsplit(")", 1)[1].split()[19])
        json.dump(data, open(path, "w"))
        assert oci.state("r")["status"] == "stopped"
        oci.fail("kill", "r", "KILL")
        oci.ok("delete", "r")
        assert sleeper.poll() is None  # never signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def test_runtime_killed_mid_create_is_not_running(oci, bundle):
    """A create whose runtime died leaves a container that is never 'running'."""
    bundle.args("sleep", "60")
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"]}]}
    bundle.save()
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "create", "-b", bundle.path, "mid"],
                         stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end and not os.path.exists(os.path.join(oci.root, "mid")):
        time.sleep(0.01)
    time.sleep(0.3)
    assert oci.state("mid")["status"] == "creating"
    p.kill()
    p.wait()
    time.sleep(0.2)
    assert oci.state("mid")["status"] == "stopped"
    oci.ok("delete", "--force", "mid")
    assert oci.ids() == []


def test_library_api(tmp_path, bundle):
    import ocirun
    root = str(tmp_path / "api")
    bundle.args("sleep", "60")
    c = ocirun.create("api1", bundle.path, root=root)
    try:
        assert ocirun.state("api1", root=root)["status"] == "created"
        ocirun.start("api1", root=root)
        assert ocirun.state("api1", root=root)["status"] == "running"
        assert [s["id"] for s in ocirun.list_containers(root)] == ["api1"]
        with pytest.raises(ocirun.StateError):
            ocirun.delete("api1", root=root)
    finally:
        ocirun.delete("api1", root=root, force=True)
    assert c.id == "api1"
    bundle.sh("exit 7")
    assert ocirun.run("api2", bundle.path, root=root) == 7
    with pytest.raises(ocirun.ContainerNotFound):
        ocirun.state("api2", root=root)


def test_kill_and_delete_regex_match_as_crun(oci, bundle):
    """crun's --regex: an unanchored POSIX-style match; ^...$ for whole ids."""
    bundle.args("sleep", "100")
    for cid in ("rxa1", "rxa2", "rxb1"):
        oci.ok("create", "-b", bundle.path, cid)
    oci.ok("delete", "--force", "--regex", "^rxa1$")
    assert oci.ids() == ["rxa2", "rxb1"]
    oci.ok("kill", "--regex", "xb", "KILL")
    oci.wait_status("rxb1", "stopped")
    assert oci.state("rxa2")["status"] == "created"
    oci.ok("delete", "--force", "--regex", "rx")  # both, unanchored
    assert oci.ids() == []


def test_start_returns_once_released_and_exec_errors_reach_stderr(oci, bundle, tmp_path):
    """As runc and crun: `start` returns once the init has read the go; an
    execve that fails after that is reported on the process's stderr and
    the container stops (with startContainer/poststart hooks, `start`
    waits for the execve and reports it: see test_hooks)."""
    bad = os.path.join(bundle.rootfs, "notabinary")
    with open(bad, "wb") as f:
        f.write(b"\x00\x01\x02 not an executable format\n")
    os.chmod(bad, 0o755)
    bundle.args("/notabinary")
    err = tmp_path / "err"
    with open(err, "w") as f:
        r = subprocess.run([OCIRUN, "--root", oci.root, "create", "-b", bundle.path, "nx"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                           timeout=60)
    assert r.returncode == 0, err.read_text()
    oci.ok("start", "nx")
    oci.wait_status("nx", "stopped")
    assert "exec format error" in err.read_text().lower(), err.read_text()
    oci.ok("delete", "nx")


@pytest.mark.parametrize("content", [
    "[]", '{"id": "d1", "pid": "x"}', '{"id": "d1", "pid": -5, "bundle": 3}',
    '{"id": "d1", "pid": 999999, "config": 5, "cgroup": 7}', '{"id": "d1", "pid": true}',
    '{"id": "d1", "pid": 999999, "cgroup": {"version": "v2"}}'])
def test_a_damaged_state_file_is_one_line_never_an_internal_error(oci, content):
    """A state.json ocirun cannot have written (damaged, or written by hand):
    every command says so in one line or takes it for a create that never
    finished; delete -f removes it when its cgroup record is not damaged."""
    d = os.path.join(oci.root, "d1")
    os.makedirs(d)
    with open(os.path.join(d, "state.json"), "w") as f:
        f.write(content)
    for cmd in (["state", "d1"], ["kill", "d1", "0"], ["ps", "d1"], ["pause", "d1"],
                ["exec", "d1", "true"], ["start", "d1"], ["update", "--memory", "100m", "d1"],
                ["events", "--stats", "d1"], ["list"], ["delete", "d1"], ["delete", "-f", "d1"]):
        r = oci(*cmd)
        assert "internal error" not in r.err and "Traceback" not in r.err, (cmd, r)
        if r.rc:
            assert len(r.err.strip().splitlines()) == 1, (cmd, r)
    if '"cgroup": {' in content:
        assert "state.json is damaged" in oci.fail("delete", "-f", "d1")
        shutil.rmtree(d)
    assert not os.path.exists(d)
