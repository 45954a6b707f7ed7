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


def test_rootless_exec(user):
    """exec needs the container's user namespace before its pid namespace
    (the user has no right over the host's): the child enters them in that
    order and forks into the pid namespace."""
    _spec(user, "sleep 60")
    user.ok("run", "-d", "e1")
    pid = json.loads(user.ok("state", "e1"))["pid"]
    rc, out, err = user.ocirun("exec", "e1", "sh", "-c",
                               "readlink /proc/self/ns/pid; id -u; echo $$; exit 3")
    assert rc == 3, (out, err)
    ns, uid, mypid = out.split()
    assert ns == os.readlink(f"/proc/{pid}/ns/pid")
    assert uid == "0" and int(mypid) > 1  # in the container's pid namespace
    user.ok("delete", "--force", "e1")
    assert os.listdir(user.state_root()) == []


def test_uid0_in_users_namespace_is_rootless(user):
    """Rootless podman's shape: the runtime runs as uid 0 in a user namespace
    of the user's (all commands in one, as podman's pause process keeps it),
    and the config has no user namespace of its own. As runc: state under
    $XDG_RUNTIME_DIR unless $USER is root, no cgroups (none are delegated),
    the host's device nodes bound in (no mknod there), exec into the pid
    namespace even though the way back to the host's is refused."""
    cfg = _spec(user, "sleep 60")
    ns = cfg["linux"]["namespaces"]
    cfg["linux"]["namespaces"] = [n for n in ns if n["type"] != "user"]
    del cfg["linux"]["uidMappings"], cfg["linux"]["gidMappings"]
    user.save(cfg)
    script = ("ocirun run -d u0 && ls $XDG_RUNTIME_DIR/ocirun &&"
              " ocirun exec u0 sh -c 'echo exec:$$; stat -c %t,%T /dev/null' &&"
              " ocirun state u0 && ocirun delete --force u0 && echo deleted")
    cmd = ["runuser", "-u", user.name, "--", "unshare", "--user", "--map-root-user",
           "env", f"XDG_RUNTIME_DIR={user.run_dir}", f"USER={user.name}",
           f"PATH={os.path.dirname(OCIRUN)}:/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-c", script]
    p = subprocess.run(cmd, cwd=user.bundle, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, (p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert lines[0] == "u0", p.stdout  # the state under $XDG_RUNTIME_DIR/ocirun
    assert lines[1].startswith("exec:") and int(lines[1][5:]) > 1, p.stdout
    assert lines[2] == "1,3", p.stdout  # the host's /dev/null, bound in
    st = json.loads("\n".join(lines[3:-1]))
    assert st["id"] == "u0" and lines[-1] == "deleted", p.stdout
    assert os.listdir(user.state_root()) == []
    assert not os.path.exists("/run/ocirun/u0")
    assert not [ln for ln in open("/proc/self/mountinfo") if user.base in ln]


def test_rootless_flag_false_makes_cgroups_required(user):
    """--rootless false (runc's flag): no going without the cgroups the
    user may not make; true and auto (the default) go without them."""
    _spec(user, "true")
    rc, out, err = user.ocirun("--rootless", "false", "run", "f1")
    assert rc != 0 and "creating cgroup" in err and "Permission denied" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(user.state_root()) == []
    user.ok("--rootless", "true", "run", "f2")
    user.ok("--rootless", "auto", "run", "f3")
