"""cgroups of real containers: limits read back from the cgroup files AND their
effect inside (OOM kill, fork limit, device denial, CPU quota, freezing), the
control commands (pause, resume, update, ps, events), cgroupsPath forms,
cgroup namespaces, clean removal, and bad input.

The cgroup of a container is found from /proc/<init>/cgroup (ground truth),
never from ocirun's state file. Key tests run with both drivers; the systemd
driver needs systemd as PID 1 (tools/vm/test-cgroupv2.sh runs them in a guest).
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time

import pytest

from ocitest import OCIRUN
from ocirun import cgroups

LAYOUT = cgroups.detect()
IS_V2 = LAYOUT.mode == "v2"
HAS_SYSTEMD = os.path.isdir("/run/systemd/system") and \
    os.path.exists("/run/dbus/system_bus_socket")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

needs_systemd = pytest.mark.skipif(
    not HAS_SYSTEMD, reason="systemd driver: needs systemd as PID 1 with a D-Bus system bus "
    "(this host has no /run/systemd/system)")
DRIVERS = [pytest.param("cgroupfs", id="cgroupfs"),
           pytest.param("systemd", id="systemd", marks=needs_systemd)]
MiB = 1 << 20
_n = itertools.count()


def uid(tag: str = "c") -> str:
    """Container ids unique on the host: other test runs share the cgroup tree."""
    return f"cg{tag}{os.getpid()}x{next(_n)}"


def gargs(driver: str) -> tuple:
    return ("--systemd-cgroup",) if driver == "systemd" else ()


# ---- reading cgroups from the host -------------------------------------------------------
def _mounts() -> list[str]:
    return [h.mountpoint for h in LAYOUT.hierarchies] + ([LAYOUT.unified] if LAYOUT.unified else [])


def cg_dirs(pid: int) -> dict[str, str]:
    """hierarchy key ('' = cgroup2) -> the directory of pid's cgroup there."""
    by_key = {h.key: h for h in LAYOUT.hierarchies}
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, key, path = line.rstrip("\n").split(":", 2)
            if key == "" and LAYOUT.unified:
                out[""] = LAYOUT.unified + path.rstrip("/")
            elif key in by_key:
                h = by_key[key]
                rel = path[len(h.root):] if h.root != "/" and path.startswith(h.root) else path
                out[key] = h.mountpoint + rel.rstrip("/")
    return out


def cg_dir(pid: int, controller: str) -> str:
    dirs = cg_dirs(pid)
    if IS_V2:
        return dirs[""]
    for key, d in dirs.items():
        if controller in key.split(","):
            return d
    raise AssertionError(f"no {controller} hierarchy for {pid}: {dirs}")


def cg_read(pid: int, controller: str, name: str) -> str:
    with open(os.path.join(cg_dir(pid, controller), name)) as f:
        return f.read().strip()


def mem_limit(pid: int) -> int:
    v = cg_read(pid, "memory", "memory.max" if IS_V2 else "memory.limit_in_bytes")
    return -1 if v == "max" or int(v) >= 1 << 62 else int(v)


def cpu_quota(pid: int) -> tuple[int, int]:
    if IS_V2:
        q, p = cg_read(pid, "cpu", "cpu.max").split()
        return (-1 if q == "max" else int(q)), int(p)
    return int(cg_read(pid, "cpu", "cpu.cfs_quota_us")), int(cg_read(pid, "cpu", "cpu.cfs_period_us"))


def cpu_usage_s(pid: int) -> float:
    if IS_V2:
        kv = dict(ln.split() for ln in cg_read(pid, "cpu", "cpu.stat").splitlines())
        return int(kv["usage_usec"]) / 1e6
    return int(cg_read(pid, "cpuacct", "cpuacct.usage")) / 1e9


def frozen(pid: int) -> bool:
    if IS_V2:
        return "frozen 1" in cg_read(pid, "freezer", "cgroup.events").splitlines()
    return cg_read(pid, "freezer", "freezer.state") == "FROZEN"


def under_all_mounts(rel: str) -> list[str]:
    """rel (absolute cgroup path) in every hierarchy where it exists."""
    return [m + rel for m in _mounts() if os.path.exists(m + rel)]


