"""Known container-runtime vulnerabilities as regression tests: the
container must not reach the runtime binary (CVE-2019-5736), mount
destinations planted with symlinks must stay inside the rootfs
(CVE-2021-30465), no runtime fd leaks in (CVE-2024-21626), /proc, /dev and
/sys that are symlinks are refused or contained (CVE-2019-16884 class), and
no inheritable capabilities with the default spec (CVE-2022-29162)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from relutil import one_line_error  # noqa: F401

from ocitest import OCIRUN


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tree(path) -> list:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


@pytest.fixture
def hostdir(tmp_path):
    """A host directory that no container may touch."""
    d = tmp_path / "hostdir"
    d.mkdir()
    (d / "sentinel").write_text("host\n")
    yield d
    with open("/proc/self/mountinfo") as f:
        assert str(d) not in f.read(), "something was mounted on the host dir"
    assert _tree(d) == [str(d / "sentinel")], f"host dir changed: {_tree(d)}"
    assert (d / "sentinel").read_text() == "host\n"


# --- CVE-2019-5736 -------------------------------------------------------------
def test_5736_container_cannot_write_the_runtime(oci, bundle):
    """Inside, /proc/self/exe and /proc/1/exe are the container's own binary;
    writing them fails; the runtime's files on the host are unchanged."""
    before = {p: _digest(p) for p in (sys.executable, os.path.realpath("/usr/bin/python3"),
                                      OCIRUN)}
    bundle.sh("readlink /proc/self/exe; readlink /proc/1/exe; "
              "for p in /proc/1/exe /proc/self/exe; do "
              "  (echo pwned > $p) 2>/dev/null && echo WROTE $p; "
              "  (echo pwned >> $p) 2>/dev/null && echo APPENDED $p; done; "
              "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '")
    r = oci.run(bundle, "x5736")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "/bin/busybox" and lines[1] == "/bin/busybox", r.out
    assert "WROTE" not in r.out and "APPENDED" not in r.out, r.out
    pids = [int(x) for x in lines[-1].split()]
    # the container's own: sh, ls, grep, sort, tr (a new pid namespace, so small numbers)
    assert pids and pids[0] == 1 and len(pids) <= 8 and max(pids) < 50, \
        f"host processes visible inside: {pids}"
    assert before == {p: _digest(p) for p in before}


def test_5736_waiting_init_is_not_dumpable(oci, bundle):
    """Between create and start the init is the runtime (a Python process)
    inside the container's namespaces: it must be non-dumpable, so a process
    without CAP_SYS_PTRACE, even root, cannot open its exe, fds or memory."""
    bundle.args("sleep", "60")
    oci.ok("create", "-b", bundle.path, "nd")
    pid = oci.state("nd")["pid"]
    probe = ("import os,sys\n"
             "for p in ('exe', 'fd/0', 'mem', 'root'):\n"
             "    path = f'/proc/{sys.argv[1]}/' + p\n"
             "    try:\n"
             "        (os.readlink if p != 'mem' else lambda x: os.open(x, os.O_RDONLY))(path)\n"
             "        print('OPEN', p)\n"
             "    except PermissionError:\n"
             "        print('DENIED', p)\n")
    r = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable,
                        "-c", probe, str(pid)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["DENIED", "exe", "DENIED", "fd/0", "DENIED", "mem",
                                "DENIED", "root"], r.stdout
    oci.ok("start", "nd")
    oci.ok("delete", "--force", "nd")


