"""hooks (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): the six
kinds, each at its moment and in its namespace, with the state on stdin,
its own args and env, timeouts and the failure rules of each kind."""
import itertools
import json
import os
import time

import pytest

_ids = itertools.count()
KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop")

# $1 = kind, $2 = output dir. Env first: it must show only the hook's env.
HOOK = """#!/bin/sh
env > "$2/$1.env"
PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "$1" >> "$2/order"
echo "$0 $*" > "$2/$1.args"
cat > "$2/$1.state"
readlink /proc/self/ns/mnt > "$2/$1.mnt"
readlink /proc/self/ns/net > "$2/$1.net"
ls / > "$2/$1.root"
pwd -P > "$2/$1.cwd"
exit "${HOOK_EXIT:-0}"
"""


def new_id() -> str:
    """Unique across concurrent test sessions: the default cgroup path is the id."""
    return f"ocit{os.getpid()}x{next(_ids)}"


@pytest.fixture
def hookenv(bundle, tmp_path):
    """A hook script on the host and in the rootfs, and an output dir that the
    container sees as /hookout."""
    out = tmp_path / "hookout"
    out.mkdir()
    host = tmp_path / "hook.sh"
    host.write_text(HOOK)
    host.chmod(0o755)
    with open(os.path.join(bundle.rootfs, "hook.sh"), "w") as f:
        f.write(HOOK)
    os.chmod(os.path.join(bundle.rootfs, "hook.sh"), 0o755)
    with open(os.path.join(bundle.rootfs, "in-container-root"), "w") as f:
        f.write("")
    bundle.config["mounts"].append({"destination": "/hookout", "type": "bind",
                                    "source": str(out), "options": ["rbind"]})
    bundle.save()
    return {"out": out, "host": str(host)}


def hook(env, kind, extra_env=(), **kw):
    inside = kind == "startContainer"
    path = "/hook.sh" if inside else env["host"]
    outdir = "/hookout" if inside else str(env["out"])
    return dict({"path": path, "args": ["hook-" + kind, kind, outdir],
                 "env": ["HOOKVAR=" + kind, *extra_env]}, **kw)


def read(env, name) -> str:
    return (env["out"] / name).read_text()


def order(env) -> list[str]:
    p = env["out"] / "order"
    return p.read_text().split() if p.exists() else []


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def cgroup_dirs(cid: str) -> list[str]:
    return [h for h in os.listdir("/sys/fs/cgroup") if os.path.exists(f"/sys/fs/cgroup/{h}/{cid}")]


def test_all_six_in_order_namespaces_and_state(oci, bundle, hookenv):
    bundle.config["hooks"] = {k: [hook(hookenv, k)] for k in KINDS}
    bundle.args("sleep", "60")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    assert order(hookenv) == ["prestart", "createRuntime", "createContainer"]
    pid = oci.state(cid)["pid"]
    host_mnt = os.readlink("/proc/self/ns/mnt")
    ctr_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    ctr_net = os.readlink(f"/proc/{pid}/ns/net")
    assert ctr_mnt != host_mnt
    oci.ok("start", cid)
    assert order(hookenv) == ["prestart", "createRuntime", "createContainer",
                              "startContainer", "poststart"]
    oci.ok("kill", cid, "KILL")
    assert wait_for(lambda: oci.state(cid)["status"] == "stopped")
    oci.ok("delete", cid)
    assert order(hookenv) == list(KINDS)
    # where each ran
    for k in ("prestart", "createRuntime", "poststart", "poststop"):
        assert read(hookenv, f"{k}.mnt").strip() == host_mnt, k
        assert read(hookenv, f"{k}.net").strip() == os.readlink("/proc/self/ns/net"), k
        assert "in-container-root" not in read(hookenv, f"{k}.root").split(), k
    for k in ("createContainer", "startContainer"):
        assert read(hookenv, f"{k}.mnt").strip() == ctr_mnt, k
        assert read(hookenv, f"{k}.net").strip() == ctr_net, k
    # createContainer: before pivot_root (path resolves on the host);
    # startContainer: inside the container's root
    assert "in-container-root" not in read(hookenv, "createContainer.root").split()
    assert "in-container-root" in read(hookenv, "startContainer.root").split()
    # createContainer's cwd is the rootfs (runc's: its tests bind into ./lib)
    assert read(hookenv, "createContainer.cwd").strip() == os.path.realpath(bundle.rootfs)
    # the state on stdin
    want = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
            "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    for k, status in want.items():
        st = json.loads(read(hookenv, f"{k}.state"))
        assert st["id"] == cid and st["status"] == status, (k, st)
        assert st["bundle"] == bundle.path and st["ociVersion"]
        if k != "poststop":
            assert st["pid"] == pid, (k, st)
    # args and env exactly as given ($0 of a script is its path: the kernel
    # hands the interpreter the path, argv[0] is not visible to sh)
    for k in KINDS:
        outdir = "/hookout" if k == "startContainer" else str(hookenv["out"])
        assert read(hookenv, f"{k}.args").split()[1:] == [k, outdir], k
        env = dict(ln.split("=", 1) for ln in read(hookenv, f"{k}.env").splitlines())
        env.pop("PWD", None)  # the shell adds PWD (and sometimes SHLVL, _)
        env.pop("SHLVL", None)
        env.pop("_", None)
        if env.get("PATH") == "/sbin:/usr/sbin:/bin:/usr/bin":
            env.pop("PATH")  # busybox sh exports its default PATH itself
        assert env == {"HOOKVAR": k}, (k, env)