# ---- helpers -----------------------------------------------------------------------------
def wait_for(pred, timeout: float = 15.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def status(oci, cid: str) -> str:
    return oci.state(cid)["status"]


def read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def start_detached(oci, bundle, cid: str, driver: str = "cgroupfs") -> int:
    oci.ok("run", "-d", "--bundle", bundle.path, cid, global_args=gargs(driver))
    return oci.state(cid)["pid"]


# a shell loop that needs no fork per iteration: `read -t` on a fifo is its sleep
TICKER = ("mkfifo /tmp/f; exec 3<>/tmp/f; i=0; "
          "while true; do i=$((i+1)); echo $i > /tmp/cnt; read -t 0.05 x <&3; done")


def counter(bundle) -> int:
    s = read_file(os.path.join(bundle.rootfs, "tmp/cnt")).strip()
    return int(s) if s else 0


@pytest.fixture
def cgpath(oci):
    """Unique absolute cgroupsPath parents; removed after the containers are gone."""
    made: list[str] = []

    def new(prefix: str = "/ocirun-cgt") -> str:
        p = f"{prefix}-{os.getpid()}-{next(_n)}"
        made.append(p)
        return p
    yield new
    for cid in oci.ids():
        oci("delete", "--force", cid)
    own = cg_dirs(os.getpid())
    if IS_V2:
        own = {k: os.path.dirname(d) for k, d in own.items()}
    for p in made:
        for d in under_all_mounts(p) + [d + "/" + p for d in own.values()
                                        if os.path.isdir(d + "/" + p)]:
            for sub, _, _ in sorted(os.walk(d), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass


# ---- limits and their effect -------------------------------------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
def test_memory_limit_oom_kills_hog_and_events_reports_it(oci, bundle, driver):
    """A busybox awk doubling a string is OOM-killed at 32 MiB; `events` says oom."""
    cid = uid("m")
    bundle.linux["resources"]["memory"] = {"limit": 32 * MiB}
    bundle.sh("read -t 0.3 x <> /dev/null 2>/dev/null; "   # let `events` attach first
              "awk 'BEGIN{s=\"x\"; while(1) s = s s}'; echo hog=$? > /tmp/res; "
              "exec sleep 1000")
    oci.ok("create", "--bundle", bundle.path, cid, global_args=gargs(driver))
    pid = oci.state(cid)["pid"]
    assert mem_limit(pid) == 32 * MiB
    ev = subprocess.Popen([OCIRUN, "--root", oci.root, "events", "--interval", "200ms", cid],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # its first event (stats) comes after it read the OOM count it starts
        # from: only then may the hog run (a slow VM can take longer than
        # the container's own 0.3 s head start)
        assert json.loads(ev.stdout.readline())["type"] == "stats"
        oci.ok("start", cid)
        res = wait_for(lambda: read_file(os.path.join(bundle.rootfs, "tmp/res")), 30, "the hog")
        assert res.strip() == "hog=137"  # SIGKILL by the OOM killer
        events = []
        for line in ev.stdout:
            e = json.loads(line)
            events.append(e["type"])
            if e["type"] == "oom":
                assert e == {"type": "oom", "id": cid}
                break
        assert "oom" in events
        assert status(oci, cid) == "running"  # only the hog died
        data = json.loads(oci.ok("events", "--stats", cid))["data"]
        assert data["memory"]["usage"]["limit"] == 32 * MiB
        if not IS_V2:
            assert data["memory"]["usage"]["failcnt"] > 0
        # runc's keys only (its events.bats greps the log for "oom")
        assert "oom" not in json.dumps(data["memory"]).replace("disable_oom_killer", "")
    finally:
        ev.kill()
        ev.wait()


@pytest.mark.parametrize("driver", DRIVERS)
def test_user_namespace_container_gets_its_cgroup(oci, bundle, shifted_rootfs, driver):
    """A user namespace in the config (Docker's userns-remap, podman's
    --uidmap) does not make root's runtime rootless: with the systemd driver
    it still talks to the system's systemd (the user's bus was tried, and
    there is none), and the limits are set."""
    bundle.ns("pid", "mount", "user", "uts", "ipc", "network")
    bundle.linux["resources"] = {"memory": {"limit": 96 * MiB}}
    bundle.args("sleep", "1000")
    pid = start_detached(oci, bundle, uid("un"), driver)
    assert mem_limit(pid) == 96 * MiB
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")


@pytest.mark.parametrize("driver", DRIVERS)
def test_pids_limit_stops_fork_bomb(oci, bundle, driver):
    cid = uid("p")
    bundle.linux["resources"]["pids"] = {"limit": 12}
    # the bomb runs in a child shell, so the init survives and the count can be read
    bundle.sh("sh -c 'i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done' "
              "2> /tmp/err; echo bomb=$? > /tmp/res; exec sleep 1000")
    pid = start_detached(oci, bundle, cid, driver)
    wait_for(lambda: read_file(os.path.join(bundle.rootfs, "tmp/res")), 30, "the bomb")
    assert "can't fork" in read_file(os.path.join(bundle.rootfs, "tmp/err"))
    assert cg_read(pid, "pids", "pids.max") == "12"
    # at the failed fork: init + bomb shell + 10 sleeps = 12; the bomb shell has exited since
    pids = json.loads(oci.ok("ps", "--format", "json", cid))
    assert len(pids) == 11 == int(cg_read(pid, "pids", "pids.current"))
    assert pid in pids
    assert int(cg_read(pid, "pids", "pids.events").split()[1]) >= 1  # "max N": refused forks
    assert json.loads(oci.ok("events", "--stats", cid))["data"]["pids"] == \
        {"current": 11, "limit": 12}


@pytest.mark.parametrize("driver", DRIVERS)
def test_device_rules_deny_and_allow(oci, bundle, driver):
    """240:0 denied, 240:1 allowed (no driver behind either: ENXIO means 'allowed')."""
    cid = uid("d")
    bundle.linux["resources"]["devices"] = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 240, "minor": 1, "access": "rw"}]
    for kind in ("bounding", "effective", "permitted"):
        bundle.process["capabilities"][kind].append("CAP_MKNOD")
    bundle.sh("mknod /tmp/d0 c 240 0; mknod /tmp/d1 c 240 1; "
              "cat /tmp/d0 2>&1; cat /tmp/d1 2>&1; echo x > /dev/null && echo null-ok")
    r = oci.run(bundle, cid, global_args=gargs(driver))
    lines = r.out.splitlines()
    assert "'/tmp/d0': Operation not permitted" in lines[0], r
    assert "'/tmp/d1': No such device or address" in lines[1], r
    assert lines[2] == "null-ok"


def test_spec_cannot_deny_default_devices(oci, bundle):
    """As runc, the always-allowed devices (/dev/null ...) come after the spec's rules."""
    bundle.linux["resources"]["devices"] = [
        {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    bundle.sh("echo x > /dev/null && echo ok")
    assert oci.run(bundle, uid("n")).out == "ok\n"


@pytest.mark.parametrize("driver", DRIVERS)
def test_update_running_container(oci, bundle, driver):
    cid = uid("u")
    bundle.linux["resources"].update({"memory": {"limit": 64 * MiB}, "pids": {"limit": 50},
                                      "cpu": {"quota": 5000, "period": 100000}})
    bundle.sh("while true; do :; done")  # a spinner: its CPU use shows the quota
    pid = start_detached(oci, bundle, cid, driver)
    assert (mem_limit(pid), cpu_quota(pid)) == (64 * MiB, (5000, 100000))

    def used(seconds: float = 1.0) -> float:
        u0 = cpu_usage_s(pid)
        time.sleep(seconds)
        return cpu_usage_s(pid) - u0
    slow = used()
    assert slow < 0.2, slow
    oci.ok("update", "--memory", "96m", "--pids-limit", "30", "--cpu-quota", "50000",
           "--cpu-period", "100000", cid, global_args=gargs(driver))
    assert mem_limit(pid) == 96 * MiB
    assert cg_read(pid, "pids", "pids.max") == "30"
    assert cpu_quota(pid) == (50000, 100000)
    fast = used()
    assert fast > 0.25 and fast > 2 * slow, (slow, fast)
    # -r -: JSON on stdin; fields not given keep their values
    oci.ok("update", "-r", "-", cid, input=json.dumps(
        {"memory": {"limit": 128 * MiB}, "pids": {"limit": -1}}), global_args=gargs(driver))
    assert mem_limit(pid) == 128 * MiB
    assert cg_read(pid, "pids", "pids.max") == "max"
    assert cpu_quota(pid) == (50000, 100000)
    # the period alone: the quota stays (v2 has one file for both, and
    # systemd keeps a quota per second; runc's update.bats)
    oci.ok("update", "--cpu-period", "90000", cid, global_args=gargs(driver))
    assert cpu_quota(pid) == (50000, 90000)
    oci.ok("update", "--cpu-quota", "-1", cid, global_args=gargs(driver))
    assert cpu_quota(pid)[0] == -1
    # a file, and runc's memory suffixes
    rfile = os.path.join(bundle.path, "res.json")
    with open(rfile, "w") as f:
        json.dump({"memory": {"limit": 40 * MiB, "reservation": 20 * MiB}}, f)
    oci.ok("update", "--resources", rfile, cid, global_args=gargs(driver))
    assert mem_limit(pid) == 40 * MiB
    oci.ok("update", "--memory", "1g", cid)
    assert mem_limit(pid) == 1 << 30
    # shares (runc's conversion to cpu.weight on v2: 512 -> 20)
    oci.ok("update", "--cpu-share", "512", cid, global_args=gargs(driver))
    assert cg_read(pid, "cpu", "cpu.weight" if IS_V2 else "cpu.shares") == \
        ("20" if IS_V2 else "512")


def test_update_bad_input_changes_nothing(oci, bundle):
    cid = uid("b")
    bundle.linux["resources"].update({"memory": {"limit": 64 * MiB}, "pids": {"limit": 50}})
    bundle.args("sleep", "1000")
    pid = start_detached(oci, bundle, cid)
    # memory is written before pids: a bad pids value must not leave memory changed
    line = oci.fail("update", "-r", "-", cid, input=json.dumps(
        {"memory": {"limit": 100 * MiB}, "pids": {"limit": -8}}))
    assert "resources.pids.limit" in line and "config.json" not in line
    assert "--memory" in oci.fail("update", "--memory", "12x", cid)
    assert "--pids-limit" in oci.fail("update", "--memory", "100m", "--pids-limit", "-8", cid)
    assert "--cpuset-cpus" in oci.fail("update", "--memory", "100m", "--cpuset-cpus", "0-", cid)
    assert "--cpu-shares" in oci.fail("update", "--cpu-shares", "-3", cid)
    assert "invalid JSON" in oci.fail("update", "-r", "-", cid, input="{memory")
    assert "cannot read" in oci.fail("update", "-r", "/nonexistent.json", cid)
    assert oci.fail("update", "-r", "-", cid, input='{"cpu": 5}') == \
        "ocirun: update: resources.cpu: must be an object"
    assert (mem_limit(pid), cg_read(pid, "pids", "pids.max")) == (64 * MiB, "50")
    assert status(oci, cid) == "running"


# ---- pause / resume / kill / delete -----------------------------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
def test_pause_freezes_and_resume_thaws(oci, bundle, driver):
    cid = uid("z")
    bundle.sh(TICKER)
    pid = start_detached(oci, bundle, cid, driver)
    wait_for(lambda: counter(bundle) > 2, what="the ticker")
    oci.ok("pause", cid, global_args=gargs(driver))
    assert status(oci, cid) == "paused" and frozen(pid)
    time.sleep(0.15)
    c0 = counter(bundle)
    time.sleep(0.4)
    assert counter(bundle) == c0  # nothing runs
    assert "not running" in oci.fail("pause", cid)
    assert pid in json.loads(oci.ok("ps", "--format", "json", cid))
    oci.ok("resume", cid, global_args=gargs(driver))
    assert status(oci, cid) == "running" and not frozen(pid)
    wait_for(lambda: counter(bundle) > c0 + 2, what="the ticker after resume")
    assert "not paused" in oci.fail("resume", cid)


def test_pause_created_container(oci, bundle):
    """runc pauses a created container too; it shows paused and cannot start."""
    cid = uid("cz")
    bundle.args("true")
    oci.ok("create", "--bundle", bundle.path, cid)
    oci.ok("pause", cid)
    assert status(oci, cid) == "paused"
    assert "paused" in oci.fail("start", cid)
    oci.ok("resume", cid)
    assert status(oci, cid) == "created"
    oci.ok("start", cid)


def test_kill_all_and_delete_force_of_paused(oci, bundle):
    a, b = uid("ka"), uid("kb")
    bundle.sh("sleep 1000 & sleep 1000")
    start_detached(oci, bundle, a)
    start_detached(oci, bundle, b)
    for cid in (a, b):
        wait_for(lambda: len(json.loads(oci.ok("ps", "--format", "json", cid))) == 2)
        oci.ok("pause", cid)
    oci.ok("kill", "--all", a, "KILL")
    wait_for(lambda: status(oci, a) == "stopped", what="kill --all of a paused container")
    assert json.loads(oci.ok("ps", "--format", "json", a)) == []
    oci.ok("delete", a)
    pid_b = oci.state(b)["pid"]
    dirs = list(cg_dirs(pid_b).values())
    oci.ok("delete", "--force", b)
    assert oci.ids() == []
    assert [d for d in dirs if os.path.exists(d)] == []


def test_kill_sigkill_of_paused_container(oci, bundle):
    """runc (1.1): SIGKILL to a paused container's init thaws the cgroup so it dies
    (a frozen task never acts on a signal under cgroup v1); other signals stay
    pending until resume."""
    cid = uid("kk")
    bundle.sh("trap 'echo term > /tmp/term' TERM; " + TICKER)
    pid = start_detached(oci, bundle, cid)
    wait_for(lambda: counter(bundle) > 1)
    oci.ok("pause", cid)
    oci.ok("kill", cid, "TERM")
    time.sleep(0.3)
    assert status(oci, cid) == "paused"
    assert not os.path.exists(os.path.join(bundle.rootfs, "tmp/term"))
    oci.ok("kill", cid, "KILL")
    wait_for(lambda: status(oci, cid) == "stopped", 5, "SIGKILL of a paused container")
    assert not os.path.exists(f"/proc/{pid}/cmdline") or not read_file(f"/proc/{pid}/cmdline")


# ---- ps / events ---------------------------------------------------------------------------
def test_ps_json_and_table(oci, bundle):
    cid = uid("ps")
    bundle.sh("sleep 1001 & sleep 1002 & exec sleep 1003")
    pid = start_detached(oci, bundle, cid)
    pids = wait_for(lambda: (lambda p: p if len(p) == 3 else None)(
        json.loads(oci.ok("ps", "--format", "json", cid))))
    assert pid in pids and pids == sorted(pids)
    out = oci.ok("ps", cid, "-o", "pid,args").splitlines()
    assert out[0].split() == ["PID", "COMMAND"]
    assert sorted(int(ln.split()[0]) for ln in out[1:]) == pids
    assert sorted(ln.split()[-1] for ln in out[1:]) == ["1001", "1002", "1003"]
    assert "PID" in oci.ok("ps", cid).splitlines()[0]  # default: ps -ef
    assert "format" in oci.fail("ps", "--format", "xml", cid)
    assert "does not exist" in oci.fail("ps", "nosuch")


def test_events_stats_shape_and_errors(oci, bundle):
    cid = uid("ev")
    bundle.args("sleep", "1000")
    start_detached(oci, bundle, cid)
    out = oci.ok("events", "--stats", cid)
    assert out.count("\n") == 1
    ev = json.loads(out)
    assert ev["type"] == "stats" and ev["id"] == cid
    d = ev["data"]
    assert {"cpu", "memory", "pids", "blkio", "hugetlb"} <= set(d)
    assert d["cpu"]["usage"]["total"] > 0
    assert {"total", "percpu", "kernel", "user"} <= set(d["cpu"]["usage"])
    assert {"periods", "throttled_periods", "throttled_time"} <= set(d["cpu"]["throttling"])
    assert d["memory"]["usage"]["usage"] > 0 and "raw" in d["memory"]
    assert d["pids"]["current"] == 1
    # the stream: stats every interval
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "events", "--interval", "100ms", cid],
                         stdout=subprocess.PIPE, text=True)
    try:
        lines = [json.loads(p.stdout.readline()) for _ in range(3)]
        assert [e["type"] for e in lines] == ["stats"] * 3
    finally:
        p.kill()
        p.wait()
    assert "duration" in oci.fail("events", "--interval", "0s", cid)
    assert "duration" in oci.fail("events", "--interval", "5x", cid)
    oci.ok("kill", cid, "KILL")
    wait_for(lambda: status(oci, cid) == "stopped")
    assert "not running" in oci.fail("events", "--stats", cid)


def test_events_stream_ends_when_container_stops(oci, bundle):
    cid = uid("ee")
    bundle.args("sleep", "1000")
    start_detached(oci, bundle, cid)
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "events", "--interval", "50ms", cid],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(p.stdout.readline())["type"] == "stats"
        oci.ok("kill", cid, "KILL")
        # read on: a stream nobody reads blocks once its pipe is full (under
        # the emulated guest the kill alone can take seconds: 20 lines a second)
        p.communicate(timeout=60)
        assert p.returncode == 0
    finally:
        p.kill()
        p.wait()


