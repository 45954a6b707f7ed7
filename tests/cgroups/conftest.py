"""Fixtures for the cgroups tests: a private base cgroup, forked children, cleanup.

Every test works under /ocirun-test-<pid>-<n> in every hierarchy; the
finalizers kill the processes the test started and remove every directory,
also when the test fails.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ocirun import cgroups  # noqa: E402
from ocirun.cgroups import fsutil  # noqa: E402

LAYOUT = cgroups.detect()
IS_V2 = LAYOUT.mode == "v2"
HAS_SYSTEMD = os.path.isdir("/run/systemd/system") and os.path.exists("/run/dbus/system_bus_socket")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
needs_v2 = pytest.mark.skipif(not IS_V2, reason=f"needs a pure cgroup v2 host (this host is {LAYOUT.mode})")
needs_v1 = pytest.mark.skipif(IS_V2, reason="needs cgroup v1 controllers (this host is pure v2)")
needs_systemd = pytest.mark.skipif(not HAS_SYSTEMD, reason="needs systemd as PID 1 with a D-Bus "
                                   "system bus (/run/systemd/system missing)")

_n = itertools.count()


def _all_mounts() -> list[str]:
    return [h.mountpoint for h in LAYOUT.hierarchies] + ([LAYOUT.unified] if LAYOUT.unified else [])


class Kids:
    """Children forked by a test; each blocks until go() and then runs fn()."""

    def __init__(self) -> None:
        self.pids: dict[int, int] = {}

    def fork(self, fn) -> int:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            rc = 99
            try:
                os.close(w)
                os.read(r, 1)
                rc = fn() or 0
                rc = rc if isinstance(rc, int) and 0 <= rc < 256 else 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(rc)  # never return into pytest
        os.close(r)
        self.pids[pid] = w
        return pid

    def go(self, pid: int) -> None:
        os.write(self.pids[pid], b"x")

    def wait(self, pid: int, timeout: float = 30.0) -> int:
        """The child's exit code, or -signal."""
        deadline = time.monotonic() + timeout
        while True:
            p, st = os.waitpid(pid, os.WNOHANG)
            if p:
                self.pids.pop(pid, None)
                return os.waitstatus_to_exitcode(st)
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {pid} did not exit")
            time.sleep(0.01)

    def cleanup(self) -> None:
        for pid, w in list(self.pids.items()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.close(w)
            except OSError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # never hang (e.g. on a frozen child)
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.01)
        self.pids.clear()


@pytest.fixture
def kids():
    k = Kids()
    yield k
    k.cleanup()


@pytest.fixture
def base():
    """A unique absolute cgroup path prefix; everything below it is removed afterwards."""
    name = f"/ocirun-test-{os.getpid()}-{next(_n)}"
    yield name
    dirs = [mnt + name for mnt in _all_mounts() if os.path.isdir(mnt + name)]
    for d in dirs:   # thaw first: a frozen task cannot die
        for sub, _, _ in os.walk(d):
            for f, v in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if os.path.exists(os.path.join(sub, f)):
                    fsutil.write(sub, f, v, "")
    for d in dirs:
        for pid in fsutil.procs(d):   # only our test children can be in here
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for d in dirs:
        fsutil.rmdir_tree(d)


@pytest.fixture
def mgr(base):
    """A created cgroupfs manager at <base>/c."""
    m = cgroups.new_manager(base + "/c", "c")
    m.create()
    yield m
    try:
        m.destroy()
    except Exception:
        pass


def leftovers(base: str) -> list[str]:
    return [mnt + base for mnt in _all_mounts() if os.path.exists(mnt + base)]
