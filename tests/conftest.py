"""Fixtures: a busybox bundle per test and a runtime bound to a private
state root, cleaned up (containers, state, mounts) even on failure."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from ocitest import OCIRUN, SHIFT, Bundle, Runtime, _host_mounts_mentioning, make_rootfs


def _default_terminal_signals() -> None:
    """A runner started as a background job (INT, QUIT ignored) or under
    nohup (HUP) passes those ignored to every process the tests fork, and
    an ignored signal stays ignored across exec: the terminal tests that
    fork a "container" themselves could then not interrupt it. ocirun
    resets them for its containers (as runc and crun do); the tests start
    from the defaults a shell at a terminal gives."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGQUIT, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)


_default_terminal_signals()


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




@pytest.fixture
def shifted_rootfs(bundle):
    """The bundle's rootfs copied where a shifted root (uid 100000) can reach
    it (pytest's tmp dirs are 0700 root, which a user namespace that does not
    map host root cannot traverse), with the bundle mapping 0 -> 100000."""
    d = tempfile.mkdtemp(prefix="ocirun-userns-", dir="/tmp")
    os.chmod(d, 0o755)
    rootfs = os.path.join(d, "rootfs")
    shutil.copytree(bundle.rootfs, rootfs, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), SHIFT, SHIFT)
    os.lchown(rootfs, SHIFT, SHIFT)
    bundle.config["root"]["path"] = rootfs
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": SHIFT, "size": 65536}]
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": SHIFT, "size": 65536}]
    bundle.save()
    yield rootfs
    with open("/proc/self/mountinfo") as f:
        leftover = [ln for ln in f if d in ln]
    shutil.rmtree(d, ignore_errors=True)
    assert not leftover, "mounts left under the shifted rootfs"