# ---- stopped containers, bad input ----------------------------------------------------------
def test_commands_on_stopped_container(oci, bundle):
    cid = uid("s")
    bundle.args("true")
    oci.ok("run", "-d", "--bundle", bundle.path, cid)
    wait_for(lambda: status(oci, cid) == "stopped")
    assert "container not running" in oci.fail("pause", cid)
    assert "container not running" in oci.fail("update", "--memory", "10m", cid)
    assert "container not paused" in oci.fail("resume", cid)
    assert json.loads(oci.ok("ps", "--format", "json", cid)) == []
    for cmd in ("pause", "resume", "update", "ps", "events"):
        assert "does not exist" in oci.fail(cmd, "nosuch" + cid)
        assert "requires a container id" in oci.fail(cmd)


BAD_CREATE = [
    ({"cgroupsPath": "/ocirun-x/../../etc"}, "linux.cgroupsPath"),
    ({"cgroupsPath": "a/../../b"}, "linux.cgroupsPath"),
    ({"resources": {"memory": {"limit": -5}}}, "linux.resources.memory.limit"),
    ({"resources": {"pids": {"limit": -9}}}, "linux.resources.pids.limit"),
    ({"resources": {"cpu": {"cpus": "0-"}}}, "linux.resources.cpu.cpus"),
    ({"resources": {"cpu": {"mems": "x"}}}, "linux.resources.cpu.mems"),
    ({"resources": {"devices": [{"allow": False, "type": "q", "access": "r"}]}},
     "linux.resources.devices[0].type"),
]


