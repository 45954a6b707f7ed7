"""Rootless: a real unprivileged user (created here, removed afterwards)
runs `spec --rootless`, then run/create/start/kill/delete/list with a user
namespace, state under $XDG_RUNTIME_DIR/ocirun, no cgroups (not delegated),
several id ranges through newuidmap/newgidmap as /etc/subuid allows."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from ocitest import OCIRUN, make_rootfs

SUB_START, SUB_COUNT = 600000, 65536


class User:
    def __init__(self) -> None:
        self.name = f"ocirl{os.getpid() % 100000}"
        self.base = tempfile.mkdtemp(prefix="ocirun-rootless-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.run_dir = os.path.join(self.base, "run")
        self.bundle = os.path.join(self.base, "bundle")
        self.uid = self.gid = -1
        self.pids: list[int] = []

    def create(self) -> None:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0",
                        "-K", "SUB_GID_COUNT=0", self.name], check=True, capture_output=True)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        rng = f"{SUB_START}-{SUB_START + SUB_COUNT - 1}"
        subprocess.run(["usermod", "--add-subuids", rng, "--add-subgids", rng, self.name],
                       check=True, capture_output=True)
        os.mkdir(self.run_dir, 0o700)
        make_rootfs(os.path.join(self.bundle, "rootfs"), link_busybox=False)
        for d, dirs, files in os.walk(self.base):
            for n in dirs + files:
                os.lchown(os.path.join(d, n), self.uid, self.gid)
        os.chown(self.base, self.uid, self.gid)

    def remove(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        subprocess.run(["pkill", "-9", "-u", self.name], capture_output=True) \
            if self.uid >= 0 else None
        with open("/proc/self/mountinfo") as f:
            for ln in f:
                if self.base in ln:
                    subprocess.run(["umount", "-l", ln.split()[4]], capture_output=True)
        subprocess.run(["userdel", self.name], capture_output=True)
        for f in ("/etc/subuid", "/etc/subgid"):
            with open(f) as fh:
                assert self.name not in fh.read(), f"{f} still lists {self.name}"
        shutil.rmtree(self.base, ignore_errors=True)

    def ocirun(self, *args: str, cwd: str | None = None, timeout: float = 60):
        cmd = ["runuser", "-u", self.name, "--", "env", f"XDG_RUNTIME_DIR={self.run_dir}",
               "PATH=/usr/sbin:/usr/bin:/sbin:/bin", OCIRUN, *args]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run(cmd, cwd=cwd or self.bundle, stdout=out, stderr=err,
                               stdin=subprocess.DEVNULL, text=True, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return p.returncode, out.read(), err.read()

    def ok(self, *args: str, **kw) -> str:
        rc, out, err = self.ocirun(*args, **kw)
        assert rc == 0, (args, rc, out, err)
        return out

    def config(self) -> dict:
        with open(os.path.join(self.bundle, "config.json")) as f:
            return json.load(f)

    def save(self, cfg: dict) -> None:
        path = os.path.join(self.bundle, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        os.chown(path, self.uid, self.gid)

    def state_root(self) -> str:
        return os.path.join(self.run_dir, "ocirun")


@pytest.fixture
def user():
    u = User()
    try:
        u.create()
        yield u
    finally:
        u.remove()


def _spec(user: User, script: str, **changes) -> dict:
    user.ok("spec", "--rootless")
    cfg = user.config()
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = False
    cfg["process"]["args"] = ["sh", "-c", script]
    cfg.update(changes)
    user.save(cfg)
    return cfg


def test_spec_rootless_shape(user):
    cfg = _spec(user, "true")
    linux = cfg["linux"]
    assert {"type": "user"} in linux["namespaces"]
    assert {"type": "network"} not in linux["namespaces"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
    assert "resources" not in linux
    assert not [m for m in cfg["mounts"] if m["type"] == "cgroup"]


def test_rootless_run_as_unprivileged_user(user):
    _spec(user, "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups;"
          " stat -c %u /bin/busybox; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status;"
          " cat /proc/self/cgroup | head -1; echo hello > /tmp/x && cat /tmp/x")
    out = user.ok("run", "r1").splitlines()
    assert out[0] == "0" and out[1] == "0"
    assert out[2].split() == ["0", str(user.uid), "1"]
    assert out[3].split() == ["0", str(user.gid), "1"]
    assert out[4] == "deny"  # single mapping written by the user itself (no newgidmap)
    assert out[5] == "0"     # the user's files are root's inside
    assert out[6].split()[1] == "0000000020000420"  # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert out[7].split()[1] == "1"
    assert out[-1] == "hello"
    assert os.listdir(user.state_root()) == []  # run deletes; the root is the XDG one
    st = os.stat(user.state_root())
    assert st.st_uid == user.uid


def test_rootless_lifecycle(user):
    _spec(user, "sleep 60")
    user.ok("create", "c1")
    assert os.path.isdir(os.path.join(user.state_root(), "c1"))
    st = json.loads(user.ok("state", "c1"))
    assert st["status"] == "created" and st["owner"] == str(user.uid)
    pid = st["pid"]
    with open(f"/proc/{pid}/status") as f:
        uids = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
    assert uids == [str(user.uid)] * 4  # mapped root is the user on the host
    user.ok("start", "c1")
    assert json.loads(user.ok("state", "c1"))["status"] == "running"
    listing = user.ok("list")
    assert "c1" in listing and "running" in listing
    # no cgroup was made for it (nothing is delegated to this user)
    with open(f"/proc/{pid}/cgroup") as f:
        mine = f.read()
    assert "/c1" not in mine
    user.ok("kill", "c1", "KILL")
    end = time.monotonic() + 10
    while json.loads(user.ok("state", "c1"))["status"] != "stopped":
        assert time.monotonic() < end
        time.sleep(0.05)
    user.ok("delete", "c1")
    assert os.listdir(user.state_root()) == []


def test_rootless_several_ranges_through_newuidmap(user):
    cfg = _spec(user, "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/f;"
                      " chown 1000:1000 /tmp/f && stat -c %u:%g /tmp/f")
    maps = [{"containerID": 0, "hostID": user.uid, "size": 1},
            {"containerID": 1, "hostID": SUB_START, "size": SUB_COUNT}]
    gmaps = [{"containerID": 0, "hostID": user.gid, "size": 1},
             {"containerID": 1, "hostID": SUB_START, "size": SUB_COUNT}]
    cfg["linux"]["uidMappings"], cfg["linux"]["gidMappings"] = maps, gmaps
    caps = cfg["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k] = caps[k] + ["CAP_CHOWN"]
    user.save(cfg)
    out = user.ok("run", "r2").splitlines()
    assert [ln.split() for ln in out[:4]] == [
        ["0", str(user.uid), "1"], ["1", str(SUB_START), str(SUB_COUNT)],
        ["0", str(user.gid), "1"], ["1", str(SUB_START), str(SUB_COUNT)]]
    assert out[4] == "0" and out[5] == "1000:1000"


def test_rootless_user_namespace_without_mappings(user):
    """As crun: no mappings in the config, and the user's own id is the
    container's root, the range /etc/subuid grants it the ids above."""
    cfg = _spec(user, "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g")
    del cfg["linux"]["uidMappings"], cfg["linux"]["gidMappings"]
    user.save(cfg)
    out = user.ok("run", "r3").splitlines()
    assert [ln.split() for ln in out[:4]] == [
        ["0", str(user.uid), "1"], ["1", str(SUB_START), str(SUB_COUNT)],
        ["0", str(user.gid), "1"], ["1", str(SUB_START), str(SUB_COUNT)]]
    assert out[4:] == ["0", "0"]


