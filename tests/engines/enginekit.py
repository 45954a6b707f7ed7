"""Engine test kit: a busybox image built locally, podman with an isolated
configuration, a private containerd daemon, an argv-recording wrapper for
each runtime, and leak checks (engine state, runtime state, cgroups, mounts,
processes).

A uniquely named module (not conftest) so tests can import it directly.
Nothing here touches state it did not create: every engine directory is
under one temporary base directory, and only processes started here are
killed, by pid.
"""
from __future__ import annotations

import gzip  # noqa: F401  (kept for callers that want compressed layers)
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, REPO)

from mkbundle import make_rootfs  # noqa: E402

OCIRUN_BIN = os.environ.get("OCIRUN_ENGINE_BIN", "/usr/local/bin/ocirun")
RUNTIMES = ("ocirun", "runc")
IMAGE = "localhost/ocirun-test/busybox:latest"
US = "\x1f"  # field separator in the argv log (never in an argv word here)
CGROUP_ROOT = "/sys/fs/cgroup"
# pure cgroup v2 (the QEMU guest): files have v2 names, one hierarchy
CGROUP2 = os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))
# podman's cgroup manager: cgroupfs here; "systemd" in the guest (systemd as
# PID 1, as on most hosts): OCIRUN_PODMAN_CGROUP_MANAGER
PODMAN_CGROUP_MANAGER = os.environ.get("OCIRUN_PODMAN_CGROUP_MANAGER", "cgroupfs")
# dockerd's cgroup driver: cgroupfs here; "systemd" in the guest
DOCKER_CGROUP_DRIVER = os.environ.get("OCIRUN_DOCKER_CGROUP_DRIVER", "cgroupfs")
MEMORY_LIMIT_FILE = "memory.max" if CGROUP2 else "memory.limit_in_bytes"
# every command's timeout is multiplied by this (the emulated guest is ~10x slower)
TIMEOUT_SCALE = float(os.environ.get("OCIRUN_ENGINE_TIMEOUT_SCALE", "1"))


def runtime_binary(name: str) -> str | None:
    if name == "ocirun":
        return OCIRUN_BIN if os.access(OCIRUN_BIN, os.X_OK) else None
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


class Result:
    def __init__(self, argv: list[str], rc: int, out: str, err: str, secs: float) -> None:
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def __repr__(self) -> str:
        return (f"\n  argv: {' '.join(self.argv)}\n  rc: {self.rc}\n"
                f"  stdout: {self.out[-3000:]!r}\n  stderr: {self.err[-3000:]!r}\n")

    __str__ = __repr__


def run(argv: list[str], timeout: float = 60, env: dict | None = None,
        input: str | None = None, check: bool = False, tty: bool = False) -> Result:
    """Run a command with stdout/stderr to files (a detached container's
    conmon or shim may keep a pipe open forever), stdin from /dev/null.
    tty=True runs it on a new pty (util-linux `script`), as a user at a
    terminal would: then its stdout and stderr both arrive in out."""
    if tty:
        import shlex
        argv = ["script", "-qefc", shlex.join(argv), "/dev/null"]
    t = time.monotonic()
    timeout *= TIMEOUT_SCALE
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            p = subprocess.run(argv, stdout=out, stderr=err, text=True, env=env,
                               input=input, timeout=timeout,
                               stdin=None if input is not None else subprocess.DEVNULL)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = -999
        out.seek(0)
        err.seek(0)
        r = Result(argv, rc, out.read(), err.read(), time.monotonic() - t)
    if rc == -999:
        r.err += f"\n[enginekit: timed out after {timeout}s]"
    if check:
        assert r.rc == 0, r
    return r


# ---------------------------------------------------------------- argv log