@pytest.mark.parametrize("linux,jpath", BAD_CREATE, ids=[p for _, p in BAD_CREATE])
def test_bad_cgroup_config_fails_cleanly(oci, bundle, linux, jpath):
    cid = uid("x")
    own = cg_dirs(os.getpid())
    if IS_V2:
        own = {k: os.path.dirname(d) for k, d in own.items()}
    bundle.linux.update(linux)
    bundle.args("true")
    line = oci.fail("create", "--bundle", bundle.path, cid)
    assert jpath in line, line
    assert oci.ids() == []
    assert [d for d in own.values() if os.path.exists(os.path.join(d, cid))] == []
    assert under_all_mounts("/ocirun-x") == []


# ---- paths, namespaces, cleanup -------------------------------------------------------------
def test_cgroups_path_absolute_and_relative(oci, bundle, cgpath):
    bundle.args("sleep", "1000")
    a = cgpath()
    bundle.linux["cgroupsPath"] = a
    bundle.save()
    pid = start_detached(oci, bundle, uid("abs"))
    dirs = cg_dirs(pid)
    for key, d in dirs.items():
        assert d.endswith(a), (key, d)
    assert under_all_mounts(a)
    rel_parent = cgpath("ocirun-rel")
    bundle.linux["cgroupsPath"] = rel_parent + "/c"
    bundle.save()
    pid = start_detached(oci, bundle, uid("rel"))
    # below the runtime's own cgroup (pure v2: its parent, which has no processes)
    own = {k: os.path.dirname(d) if IS_V2 else d for k, d in cg_dirs(os.getpid()).items()}
    for key, d in cg_dirs(pid).items():
        assert d == own[key] + "/" + rel_parent + "/c", (key, d, own[key])
    # unset: <own cgroup>/<id>
    bundle.linux.pop("cgroupsPath")
    bundle.save()
    cid = uid("def")
    pid = start_detached(oci, bundle, cid)
    for key, d in cg_dirs(pid).items():
        assert d == own[key] + "/" + cid, (key, d)


