"""Hardening with real containers: no runtime fd reaches the container, the
runtime cannot be reached through /proc/<pid>/exe from inside, masked and
read-only paths, ids that would traverse paths, configs that ask for a mount
through a symlink."""
from __future__ import annotations

import json
import os
import time

import pytest


DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def run_out(oci, bundle, *extra, cid="t") -> str:
    r = oci.run(bundle, cid, *extra)
    assert r.rc == 0, r
    return r.out


# --- file descriptors ------------------------------------------------------------------
def fd_listing(text: str) -> dict[str, str]:
    """`ls -l /proc/N/fd` -> {fd: target}"""
    out = {}
    for ln in text.splitlines():
        if " -> " in ln:
            left, target = ln.split(" -> ", 1)
            out[left.split()[-1]] = target
    return out


# `; true` keeps sh from exec'ing ls in its place: $$ is the container's process
LIST_FDS = "ls -l /proc/$$/fd; true"


def test_only_stdio_reaches_the_container(oci, bundle):
    bundle.sh(LIST_FDS)
    assert sorted(fd_listing(run_out(oci, bundle))) == ["0", "1", "2"]


def test_only_stdio_after_create_and_start(oci, bundle, tmp_path):
    out = tmp_path / "out"
    bundle.sh("exec > /fds; ls -l /proc/$$/fd; exec sleep 60")
    oci.ok("create", "--bundle", bundle.path, "c")
    oci.ok("start", "c")
    end = time.monotonic() + 10
    fds = os.path.join(bundle.rootfs, "fds")
    while not (os.path.exists(fds) and os.path.getsize(fds)) and time.monotonic() < end:
        time.sleep(0.02)
    with open(fds) as f:
        got = fd_listing(f.read())
    assert sorted(got) == ["0", "1", "2"], got
    for target in got.values():  # nothing of the runtime's: state dir, fifo, sockets, pidfds
        assert "exec.fifo" not in target and "socket" not in target and "anon_inode" not in target
    oci.ok("delete", "--force", "c")


def test_preserved_fds_and_nothing_more(oci, bundle, tmp_path):
    extra = tmp_path / "extra"
    extra.write_text("preserved\n")
    bundle.sh("ls /proc/$$/fd; cat <&3")  # sh keeps no fd of its own here
    fd = os.open(extra, os.O_RDONLY)
    try:
        # fd 3 of the runtime is set in the child only: in this process fd 3
        # may be pytest's own (its capture keeps saved fds there)
        r = oci.run(bundle, "t", "--preserve-fds", "1", pass_fds=(fd, 3),
                    preexec_fn=lambda: os.dup2(fd, 3))
    finally:
        os.close(fd)
    assert r.rc == 0, r
    out = r.out.split()
    assert out[:4] == ["0", "1", "2", "3"] and out[4] == "preserved"


@pytest.mark.parametrize("cmd", ["run", "exec"])
def test_preserve_fds_passes_none_of_the_runtimes_own(oci, bundle, cmd):
    """--preserve-fds 4 with only stdio passed: the runtime's own fds that
    take those numbers (its bytecode file, the state dir, a pipe) are not
    preserved; they once were (a host directory fd in the container)."""
    if cmd == "run":
        bundle.sh(LIST_FDS)
        r = oci.run(bundle, "t", "--preserve-fds", "4")
    else:
        bundle.args("sleep", "60")
        oci.ok("run", "-d", "--bundle", bundle.path, "c")
        r = oci("exec", "--preserve-fds", "4", "c", "sh", "-c", LIST_FDS)
        oci.ok("delete", "--force", "c")
    assert r.rc == 0, r
    assert sorted(fd_listing(r.out)) == ["0", "1", "2"], r.out


def test_exec_gets_only_stdio(oci, bundle):
    bundle.args("sleep", "60")
    oci.ok("run", "-d", "--bundle", bundle.path, "c")
    out = oci.ok("exec", "c", "sh", "-c", LIST_FDS)
    assert sorted(fd_listing(out)) == ["0", "1", "2"], out
    oci.ok("delete", "--force", "c")


