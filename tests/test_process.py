"""process (config.md "Process", config-linux.md oom/rlimits): args, env,
cwd, user, umask, rlimits, oomScoreAdj, noNewPrivileges, stdio and a
missing executable, checked from inside the container."""
import itertools
import os
import resource

import pytest

_ids = itertools.count()


def new_id() -> str:
    """Unique across concurrent test sessions: the default cgroup path is the id."""
    return f"ocit{os.getpid()}x{next(_ids)}"


def run_out(oci, bundle, **kw) -> str:
    r = oci.run(bundle, new_id(), **kw)
    assert r.rc == 0, r
    return r.out


def test_args_passed_verbatim(oci, bundle):
    bundle.args("sh", "-c", 'for a in "$0" "$@"; do echo "[$a]"; done', "zero",
                "a b", "", "*", "$HOME", "é")
    assert run_out(oci, bundle).splitlines() == ["[zero]", "[a b]", "[]", "[*]", "[$HOME]",
                                                 "[é]"]


def test_absolute_and_path_lookup(oci, bundle):
    bundle.args("/bin/echo", "abs")
    assert run_out(oci, bundle) == "abs\n"
    bundle.process["env"] = ["PATH=/nowhere:/bin"]
    bundle.args("echo", "via-path")
    assert run_out(oci, bundle) == "via-path\n"


def test_env_exact_and_home_default(oci, bundle):
    bundle.process["env"] = ["PATH=/bin:/usr/bin", "A=1", "B=with space", "EMPTY=", "C=x=y"]
    bundle.args("env")
    env = sorted(run_out(oci, bundle).splitlines())
    assert env == sorted(["PATH=/bin:/usr/bin", "A=1", "B=with space", "EMPTY=", "C=x=y", "HOME=/root"])


def test_home_kept_and_from_passwd(oci, bundle):
    bundle.process["env"] = ["PATH=/bin", "HOME=/custom"]
    bundle.sh("echo $HOME")
    assert run_out(oci, bundle) == "/custom\n"
    bundle.process["env"] = ["PATH=/bin"]
    bundle.process["user"] = {"uid": 1, "gid": 1}  # daemon: home "/" in the busybox passwd
    bundle.sh("echo $HOME")
    assert run_out(oci, bundle) == "/\n"
    bundle.process["user"] = {"uid": 4242, "gid": 4242}  # not in passwd
    bundle.save()
    assert run_out(oci, bundle) == "/\n"


def test_cwd(oci, bundle):
    bundle.process["cwd"] = "/etc"
    bundle.args("pwd")
    assert run_out(oci, bundle) == "/etc\n"


def test_cwd_created_if_missing(oci, bundle):
    """runc creates a missing cwd inside the rootfs (and so do we)."""
    bundle.process["cwd"] = "/no/such/dir"
    bundle.args("pwd")
    assert run_out(oci, bundle) == "/no/such/dir\n"
    assert os.path.isdir(os.path.join(bundle.rootfs, "no/such/dir"))


def test_cwd_symlink_escape_stays_inside(oci, bundle, tmp_path):
    host = tmp_path / "hostcwd"
    host.mkdir()
    os.symlink(str(host), os.path.join(bundle.rootfs, "evilcwd"))
    bundle.process["cwd"] = "/evilcwd"
    bundle.sh("pwd -P; touch here")
    r = oci.run(bundle, new_id())
    assert os.listdir(host) == []
    assert oci.ids() == []
    if r.rc == 0:
        assert r.out.strip() == str(host)  # the in-root copy of that path


def test_user_ids_groups_umask(oci, bundle):
    bundle.process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [20, 30],
                              "umask": 0o027}
    bundle.sh("id -u; id -g; id -G; umask; grep -E '^(Uid|Gid|Groups):' /proc/self/status")
    out = run_out(oci, bundle).splitlines()
    assert out[0] == "1000" and out[1] == "1001"
    assert sorted(out[2].split()) == ["1001", "20", "30"]
    assert out[3] == "0027"
    assert out[4].split()[1:] == ["1000"] * 4
    assert out[5].split()[1:] == ["1001"] * 4
    assert sorted(out[6].split()[1:]) == ["20", "30"]


def test_default_umask_is_0022(oci, bundle):
    bundle.args("sh", "-c", "umask")
    assert run_out(oci, bundle) == "0022\n"


def test_non_root_has_no_capabilities(oci, bundle):
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.sh("grep -E '^Cap(Eff|Prm)' /proc/self/status")
    for ln in run_out(oci, bundle).splitlines():
        assert int(ln.split()[1], 16) == 0, ln


