"""Engine tests: podman (through conmon) and containerd (through its runc v2
shim) drive ocirun and runc alike. Every test runs once per runtime.

Session fixtures build a busybox image locally, configure an isolated podman,
start a private containerd (stopped at the end), and put an argv-recording
wrapper in front of each runtime. Each test's teardown removes what it left
and then fails the test if a container, runtime state, cgroup, mount or
process of its containers is still there.

Helpers live in enginekit.py (this file only declares fixtures).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

import enginekit as ek

KEEP_LOG = os.path.join(ek.REPO, "build", "engines", "argv.log")


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if not shutil.which(t) and not os.access(f"/usr/sbin/{t}", os.X_OK)]


@pytest.fixture(scope="session")
def engine_base():
    base = tempfile.mkdtemp(prefix="ocirun-eng-", dir="/tmp")
    os.chmod(base, 0o755)
    # podman calls ocirun with its default root, where create keeps the
    # seccomp BPF cache: remove what this session made there
    default_root = ek.DEFAULT_ROOTS["ocirun"]
    had_root = os.path.exists(default_root)
    had_cache = os.path.exists(os.path.join(default_root, ".cache"))
    yield base
    if not had_cache:
        shutil.rmtree(os.path.join(default_root, ".cache"), ignore_errors=True)
    if not had_root:
        try:
            os.rmdir(default_root)  # only if nothing else is in it
        except OSError:
            pass
    try:
        os.makedirs(os.path.dirname(KEEP_LOG), exist_ok=True)
        shutil.copy(os.path.join(base, "argv.log"), KEEP_LOG)
    except OSError:
        pass
    ek.unmount_all(base)
    left = ek.mounts_mentioning(base)
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"mounts left under {base}: {left}"


@pytest.fixture(scope="session")
def argv_log(engine_base) -> ek.ArgvLog:
    return ek.ArgvLog(engine_base)


@pytest.fixture(scope="session")
def image_tars(engine_base) -> dict:
    rootfs = ek.rootfs_tar(os.path.join(engine_base, "rootfs.tar"), engine_base)
    return {"rootfs": rootfs,
            "oci": ek.oci_archive(os.path.join(engine_base, "image-oci.tar"), rootfs)}


@pytest.fixture(params=ek.RUNTIMES)
def runtime(request) -> str:
    name = request.param
    if not ek.runtime_binary(name):
        hint = "run `make install`" if name == "ocirun" else "apt-get install runc"
        pytest.skip(f"{name} is not installed ({hint})")
    return name


def _leaks(ids: list[str], runtime: str, runtime_root: str | None, extra_needles=()) -> dict:
    """What is left of the given containers anywhere on the host."""
    found = {}
    state = ek.runtime_state_ids(runtime, ids, runtime_root)
    if state:
        found["runtime state"] = state
    cg = ek.cgroups_mentioning(*ids)
    if cg:
        found["cgroups"] = cg
    mnt = ek.mounts_mentioning(*ids, *extra_needles)
    if mnt:
        found["mounts"] = mnt
    procs = ek.processes_mentioning(*ids)
    if procs:
        found["processes"] = procs
    return found


def _settle(check, timeout: float = 5.0):
    """Engines finish some cleanup asynchronously (conmon, the shim): poll."""
    end = time.monotonic() + timeout
    while True:
        left = check()
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


def _check_left(engine, runtime: str, calls, root: str | None, what: str) -> None:
    """A test's teardown: remove what is left through the engine, then fail
    if the engine still lists a container, or anything of the containers
    the runtime was asked to create is still on the host (cleaned up)."""
    engine.remove_all()
    left_in_engine = engine.container_ids()
    ids = ek.created_ids(calls)
    task_dir = getattr(engine, "task_dir", None)
    dirs = [task_dir(i) + "/" for i in ids] if task_dir else []
    leaks = _settle(lambda: _leaks(ids, runtime, root, dirs))
    if leaks:
        _force_clean(ids, runtime, root, leaks)
    assert not left_in_engine, f"{what} still lists containers: {left_in_engine}"
    assert not leaks, f"left behind by {what}+{runtime}: {leaks}"


def _force_clean(ids, runtime, runtime_root, leaks) -> None:
    binary = ek.runtime_binary(runtime)
    root = ["--root", runtime_root or ek.DEFAULT_ROOTS[runtime]]
    for cid in leaks.get("runtime state", []):
        ek.run([binary, *root, "delete", "--force", cid], timeout=30)
    for pid, _cmd in leaks.get("processes", []):
        ek.kill_pid(pid, wait=2)
    for ln in leaks.get("mounts", []):
        ek.run(["umount", "-l", ln.split()[4]], timeout=30)
    ek.remove_cgroups(ek.cgroups_mentioning(*ids))


# ---------------------------------------------------------------- podman

@pytest.fixture(scope="session")
def podman_engine(engine_base, argv_log, image_tars):
    missing = _missing("podman", "conmon")
    if missing:
        pytest.skip(f"podman cannot be used here: {', '.join(missing)} not installed "
                    "(apt-get install podman conmon)")
    pm = ek.Podman(engine_base, argv_log.wrappers)
    try:
        r = pm("import", image_tars["rootfs"], ek.IMAGE, timeout=120)
        if r.rc != 0:
            pytest.skip(f"podman cannot start here: {r}")
        yield pm
    finally:
        pm.shutdown()


class PodmanFor:
    """podman bound to one runtime; records what the engine called."""

    def __init__(self, engine: ek.Podman, runtime: str, log: ek.ArgvLog, offset: int) -> None:
        self.engine, self.runtime, self.log, self.offset = engine, runtime, log, offset

    def __call__(self, *args: str, **kw) -> ek.Result:
        return self.engine(*args, runtime=self.runtime, **kw)

    def ok(self, *args: str, **kw) -> str:
        r = self(*args, **kw)
        assert r.rc == 0, str(r)
        return r.out

    def calls(self) -> list[tuple[str, str, list[str]]]:
        return self.log.since(self.offset)

    def subcommands(self) -> list[str]:
        return [ek.subcommand(argv)[0] for _c, _r, argv in self.calls()]


@pytest.fixture
def podman(podman_engine, runtime, argv_log, request):
    offset = argv_log.mark(f"podman {request.node.nodeid}")
    p = PodmanFor(podman_engine, runtime, argv_log, offset)
    yield p
    _check_left(podman_engine, runtime, p.calls(), None, "podman")


# ---------------------------------------------------------------- containerd

@pytest.fixture(scope="session")
def containerd_engine(engine_base, argv_log, image_tars):
    missing = _missing("containerd", "ctr", "containerd-shim-runc-v2")
    if missing:
        pytest.skip(f"containerd cannot be used here: {', '.join(missing)} not installed "
                    "(apt-get install containerd)")
    cd = ek.Containerd(engine_base)
    try:
        try:
            cd.start()
        except (RuntimeError, OSError) as e:
            pytest.skip(f"containerd cannot start here: {e}")
        r = cd.ctr("images", "import", image_tars["oci"], timeout=120)
        assert r.rc == 0, str(r)
        yield cd
    finally:
        cd.shutdown()


class CtrFor:
    """ctr bound to one runtime (`--runc-binary`, kept by the shim for the
    task's life); records what the shim called."""

    def __init__(self, engine: ek.Containerd, runtime: str, wrapper: str,
                 log: ek.ArgvLog, offset: int) -> None:
        self.engine, self.runtime, self.wrapper = engine, runtime, wrapper
        self.log, self.offset = log, offset

    def __call__(self, *args: str, **kw) -> ek.Result:
        return self.engine.ctr(*args, **kw)

    def run(self, *args: str, **kw) -> ek.Result:
        """`ctr run --runc-binary WRAPPER ARGS...`"""
        return self.engine.ctr("run", "--runc-binary", self.wrapper, *args, **kw)

    def ok(self, *args: str, **kw) -> str:
        r = self(*args, **kw)
        assert r.rc == 0, str(r)
        return r.out

    def task_status(self, cid: str) -> str:
        for ln in self("tasks", "ls").out.splitlines()[1:]:
            f = ln.split()
            if f and f[0] == cid:
                return f[-1]
        return ""

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> str:
        end = time.monotonic() + timeout
        while True:
            s = self.task_status(cid)
            if s == status or time.monotonic() > end:
                return s
            time.sleep(0.1)

    def calls(self) -> list[tuple[str, str, list[str]]]:
        return self.log.since(self.offset)

    def subcommands(self) -> list[str]:
        return [ek.subcommand(argv)[0] for _c, _r, argv in self.calls()]


@pytest.fixture
def ctr(containerd_engine, runtime, argv_log, request):
    offset = argv_log.mark(f"containerd {request.node.nodeid}")
    c = CtrFor(containerd_engine, runtime, argv_log.wrappers[runtime], argv_log, offset)
    yield c
    _check_left(containerd_engine, runtime, c.calls(), containerd_engine.runtime_root(),
                "containerd")


# ---------------------------------------------------------------- docker

@pytest.fixture(scope="session")
def docker_engine(engine_base, argv_log, image_tars):
    missing = [t for t in ("/usr/sbin/dockerd", "/usr/bin/docker") if not os.access(t, os.X_OK)]
    if missing:
        pytest.skip(f"docker cannot be used here: {', '.join(missing)} not installed "
                    "(apt-get install docker.io)")
    dk = ek.Docker(engine_base, argv_log.wrappers)
    try:
        _start_docker(dk, image_tars, "dockerd")
        yield dk
    finally:
        dk.shutdown()


def _start_docker(dk: ek.Docker, image_tars: dict, what: str) -> None:
    """Start it (a skip if it cannot start here) and import the image."""
    try:
        dk.start()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"{what} cannot start here: {e}")
    r = dk("import", image_tars["rootfs"], ek.IMAGE, timeout=120)
    assert r.rc == 0, str(r)