def test_run_runs_hooks_too(oci, bundle, hookenv):
    bundle.config["hooks"] = {k: [hook(hookenv, k)] for k in KINDS}
    bundle.args("true")
    r = oci.run(bundle, new_id())
    assert r.rc == 0, r
    assert order(hookenv) == list(KINDS)


def test_several_hooks_of_a_kind_run_in_order(oci, bundle, hookenv):
    bundle.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo first >> {hookenv['out']}/order"]},
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo second >> {hookenv['out']}/order"]}]}
    bundle.args("true")
    assert oci.run(bundle, new_id()).rc == 0
    assert order(hookenv) == ["first", "second"]


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "poststart", "poststop"])
def test_runtime_hook_without_env_inherits_the_runtimes(oci, bundle, tmp_path, kind):
    """runc and crun: no "env" key means the runtime's environment (Go's
    exec.Cmd with a nil Env); "env": [] means an empty one."""
    bundle.config["hooks"] = {kind: [
        {"path": "/bin/sh", "args": ["sh", "-c", f'echo "[$OCIRUN_T]" > {tmp_path}/none']},
        {"path": "/bin/sh", "args": ["sh", "-c", f'echo "[$OCIRUN_T]" > {tmp_path}/empty'],
         "env": []}]}
    bundle.args("true")
    r = oci.run(bundle, new_id(), env=dict(os.environ, OCIRUN_T="from-the-runtime"))
    assert r.rc == 0, r
    assert (tmp_path / "none").read_text() == "[from-the-runtime]\n"
    assert (tmp_path / "empty").read_text() == "[]\n"


def test_container_hook_without_env_gets_none(oci, bundle, hookenv):
    bundle.config["hooks"] = {"createContainer": [
        {"path": hookenv["host"], "args": ["h", "createContainer", str(hookenv["out"])]}]}
    bundle.args("true")
    r = oci.run(bundle, new_id(), env=dict(os.environ, OCIRUN_T="from-the-runtime"))
    assert r.rc == 0, r
    assert "OCIRUN_T" not in read(hookenv, "createContainer.env")


def test_hook_argv0_is_args0(oci, bundle, tmp_path):
    out = tmp_path / "argv0"
    bundle.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["custom-argv0", "-c", f'echo "$0" > {out}']}]}
    bundle.args("true")
    assert oci.run(bundle, new_id()).rc == 0
    assert out.read_text() == "custom-argv0\n"


def test_hook_without_args_gets_path_as_argv0(oci, bundle, tmp_path):
    out = tmp_path / "argv"
    script = tmp_path / "noargs.sh"
    script.write_text(f'#!/bin/sh\necho "$0 $#" > {out}\n')
    script.chmod(0o755)
    bundle.config["hooks"] = {"createRuntime": [{"path": str(script)}]}
    bundle.args("true")
    assert oci.run(bundle, new_id()).rc == 0
    assert out.read_text() == f"{script} 0\n"


def _assert_nothing_left(oci, cid):
    assert oci.ids() == []
    assert cgroup_dirs(cid) == []


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_create_hook_failure_fails_create_and_leaves_nothing(oci, bundle, hookenv, kind):
    bundle.config["hooks"] = {kind: [hook(hookenv, kind, ["HOOK_EXIT=3"])],
                              "poststop": [hook(hookenv, "poststop")]}
    bundle.args("sleep", "60")
    cid = new_id()
    line = oci.fail("create", "-b", bundle.path, cid)
    assert f"{kind}[0]" in line and "exited with status 3" in line, line
    _assert_nothing_left(oci, cid)
    assert kind in order(hookenv)


