"""podman 4.x through conmon, once with ocirun and once with runc.

Each test names the runtime calls it makes (docs/engines.md lists them all);
the `podman` fixture fails the test if anything of its containers is left.
"""
from __future__ import annotations

import os
import re
import time

import pytest

import enginekit as ek

pytestmark = pytest.mark.engines
IMG = ek.IMAGE


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_run_rm_output_and_exit_code(podman):
    # conmon: create; podman: start, delete --force
    r = podman("run", "--rm", IMG, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.rc == 7, str(r)
    assert r.out == "out\n", str(r)
    assert "err" in r.err, str(r)
    subs = podman.subcommands()
    assert subs[:2] == ["create", "start"], podman.calls()
    create = next(argv for _c, _r, argv in podman.calls() if ek.subcommand(argv)[0] == "create")
    assert "--log-format=json" in create, create  # runtime_supports_json lists it


def test_run_rm_success(podman):
    r = podman("run", "--rm", IMG, "true")
    assert r.rc == 0, str(r)
    assert r.err == "", str(r)


def test_short_lived_processes(podman):
    """`start` of a process that exits at once: conmon reaps it right away,
    so a runtime that looks at the pid after releasing it finds nothing.
    runc's start succeeds; 10 runs make a race visible."""
    bad = []
    for i in range(10):
        r = podman("run", "--rm", IMG, "true")
        if r.rc != 0:
            bad.append(r)
    assert not bad, f"{len(bad)} of 10 failed; first: {bad[0]}"


def test_run_detached_exec_stop_rm(podman):
    cid = podman.ok("run", "-d", "--name", f"d-{podman.runtime}", IMG, "sleep", "1000").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), cid
    st = podman.ok("inspect", "-f", "{{.State.Status}} {{.State.Pid}}", cid).split()
    assert st[0] == "running" and int(st[1]) > 0, st
    # conmon: exec --detach --pid-file --process
    assert podman.ok("exec", cid, "sh", "-c", "echo exec-ok; id -u") == "exec-ok\n0\n"
    r = podman("exec", cid, "sh", "-c", "exit 5")
    assert r.rc == 5, str(r)
    # podman: kill ID 15, then kill ID 9 after the timeout (sleep as pid 1 ignores TERM)
    t = time.monotonic()
    podman.ok("stop", "-t", "1", cid)
    assert time.monotonic() - t < 15
    assert podman.ok("inspect", "-f", "{{.State.Status}}", cid).strip() == "exited"
    podman.ok("rm", cid)
    assert "exec" in podman.subcommands()
    kills = [ek.subcommand(a)[1] for _c, _r, a in podman.calls() if ek.subcommand(a)[0] == "kill"]
    assert [cid, "15"] in kills, kills


def test_exec_missing_binary(podman):
    cid = podman.ok("run", "-d", IMG, "sleep", "1000").strip()
    r = podman("exec", cid, "nosuchbinary")
    assert r.rc == 127, str(r)
    assert "nosuchbinary" in r.err, str(r)
    assert "Traceback" not in r.err, str(r)
    # the container is unharmed
    assert podman.ok("exec", cid, "echo", "still") == "still\n"
    podman.ok("rm", "-f", "-t", "0", cid)


def test_run_tty(podman):
    # conmon: create --console-socket; the container's stdout is the pty
    r = podman("run", "--rm", "-t", IMG, "sh", "-c", "tty; stty size; echo done")
    assert r.rc == 0, str(r)
    out = r.out.replace("\r", "").splitlines()
    assert out[0].startswith("/dev/pts/"), str(r)
    assert out[-1] == "done", str(r)
    create = next(a for _c, _r, a in podman.calls() if ek.subcommand(a)[0] == "create")
    assert "--console-socket" in create, create


def test_exec_tty(podman):
    cid = podman.ok("run", "-d", IMG, "sleep", "1000").strip()
    # conmon: exec --detach --tty --console-socket
    r = podman("exec", "-t", cid, "tty")
    assert r.rc == 0, str(r)
    assert r.out.replace("\r", "").strip().startswith("/dev/pts/"), str(r)
    podman.ok("rm", "-f", "-t", "0", cid)


def test_memory_limit(podman):
    # the smallest limit podman accepts (6 MiB); read it from inside the container
    r = podman("run", "--rm", "--memory", "6m", IMG, "cat",
               ek.in_container_cgroup_file("memory", ek.MEMORY_LIMIT_FILE))
    assert r.rc == 0, str(r)
    assert r.out.strip() == str(6 * 1024 * 1024), str(r)


