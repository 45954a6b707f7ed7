"""Fixtures for tests/terminal (helpers live in termhelpers.py)."""
from __future__ import annotations

import os
import signal
import sys

import pytest

# The repository root, so `import ocirun` works however pytest is started.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


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