# --- /proc/<runtime pid>/exe is out of reach -------------------------------------------------
# Container root is host uid 0 here (no user namespace) with runc's default
# capabilities (no CAP_SYS_PTRACE). For another process of the same uid whose
# permitted set is a subset of ours, /proc/<pid>/exe, fd/ and environ are
# readable, unless that process is non-dumpable. So when the runtime, with the
# container's credentials, sits in the container's pid namespace, only its
# non-dumpability keeps the container's root away from its exe and fds.
# (With a user namespace the uid change to the mapped root already makes the
# process non-dumpable: the kernel's own rule, so that case proves nothing.)
def _bundle(path: str, rootfs: str, args: list[str], namespaces: list[dict],
            mounts: list[dict] | None = None) -> str:
    from ocirun.specgen import default_spec
    os.makedirs(path, exist_ok=True)
    cfg = default_spec()
    cfg["root"] = {"path": rootfs, "readonly": False}
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    cfg["process"]["capabilities"] = {k: list(DEFAULT_CAPS) for k in
                                      ("bounding", "effective", "permitted")}
    cfg["linux"]["namespaces"] = namespaces
    if mounts is not None:
        cfg["mounts"] = mounts
    if not any(ns["type"] == "uts" and not ns.get("path") for ns in namespaces):
        cfg.pop("hostname")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return path


def nspid(host_pid: int) -> int:
    with open(f"/proc/{host_pid}/status") as f:
        for ln in f:
            if ln.startswith("NSpid:"):
                return int(ln.split()[-1])
    raise AssertionError("no NSpid")