class DockerFor:
    """docker bound to one runtime (`docker run --runtime`); records what
    the shim called."""

    def __init__(self, engine: ek.Docker, runtime: str, log: ek.ArgvLog, offset: int) -> None:
        self.engine, self.runtime, self.log, self.offset = engine, runtime, log, offset

    def __call__(self, *args: str, **kw) -> ek.Result:
        return self.engine(*args, **kw)

    def run(self, *args: str, **kw) -> ek.Result:
        """`docker run --runtime docker-<runtime> ARGS...`"""
        return self.engine("run", "--runtime", self.engine.names[self.runtime], *args, **kw)

    def detached(self, name: str, *args: str) -> str:
        """`docker run -d --name NAME ARGS...` on this runtime; the id."""
        return self.ok("run", "-d", "--runtime", self.engine.names[self.runtime],
                       "--name", name, *args).strip()

    def ok(self, *args: str, **kw) -> str:
        r = self(*args, **kw)
        assert r.rc == 0, str(r)
        return r.out

    def inspect(self, cid: str, fmt: str) -> str:
        return self.ok("inspect", "-f", fmt, cid).strip()

    def calls(self) -> list[tuple[str, str, list[str]]]:
        return self.log.since(self.offset)

    def subcommands(self) -> list[str]:
        return [ek.subcommand(argv)[0] for _c, _r, argv in self.calls()]


