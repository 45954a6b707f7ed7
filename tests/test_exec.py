"""`ocirun exec` with real containers: the process joins every namespace
and the cgroup of the container's init, gets the requested user, env, cwd,
caps, rlimits, fds and sub-cgroup, its exit status is returned, and bad
input fails with one line and leaves the container alone."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ocitest import OCIRUN
from ocitest import SHIFT

NS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "uts", "user")


def _running(oci, bundle, cid: str = "e") -> int:
    """Start a detached container whose init just sleeps; its host pid."""
    bundle.args("sleep", "1000")
    oci.ok("run", "-d", "-b", bundle.path, cid)
    return oci.state(cid)["pid"]


@pytest.fixture
def ctr(oci, bundle):
    """(cid, init pid) of a running container; deleted by the oci fixture."""
    return "e", _running(oci, bundle)


def _untouched(oci, cid: str, pid: int) -> None:
    """The container still runs the same init and nothing else is left in it."""
    st = oci.state(cid)
    assert st["status"] == "running" and st["pid"] == pid
    out = oci.ok("exec", cid, "ps", "-o", "pid,args")
    procs = [ln.split(None, 1) for ln in out.splitlines()[1:]]
    assert [a for _, a in procs if "ps -o" not in a] == ["sleep 1000"], out


def _kv(out: str) -> dict:
    return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)


def _ns_script() -> str:
    return "; ".join(f"echo {t}=$(readlink /proc/self/ns/{t})" for t in NS)


def _host_ns(pid: int) -> dict:
    return {t: os.readlink(f"/proc/{pid}/ns/{t}") for t in NS}


def test_exec_joins_every_namespace_and_cgroup(oci, bundle, shifted_rootfs):  # noqa: F811
    bundle.ns("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
    bundle.linux["timeOffsets"] = {"monotonic": {"secs": 3600}}
    bundle.args("sleep", "1000")
    # a foreground `run` (no exec fifo); run -d is covered below
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "run", "-b", bundle.path, "e"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        _check_exec_namespaces(oci)
    finally:
        subprocess.run([OCIRUN, "--root", oci.root, "kill", "e", "KILL"], capture_output=True)
        p.wait(timeout=30)


def test_detached_container_with_user_namespace(oci, bundle, shifted_rootfs):  # noqa: F811
    """create/start (not only foreground run) with a user namespace that does
    not map host root: the init must reach the exec fifo in the 0700 state dir."""
    bundle.ns("pid", "mount", "user", "uts", "ipc", "network")
    pid = _running(oci, bundle)
    assert oci.ok("exec", "e", "cat", "/proc/self/uid_map").split() == ["0", str(SHIFT), "65536"]
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")


def test_oom_score_adj_with_user_namespace(oci, bundle, shifted_rootfs, tmp_path):  # noqa: F811
    """Inside its user namespace a process may not write its own
    oom_score_adj (Docker's userns-remap sets oomScoreAdj on every
    container): the runtime writes it for the init, and exec's child before
    it joins the namespace."""
    bundle.ns("pid", "mount", "user", "uts", "ipc", "network")
    bundle.process["oomScoreAdj"] = 300
    pid = _running(oci, bundle)
    with open(f"/proc/{pid}/oom_score_adj") as f:
        assert f.read() == "300\n"
    proc = dict(oci.state("e").get("config", {}).get("process") or bundle.process)
    proc.update(args=["cat", "/proc/self/oom_score_adj"], oomScoreAdj=400, terminal=False)
    pj = tmp_path / "process.json"
    pj.write_text(json.dumps(proc))
    assert oci.ok("exec", "--process", str(pj), "e") == "400\n"
    assert oci.ok("exec", "e", "cat", "/proc/1/oom_score_adj") == "300\n"


def _wait_running(oci, cid: str) -> int:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        r = oci("state", cid)
        if r.rc == 0 and json.loads(r.out)["status"] == "running":
            return json.loads(r.out)["pid"]
        time.sleep(0.02)
    raise AssertionError(f"{cid} not running: {oci('state', cid)}")


def _check_exec_namespaces(oci) -> None:
    pid = _wait_running(oci, "e")
    init_ns = _host_ns(pid)
    assert init_ns != _host_ns(os.getpid())  # all eight are the container's own
    for t in NS:
        assert init_ns[t] != os.readlink(f"/proc/self/ns/{t}"), t
    out = oci.ok("exec", "e", "sh", "-c", _ns_script() + "; echo self=$$;"
                 " echo cg=$(cat /proc/self/cgroup | tr '\\n' ' ');"
                 " echo cg1=$(cat /proc/1/cgroup | tr '\\n' ' ');"
                 " echo uid=$(cat /proc/self/uid_map | tr -s ' ');"
                 " echo offs=$(grep monotonic /proc/self/timens_offsets);"
                 " echo host=$(hostname)")
    kv = _kv(out)
    assert {t: kv[t] for t in NS} == init_ns
    assert int(kv["self"]) > 1  # a pid in the container's pid namespace
    assert kv["cg"] == kv["cg1"]
    assert kv["uid"].split() == ["0", str(SHIFT), "65536"]
    assert kv["offs"].split() == ["monotonic", "3600", "0"]


def test_exec_detached_shares_namespaces_and_cgroup_seen_from_host(oci, ctr, tmp_path):
    cid, pid = ctr
    pf = tmp_path / "exec.pid"
    oci.ok("exec", "-d", "--pid-file", str(pf), cid, "sleep", "1000")
    epid = int(pf.read_text())
    try:
        with open(f"/proc/{epid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[:2] == [b"sleep", b"1000"]
        for t in ("ipc", "mnt", "net", "pid", "uts"):
            assert os.readlink(f"/proc/{epid}/ns/{t}") == os.readlink(f"/proc/{pid}/ns/{t}"), t
        with open(f"/proc/{epid}/cgroup") as a, open(f"/proc/{pid}/cgroup") as b:
            assert a.read() == b.read()
        with open(f"/proc/{epid}/status") as f:
            assert "NoNewPrivs:\t1" in f.read()
        # ocirun is gone and the process is still alive: it was not killed
        # by a parent-death signal left over from the setup
        assert os.path.exists(f"/proc/{epid}")
        with open(f"/proc/{epid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in "SR"
    finally:
        os.kill(epid, 9)


def test_exec_user_groups_env_cwd(oci, ctr):
    cid, _ = ctr
    out = oci.ok("exec", "-u", "1000:1001", "-g", "5", "--additional-gids", "7",
                 "-e", "FOO=bar", "--env", "HOME=/tmp", "--cwd", "/tmp", cid,
                 "sh", "-c", "echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G);"
                 " echo foo=$FOO; echo home=$HOME; echo path=$PATH; echo pwd=$(pwd)")
    kv = _kv(out)
    assert kv["uid"] == "1000" and kv["gid"] == "1001"
    assert sorted(kv["groups"].split()) == ["1001", "5", "7"]
    assert kv["foo"] == "bar" and kv["home"] == "/tmp" and kv["pwd"] == "/tmp"
    assert "/bin" in kv["path"]  # the container's own env is kept


def test_exec_user_without_gid_keeps_config_gid(oci, ctr):
    cid, _ = ctr
    assert oci.ok("exec", "-u", "65534", cid, "id", "-u").strip() == "65534"
    assert oci.ok("exec", "-u", "65534", cid, "id", "-g").strip() == "0"


def _caps(out: str) -> dict:
    return {k: int(v, 16) for k, v in _kv(out.replace(":\t", "=")).items() if k.startswith("Cap")}


CAP_SYS_ADMIN, CAP_KILL, CAP_NET_RAW = 21, 5, 13


def test_exec_caps_and_no_new_privs(oci, bundle):
    bundle.process["noNewPrivileges"] = False
    _running(oci, bundle)
    plain = oci.ok("exec", "e", "cat", "/proc/self/status")
    caps = _caps(plain)
    assert caps["CapEff"] & (1 << CAP_KILL) and not caps["CapEff"] & (1 << CAP_SYS_ADMIN)
    assert "NoNewPrivs:\t0" in plain
    out = oci.ok("exec", "--cap", "CAP_SYS_ADMIN", "-c", "CAP_NET_RAW", "--no-new-privs",
                 "e", "cat", "/proc/self/status")
    caps = _caps(out)
    for s in ("CapEff", "CapPrm", "CapBnd"):
        assert caps[s] & (1 << CAP_SYS_ADMIN) and caps[s] & (1 << CAP_NET_RAW), s
        assert caps[s] & (1 << CAP_KILL), s
    assert "NoNewPrivs:\t1" in out
    # the container's init is not affected
    st = oci.state("e")
    with open(f"/proc/{st['pid']}/status") as f:
        assert not _caps(f.read())["CapEff"] & (1 << CAP_SYS_ADMIN)


def test_exec_non_root_user_has_no_effective_caps(oci, ctr):
    caps = _caps(oci.ok("exec", "-u", "1000", ctr[0], "cat", "/proc/self/status"))
    assert caps["CapEff"] == 0 and caps["CapPrm"] == 0


def test_exec_process_file(oci, ctr, tmp_path):
    cid, _ = ctr
    proc = {"args": ["sh", "-c", "echo uid=$(id -u); echo groups=$(id -G); echo x=$X;"
                     " echo pwd=$(pwd); echo nofile=$(ulimit -n); echo path=$PATH;"
                     " grep -E 'CapEff|NoNewPrivs' /proc/self/status | tr -d '\\t' | tr : ="],
            "env": ["X=from-file", "PATH=/bin"], "cwd": "/var",
            "user": {"uid": 1, "gid": 1, "additionalGids": [5]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}],
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"],
                             "inheritable": ["CAP_KILL"]},
            "noNewPrivileges": True, "terminal": False}
    pfile = tmp_path / "process.json"
    pfile.write_text(json.dumps(proc))
    # flags other than the process file's own are ignored, as in runc
    kv = _kv(oci.ok("exec", "--process", str(pfile), "-e", "X=flag", cid))
    assert kv["uid"] == "1" and sorted(kv["groups"].split()) == ["1", "5"]
    assert kv["x"] == "from-file" and kv["pwd"] == "/var" and kv["nofile"] == "123"
    assert kv["path"] == "/bin"
    assert int(kv["CapEff"], 16) == 1 << CAP_KILL and kv["NoNewPrivs"] == "1"


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exec_returns_exit_status(oci, ctr, code):
    assert oci("exec", ctr[0], "sh", "-c", f"exit {code}").rc == code


@pytest.mark.parametrize("sig", [15, 9, 10])
def test_exec_killed_by_signal_returns_128_plus_n(oci, ctr, sig):
    r = oci("exec", ctr[0], "sh", "-c", f"kill -{sig} $$")
    assert r.rc == 128 + sig, r


def test_exec_stdout_stderr_stdin(oci, ctr):
    r = oci("exec", ctr[0], "sh", "-c", "read a; echo out:$a; echo err:$a >&2", input="hello\n")
    assert r.rc == 0 and r.out == "out:hello\n" and r.err == "err:hello\n", r


@pytest.mark.parametrize("deny_close_range", [False, True], ids=["plain", "no-close_range"])
def test_exec_preserve_fds(oci, bundle, tmp_path, deny_close_range):
    if deny_close_range:  # the container's profile applies to exec too
        bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}]}
    cid, _ = "e", _running(oci, bundle)
    for i in range(3):
        (tmp_path / f"f{i}").write_text(f"content{i}\n")
    # the shell puts the files on fds 3, 4 and 5 of ocirun (never dup2 onto
    # pytest's own low fds); --preserve-fds 2 passes exactly 3 and 4
    script = (f'exec "$0" --root {oci.root} exec --preserve-fds 2 {cid} sh -c '
              '"cat <&3; cat <&4; ls /proc/self/fd | tr \'\\n\' \' \'" '
              f'3<{tmp_path}/f0 4<{tmp_path}/f1 5<{tmp_path}/f2')
    r = subprocess.run(["sh", "-c", script, OCIRUN], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[:2] == ["content0", "content1"], r
    fds = sorted(int(x) for x in lines[2].split())
    # 0-2, the two preserved fds, and the fd `ls` itself opened for the listing
    assert fds[:5] == [0, 1, 2, 3, 4] and 5 not in fds[5:] or len(fds) == 6, fds
    assert len(fds) == 6, fds


def _cgroup_dirs(pid: int) -> list[str]:
    """The host dirs of a process's cgroups (v1 hierarchies and v2)."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            pre, _, post = ln.partition(" - ")
            fstype, _, opts = post.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                mounts[pre.split()[4]] = (fstype, set(opts.split(",")))
    dirs = []
    with open(f"/proc/{pid}/cgroup") as f:
        for ln in f:
            hid, ctrls, path = ln.rstrip("\n").split(":", 2)
            for mnt, (fstype, opts) in mounts.items():
                if (hid == "0" and fstype == "cgroup2") or \
                        (ctrls and set(ctrls.split(",")) <= opts and fstype == "cgroup"):
                    d = mnt + path
                    if os.path.isdir(d):
                        dirs.append(d)
                    break
    return dirs