def test_memory_limit_applied_on_host(podman):
    cid = podman.ok("run", "-d", "--memory", "8m", IMG, "sleep", "1000").strip()
    pid = podman.ok("inspect", "-f", "{{.State.Pid}}", cid).strip()
    path = ek.cgroup_of(int(pid), "memory")
    with open(f"{path}/{ek.MEMORY_LIMIT_FILE}") as f:
        assert f.read().strip() == str(8 * 1024 * 1024)
    assert cid in path, path
    podman.ok("rm", "-f", "-t", "0", cid)


def test_pids_limit(podman):
    r = podman("run", "--rm", "--pids-limit", "10", IMG, "cat",
               ek.in_container_cgroup_file("pids", "pids.max"))
    assert r.rc == 0, str(r)
    assert r.out.strip() == "10", str(r)
    # the limit holds: 20 background sleeps cannot all start
    r = podman("run", "--rm", "--pids-limit", "10", IMG, "sh", "-c",
               "for i in $(seq 20); do sleep 5 & done; wait")
    assert r.rc != 0, str(r)
    assert "can't fork" in r.err, str(r)


def test_cap_drop(podman):
    r = podman("run", "--rm", "--cap-drop", "chown", IMG, "sh", "-c",
               "grep CapEff /proc/self/status; chown 1 /tmp && echo chowned || echo denied")
    assert r.rc == 0, str(r)
    capeff = int(r.out.split()[1], 16)
    assert not capeff & (1 << 0), r  # CAP_CHOWN is bit 0
    assert _lines(r.out)[-1] == "denied", str(r)
    r = podman("run", "--rm", "--cap-drop", "all", IMG, "grep", "CapEff", "/proc/self/status")
    assert r.rc == 0, str(r)
    assert int(r.out.split()[1], 16) == 0, str(r)


def test_read_only(podman):
    r = podman("run", "--rm", "--read-only", IMG, "sh", "-c",
               "touch /etc/x 2>/dev/null && echo wrote || echo ro; touch /tmp/y && echo tmp-ok")
    assert r.rc == 0, str(r)
    assert _lines(r.out) == ["ro", "tmp-ok"], str(r)


def test_tmpfs_copyup(podman):
    # podman's --tmpfs is tmpcopyup: /etc's content copied in, owners and
    # modes kept; a path the image lacks gets tmpfs's own 1777, as runc
    r = podman("run", "--rm", "--tmpfs", "/etc", "--tmpfs", "/scratch", IMG, "sh", "-c",
               "head -1 /etc/passwd; stat -c '%a %u' /etc/passwd /scratch")
    assert r.rc == 0, str(r)
    assert _lines(r.out) == ["root:x:0:0:root:/root:/bin/sh", "644 0", "1777 0"], str(r)


def test_uidmap(podman):
    # a user namespace of the container's own; with podman's systemd cgroup
    # manager (the guest's) that must still be the system's systemd
    r = podman("run", "--rm", "--uidmap", "0:300000:65536", "--gidmap", "0:300000:65536",
               "--memory", "64m", IMG, "sh", "-c", "cat /proc/self/uid_map; touch /x && echo rw")
    assert r.rc == 0, str(r)
    assert _lines(r.out)[0].split() == ["0", "300000", "65536"], str(r)
    assert _lines(r.out)[1] == "rw", str(r)


def test_user(podman):
    r = podman("run", "--rm", "--user", "1:1", IMG, "sh", "-c", "id -u; id -g")
    assert r.rc == 0, str(r)
    assert _lines(r.out) == ["1", "1"], str(r)
    r = podman("run", "--rm", "--user", "nobody", IMG, "id", "-u")
    assert r.rc == 0, str(r)
    assert r.out.strip() == "65534", str(r)


def test_ps_top(podman):
    cid = podman.ok("run", "-d", "--name", f"pst-{podman.runtime}", IMG, "sleep", "1000").strip()
    out = podman.ok("ps", "--no-trunc", "--format", "{{.ID}} {{.Status}}")
    assert any(ln.startswith(cid + " Up") for ln in out.splitlines()), out
    top = podman.ok("top", cid)
    assert "sleep 1000" in top, top
    podman.ok("rm", "-f", "-t", "0", cid)


def test_kill(podman):
    cid = podman.ok("run", "-d", IMG, "sh", "-c",
                    "trap 'exit 42' USR1; while :; do sleep 0.1; done").strip()
    time.sleep(0.3)
    podman.ok("kill", "-s", "USR1", cid)
    assert podman.ok("wait", cid).strip() == "42"
    kills = [ek.subcommand(a)[1] for _c, _r, a in podman.calls() if ek.subcommand(a)[0] == "kill"]
    assert [cid, "10"] in kills, kills
    podman.ok("rm", cid)