def test_cgroup_namespace_sees_root_and_own_limits(oci, bundle):
    bundle.ns("pid", "mount", "ipc", "uts", "network", "cgroup")
    bundle.linux["resources"]["pids"] = {"limit": 37}
    pids_max = "/sys/fs/cgroup/pids.max" if IS_V2 else "/sys/fs/cgroup/pids/pids.max"
    bundle.sh(f"cat /proc/self/cgroup; echo max=$(cat {pids_max})")
    r = oci.run(bundle, uid("ns"))
    assert r.rc == 0, r
    lines = r.out.splitlines()
    cg = [ln for ln in lines if not ln.startswith("max=")]
    assert cg and all(ln.split(":", 2)[2] == "/" for ln in cg), r.out
    assert "max=37" in lines


@pytest.mark.parametrize("driver", DRIVERS)
def test_cgroup_mount_without_namespace_is_own_cgroup(oci, bundle, driver):
    """Without a cgroup namespace /sys/fs/cgroup binds the container's own
    directories (the init mounts them before it joins, from the paths the
    runtime names): its limit reads back, and its init is listed there."""
    bundle.linux["resources"]["pids"] = {"limit": 41}
    d = "/sys/fs/cgroup" if IS_V2 else "/sys/fs/cgroup/pids"
    bundle.sh(f"echo max=$(cat {d}/pids.max); grep -qx 1 {d}/cgroup.procs && echo init-in"
              "; for f in /sys/fs/cgroup/*/cgroup.procs; do [ -e $f ] || continue"  # (none on v2)
              "; grep -qx 1 $f || echo NOTIN $f; done")
    r = oci.run(bundle, uid("mnt"), global_args=gargs(driver))
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert "max=41" in lines, r.out
    assert "init-in" in lines, r.out
    assert not [ln for ln in lines if ln.startswith("NOTIN")], r.out


