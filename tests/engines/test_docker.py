"""Docker (Debian's docker.io 20.10: dockerd, its own containerd and the
runc v2 shim), driven with the docker CLI, once with ocirun and once with
runc, each registered in the private dockerd as `docker-<runtime>`.

Docker turns parts of the runtime's behaviour into user-visible results
on its own: the exit code of a failed start (126/127) comes from the
words of the runtime's error, OOMKilled from the memory cgroup the shim
finds, `docker top` from the runtime's `ps`, `docker commit` pauses with
the runtime's `pause`. The `docker` fixture fails the test if anything of
its containers is left.
"""
from __future__ import annotations

import os
import time

import pytest

import enginekit as ek

pytestmark = pytest.mark.engines
IMG = ek.IMAGE


def _name(docker, what: str) -> str:
    return f"od-{what}-{docker.runtime}"


def _wait_for(check, timeout: float = 20.0):
    end = time.monotonic() + timeout * ek.TIMEOUT_SCALE
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.1)


def test_run_output_and_exit_code(docker):
    r = docker.run("--rm", IMG, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.rc == 7, str(r)
    assert r.out == "out\n", str(r)
    assert "err" in r.err, str(r)
    calls = docker.calls()
    assert docker.subcommands()[:2] == ["create", "start"], calls
    glob = calls[0][2]
    assert glob[:2] == ["--root", docker.engine.runtime_root(docker.runtime)], glob
    assert "--log-format" in glob, glob


@pytest.mark.parametrize("args,rc,words", [
    (["nosuchcmd"], 127, "executable file not found"),
    (["/nonexistent/bin"], 127, "no such file or directory"),
    (["/etc/hostname"], 126, "permission denied"),
], ids=["not-in-path", "no-such-file", "not-executable"])
def test_failed_start_exit_code(docker, args, rc, words):
    # dockerd picks 127/126 by the words of the runtime's error
    r = docker.run("--rm", IMG, *args)
    assert r.rc == rc, str(r)
    assert words in r.err.lower(), str(r)


def test_stdin(docker):
    r = docker.run("--rm", "-i", IMG, "sh", "-c", "cat; echo done", input="line1\nline2\n")
    assert r.rc == 0, str(r)
    assert r.out == "line1\nline2\ndone\n", str(r)


def test_tty(docker):
    r = docker.run("--rm", "-t", IMG, "sh", "-c", "tty; stty size", tty=True)
    assert r.rc == 0, str(r)
    assert "/dev/pts/0" in r.out, str(r)


def test_detached_exec_stop_logs(docker):
    name = _name(docker, "d")
    docker.detached(name, IMG, "sh", "-c", 'trap "echo term; exit 7" TERM; echo up; while :; do sleep 0.1; done')
    assert _wait_for(lambda: docker.inspect(name, "{{.State.Running}}") == "true")
    r = docker("exec", name, "sh", "-c", "echo exec-ok; exit 5")
    assert (r.rc, r.out) == (5, "exec-ok\n"), str(r)
    r = docker("exec", "-u", "1000:1000", "-w", "/tmp", "-e", "X=1", name,
               "sh", "-c", "id -u; pwd; echo $X")
    assert (r.rc, r.out) == (0, "1000\n/tmp\n1\n"), str(r)
    r = docker("exec", "-t", name, "tty", tty=True)
    assert r.rc == 0 and "/dev/pts/" in r.out, str(r)
    r = docker("exec", name, "nosuchcmd")
    # (docker exec prints the runtime's error on stdout, and exits 126)
    assert r.rc == 126 and "executable file not found" in r.out + r.err, str(r)
    docker.ok("stop", "-t", "20", name)
    assert docker.inspect(name, "{{.State.ExitCode}}") == "7"
    assert docker.ok("logs", name) == "up\nterm\n"
    assert {"create", "start", "exec", "kill", "delete"} <= set(docker.subcommands())


def test_kill_wait_and_start_again(docker):
    name = _name(docker, "k")
    docker.detached(name, IMG, "sleep", "1000")
    docker.ok("kill", "-s", "KILL", name)
    assert docker.ok("wait", name).strip() == "137"
    docker.ok("start", name)
    assert docker.ok("exec", name, "echo", "again") == "again\n"
    docker.ok("rm", "-f", name)


def test_pause_unpause_and_commit(docker):
    name = _name(docker, "p")
    docker.detached(name, IMG, "sleep", "1000")
    pid = int(docker.inspect(name, "{{.State.Pid}}"))
    docker.ok("pause", name)
    assert docker.inspect(name, "{{.State.Status}}") == "paused"
    assert ek.freezer_state(pid) == "FROZEN"
    docker.ok("unpause", name)
    assert docker.inspect(name, "{{.State.Status}}") == "running"
    assert ek.freezer_state(pid) == "THAWED"
    # commit pauses the container while it copies the layer
    image = f"localhost/od-commit-{docker.runtime}:latest"
    docker.ok("exec", name, "sh", "-c", "echo kept > /kept")
    offset = len(docker.calls())
    docker.ok("commit", name, image)
    try:
        assert [s for s in docker.subcommands()[offset:] if s in ("pause", "resume")] == \
            ["pause", "resume"], docker.calls()
        assert ek.freezer_state(pid) == "THAWED"
        r = docker.run("--rm", image, "cat", "/kept")
        assert r.out == "kept\n", str(r)
    finally:
        docker("rmi", "-f", image)


def test_update_resources(docker):
    name = _name(docker, "u")
    docker.detached(name, "--memory", "64m", IMG, "sleep", "1000")
    pid = int(docker.inspect(name, "{{.State.Pid}}"))
    mem = ek.MEMORY_LIMIT_FILE
    docker.ok("update", "--memory", "100m", "--memory-swap", "200m", "--cpus", "1.5",
              "--pids-limit", "50", name)
    with open(f"{ek.cgroup_of(pid, 'memory')}/{mem}") as f:
        assert f.read().strip() == str(100 << 20)
    with open(f"{ek.cgroup_of(pid, 'pids')}/pids.max") as f:
        assert f.read().strip() == "50"
    quota = "cpu.max" if ek.CGROUP2 else "cpu.cfs_quota_us"
    with open(f"{ek.cgroup_of(pid, 'cpu')}/{quota}") as f:
        assert f.read().split()[0] == "150000"
    # the container sees its own limits
    out = docker.ok("exec", name, "cat", ek.in_container_cgroup_file("memory", mem))
    assert out.strip() == str(100 << 20)
    assert "update" in docker.subcommands()


def test_resources_and_security_options(docker):
    r = docker.run(
        "--rm", "--memory", "64m", "--pids-limit", "33", "--cap-drop", "ALL",
        "--cap-add", "NET_ADMIN", "--security-opt", "no-new-privileges", "--read-only",
        "--user", "1000:1000", "--group-add", "123", "--ulimit", "nofile=1234:1234",
        "--tmpfs", "/scratch:size=1m", "--sysctl", "net.ipv4.ip_forward=1", "--network", "none",
        "--hostname", "h1", "--shm-size", "1m", "-w", "/tmp", "-e", "FOO=bar", IMG, "sh", "-c",
        "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id; ulimit -n;"
        " touch /x 2>/dev/null || echo ro; touch /scratch/x && echo tmpfs-rw;"
        " cat /proc/sys/net/ipv4/ip_forward; hostname; pwd; echo $FOO;"
        " df -k /dev/shm | tail -1 | tr -s ' ' | cut -d' ' -f2; ip -o link | cut -d: -f2")
    assert r.rc == 0, str(r)
    assert r.out.split("\n") == [
        "CapEff:\t0000000000000000", "CapBnd:\t0000000000001000", "NoNewPrivs:\t1",
        "Seccomp:\t2", "uid=1000 gid=1000 groups=123,1000", "1234", "ro", "tmpfs-rw", "1", "h1", "/tmp", "bar",
        "1024", " lo", ""], str(r)


def test_default_hardening(docker):
    # docker's default profile, capabilities, masked and read-only paths
    r = docker.run("--rm", IMG, "sh", "-c",
                   "grep -E '^(CapBnd|Seccomp):' /proc/self/status;"
                   " stat -c '%t,%T' /proc/kcore 2>/dev/null || echo no-kcore;"
                   " ls /proc/acpi | wc -l; grep -c ' /proc/sys ro,' /proc/self/mountinfo;"
                   " ls /dev | tr '\\n' ' '")
    assert r.rc == 0, str(r)
    lines = r.out.split("\n")
    assert lines[:2] == ["CapBnd:\t00000000a80425fb", "Seccomp:\t2"], str(r)
    assert lines[2] in ("1,3", "no-kcore"), str(r)  # /dev/null over it
    assert lines[3:5] == ["0", "1"], str(r)
    devs = set(lines[5].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
            "mqueue", "fd", "stdin", "stdout", "stderr"} <= devs, str(r)


def _apparmor_loaded() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y" and os.path.exists("/sbin/apparmor_parser")
    except OSError:
        return False


@pytest.mark.skipif(not _apparmor_loaded(), reason="AppArmor is not enabled on this kernel "
                    "(the cgroup v2 guest of `make test-engines-v2` has it)")
def test_apparmor_profile(docker):
    # where AppArmor is on, dockerd loads its docker-default profile and
    # names it in process.apparmorProfile: the process must run confined
    r = docker.run("--rm", IMG, "cat", "/proc/self/attr/current")
    assert r.rc == 0, str(r)
    assert r.out.strip() == "docker-default (enforce)", str(r)
    r = docker.run("--rm", "--security-opt", "apparmor=unconfined", IMG,
                   "cat", "/proc/self/attr/current")
    assert r.out.strip() == "unconfined", str(r)
    # what the profile denies (a write under /proc/sys/kernel) is denied
    r = docker.run("--rm", "--privileged", "--security-opt", "apparmor=docker-default", IMG,
                   "sh", "-c", "echo x > /proc/sys/kernel/hostname || echo denied")
    assert "denied" in r.out, str(r)


def test_init_process(docker):
    r = docker.run("--rm", "--init", IMG, "ps", "-o", "pid,comm")
    assert r.rc == 0, str(r)
    assert r.out.split("\n")[1].split() == ["1", "docker-init"], str(r)


def test_oom_killed(docker):
    name = _name(docker, "oom")
    r = docker.run("--name", name, "--memory", "8m", "--memory-swap", "8m", IMG, "sh", "-c",
                   "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}")
    assert r.rc == 137, str(r)
    assert docker.inspect(name, "{{.State.OOMKilled}}") == "true"
    docker.ok("rm", name)


def test_restart_on_failure(docker):
    name = _name(docker, "r")
    docker.detached(name, "--restart", "on-failure:2", IMG, "sh", "-c", "exit 3")
    assert _wait_for(lambda: docker.inspect(
        name, "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}") == "2 exited 3")
    docker.ok("rm", name)
    assert docker.subcommands().count("create") == 3, docker.calls()


def test_healthcheck(docker):
    # each probe is an `exec` through the runtime
    name = _name(docker, "h")
    docker.detached(name, "--health-cmd", "test -d /proc/1", "--health-interval", "1s",
                    IMG, "sleep", "1000")
    assert _wait_for(lambda: docker.inspect(name, "{{.State.Health.Status}}") == "healthy")
    docker.ok("rm", "-f", name)


def test_top(docker):
    name = _name(docker, "t")
    docker.detached(name, IMG, "sleep", "1000")
    out = docker.ok("top", name)
    assert "sleep 1000" in out, out
    assert "ps" in docker.subcommands(), docker.calls()  # the shim's Pids
    docker.ok("rm", "-f", name)


def test_userns_remap(docker_remap):
    """dockerd's userns-remap: every container in a user namespace mapped to
    the remap user's subordinate ids, with Docker's oomScoreAdj (a process
    may not write its own in there: the runtime writes it from outside)."""
    dk = docker_remap
    user = dk.engine.remap_user
    r = dk.run("--rm", "--oom-score-adj", "300", IMG, "sh", "-c",
               "cat /proc/self/uid_map /proc/self/oom_score_adj; id -u; touch /x && echo rw;"
               " stat -c %t,%T /dev/null")
    assert r.rc == 0, str(r)
    lines = r.out.split("\n")
    assert lines[0].split() == ["0", str(user.sub_start), str(user.sub_count)], str(r)
    assert lines[1:] == ["300", "0", "rw", "1,3", ""], str(r)
    name = _name(dk, "remap")
    dk.detached(name, IMG, "sleep", "1000")
    r = dk("exec", name, "sh", "-c", "cat /proc/self/uid_map; echo $$")
    assert r.rc == 0 and r.out.split()[:3] == ["0", str(user.sub_start), "65536"], str(r)
    assert int(r.out.split()[3]) > 1, str(r)
    dk.ok("stop", "-t", "1", name)
    dk.ok("rm", name)
