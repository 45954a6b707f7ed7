"""cgroupsPath resolution and validation (pure: nothing is written)."""
from __future__ import annotations

import os

import pytest

from ocirun import cgroups
from ocirun.cgroups import systemd
from ocirun.errors import ConfigError

from .conftest import LAYOUT


def test_detect_mode():
    assert LAYOUT.mode in ("v1", "hybrid", "v2")
    if LAYOUT.mode != "v2":
        assert "memory" in LAYOUT.v1
    else:
        assert LAYOUT.unified


def test_absolute_path():
    m = cgroups.new_manager("/a/b", "x")
    assert m.path == "/a/b"
    for d in m.dirs():
        assert d.endswith("/a/b")


def test_relative_and_default_are_under_own_cgroup():
    own = LAYOUT.own_cgroups()
    m = cgroups.new_manager(None, "cid")
    m2 = cgroups.new_manager("x/y", "cid")
    if LAYOUT.mode == "v2":  # the parent of our own cgroup (ours has processes), as runc
        parent = os.path.dirname(own[""].rstrip("/")).rstrip("/")
        assert m.dir == LAYOUT.unified + parent + "/cid"
        assert m2.dir == LAYOUT.unified + parent + "/x/y"
    else:
        assert m.paths["memory"] == LAYOUT.v1["memory"] + own["memory"].rstrip("/") + "/cid"
        assert m2.paths["memory"].endswith("/x/y")


@pytest.mark.parametrize("p", ["/a/../b", "../x", "a/..", "/.."])
def test_traversal_rejected(p):
    with pytest.raises(ConfigError) as e:
        cgroups.new_manager(p, "x")
    assert e.value.path == "linux.cgroupsPath"


def test_state_roundtrip():
    m = cgroups.new_manager("/a/b", "x")
    m2 = cgroups.manager_from_state(m.to_state())
    assert m2.dirs() == m.dirs() and type(m2) is type(m)


@pytest.mark.parametrize("p", ["system.slice:x", "a:b:c:d", "system.slice:ocirun:../x",
                               "nodot:p:n", "a--b.slice:p:n"])
def test_systemd_bad_paths(p):
    with pytest.raises(ConfigError) as e:
        systemd.parse_path(p, "cid", False)
    assert e.value.path == "linux.cgroupsPath"


def test_systemd_names():
    assert systemd.parse_path(None, "cid", False) == ("system.slice", "ocirun", "cid")
    assert systemd.parse_path(None, "cid", True)[0] == "user.slice"
    assert systemd.unit_name("ocirun", "cid") == "ocirun-cid.scope"
    assert systemd.unit_name("", "cid") == "cid.scope"
    assert systemd.expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert systemd.expand_slice("-.slice") == ""
    m = cgroups.new_manager("machine.slice:pre:cid", "cid", systemd=True)
    assert m.unit == "pre-cid.scope" and m.path == "/machine.slice/pre-cid.scope"
    m2 = cgroups.manager_from_state(m.to_state())
    assert m2.unit == m.unit and m2.dirs() == m.dirs()


def test_systemd_properties():
    props = dict(systemd.properties({"memory": {"limit": 64 << 20, "swap": 128 << 20},
                                     "cpu": {"quota": 50000, "period": 100000, "shares": 1024,
                                             "cpus": "0-1,3"},
                                     "pids": {"limit": 42}, "blockIO": {"weight": 500}}, "v2"))
    assert props["MemoryMax"] == ("t", 64 << 20)
    assert props["MemorySwapMax"] == ("t", 64 << 20)
    assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert props["CPUWeight"] == ("t", 39)
    assert props["AllowedCPUs"] == ("ay", b"\x0b")
    assert props["TasksMax"] == ("t", 42)
    assert props["IOWeight"] == ("t", 1 + 490 * 9999 // 990)