def test_create_delete_cycles_leave_no_cgroup(oci, bundle):
    bundle.args("sleep", "1000")
    seen: list[str] = []
    t0 = time.monotonic()
    n = int(os.environ.get("OCIRUN_CG_CYCLES", "100"))  # the TCG guest sets fewer
    for i in range(n):
        cid = uid("cy")
        oci.ok("create", "--bundle", bundle.path, cid)
        pid = oci.state(cid)["pid"]
        dirs = list(cg_dirs(pid).values())
        assert len(dirs) == len(_mounts()) or IS_V2
        seen += [d for d in dirs if d.endswith(cid)]
        oci.ok("delete", "--force", cid)
    assert len(seen) >= n
    assert [d for d in seen if os.path.exists(d)] == []
    assert oci.ids() == []
    print(f"{n} create/delete cycles: {time.monotonic() - t0:.1f}s")


def test_delete_of_stopped_container_kills_what_its_init_left(oci, bundle, tmp_path):
    """No pid namespace: the init exits, a background child lives on in the
    cgroup. `delete` (no --force: the container is stopped) kills it and
    removes every cgroup directory, as runc does."""
    bundle.linux["namespaces"] = [n for n in bundle.linux["namespaces"] if n["type"] != "pid"]
    out = tmp_path / "out"
    out.mkdir()
    bundle.config["mounts"].append({"destination": "/out", "type": "bind",
                                    "source": str(out), "options": ["rbind"]})
    bundle.sh("sleep 1000 & echo $! > /out/bg; exit 0")
    cid = uid("left")
    oci.ok("create", "--bundle", bundle.path, cid)
    init = oci.state(cid)["pid"]
    dirs = list(cg_dirs(init).values())
    oci.ok("start", cid)
    oci.wait_status(cid, "stopped")
    deadline = time.monotonic() + 10
    while not (out / "bg").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    bg = int((out / "bg").read_text())  # a host pid: no pid namespace
    assert os.path.exists(f"/proc/{bg}")
    oci.ok("delete", cid)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{bg}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{bg}"), "the leftover process survived delete"
    assert [d for d in dirs if os.path.exists(d)] == []


