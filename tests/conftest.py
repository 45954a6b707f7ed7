"""Fixtures: a busybox bundle per test and a runtime bound to a private
state root, cleaned up (containers, state, mounts) even on failure."""
from __future__ import annotations

import os
import subprocess

import pytest

from ocitest import OCIRUN, Bundle, Runtime, _host_mounts_mentioning, make_rootfs


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "rootfs"
    make_rootfs(str(path))
    return str(path)


@pytest.fixture
def bundle(tmp_path, rootfs_template) -> Bundle:
    b = tmp_path / "bundle"
    b.mkdir()
    return Bundle(str(b), rootfs_template)


@pytest.fixture
def oci(tmp_path):
    rt = Runtime(str(tmp_path / "state"))
    yield rt
    for cid in rt.ids():
        subprocess.run([OCIRUN, "--root", rt.root, "delete", "--force", cid],
                       capture_output=True, timeout=60)
    leftovers = rt.ids()
    mounts = _host_mounts_mentioning(str(tmp_path))
    for line in mounts:  # never leave the host broken, whatever the test did
        subprocess.run(["umount", "-l", line.split()[4]], capture_output=True)
    assert not leftovers, f"state left behind: {leftovers}"
    assert not mounts, f"mounts left on the host: {mounts}"