def test_start_container_failure_fails_start_and_stops(oci, bundle, hookenv):
    bundle.config["hooks"] = {"startContainer": [hook(hookenv, "startContainer",
                                                      ["HOOK_EXIT=4"])]}
    bundle.args("sleep", "60")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    line = oci.fail("start", cid)
    assert "startContainer[0]" in line and "exited with status 4" in line, line
    assert wait_for(lambda: oci.state(cid)["status"] == "stopped")
    oci.ok("delete", cid)
    _assert_nothing_left(oci, cid)


def test_poststart_failure_is_a_warning(oci, bundle, hookenv):
    bundle.config["hooks"] = {"poststart": [hook(hookenv, "poststart", ["HOOK_EXIT=5"]),
                                            hook(hookenv, "poststart")]}
    bundle.args("sleep", "60")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    r = oci("start", cid)
    assert r.rc == 0, r
    assert "poststart[0]" in r.err and "exited with status 5" in r.err
    assert "Traceback" not in r.err
    assert oci.state(cid)["status"] == "running"
    assert order(hookenv) == ["poststart", "poststart"]  # the rest still ran


def test_poststop_failure_is_a_warning(oci, bundle, hookenv):
    bundle.config["hooks"] = {"poststop": [hook(hookenv, "poststop", ["HOOK_EXIT=6"])]}
    bundle.args("true")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    r = oci("delete", cid)
    assert r.rc == 0, r
    assert "poststop[0]" in r.err and "exited with status 6" in r.err
    _assert_nothing_left(oci, cid)


def test_timeout_kills_slow_hook_and_fails_create(oci, bundle, tmp_path):
    pidfile = tmp_path / "hookpid"
    bundle.config["hooks"] = {"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"],
         "timeout": 1}]}
    bundle.args("true")
    cid = new_id()
    t = time.monotonic()
    line = oci.fail("create", "-b", bundle.path, cid)
    assert time.monotonic() - t < 10
    assert "createRuntime[0]" in line and "timed out after 1s" in line, line
    _assert_nothing_left(oci, cid)
    pid = int(pidfile.read_text())
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}")), "the slow hook still runs"


def test_hook_killed_by_signal(oci, bundle):
    bundle.config["hooks"] = {"prestart": [{"path": "/bin/sh",
                                            "args": ["sh", "-c", "kill -9 $$"]}]}
    bundle.args("true")
    cid = new_id()
    line = oci.fail("create", "-b", bundle.path, cid)
    assert "prestart[0]" in line and "error running hook" in line and "killed by signal 9 (killed)" in line
    _assert_nothing_left(oci, cid)


def test_missing_hook_binary(oci, bundle, tmp_path):
    bundle.config["hooks"] = {"createRuntime": [{"path": str(tmp_path / "nohook")}]}
    bundle.args("true")
    cid = new_id()
    line = oci.fail("create", "-b", bundle.path, cid)
    assert line.endswith(f"config.json: hooks.createRuntime[0].path: {tmp_path}/nohook: "
                         "no such file"), line
    _assert_nothing_left(oci, cid)


def test_missing_start_container_hook_in_container(oci, bundle):
    bundle.config["hooks"] = {"startContainer": [{"path": "/no/hook/inside"}]}
    bundle.args("sleep", "60")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)  # the path resolves in the container: checked at start
    line = oci.fail("start", cid)
    assert "startContainer[0]" in line and "/no/hook/inside" in line, line
    oci("delete", "-f", cid)
    _assert_nothing_left(oci, cid)


def test_missing_start_container_hook_in_run_is_one_line(oci, bundle):
    """run: the hook's failed execve is reported once (the forked hook
    child used to print it too)."""
    bundle.config["hooks"] = {"startContainer": [{"path": "/no/hook/inside"}]}
    bundle.args("true")
    cid = new_id()
    line = oci.fail("run", "-b", bundle.path, cid)  # (fail: exactly one line)
    assert line == "ocirun: error running hook startContainer[0] /no/hook/inside: No such file or directory"
    _assert_nothing_left(oci, cid)


def test_hook_stdout_does_not_break_create(oci, bundle):
    """A hook writing a lot to stdout/stderr must not block or corrupt create."""
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", "cat >/dev/null; head -c 200000 /dev/zero | tr '\\0' x; echo"]}]}
    bundle.args("echo", "ok")
    r = oci.run(bundle, new_id())
    assert r.rc == 0 and r.out.endswith("ok\n"), r.rc