# ---- a cgroup that was there before --------------------------------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
def test_shared_cgroup_warns_and_delete_spares_the_other_container(oci, bundle, cgpath, driver):
    """runc 1.1: a second container in a cgroup that holds processes gets a
    warning (with systemd: the same scope); deleting it (its own pid
    namespace) kills nothing of the first."""
    path = cgpath() if driver == "cgroupfs" else f"system.slice:ocirun-t:{uid('shs')}"
    bundle.linux["cgroupsPath"] = path
    bundle.args("sleep", "1000")
    a, b = uid("sha"), uid("shb")
    pid_a = start_detached(oci, bundle, a, driver)
    r = oci("run", "-d", "--bundle", bundle.path, b, global_args=gargs(driver))
    assert r.rc == 0, r
    assert "container's cgroup is not empty: 1 process(es) found" in r.err
    pid_b = oci.state(b)["pid"]
    assert cg_dirs(pid_a) == cg_dirs(pid_b)
    oci.ok("delete", "--force", b, global_args=gargs(driver))
    assert status(oci, a) == "running" and os.path.exists(f"/proc/{pid_a}")
    dirs = list(cg_dirs(pid_a).values())
    oci.ok("delete", "--force", a, global_args=gargs(driver))
    wait_for(lambda: not [d for d in dirs if os.path.exists(d)], what="the cgroup gone")


@pytest.mark.parametrize("how", ["run-d", "create", "run"])
def test_frozen_cgroup_is_refused_and_left_as_found(oci, bundle, cgpath, how):
    """runc: "container's cgroup unexpectedly frozen" (the init would freeze
    as it joined, and the runtime wait for it for ever); nothing is left
    behind, and the frozen cgroup is not thawed, killed or removed."""
    path = cgpath()
    bundle.linux["cgroupsPath"] = path
    bundle.args("true")
    if IS_V2:
        d = LAYOUT.unified + path
        os.makedirs(d)
        with open(d + "/cgroup.freeze", "w") as f:
            f.write("1")
    else:
        d = [h.mountpoint for h in LAYOUT.hierarchies if "freezer" in h.key.split(",")][0] + path
        os.makedirs(d)
        with open(d + "/freezer.state", "w") as f:
            f.write("FROZEN")
    args = {"run-d": ("run", "-d"), "create": ("create",), "run": ("run",)}[how]
    line = oci.fail(*args, "--bundle", bundle.path, uid("fz"), timeout=30)
    assert "container's cgroup unexpectedly frozen" in line
    assert oci.ids() == []
    assert under_all_mounts(path) == [d]
    if IS_V2:
        assert read_file(d + "/cgroup.freeze").strip() == "1"
    else:
        assert read_file(d + "/freezer.state").strip() == "FROZEN"
    with open(d + ("/cgroup.freeze" if IS_V2 else "/freezer.state"), "w") as f:
        f.write("0" if IS_V2 else "THAWED")


