"""Rootless podman (an unprivileged user made for the session), once with
ocirun and once with runc.

podman runs conmon and the runtime as uid 0 in a user namespace of the
user's, passes no --root, and the container config usually has no user
namespace of its own. So the runtime must find out by itself that it is
rootless, as runc does: state under $XDG_RUNTIME_DIR, no cgroups where
none are delegated (cgroup v1 here), the host's device nodes bound in
(mknod is refused), and `exec` entering the container's pid namespace
although the way back to the host's is refused.
"""
from __future__ import annotations

import json
import os

import pytest

import enginekit as ek

pytestmark = pytest.mark.engines
IMG = ek.IMAGE


def test_rootless_run_output_and_exit_code(rootless_podman):
    r = rootless_podman("run", "--rm", IMG, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.rc == 7, str(r)
    assert r.out == "out\n", str(r)
    assert "err" in r.err, str(r)
    create = next(argv for _c, _r, argv in rootless_podman.calls()
                  if ek.subcommand(argv)[0] == "create")
    assert "--root" not in create, create  # the runtime picks $XDG_RUNTIME_DIR itself


def test_rootless_detached_exec_stop(rootless_podman):
    pm = rootless_podman
    cid = pm.ok("run", "-d", IMG, "sh", "-c",
                'trap "exit 9" TERM; while :; do sleep 0.1; done').strip()
    # the runtime's state is the user's, under $XDG_RUNTIME_DIR/<runtime>
    state = os.path.join(pm.engine.state_root(pm.runtime), cid, "state.json")
    with open(state) as f:
        init_pid = json.load(f)["pid"] if pm.runtime == "ocirun" else json.load(f)["init_process_pid"]
    r = pm("exec", cid, "sh", "-c", "readlink /proc/self/ns/pid; echo $$; exit 4")
    assert r.rc == 4, str(r)
    ns, mypid = r.out.split()
    assert ns == os.readlink(f"/proc/{init_pid}/ns/pid") and int(mypid) > 1, str(r)
    r = pm("exec", "-t", cid, "tty", tty=True)
    assert r.rc == 0 and "/dev/pts/" in r.out, str(r)
    pm.ok("stop", "-t", "10", cid)
    assert pm.ok("inspect", "-f", "{{.State.ExitCode}}", cid).strip() == "9"
    pm.ok("rm", cid)


def test_rootless_devices_and_privileged(rootless_podman):
    # mknod is refused in the user's namespace: the host's nodes are bound in
    r = rootless_podman("run", "--rm", IMG, "stat", "-c", "%n %t,%T", "/dev/null", "/dev/zero",
                        "/dev/tty")
    assert r.rc == 0, str(r)
    assert r.out.split("\n") == ["/dev/null 1,3", "/dev/zero 1,5", "/dev/tty 5,0", ""], str(r)
    # --privileged: podman binds every host device (and /dev/null among them)
    r = rootless_podman("run", "--rm", "--privileged", IMG, "sh", "-c",
                        "stat -c %t,%T /dev/null; ls /dev | wc -l")
    assert r.rc == 0, str(r)
    null, count = r.out.split()
    assert null == "1,3" and int(count) > 15, str(r)


def test_rootless_keep_id(rootless_podman):
    # --userns keep-id: a user namespace in the config, inside the user's
    r = rootless_podman("run", "--rm", "--userns", "keep-id", IMG, "id", "-u")
    assert r.rc == 0, str(r)
    assert r.out.strip() == str(rootless_podman.engine.uid), str(r)
