"""Helpers for the terminal tests: forked children, private devpts, pty reads.

There is deliberately no tests/terminal/conftest.py: test modules that do
`from conftest import ...` (tests/test_lifecycle.py) would get whichever
conftest pytest loaded last. Fixtures live here too; test modules import
them by name.

Everything here uses real ptys, sockets and processes. Children always end
with os._exit so pytest's own state never runs twice; every pid a test starts
is reaped (and killed if still alive) by the `procs` fixture.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback

import pytest

# The repository root, so `import ocirun` works however pytest is started
# (tests/conftest.py does the same when it is loaded).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

BUSYBOX = "/bin/busybox"

if os.geteuid() != 0:  # pragma: no cover
    pytest.skip("terminal tests need root (mount namespaces, devpts)",
                allow_module_level=True)


def child(fn) -> int:
    """fork(); run fn() in the child and _exit (1 plus a traceback on error)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            # If our parent dies (a test timed out and its child was killed),
            # die too: no orphaned grandchildren outlive a test.
            from ocirun.kernel import syscalls as k
            k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL)
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def private_devpts() -> None:
    """In a forked child: new mount namespace, / made private (the host is
    untouched), and a fresh devpts instance on /dev/pts, as a container has.
    /dev/ptmx (the 5:2 device) then resolves to this instance."""
    from ocirun.kernel import syscalls as k
    k.unshare(k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    k.mount("devpts", "/dev/pts", "devpts", k.MS_NOSUID | k.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620")


# A container-like environment. Not the test runner's: busybox lets LINES /
# COLUMNS override the real window size.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm", "HOME": "/"}


def exec_sh(script: str) -> None:
    os.execve(BUSYBOX, ["sh", "-c", script], ENV)


class Reader:
    """Accumulates what a pty master / pipe produces; waits for patterns."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def _read_some(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.fd], [], [], left)
        if not r:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: pty slave closed everywhere
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def expect(self, pattern: bytes | str, timeout: float = 10.0) -> bytes:
        if isinstance(pattern, str):
            pattern = pattern.encode()
        deadline = time.monotonic() + timeout
        while pattern not in self.buf:
            if self.eof or not self._read_some(deadline):
                raise AssertionError(f"{pattern!r} not seen; got {self.buf!r}")
        return self.buf

    def read_to_eof(self, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._read_some(deadline) and not self.eof:
                raise AssertionError(f"no EOF; got {self.buf!r}")
        return self.buf


def wait_for_child_of(pid: int, argv0: bytes = b"busybox",
                      timeout: float = 10.0) -> int:
    """A child of `pid` once it runs a program started as `argv0` (e.g. the
    `busybox sleep` a shell started or exec'd), so a test signals it only
    once it is really running, not while a shell could still catch it."""
    deadline = time.monotonic() + timeout
    path = f"/proc/{pid}/task/{pid}/children"
    while time.monotonic() < deadline:
        with open(path) as f:
            kids = f.read().split()
        for kid in kids:
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[0] == argv0:
                        return int(kid)
            except FileNotFoundError:
                continue
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} started no {argv0!r} in {timeout}s")


def wait_for_exec(pid: int, argv0: bytes = b"busybox",
                  timeout: float = 10.0) -> None:
    """Until `pid` itself runs a program started as `argv0`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().split(b"\0")[0] == argv0:
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exec {argv0!r} in {timeout}s")


def wait_status(pid: int, timeout: float = 10.0) -> int:
    """waitpid with a deadline, through a pidfd (no polling loop)."""
    pfd = os.pidfd_open(pid)
    try:
        r, _, _ = select.select([pfd], [], [], timeout)
        if not r:
            raise AssertionError(f"pid {pid} did not exit in {timeout}s")
    finally:
        os.close(pfd)
    return os.waitpid(pid, 0)[1]


@pytest.fixture
def procs():
    """Track pids started by a test; kill and reap leftovers at the end."""
    started: list[int] = []
    yield started
    for pid in started:
        # Until we reap it the pid cannot be reused, so check before killing.
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                continue  # reaped just now
        except ChildProcessError:
            continue  # the test reaped it
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.fixture
def short_tmp():
    """A short temp dir: unix socket paths must fit in 108 bytes."""
    import tempfile
    import shutil
    d = tempfile.mkdtemp(prefix="ocirun-tt-")
    yield d
    shutil.rmtree(d, ignore_errors=True)