def test_created_init_exe_unreachable_from_inside(oci, bundle, tmp_path):
    """Container B joins A's pid namespace and waits in "created": its init
    is still the runtime (python) with B's credentials (uid 0, the same
    capabilities as A). A's root can read /proc/<pid>/exe of its own
    processes (the control), but not of B's init."""
    a = _bundle(str(tmp_path / "a"), bundle.rootfs, ["sleep", "60"],
                [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")])
    oci.ok("run", "-d", "--bundle", a, "a")
    apid = oci.state("a")["pid"]
    b = _bundle(str(tmp_path / "b"), bundle.rootfs, ["true"],
                [{"type": "pid", "path": f"/proc/{apid}/ns/pid"}, {"type": "mount"}],
                mounts=[{"destination": "/proc", "type": "proc", "source": "proc"}])
    oci.ok("create", "--bundle", b, "b")
    bpid = oci.state("b")["pid"]
    assert "python" in os.readlink(f"/proc/{bpid}/exe")
    with open(f"/proc/{bpid}/status") as f:
        st = f.read()
    assert "Uid:\t0\t0\t0\t0" in st and "CapPrm:\t00000000a80425fb" in st  # as A's root
    n = nspid(bpid)
    out = oci.ok("exec", "a", "sh", "-c",
                 f"readlink /proc/1/exe; echo ctl=$?; readlink /proc/{n}/exe; echo exe=$?;"
                 f" cat /proc/{n}/exe >/dev/null 2>&1; echo open=$?;"
                 f" readlink /proc/{n}/fd/0 /proc/{n}/cwd; echo fds=$?;"
                 f" cat /proc/{n}/environ >/dev/null 2>&1; echo env=$?")
    lines = out.splitlines()
    assert lines[0] == "/bin/busybox" and lines[1] == "ctl=0"  # a dumpable process: readable
    assert lines[2:] == ["exe=1", "open=1", "fds=1", "env=1"], out
    oci.ok("delete", "--force", "b")
    oci.ok("delete", "--force", "a")


def test_exec_runtime_unreachable_while_joining(oci, bundle):
    """While `ocirun exec` children join the container and drop to the
    container's credentials, a process inside keeps trying /proc/*/exe: it
    must never resolve to the runtime's interpreter."""
    script = ("i=0; while [ $i -lt 3000 ] && [ ! -e /stop ]; do for p in /proc/[0-9]*; do "
              "t=$(readlink $p/exe 2>/dev/null) && [ \"$t\" != /bin/busybox ] && "
              "echo LEAK $p $t; done; i=$((i+1)); done > /seen 2>&1; echo done >> /seen")
    bundle.process["capabilities"] = {k: list(DEFAULT_CAPS) for k in
                                      ("bounding", "effective", "permitted")}
    bundle.sh(script + "; sleep 60")
    oci.ok("run", "-d", "--bundle", bundle.path, "a")
    try:
        for _ in range(8):
            oci.ok("exec", "a", "true")
    finally:
        with open(os.path.join(bundle.rootfs, "stop"), "w"):
            pass
    seen = os.path.join(bundle.rootfs, "seen")
    end = time.monotonic() + 20
    text = ""
    while time.monotonic() < end:
        with open(seen) as f:
            text = f.read()
        if "done" in text:
            break
        time.sleep(0.05)
    assert "LEAK" not in text, text
    oci.ok("delete", "--force", "a")


# --- masked and read-only paths ---------------------------------------------------------
def test_masked_and_readonly_paths(oci, bundle):
    masked = [p for p in bundle.linux["maskedPaths"] if os.path.exists(p)]
    files = [p for p in masked if not os.path.isdir(p)]
    dirs = [p for p in masked if os.path.isdir(p)]
    assert files and dirs, masked  # /proc/keys, /proc/timer_list, /sys/firmware on this host
    script = [f"echo {p}=$(wc -c < {p}) $(awk '$5==\"{p}\"' /proc/self/mountinfo | wc -l)"
              for p in files]
    script += [f"echo {p}=$(ls -A {p} | wc -l); touch {p}/x 2>/dev/null || echo {p}=ro"
               for p in dirs]
    script += ["(echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null || echo sys=ro",
               "(echo x > /proc/irq/x) 2>/dev/null || echo irq=ro"]
    bundle.sh("; ".join(script))
    out = run_out(oci, bundle).split("\n")
    for p in files:
        assert f"{p}=0 1" in out, out  # empty: /dev/null bound over it
    for p in dirs:
        assert f"{p}=0" in out and f"{p}=ro" in out, out
    assert "sys=ro" in out and "irq=ro" in out


def test_sysfs_is_read_only(oci, bundle):
    bundle.sh("touch /sys/kernel/x 2>/dev/null || echo ro-ok; "
              "awk '$5==\"/sys\" {print $6}' /proc/self/mountinfo")
    out = run_out(oci, bundle).split()
    assert out[0] == "ro-ok" and out[1].split(",")[0] == "ro"


# --- ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cid", ["../evil", "a/b", "..", ".", "/abs", "x/../../y", ""])
def test_ids_cannot_traverse_paths(oci, bundle, tmp_path, cid):
    bundle.args("true")
    before = sorted(os.listdir(tmp_path))
    for cmd in (["create", "--bundle", bundle.path, cid], ["run", "--bundle", bundle.path, cid],
                ["state", cid], ["delete", "--force", cid], ["kill", cid, "9"],
                ["start", cid], ["exec", cid, "true"]):
        line = oci.fail(*cmd)
        assert "id" in line.lower() or "container" in line.lower(), (cmd, line)
    assert sorted(os.listdir(tmp_path)) == before
    assert oci.ids() == []


# --- unsafe configs ----------------------------------------------------------------------------
def test_proc_mount_through_symlink_refused(oci, bundle):
    proc = os.path.join(bundle.rootfs, "proc")
    os.rmdir(proc)
    os.symlink("/tmp", proc)
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert "mounts[0]" in line and "symlink" in line and "/proc" in line
    assert oci.ids() == []


def test_sysfs_mount_through_symlink_refused(oci, bundle):
    sys_ = os.path.join(bundle.rootfs, "sys")
    os.rmdir(sys_)
    os.symlink("/etc", sys_)
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert "symlink" in line and "/sys" in line


def test_mount_destination_symlink_stays_inside_rootfs(oci, bundle, tmp_path):
    """A planted absolute or ../ symlink at a mount destination resolves
    inside the rootfs: the host's directory is untouched."""
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (host_dir / "keep").write_text("host")
    os.symlink(str(host_dir), os.path.join(bundle.rootfs, "mnt/abs"))
    os.symlink("../../../../../../.." + str(host_dir), os.path.join(bundle.rootfs, "mnt/rel"))
    bundle.config["mounts"] += [
        {"destination": "/mnt/abs", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/mnt/rel", "type": "tmpfs", "source": "tmpfs"},
    ]
    bundle.sh("touch /mnt/abs/in-container; ls /mnt/abs/ /mnt/rel/")
    out = run_out(oci, bundle)
    assert "in-container" in out
    assert sorted(os.listdir(host_dir)) == ["keep"]
    with open("/proc/self/mountinfo") as f:
        assert str(host_dir) not in f.read()


def test_dotdot_mount_destination_refused(oci, bundle):
    bundle.config["mounts"].append({"destination": "/mnt/../../etc", "type": "tmpfs",
                                    "source": "tmpfs"})
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert "destination" in line and ".." in line


def test_cwd_outside_root_refused(oci, bundle):
    """CVE-2024-21626 class: a cwd through a leaked fd is refused (no fd leaks
    anyway); a cwd that does not exist is a clear error."""
    bundle.process["cwd"] = "/proc/self/fd/7"
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert "cwd" in line or "chdir" in line
    assert oci.ids() == []