def test_rlimits(oci, bundle):
    bundle.process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
        {"type": "RLIMIT_STACK", "soft": 4 << 20, "hard": 18446744073709551615},
    ]
    bundle.save()
    bundle.sh("ulimit -n; ulimit -Hn; ulimit -Sc; ulimit -Hc; ulimit -u; ulimit -Hu;"
              " ulimit -s; ulimit -Hs; ulimit -a")
    out = run_out(oci, bundle).splitlines()
    assert out[:8] == ["512", "1000", "0", "0", "100", "200", "4096", "unlimited"]
    assert any("1000" in ln or "512" in ln for ln in out[8:])


def test_rlimit_above_hard_limit_fails_cleanly(oci, bundle):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard + 10, "hard": hard + 10}]
    bundle.save()
    bundle.args("true")
    r = oci.run(bundle, new_id())
    if r.rc == 0:
        pytest.skip("this host lets root raise RLIMIT_NOFILE")
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert "RLIMIT_NOFILE" in line
    assert oci.ids() == []


def _can_lower_oom_score() -> bool:
    with open("/proc/self/status") as f:
        eff = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    return bool(eff & (1 << 24))  # CAP_SYS_RESOURCE


@pytest.mark.parametrize("value", [-1000, -5, 0, 500, 1000])
def test_oom_score_adj(oci, bundle, value):
    with open("/proc/self/oom_score_adj") as f:
        mine = int(f.read())
    if value < mine and not _can_lower_oom_score():
        # runc fails the same way: lowering it needs CAP_SYS_RESOURCE (not here)
        bundle.process["oomScoreAdj"] = value
        bundle.args("true")
        line = oci.fail("run", "-b", bundle.path, new_id())
        assert line.endswith(f"cannot set oomScoreAdj {value}: Permission denied"), line
        assert oci.ids() == []
        return
    bundle.process["oomScoreAdj"] = value
    bundle.args("cat", "/proc/self/oom_score_adj")
    assert run_out(oci, bundle) == f"{value}\n"


def test_oom_score_adj_unset_inherits(oci, bundle):
    bundle.process.pop("oomScoreAdj", None)
    bundle.args("cat", "/proc/self/oom_score_adj")
    with open("/proc/self/oom_score_adj") as f:
        mine = f.read()
    assert run_out(oci, bundle) == mine


@pytest.mark.parametrize("nnp,want", [(True, "1"), (False, "0")])
def test_no_new_privileges(oci, bundle, nnp, want):
    bundle.process["noNewPrivileges"] = nnp
    bundle.sh("grep NoNewPrivs /proc/self/status")
    assert run_out(oci, bundle).split() == ["NoNewPrivs:", want]


def test_stdio_inherited(oci, bundle):
    bundle.sh("cat; echo to-stderr >&2")
    r = oci.run(bundle, new_id(), input="from-stdin\n")
    assert r.rc == 0, r
    assert r.out == "from-stdin\n"
    assert r.err == "to-stderr\n"


def test_stdio_given_to_the_process_user(oci, bundle):
    """As crun (runc: uid only): the stdio fds are chowned to the process's
    user and group (so a non-root process can reopen /dev/stdout, a pipe
    here); /dev/null is left alone."""
    import subprocess
    from ocitest import OCIRUN
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["user"] = {"uid": 1000, "gid": 1001}
    bundle.sh("stat -L -c %u:%g /proc/self/fd/0 /proc/self/fd/1; echo reopened > /dev/stdout")
    p = subprocess.run([OCIRUN, "--root", oci.root, "run", "-b", bundle.path, new_id()],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p
    assert p.stdout.split() == ["0:0", "1000:1001", "reopened"], p
    assert os.stat("/dev/null").st_uid == 0


def test_only_stdio_fds_reach_the_process(oci, bundle):
    bundle.args("ls", "/proc/self/fd")
    fds = sorted(int(x) for x in run_out(oci, bundle).split())
    assert fds[:3] == [0, 1, 2] and len(fds) <= 4  # 3 is ls's own directory fd


@pytest.mark.parametrize("arg0,msg", [
    ("nosuch", 'exec: "nosuch": executable file not found in $PATH'),
    ("/nosuch", 'exec: "/nosuch": stat /nosuch: no such file or directory'),
    ("/etc", 'exec: "/etc": is a directory'),
    ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
])
def test_missing_executable_fails_at_create(oci, bundle, arg0, msg):
    bundle.args(arg0)
    cid = new_id()
    line = oci.fail("create", "-b", bundle.path, cid)
    assert line == f"ocirun: {msg}" or line.endswith(msg), line
    assert oci.ids() == []
    for hier in os.listdir("/sys/fs/cgroup"):
        assert not os.path.exists(f"/sys/fs/cgroup/{hier}/{cid}"), hier
    line = oci.fail("run", "-b", bundle.path, cid)
    assert line.endswith(msg)
    assert oci.ids() == []


def test_args_required(oci, bundle):
    bundle.process["args"] = []
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "config.json: process.args" in line
    assert oci.ids() == []