class ArgvLog:
    """One wrapper script per runtime (named like the runtime, so podman's
    runtime_supports_json and error prefixes see the same name) that appends
    the caller's name and its argv to a log, then execs the real runtime."""

    def __init__(self, base: str) -> None:
        self.dir = os.path.join(base, "wrap")
        self.path = os.path.join(base, "argv.log")
        os.makedirs(self.dir, exist_ok=True)
        open(self.path, "a").close()
        self.wrappers: dict[str, str] = {}
        for name in RUNTIMES:
            real = runtime_binary(name)
            if not real:
                continue
            w = os.path.join(self.dir, name)
            with open(w, "w") as f:
                f.write("#!/bin/sh\n"
                        "# enginekit: record argv, then run the real runtime\n"
                        "US=$(printf '\\037')\n"
                        "l=\"$(cat /proc/$PPID/comm 2>/dev/null)${US}" + name + "\"\n"
                        "for a in \"$@\"; do l=\"$l${US}$a\"; done\n"
                        f"printf '%s\\n' \"$l\" >> {self.path}\n"
                        f"exec {real} \"$@\"\n")
            os.chmod(w, 0o755)
            self.wrappers[name] = w

    def mark(self, label: str) -> int:
        """Write a marker line; return the offset just after it."""
        with open(self.path, "a") as f:
            f.write(f"#{US}{label}\n")
            return f.tell()

    def since(self, offset: int) -> list[tuple[str, str, list[str]]]:
        """(caller, runtime, argv) of every call logged after offset."""
        with open(self.path) as f:
            f.seek(offset)
            lines = f.read().splitlines()
        calls = []
        for ln in lines:
            parts = ln.split(US)
            if len(parts) >= 2 and parts[0] != "#":
                calls.append((parts[0], parts[1], parts[2:]))
        return calls


def subcommand(argv: list[str]) -> tuple[str, list[str]]:
    """Split a runc-style argv into (subcommand, its args), skipping globals."""
    with_value = {"--root", "--log", "--log-format", "--criu", "--rootless"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            return a, argv[i + 1:]
        i += 2 if a in with_value else 1
    return "", []


def created_ids(calls) -> list[str]:
    ids = []
    for _caller, _rt, argv in calls:
        cmd, rest = subcommand(argv)
        if cmd in ("create", "run") and rest:
            ids.append(rest[-1])
    return ids


# ---------------------------------------------------------------- images

def rootfs_tar(path: str, workdir: str) -> str:
    """A tar of a busybox rootfs (tools/mkbundle.py's make_rootfs)."""
    rootfs = os.path.join(workdir, "image-rootfs")
    make_rootfs(rootfs, link_busybox=False)
    with open(os.path.join(rootfs, "etc", "hostname"), "w") as f:
        f.write("busybox\n")
    with tarfile.open(path, "w") as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name)
    shutil.rmtree(rootfs)
    return path


