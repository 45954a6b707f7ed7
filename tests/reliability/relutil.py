"""Helpers of the reliability tests (issue 8): a tagged work area whose
leftovers (mounts, cgroups, processes, state) can be found and cleaned,
built on tools/soak.py, which the long soak run uses too.
(A uniquely named module: no conftest.py here, so `from conftest import`
elsewhere is never shadowed.)"""
from __future__ import annotations

import json
import os
import random
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
for p in (REPO, os.path.join(REPO, "tools"), os.path.dirname(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import soak  # noqa: E402
from soak import Area, OCIRUN  # noqa: E402,F401

if os.geteuid() != 0:  # pragma: no cover
    pytest.skip("reliability tests run real containers: they need root", allow_module_level=True)


def seed(name: str) -> int:
    """The seed of a randomized test: OCIRUN_SEED or a new one, always printed."""
    s = os.environ.get("OCIRUN_SEED")
    value = int(s) if s else random.randrange(1 << 32)
    print(f"{name}: seed {value} (rerun with OCIRUN_SEED={value})")
    return value


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@pytest.fixture
def area(tmp_path, rootfs_template):
    """A work area; fails the test if it leaves anything, cleans it anyway."""
    a = Area(str(tmp_path / "rel"), "rel", rootfs_template)
    yield a
    left = a.wait_clean(timeout=5)
    found = a.cleanup()
    assert not left, f"left behind: {left}"
    assert not found, f"left behind: {found}"


def one_line_error(p, *words: str) -> str:
    """A failed command: non-zero, exactly one error line on stderr (after
    any warnings about input it would have ignored), no traceback."""
    assert p.returncode != 0, p
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines()
             if ln.strip() and not ln.startswith("ocirun: warning: ")]
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def state(a: Area, cid: str) -> dict:
    p = a.run("state", cid)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)