def _docker_for(engine: ek.Docker, runtime: str, argv_log: ek.ArgvLog, label: str):
    d = DockerFor(engine, runtime, argv_log, argv_log.mark(label))
    yield d
    _check_left(engine, runtime, d.calls(), engine.runtime_root(runtime), "docker")


@pytest.fixture
def docker(docker_engine, runtime, argv_log, request):
    yield from _docker_for(docker_engine, runtime, argv_log, f"docker {request.node.nodeid}")


@pytest.fixture(scope="session")
def docker_remap_engine(docker_engine, engine_base, argv_log, image_tars):
    """A second dockerd with userns-remap (every container in a user
    namespace, mapped to a user made for the session)."""
    user = ek.SubidUser("ocidkr", 800000)
    dk = ek.Docker(engine_base, argv_log.wrappers, name="docker-remap",
                   **{"userns-remap": user.name})
    try:
        user.create()
        _start_docker(dk, image_tars, "dockerd with userns-remap")
        dk.remap_user = user
        yield dk
    finally:
        dk.shutdown()
        user.remove()


@pytest.fixture
def docker_remap(docker_remap_engine, runtime, argv_log, request):
    yield from _docker_for(docker_remap_engine, runtime, argv_log,
                           f"docker {request.node.nodeid}")


# ---------------------------------------------------------------- rootless podman

@pytest.fixture(scope="session")
def rootless_podman_engine(engine_base, argv_log, image_tars):
    missing = _missing("podman", "conmon", "newuidmap", "newgidmap", "runuser")
    if missing:
        pytest.skip(f"rootless podman cannot be used here: {', '.join(missing)} not installed "
                    "(apt-get install podman conmon uidmap)")
    pm = ek.RootlessPodman(engine_base, argv_log.wrappers, argv_log.path)
    try:
        pm.create()
        tar = os.path.join(pm.base, "rootfs.tar")
        shutil.copy(image_tars["rootfs"], tar)
        os.chmod(tar, 0o644)
        r = pm("import", tar, ek.IMAGE, timeout=120)
        if r.rc != 0:
            pytest.skip(f"rootless podman cannot start here: {r}")
        yield pm
    finally:
        pm.remove()


@pytest.fixture
def rootless_podman(rootless_podman_engine, runtime, argv_log, request):
    offset = argv_log.mark(f"rootless-podman {request.node.nodeid}")
    p = PodmanFor(rootless_podman_engine, runtime, argv_log, offset)
    yield p
    _check_left(rootless_podman_engine, runtime, p.calls(),
                rootless_podman_engine.state_root(runtime), "rootless podman")