def test_pause_unpause(podman):
    cid = podman.ok("run", "-d", IMG, "sleep", "1000").strip()
    podman.ok("pause", cid)
    assert podman.ok("inspect", "-f", "{{.State.Status}}", cid).strip() == "paused"
    pid = podman.ok("inspect", "-f", "{{.State.Pid}}", cid).strip()
    assert ek.freezer_state(int(pid)) == "FROZEN"
    podman.ok("unpause", cid)
    assert podman.ok("inspect", "-f", "{{.State.Status}}", cid).strip() == "running"
    assert ek.freezer_state(int(pid)) == "THAWED"
    assert podman.ok("exec", cid, "echo", "alive") == "alive\n"
    subs = podman.subcommands()
    assert "pause" in subs and "resume" in subs, subs
    podman.ok("rm", "-f", "-t", "0", cid)


def test_stats_no_stream(podman):
    cid = podman.ok("run", "-d", "--memory", "32m", IMG, "sleep", "1000").strip()
    out = podman.ok("stats", "--no-stream", "--format", "{{.ID}} {{.MemUsage}} {{.PIDs}}", cid)
    f = out.split()
    assert cid.startswith(f[0]), out
    assert f[-1] == "1", out
    assert "33.55MB" in out or "32MiB" in out, out
    podman.ok("rm", "-f", "-t", "0", cid)


def test_update_memory(podman):
    cid = podman.ok("run", "-d", "--memory", "32m", IMG, "sleep", "1000").strip()
    # podman: update --resources=FILE ID
    podman.ok("update", "--memory", "64m", cid)
    assert podman.ok("exec", cid, "cat", ek.in_container_cgroup_file(
        "memory", ek.MEMORY_LIMIT_FILE)).strip() == str(64 * 1024 * 1024)
    assert "update" in podman.subcommands()
    podman.ok("rm", "-f", "-t", "0", cid)


def test_info_runtime_version(podman):
    # podman: RT --version (shown by podman info)
    out = podman.ok("info", "--format", "{{.Host.OCIRuntime.Name}}|{{.Host.OCIRuntime.Version}}")
    name, version = out.strip().split("|", 1)
    assert name == podman.runtime, out
    assert podman.runtime in version.split("\n")[0], out
    assert any(a == ["--version"] for _c, _r, a in podman.calls()), podman.calls()


def test_missing_binary(podman):
    """One clear error line through podman, exit 127 as with runc, nothing left."""
    r = podman("run", "--rm", "--name", f"bad-{podman.runtime}", IMG, "nosuchbinary")
    assert r.rc == 127, str(r)
    assert "Traceback" not in r.err, str(r)
    lines = _lines(r.err)
    assert len(lines) == 1, str(r)
    assert lines[0].startswith("Error: ") and "nosuchbinary" in lines[0], str(r)
    # no container in podman, and (checked by the fixture) none in the
    # runtime's state, no cgroup, no mount, no process


def test_missing_binary_not_rm(podman):
    """Without --rm podman keeps the container record (as 'created'), but the
    runtime must have nothing."""
    name = f"bad2-{podman.runtime}"
    r = podman("run", "--name", name, IMG, "nosuchbinary")
    assert r.rc == 127, str(r)
    ids = ek.created_ids(podman.calls())
    assert ids and not ek.runtime_state_ids(podman.runtime, ids), ids
    podman.ok("rm", "-f", name)


def test_join_other_containers_namespaces(podman):
    """--net/--ipc/--uts/--pid container:X: the config's namespaces carry
    /proc/PID/ns/* paths (what a pod's containers and a Kubernetes sandbox
    get), so the second container is in the first one's namespaces and sees
    its hostname and processes. (A podman pod is not tested: `pod rm` fails on
    this host's hybrid layout, with runc too, removing a hugetlb dir of its
    own on a tmpfs.)"""
    first = podman.ok("run", "-d", "--hostname", "shared-uts", "--network", "none",
                      IMG, "sleep", "1000").strip()
    try:
        r = podman("run", "--rm", "--uts", f"container:{first}", "--ipc", f"container:{first}",
                   "--pid", f"container:{first}", "--network", f"container:{first}", IMG,
                   "sh", "-c", "hostname; ps -o args | grep -c '[s]leep 1000'; "
                   "readlink /proc/self/ns/ipc; readlink /proc/self/ns/net")
        assert r.rc == 0, str(r)
        lines = _lines(r.out)
        assert lines[:2] == ["shared-uts", "1"], str(r)
        pid = podman.ok("inspect", "-f", "{{.State.Pid}}", first).strip()
        assert lines[2:] == [os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("ipc", "net")], \
            (lines, pid)
    finally:
        podman.ok("rm", "-f", "-t", "0", first)

