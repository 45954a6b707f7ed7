"""Security tests: path setup, root check, fixtures. Helpers: sec_util.py."""
from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

if os.geteuid() != 0:  # pragma: no cover
    pytest.skip("security tests need root", allow_module_level=True)


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "seccomp-cache"
    return str(d)