# --- CVE-2021-30465 ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["absolute", "relative"])
@pytest.mark.parametrize("fstype", ["tmpfs", "bind"])
def test_30465_mount_destination_through_symlink_stays_inside(oci, bundle, hostdir, tmp_path,
                                                              kind, fstype):
    target = str(hostdir) if kind == "absolute" else "../../../../../../../../" + str(hostdir)
    os.symlink(target, os.path.join(bundle.rootfs, "evil"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    m = {"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"} if fstype == "tmpfs" \
        else {"destination": "/evil/sub", "type": "bind", "source": str(src), "options": ["rbind"]}
    bundle.config["mounts"].append(m)
    bundle.sh("ls -d /evil/sub && cat /proc/self/mountinfo | grep -c ' /evil/sub ' ; true")
    r = oci.run(bundle, "x30465")
    assert "Traceback" not in r.err
    if r.rc != 0:
        one_line = [ln for ln in r.err.splitlines() if ln.strip()]
        assert len(one_line) == 1, r.err


def test_30465_symlink_swapped_during_create(oci, bundle, hostdir):
    """A component of a mount destination flips between a directory and a
    symlink to the host while containers are created: whatever wins each
    race, nothing lands on the host."""
    mnt = os.path.join(bundle.rootfs, "mnt", "a")
    os.makedirs(mnt)
    bundle.config["mounts"].append({"destination": "/mnt/a/x", "type": "tmpfs",
                                    "source": "tmpfs"})
    bundle.args("true")
    stop = threading.Event()

    def swapper():
        link = mnt + ".lnk"
        real = mnt + ".dir"
        os.symlink(str(hostdir), link)
        os.makedirs(real + "/x", exist_ok=True)
        while not stop.is_set():
            for src in (link, real):
                try:
                    os.rename(src, mnt + ".new")
                    os.replace(mnt, src if src == real else real + ".tmp")
                except OSError:
                    pass
                try:
                    os.rename(mnt + ".new", mnt)
                except OSError:
                    pass
                if os.path.lexists(real + ".tmp"):
                    try:
                        os.rename(real + ".tmp", real)
                    except OSError:
                        pass

    t = threading.Thread(target=swapper)
    t.start()
    results = []
    try:
        for i in range(20):
            r = oci.run(bundle, f"sw{i}")
            assert "Traceback" not in r.err, r.err
            results.append(r.rc)
    finally:
        stop.set()
        t.join()
    print("swap race results:", results)


# --- CVE-2024-21626 ------------------------------------------------------------
def test_21626_no_fds_leak_into_the_container(oci, bundle):
    bundle.sh("ls /proc/self/fd | tr '\\n' ' '")
    r = oci.run(bundle, "fds")
    assert r.rc == 0, r
    assert sorted(int(x) for x in r.out.split()) == [0, 1, 2, 3], r.out  # 3: ls's own dir


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
def test_21626_cwd_in_proc_self_fd_fails_cleanly(oci, bundle, n):
    """The init's fds are the runtime's (the state dir, the sync socket):
    a cwd through them must fail in one line, never land outside."""
    bundle.process["cwd"] = f"/proc/self/fd/{n}"
    bundle.sh("pwd; ls")
    bundle.save()
    r = oci.run(bundle, f"cwd{n}")
    assert "Traceback" not in r.err
    if r.rc == 0:  # only acceptable if that fd was the container's own root
        out = r.out.split()
        assert out[0] == "/" and "linuxrc" in out, f"cwd /proc/self/fd/{n}: {r.out!r}"
    else:
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        assert len(lines) == 1, r.err
    assert oci.ids() == []


# --- CVE-2019-16884 class: /proc, /dev, /sys as symlinks ----------------------
@pytest.mark.parametrize("kind", ["absolute", "relative", "inside"])
@pytest.mark.parametrize("name", ["proc", "dev", "sys"])
def test_special_dir_is_a_symlink(oci, bundle, hostdir, name, kind):
    path = os.path.join(bundle.rootfs, name)
    os.rmdir(path)
    if kind == "absolute":
        os.symlink(str(hostdir), path)
    elif kind == "relative":
        os.symlink("../../../../../../../../" + str(hostdir), path)
    else:
        os.makedirs(os.path.join(bundle.rootfs, "elsewhere"))
        os.symlink("/elsewhere", path)
    bundle.sh(f"cat /proc/self/mountinfo >/dev/null; ls /{name} >/dev/null; echo ran")
    r = oci.run(bundle, f"sl-{name}-{kind}")
    assert "Traceback" not in r.err, r.err
    if name == "proc":  # refused, as runc: proc is never mounted through a symlink
        assert r.rc != 0, r
    if r.rc != 0:
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        assert len(lines) == 1, r.err
    assert oci.ids() == []


def test_proc_mount_destination_symlink_refused(oci, bundle, hostdir):
    os.symlink(str(hostdir), os.path.join(bundle.rootfs, "myproc"))
    bundle.config["mounts"].append({"destination": "/myproc", "type": "proc",
                                    "source": "proc"})
    bundle.args("true")
    r = oci.run(bundle, "pm")
    assert r.rc != 0
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "symlink" in lines[0], r.err


# --- CVE-2022-29162 ------------------------------------------------------------
def test_29162_no_inheritable_capabilities_by_default(oci, bundle):
    bundle.sh("grep -E '^Cap(Inh|Amb)' /proc/self/status")
    r = oci.run(bundle, "inh")
    assert r.rc == 0, r
    caps = dict(ln.split(":\t") for ln in r.out.splitlines())
    assert int(caps["CapInh"], 16) == 0, r.out