def test_exec_in_sub_cgroup_and_delete_removes_it(oci, ctr):
    cid, pid = ctr
    dirs = _cgroup_dirs(pid)
    assert dirs
    made = []
    try:
        for d in dirs:
            os.mkdir(os.path.join(d, "sub"))
            made.append(os.path.join(d, "sub"))
            v2 = os.path.exists(os.path.join(d, "cgroup.controllers"))
            for name in ("cpuset.cpus", "cpuset.mems"):  # v1: empty in a new child
                if not v2 and os.path.exists(os.path.join(d, name)):
                    with open(os.path.join(d, name)) as src, \
                            open(os.path.join(d, "sub", name), "w") as dst:
                        dst.write(src.read())
        out = oci.ok("exec", "--cgroup", "sub", cid, "cat", "/proc/self/cgroup")
        init_cg = open(f"/proc/{pid}/cgroup").read().splitlines()
        assert [ln + "/sub" for ln in init_cg] == out.splitlines() or \
            all(ln.endswith("/sub") for ln in out.splitlines()), out
        # delete of a container whose cgroup has a child cgroup removes both
        oci.ok("delete", "-f", cid)
        assert not [d for d in dirs if os.path.exists(d)]
    finally:
        for d in made:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass


def test_exec_unknown_cap_is_a_warning_as_in_runc(oci, ctr):
    r = oci("exec", "--cap", "CAP_NOPE", ctr[0], "true")
    assert r.rc == 0 and "CAP_NOPE" in r.err and "ignored" in r.err, r
    _untouched(oci, *ctr)