def test_spec_adds_a_cgroup_namespace_on_pure_v2(tmp_path):
    """`runc spec` on a pure cgroup v2 host lists a cgroup namespace (so a
    container and what is exec'd in it see their cgroup as /); on v1 and
    hybrid hosts it does not. runc's cgroups.bats checks /proc/self/cgroup
    of an exec'd process reads 0::/."""
    subprocess.run([OCIRUN, "spec"], cwd=tmp_path, check=True)
    with open(tmp_path / "config.json") as f:
        types = [ns["type"] for ns in json.load(f)["linux"]["namespaces"]]
    assert types[:5] == ["pid", "network", "ipc", "uts", "mount"]
    assert types[5:] == (["cgroup"] if IS_V2 else [])


@pytest.mark.skipif(not IS_V2, reason="cgroup v2 only (a v1 cgroup namespace shows v1 lines)")
def test_exec_in_a_cgroup_namespace_sees_its_cgroup_as_root(oci, bundle):
    bundle.ns("pid", "mount", "ipc", "uts", "network", "cgroup")
    bundle.args("sleep", "100")
    cid = uid("cgns")
    start_detached(oci, bundle, cid)
    try:
        assert oci.ok("exec", cid, "cat", "/proc/self/cgroup").splitlines()[0] == "0::/"
    finally:
        oci("delete", "-f", cid)


@pytest.mark.skipif(not IS_V2, reason="cgroup v2: no internal processes once a domain "
                    "controller is on for a cgroup's children")
def test_exec_falls_back_to_the_inits_cgroup_when_the_container_cgroup_cannot_hold_it(
        oci, bundle):
    """runc's cgroups.bats: the container moves its init to /foo and turns
    memory on for the children of its cgroup, which then may hold no
    process: an exec'd process joins the init's cgroup instead of failing."""
    bundle.ns("pid", "mount", "ipc", "uts", "network", "cgroup")
    for m in bundle.config["mounts"]:
        if m["destination"] == "/sys/fs/cgroup":
            m["options"] = [o for o in m.get("options", []) if o != "ro"] + ["rw"]
    for m in bundle.config["mounts"]:
        if m["destination"] == "/sys":
            m["options"] = [o for o in m.get("options", []) if o != "ro"]
    bundle.args("sleep", "1000")
    cid = uid("cgfb")
    start_detached(oci, bundle, cid)
    try:
        assert oci.ok("exec", cid, "cat", "/proc/self/cgroup").splitlines()[0] == "0::/"
        oci.ok("exec", cid, "sh", "-euc", "mkdir /sys/fs/cgroup/foo; "
               "echo 1 > /sys/fs/cgroup/foo/cgroup.procs; echo $$ > /sys/fs/cgroup/foo/cgroup.procs; "
               "echo +memory > /sys/fs/cgroup/cgroup.subtree_control")
        assert oci.ok("exec", cid, "cat", "/proc/self/cgroup").splitlines()[0] == "0::/foo"
    finally:
        oci("delete", "-f", cid)


@needs_systemd
@pytest.mark.skipif(not IS_V2, reason="the systemd scope's directory is a cgroup2 path here")
def test_frozen_scope_directory_is_refused_with_the_systemd_driver(oci, bundle):
    """runc's cgroups.bats under RUNC_USE_SYSTEMD: the scope's directory made
    and frozen before create. ocirun used to join it (and freeze) and wait
    for ever; now create fails with runc's line and leaves it as found."""
    name = uid("sdfz")
    bundle.linux["cgroupsPath"] = f"system.slice:ocirun-t:{name}"
    bundle.args("true")
    d = f"{LAYOUT.unified}/system.slice/ocirun-t-{name}.scope"
    os.makedirs(d)
    try:
        with open(d + "/cgroup.freeze", "w") as f:
            f.write("1")
        line = oci.fail("run", "-d", "--bundle", bundle.path, name,
                        global_args=gargs("systemd"), timeout=60)
        assert "container's cgroup unexpectedly frozen" in line
        assert oci.ids() == []
        assert read_file(d + "/cgroup.freeze").strip() == "1"
    finally:
        with open(d + "/cgroup.freeze", "w") as f:
            f.write("0")
        os.rmdir(d)