def _blob(layout: dict, data: bytes, media_type: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout[f"blobs/sha256/{digest[7:]}"] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def oci_archive(path: str, layer_tar: str, name: str = IMAGE) -> str:
    """An OCI image layout in a tar (what `ctr images import` and
    `podman load` read), one uncompressed layer, built by hand."""
    with open(layer_tar, "rb") as f:
        layer = f.read()
    blobs: dict[str, bytes] = {}
    layer_desc = _blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers",
                   "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": "tests/engines/enginekit.py"}],
    }
    config_desc = _blob(blobs, json.dumps(config).encode(),
                        "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    man_desc = _blob(blobs, json.dumps(manifest).encode(),
                     "application/vnd.oci.image.manifest.v1+json")
    man_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    man_desc["annotations"] = {"io.containerd.image.name": name,
                               "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [man_desc]}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps(index).encode(), **blobs}
    with tarfile.open(path, "w") as t:
        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            t.addfile(ti)
        for fname, data in files.items():
            ti = tarfile.TarInfo(fname)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
    return path


# ---------------------------------------------------------------- leak checks

def mounts_mentioning(*needles: str) -> list[str]:
    needles = tuple(n for n in needles if n)
    with open("/proc/self/mountinfo") as f:
        return [ln.rstrip("\n") for ln in f if any(n in ln for n in needles)]


def unmount_all(*needles: str) -> None:
    """Lazily unmount every mount point mentioning a needle, deepest first."""
    for _ in range(3):
        lines = mounts_mentioning(*needles)
        if not lines:
            return
        points = sorted({ln.split()[4] for ln in lines}, key=len, reverse=True)
        for p in points:
            subprocess.run(["umount", "-l", p], capture_output=True)


def cgroups_mentioning(*ids: str) -> list[str]:
    """cgroup directories (any v1 hierarchy or v2) whose name holds an id."""
    ids = tuple(i for i in ids if i)
    found = []
    if not ids:
        return found
    for top in sorted(os.listdir(CGROUP_ROOT)):
        base = os.path.join(CGROUP_ROOT, top)
        if not os.path.isdir(base) or os.path.islink(base):
            continue
        for dirpath, dirnames, _ in os.walk(base):
            if dirpath.count("/") - base.count("/") >= 4:
                dirnames[:] = []
            for d in dirnames:
                if any(i in d for i in ids):
                    found.append(os.path.join(dirpath, d))
    return found


def cgroup_of(pid: int, controller: str) -> str:
    """The host path of a process's cgroup in a v1 hierarchy (or v2 with "",
    and always on a pure v2 host)."""
    if CGROUP2:
        with open(f"/proc/{pid}/cgroup") as f:
            return os.path.join(CGROUP_ROOT, f.read().split("::", 1)[1].strip().lstrip("/"))
    with open(f"/proc/{pid}/cgroup") as f:
        for ln in f:
            _n, ctrls, path = ln.rstrip("\n").split(":", 2)
            if controller in ctrls.split(",") or (not controller and not ctrls):
                return os.path.join(CGROUP_ROOT, controller or "unified", path.lstrip("/"))
    raise LookupError(f"pid {pid} has no {controller} cgroup")


def freezer_state(pid: int) -> str:
    """FROZEN or THAWED (v1's words, read from cgroup.events on v2)."""
    if CGROUP2:
        with open(os.path.join(cgroup_of(pid, ""), "cgroup.events")) as f:
            return "FROZEN" if "frozen 1" in f.read().split("\n") else "THAWED"
    with open(os.path.join(cgroup_of(pid, "freezer"), "freezer.state")) as f:
        return f.read().strip()


def in_container_cgroup_file(controller: str, name: str) -> str:
    """A cgroup file as a container with its own cgroup namespace sees it."""
    return f"{CGROUP_ROOT}/{name}" if CGROUP2 else f"{CGROUP_ROOT}/{controller}/{name}"


def remove_cgroups(paths: list[str]) -> None:
    for p in sorted(paths, key=len, reverse=True):
        for dirpath, _dirs, _ in sorted(os.walk(p, topdown=False), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def processes_mentioning(*needles: str) -> list[tuple[int, str]]:
    needles = tuple(n for n in needles if n)
    me = os.getpid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles):
            found.append((int(pid), cmd.strip()))
    return found


DEFAULT_ROOTS = {"ocirun": "/run/ocirun", "runc": "/run/runc"}


def runtime_state_ids(runtime: str, ids: list[str], root: str | None = None) -> list[str]:
    """Which of ids the runtime still has: in `list -q` or as a state dir.
    podman passes no --root (the default root is used); the containerd shim
    passes its own."""
    binary = runtime_binary(runtime)
    root = root or DEFAULT_ROOTS[runtime]
    listed: list[str] = []
    if binary:
        r = run([binary, "--root", root, "list", "-q"], timeout=30)
        listed = r.out.split() if r.rc == 0 else []
    return [i for i in ids if i in listed or os.path.lexists(os.path.join(root, i))]


def kill_pid(pid: int, wait: float = 10) -> None:
    """SIGTERM, then SIGKILL, one pid we started."""
    for sig, t in ((signal.SIGTERM, wait), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + t
        while time.monotonic() < end:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not os.path.exists(f"/proc/{pid}"):
                    return
            time.sleep(0.05)


# ---------------------------------------------------------------- podman

PODMAN_CONF = """\
# enginekit: an isolated podman (its storage under {base})
[containers]
netns = "host"
utsns = "private"
log_driver = "k8s-file"
# the host's hard nofile limit is 20000 and root lacks CAP_SYS_RESOURCE:
# podman's defaults (nofile 1048576, nproc 4194304) fail in any runtime
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[network]
network_config_dir = "{base}/networks"

[engine]
cgroup_manager = "{cgroup_manager}"
events_logger = "file"
events_logfile_path = "{base}/events.log"
tmp_dir = "{base}/tmp"
static_dir = "{base}/storage/libpod"
volume_path = "{base}/volumes"
runtime = "runc"
runtime_supports_json = ["ocirun", "runc"]
stop_timeout = 2

[engine.runtimes]
{runtimes}
"""


class Podman:
    def __init__(self, base: str, wrappers: dict[str, str]) -> None:
        self.base = os.path.join(base, "podman")
        self.binary = shutil.which("podman")
        os.makedirs(os.path.join(self.base, "tmp"), exist_ok=True)
        self.conf = os.path.join(self.base, "containers.conf")
        with open(self.conf, "w") as f:
            f.write(PODMAN_CONF.format(base=self.base, cgroup_manager=PODMAN_CGROUP_MANAGER,
                                       runtimes="\n".join(
                f'{n} = ["{p}"]' for n, p in wrappers.items())))
        # storage.conf too, so no host storage config leaks in
        self.storage_conf = os.path.join(self.base, "storage.conf")
        with open(self.storage_conf, "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{self.base}/storage"\n'
                    f'runroot = "{self.base}/run"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf,
                        CONTAINERS_STORAGE_CONF=self.storage_conf,
                        CONTAINERS_REGISTRIES_CONF=os.path.join(self.base, "registries.conf"),
                        TMPDIR=os.path.join(self.base, "tmp"))
        with open(os.path.join(self.base, "registries.conf"), "w") as f:
            f.write("unqualified-search-registries = []\n")
        self.global_args = ["--root", f"{self.base}/storage", "--runroot", f"{self.base}/run",
                            "--storage-driver", "vfs", "--cgroup-manager", PODMAN_CGROUP_MANAGER,
                            "--events-backend", "file", "--tmpdir", f"{self.base}/tmp"]

    def __call__(self, *args: str, runtime: str | None = None, timeout: float = 60,
                 input: str | None = None) -> Result:
        rt = ["--runtime", runtime] if runtime else []
        return run([self.binary, *self.global_args, *rt, *args], timeout=timeout,
                   env=self.env, input=input)

    def container_ids(self) -> list[str]:
        r = self("ps", "-aq", "--no-trunc")
        return r.out.split()

    def remove_all(self) -> None:
        if self.container_ids():
            self("rm", "-af", "-t", "0", timeout=120)

    def shutdown(self) -> None:
        try:
            self.remove_all()
            self("system", "reset", "-f", timeout=120)
        finally:
            unmount_all(self.base)


# ---------------------------------------------------------------- containerd

CONTAINERD_CONF = """\
version = 2
root = "{base}/root"
state = "{base}/state"
# no CRI (ctr needs none), no snapshotters this host cannot use
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{base}/c.sock"
[ttrpc]
  address = "{base}/c.sock.ttrpc"
[debug]
  level = "info"
"""


class Daemon:
    """An engine daemon the session starts (in a session of its own, its
    output in logpath) and waits for until it answers on sock."""

    logpath = sock = ""
    proc: subprocess.Popen | None = None

    def start_daemon(self, argv: list[str], timeout: float, answers) -> None:
        log = open(self.logpath, "w")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        name = os.path.basename(argv[0])
        end = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited {self.proc.returncode}: {self.log_tail()}")
            if os.path.exists(self.sock) and answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer in {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.logpath) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop_daemon(self, wait: float = 10) -> None:
        """Its containers removed through it first, then SIGTERM/SIGKILL."""
        if self.proc and self.proc.poll() is None:
            try:
                self.remove_all()
            finally:
                kill_pid(self.proc.pid, wait=wait)


class Containerd(Daemon):
    NS = "ocirun-test"

    def __init__(self, base: str) -> None:
        self.base = os.path.join(base, "containerd")
        os.makedirs(self.base, exist_ok=True)
        self.sock = os.path.join(self.base, "c.sock")
        self.conf = os.path.join(self.base, "config.toml")
        with open(self.conf, "w") as f:
            f.write(CONTAINERD_CONF.format(base=self.base))
        self.logpath = os.path.join(self.base, "containerd.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        self.start_daemon([shutil.which("containerd"), "--config", self.conf], timeout,
                          lambda: self.ctr("version", timeout=5).rc == 0)

    def ctr(self, *args: str, timeout: float = 60, input: str | None = None,
            tty: bool = False) -> Result:
        return run(["ctr", "--address", self.sock, "-n", self.NS, *args],
                   timeout=timeout, input=input, tty=tty)

    def container_ids(self) -> list[str]:
        return self.ctr("containers", "ls", "-q").out.split()

    def task_ids(self) -> list[str]:
        lines = self.ctr("tasks", "ls").out.splitlines()[1:]
        return [ln.split()[0] for ln in lines if ln.strip()]

    def remove_all(self) -> None:
        for cid in self.task_ids():
            self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", cid, timeout=30)
            for _ in range(50):
                if self.ctr("tasks", "delete", "-f", cid, timeout=30).rc == 0:
                    break
                time.sleep(0.1)
        for cid in self.container_ids():
            self.ctr("containers", "delete", cid, timeout=30)

    def runtime_root(self) -> str:
        """The runc v2 shim's --root for the runtime: fixed by the shim to
        /run/containerd/runc/<namespace>, whatever containerd's state dir."""
        return os.path.join("/run/containerd/runc", self.NS)

    def task_dir(self, cid: str) -> str:
        return os.path.join(self.base, "state", "io.containerd.runtime.v2.task", self.NS, cid)

    def shutdown(self) -> None:
        try:
            self.stop_daemon()
        finally:
            # shims are started by containerd, not by us, but they hold our
            # ids and address: only those are ended, by pid
            for pid, _cmd in processes_mentioning(self.sock):
                kill_pid(pid, wait=2)
            unmount_all(self.base)
            try:
                os.rmdir(self.runtime_root())
            except OSError:
                pass
            # the namespace's parent cgroups (/ocirun-test in each hierarchy)
            remove_cgroups([p for p in cgroups_mentioning(self.NS)
                            if os.path.basename(p) == self.NS])


# ---------------------------------------------------------------- docker

class Docker(Daemon):
    """A private dockerd (Debian's docker.io 20.10): its own data root, exec
    root, socket and cgroup parent, and the containerd it starts itself.
    No bridge, no iptables: nothing of the host's networking is touched.

    dockerd reserves the runtime name "runc" (always the system runc), so
    the runtimes are registered under `docker-<name>`, each pointing to its
    argv-recording wrapper."""

    # (the systemd driver wants a slice; both make a directory of that name)
    CGROUP_PARENT = "ocirun-test-docker" + (".slice" if DOCKER_CGROUP_DRIVER == "systemd" else "")
    HOST_FILES = ("/etc/docker/key.json", "/etc/docker", "/run/docker/plugins", "/run/docker")

    def __init__(self, base: str, wrappers: dict[str, str], name: str = "docker",
                 **options) -> None:
        """options: more daemon.json settings (e.g. userns-remap)."""
        self.base = os.path.join(base, name)
        self.data, self.exec_root = os.path.join(self.base, "data"), os.path.join(self.base, "x")
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(self.exec_root, exist_ok=True)
        self.sock = os.path.join(self.base, "docker.sock")
        self.conf = os.path.join(self.base, "daemon.json")
        self.names = {rt: f"docker-{rt}" for rt in wrappers}
        with open(self.conf, "w") as f:
            json.dump({"runtimes": {self.names[rt]: {"path": w} for rt, w in wrappers.items()},
                       "data-root": self.data, "exec-root": self.exec_root,
                       "pidfile": os.path.join(self.base, "dockerd.pid"),
                       "hosts": [f"unix://{self.sock}"], "cgroup-parent": self.CGROUP_PARENT,
                       "exec-opts": [f"native.cgroupdriver={DOCKER_CGROUP_DRIVER}"],
                       "iptables": False, "ip-forward": False, "ip-masq": False,
                       "bridge": "none", "storage-driver": "overlay2",
                       "log-driver": "json-file", "userland-proxy": False, **options}, f)
        self.logpath = os.path.join(self.base, "dockerd.log")
        self.binary = "/usr/bin/docker"  # Debian's client, of the daemon's version
        self.proc: subprocess.Popen | None = None
        self.host_files_before = {p for p in self.HOST_FILES if os.path.lexists(p)}

    def start(self, timeout: float = 30) -> None:
        self.start_daemon(["/usr/sbin/dockerd", "--config-file", self.conf], timeout,
                          lambda: self("version", timeout=5).rc == 0)

    def __call__(self, *args: str, timeout: float = 60, input: str | None = None,
                 tty: bool = False) -> Result:
        return run([self.binary, "-H", f"unix://{self.sock}", *args], timeout=timeout,
                   input=input, tty=tty)

    def container_ids(self) -> list[str]:
        return self("ps", "-aq", "--no-trunc").out.split()

    def remove_all(self) -> None:
        ids = self.container_ids()
        if ids:
            self("rm", "-f", *ids, timeout=120)

    def runtime_root(self, runtime: str) -> str:
        """The shim's --root: dockerd 20.10 gives every runtime of the runc
        shim the same one, <exec-root>/runtime-runc/moby."""
        return os.path.join(self.exec_root, "runtime-runc", "moby")

    def task_dir(self, cid: str) -> str:
        return os.path.join(self.exec_root, "containerd", "daemon",
                            "io.containerd.runtime.v2.task", "moby", cid)

    def shutdown(self) -> None:
        try:
            self.stop_daemon(wait=20)
        finally:
            # dockerd's containerd and the shims hold our socket paths:
            # only those are ended, by pid
            for pid, _cmd in processes_mentioning(self.exec_root):
                kill_pid(pid, wait=2)
            unmount_all(self.base)
            if DOCKER_CGROUP_DRIVER == "systemd":  # (a unit of systemd's, made for us)
                run(["systemctl", "stop", self.CGROUP_PARENT])
            remove_cgroups([p for p in cgroups_mentioning(self.CGROUP_PARENT)
                            if os.path.basename(p) == self.CGROUP_PARENT])
            # what dockerd writes outside its roots whatever it is told
            for p in self.HOST_FILES:
                if p in self.host_files_before:
                    continue
                try:
                    os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
                except OSError:
                    pass


# ---------------------------------------------------------------- users

class SubidUser:
    """An unprivileged user made for the session, with 65536 subordinate
    uids and gids from sub_start; remove() takes both away again."""

    def __init__(self, prefix: str, sub_start: int, home: str | None = None) -> None:
        self.name = f"{prefix}{os.getpid() % 100000}"
        self.sub_start, self.sub_count = sub_start, 65536
        self.home = home or "/nonexistent"
        self.uid = -1

    def create(self) -> None:
        import pwd
        run(["useradd", "-M", "-d", self.home, "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0",
             "-K", "SUB_GID_COUNT=0", self.name], check=True)
        self.uid = pwd.getpwnam(self.name).pw_uid
        rng = f"{self.sub_start}-{self.sub_start + self.sub_count - 1}"
        run(["usermod", "--add-subuids", rng, "--add-subgids", rng, self.name], check=True)

    def remove(self) -> None:
        if self.uid >= 0:
            for pid, _cmd in processes_of_uid(self.uid):
                kill_pid(pid, wait=2)
        run(["userdel", self.name])


# ---------------------------------------------------------------- rootless podman

class RootlessPodman:
    """podman run by an unprivileged user made for the session (removed at
    the end): its storage under its own home in the session's directory, its
    own $XDG_RUNTIME_DIR, the cgroupfs manager. podman runs conmon and the
    runtime as uid 0 in a user namespace of the user's, with no --root: the
    runtime keeps its state under $XDG_RUNTIME_DIR (runc's rule)."""

    def __init__(self, base: str, wrappers: dict[str, str], argv_log: str) -> None:
        self.base = os.path.join(base, "rootless")
        self.home = os.path.join(self.base, "home")
        self.run_dir = os.path.join(self.base, "run")
        self.user = SubidUser("ocirlp", 700000, self.home)
        self.name = self.user.name
        self.wrappers = wrappers
        self.argv_log = argv_log

    @property
    def uid(self) -> int:
        return self.user.uid

    def create(self) -> None:
        self.user.create()
        for d, mode in ((self.base, 0o755), (self.home, 0o700), (self.run_dir, 0o700)):
            os.makedirs(d, mode, exist_ok=True)
            os.chmod(d, mode)
            os.chown(d, self.uid, self.uid)
        conf = os.path.join(self.home, "containers.conf")
        with open(conf, "w") as f:
            f.write("[containers]\nnetns = \"host\"\nlog_driver = \"k8s-file\"\n"
                    "default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n"
                    "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
                    "runtime = \"runc\"\n"
                    f"runtime_supports_json = {json.dumps(list(self.wrappers))}\n"
                    "[engine.runtimes]\n"
                    + "".join(f'{n} = ["{p}"]\n' for n, p in self.wrappers.items()))
        os.chown(conf, self.uid, self.uid)
        # the argv-recording wrappers append to the session's log as this user
        os.chmod(self.argv_log, 0o666)

    def __call__(self, *args: str, runtime: str | None = None, timeout: float = 60,
                 input: str | None = None, tty: bool = False) -> Result:
        rt = ["--runtime", runtime] if runtime else []
        env = ["env", "-i", f"HOME={self.home}", f"USER={self.name}", f"LOGNAME={self.name}",
               f"XDG_RUNTIME_DIR={self.run_dir}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
               f"CONTAINERS_CONF={self.home}/containers.conf"]
        return run(["runuser", "-u", self.name, "--", *env, "podman", *rt, *args],
                   timeout=timeout, input=input, tty=tty)

    def state_root(self, runtime: str) -> str:
        return os.path.join(self.run_dir, runtime)

    def container_ids(self) -> list[str]:
        return self("ps", "-aq", "--no-trunc").out.split()

    def remove_all(self) -> None:
        if self.container_ids():
            self("rm", "-af", "-t", "0", timeout=120)

    def remove(self) -> None:
        """Everything of the user's: containers, storage, its processes
        (podman's pause process), the user and its subordinate ids."""
        try:
            if self.uid >= 0:
                self.remove_all()
                self("system", "reset", "-f", timeout=120)
        finally:
            self.user.remove()
            unmount_all(self.base)
            shutil.rmtree(self.base, ignore_errors=True)


def processes_of_uid(uid: int) -> list[tuple[int, str]]:
    """Processes whose real uid is uid (those of a user made for the tests)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                real = next(ln.split()[1] for ln in f if ln.startswith("Uid:"))
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, StopIteration):
            continue
        if int(real) == uid:
            found.append((int(pid), cmd.strip()))
    return found