def test_exec_sub_cgroup_errors(oci, ctr):
    cid, pid = ctr
    assert "nosuch/cgroup.procs: no such file" in oci.fail("exec", "--cgroup", "nosuch", cid, "true")
    assert "../x is not a sub cgroup path" in oci.fail("exec", "--cgroup", "../x", cid, "true")
    assert "unknown controller whaaat" in oci.fail("exec", "--cgroup", "whaaat:/", cid, "true")
    _untouched(oci, cid, pid)


@pytest.mark.skipif(os.path.exists("/sys/fs/cgroup/cgroup.controllers"), reason="v1 hierarchies")
def test_exec_sub_cgroups_per_controller_as_in_runc(oci, ctr):
    """runc's exec.bats: --cgroup memory:submem --cgroup cpu,cpuacct:subcpu
    puts the process there and everywhere else in the container's cgroup."""
    cid, pid = ctr
    dirs = {d.split("/")[4]: d for d in _cgroup_dirs(pid) if d.startswith("/sys/fs/cgroup/")}
    made = []
    try:
        for ctl, sub in (("memory", "submem"), ("cpu", "subcpu"), ("cpuacct", "subcpu")):
            os.mkdir(os.path.join(dirs[ctl], sub))
            made.append(os.path.join(dirs[ctl], sub))
        out = oci.ok("exec", "--cgroup", "memory:submem", "--cgroup", "cpu,cpuacct:subcpu", cid,
                     "cat", "/proc/self/cgroup")
        own = {ln.split(":")[1]: ln.split(":")[2].strip() for ln in open(f"/proc/{pid}/cgroup")
               if ln.strip()}
        got = {ln.split(":")[1]: ln.split(":")[2] for ln in out.splitlines()}
        assert got["memory"] == own["memory"].rstrip("/") + "/submem"
        assert got["cpu"] == own["cpu"].rstrip("/") + "/subcpu"
        assert got["pids"] == own["pids"]
    finally:
        oci("delete", "-f", cid)
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass


def test_exec_paused_and_ignore_paused(oci, ctr, tmp_path):
    cid, pid = ctr
    oci.ok("pause", cid)
    try:
        line = oci.fail("exec", cid, "true")
        assert "paused" in line and "--ignore-paused" in line
        assert oci.state(cid)["status"] == "paused"
        pf = tmp_path / "p"
        p = subprocess.Popen([OCIRUN, "--root", oci.root, "exec", "--ignore-paused", "-d",
                              "--pid-file", str(pf), cid, "sh", "-c", "echo ran > /tmp/mark"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.2)  # nothing to wait for: the process is frozen, it cannot run
            assert not os.path.exists(os.path.join(oci.state(cid)["rootfs"], "tmp/mark"))
        finally:
            oci.ok("resume", cid)
        assert p.wait(timeout=20) == 0, p.stderr.read()
    finally:
        if oci.state(cid)["status"] == "paused":
            oci.ok("resume", cid)
    assert oci.ok("exec", cid, "cat", "/tmp/mark") == "ran\n"


def test_exec_stopped_container_is_clear_error(oci, bundle):
    bundle.args("true")
    oci.ok("run", "-d", "-b", bundle.path, "s")
    end = time.monotonic() + 10
    while oci.state("s")["status"] != "stopped" and time.monotonic() < end:
        time.sleep(0.02)
    assert oci.fail("exec", "s", "true") == "ocirun: cannot exec in a stopped container"
    assert oci.state("s")["status"] == "stopped"
    assert "does not exist" in oci.fail("exec", "nosuch", "true")
    assert oci("exec", "s", "true").rc == 255 and oci("exec", "nosuch", "true").rc == 255


def test_exec_created_container(oci, bundle):
    """runc allows exec into a created container (the init waits for start)."""
    bundle.args("sleep", "1000")
    oci.ok("create", "-b", bundle.path, "c")
    assert oci.ok("exec", "c", "echo", "hi") == "hi\n"
    assert oci.state("c")["status"] == "created"


@pytest.mark.parametrize("args,want", [
    (["nosuch-binary"], '"nosuch-binary": executable file not found'),
    (["/bin/nosuch"], "/bin/nosuch"),
    (["-u", "abc", "e", "true"], "--user 'abc'"),
    (["-u", "1:x", "e", "true"], "--user '1:x'"),
    (["-u", "-1", "e", "true"], "--user"),
    (["-g", "x", "e", "true"], "--additional-gids"),
    (["--cwd", "/nonexist", "e", "true"], "cannot chdir to /nonexist"),
    (["-e", "NOEQUALS", "e", "true"], "--env 'NOEQUALS'"),
    (["--preserve-fds", "x", "e", "true"], "--preserve-fds"),
    (["-t", "-d", "e", "true"], "needs --console-socket"),
    (["--console-socket", "/nonexistent.sock", "-t", "e", "true"], "no such file"),
    (["--console-socket", "/etc/passwd", "-t", "e", "true"], "not a unix socket"),
    (["--console-socket", "/etc/passwd", "e", "true"], "process.terminal is false"),
    (["e"], "exec needs a command"),
])
def test_exec_bad_input_one_line_container_untouched(oci, ctr, args, want):
    cid, pid = ctr
    if args[0].startswith(("nosuch", "/bin/")):
        args = [cid] + args
    line = oci.fail("exec", *args)
    assert want in line, line
    assert line.startswith("ocirun: ")
    # runc's exit codes: 1 for a flag that does not parse, else 255 (the
    # process could not be started)
    rc = oci("exec", *args).rc
    assert rc == (1 if args[0] in ("-g", "--preserve-fds") else 255), (args, rc)
    _untouched(oci, cid, pid)


@pytest.mark.parametrize("text,want", [
    ("{bad", "malformed JSON"),
    ("[]", "must be a JSON object"),
    ('{"args": "sh"}', "args"),
    ('{"args": ["true"], "cwd": "relative"}', "cwd"),
    ('{"args": ["true"], "user": {"uid": "root"}}', "uid"),
    (None, "no such file"),
])
def test_exec_malformed_process_file(oci, ctr, tmp_path, text, want):
    cid, pid = ctr
    p = tmp_path / "process.json"
    if text is not None:
        p.write_text(text)
    line = oci.fail("exec", "--process", str(p), cid)
    assert want in line, line
    _untouched(oci, cid, pid)


def test_exec_seccomp_of_the_container_applies(oci, bundle):
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": ["mkdir", "mkdirat"],
                                             "action": "SCMP_ACT_ERRNO"}]}
    bundle.save()
    _running(oci, bundle)
    r = oci("exec", "e", "sh", "-c", "grep '^Seccomp:' /proc/self/status; mkdir /tmp/d")
    assert r.rc != 0 and "Seccomp:\t2" in r.out, r