@pytest.mark.parametrize("maps,field", [
    # beyond what /etc/subuid grants the user
    ([{"containerID": 0, "hostID": "UID", "size": 1},
      {"containerID": 1, "hostID": SUB_START + 1000, "size": SUB_COUNT}], "linux.uidMappings"),
    # someone else's ids
    ([{"containerID": 0, "hostID": 0, "size": 1}], "linux.uidMappings"),
    # overlapping container ranges
    ([{"containerID": 0, "hostID": "UID", "size": 1},
      {"containerID": 0, "hostID": SUB_START, "size": 10}], "linux.uidMappings"),
])
def test_rootless_bad_mappings(user, maps, field):
    cfg = _spec(user, "true")
    cfg["linux"]["uidMappings"] = [dict(m, hostID=user.uid if m["hostID"] == "UID"
                                        else m["hostID"]) for m in maps]
    user.save(cfg)
    rc, out, err = user.ocirun("run", "bad")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert field in lines[0], lines[0]
    assert not os.path.exists(user.state_root()) or os.listdir(user.state_root()) == []


def test_rootless_resources_without_delegation_refused(user):
    cfg = _spec(user, "true")
    cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}}
    user.save(cfg)
    rc, out, err = user.ocirun("run", "res")
    assert rc != 0 and "linux.resources.memory" in err and "delegated" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(user.state_root()) == []
