"""cgroup v2 specifics (eBPF device filter, cgroup.kill, unified) and the systemd
driver. The pure parts run everywhere; the rest needs the guest
(tools/vm/test-cgroupv2.sh): pure cgroup v2 with systemd as PID 1."""
from __future__ import annotations

import os
import signal
import time

import pytest

from ocirun import cgroups
from ocirun.cgroups import dbus, devices, fsutil
from ocirun.cgroups.v2 import devices as v2devices

from .conftest import IS_V2, needs_root, needs_systemd, needs_v2


def test_bpf_program_shape():
    rules = devices.parse_rules([{"allow": False, "access": "rwm"},
                                 {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
                                "d")
    prog = v2devices.bpf_program(rules)
    assert len(prog) % 8 == 0
    # the deny-all rule ends the chain: default verdict 0
    assert prog[-16:] == bytes((0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0))
    assert v2devices.bpf_program([])[-16:-8] == bytes((0xb7, 0, 0, 0, 1, 0, 0, 0))


def test_systemd_properties_take_unified_keys_last():
    """runc's cgroups.bats (unified only / unified override) checks the unit's
    properties too: the unified keys systemd knows become properties, and
    override the fields they overlap."""
    from ocirun.cgroups.systemd import INFINITY, properties
    res = {"pids": {"limit": 10}, "cpu": {"shares": 3333, "quota": 40000, "period": 100000},
           "unified": {"memory.min": "131072", "memory.max": "max", "pids.max": "42",
                       "cpu.max": "5000 50000", "cpu.weight": "42", "io.weight": "default 7",
                       "cpuset.cpus": "0-1", "memory.high": "bogus", "hugetlb.2MB.max": "0"}}
    props = dict(properties(res, "v2"))
    assert props["MemoryMin"] == ("t", 131072)
    assert props["MemoryMax"] == ("t", INFINITY)
    assert props["TasksMax"] == ("t", 42)
    assert props["CPUWeight"] == ("t", 42)
    assert props["IOWeight"] == ("t", 7)
    assert props["CPUQuotaPeriodUSec"] == ("t", 50000)
    assert props["CPUQuotaPerSecUSec"] == ("t", 100000)  # 5000 / 50000 s
    assert props["AllowedCPUs"] == ("ay", b"\x03")
    assert "MemoryHigh" not in props  # not a number: the file write reports it
    assert len(properties(res, "v2")) == len(props)  # each property once
    assert "TasksMax" in dict(properties({"pids": {"limit": 10}}, "v1"))
    assert "MemoryMin" not in dict(properties(res, "v1"))  # no unified on v1


def test_dbus_marshal_roundtrip():
    w = dbus._W()
    sig = "ssa(sv)a(sa(sv))"
    args = ("u.scope", "replace", [("PIDs", ("au", [1, 2])), ("Delegate", ("b", True)),
                                   ("MemoryMax", ("t", 1 << 40)), ("AllowedCPUs", ("ay", b"\x03"))], [])
    for t, v in zip(dbus._split(sig), args):
        w.put(t, v)
    r = dbus._R(bytes(w.b))
    got = tuple(r.get(t) for t in dbus._split(sig))
    assert got[0] == "u.scope" and got[3] == []
    assert dict(got[2])["PIDs"] == ("au", [1, 2])
    assert dict(got[2])["AllowedCPUs"] == ("ay", [3])
    assert dbus._split("a{sv}(ii)t") == ["a{sv}", "(ii)", "t"]


@needs_root
@needs_v2
def test_v2_cgroup_kill_and_unified(base, kids):
    m = cgroups.new_manager(base + "/k", "k")
    m.create()
    m.apply({"unified": {"memory.high": str(200 << 20), "pids.max": "50"}})
    assert fsutil.read(m.dir, "memory.high").strip() == str(200 << 20)
    assert fsutil.read(m.dir, "pids.max").strip() == "50"
    pid = kids.fork(lambda: time.sleep(60))
    m.add_pid(pid)
    m.kill_all(signal.SIGKILL)   # cgroup.kill
    assert kids.wait(pid) == -signal.SIGKILL
    m.destroy()
    assert not os.path.exists(m.dir)


@needs_root
@needs_v2
def test_v2_unknown_controller_key(base):
    m = cgroups.new_manager(base + "/u", "u")
    m.create()
    from ocirun.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        m.apply({"unified": {"nosuch.thing": "1"}})
    assert e.value.path == "linux.resources.unified.nosuch.thing"
    m.destroy()


@needs_root
@needs_v2
@needs_systemd
def test_systemd_scope(kids):
    cid = f"t{os.getpid()}"
    m = cgroups.new_manager(None, cid, systemd=True)
    assert m.unit == f"ocirun-{cid}.scope"
    try:
        m.create()
        m.apply({"memory": {"limit": 64 << 20, "swap": 64 << 20}, "pids": {"limit": 20},
                 "cpu": {"quota": 50000, "period": 100000, "shares": 1024},
                 "devices": [{"allow": False, "access": "rwm"}]})
        pid = kids.fork(lambda: time.sleep(60))
        m.add_pid(pid)
        d = m.procs_path()
        assert d == f"/sys/fs/cgroup/system.slice/ocirun-{cid}.scope"
        assert m.pids() == [pid]
        assert fsutil.read(d, "memory.max").strip() == str(64 << 20)
        assert fsutil.read(d, "memory.swap.max").strip() == "0"
        assert fsutil.read(d, "pids.max").strip() == "20"
        assert fsutil.read(d, "cpu.max").split() == ["50000", "100000"]
        # systemd knows the limits too (unit properties, not only our fs writes)
        show = os.popen(f"systemctl show -p MemoryMax -p TasksMax -p CPUQuotaPerSecUSec "
                        f"-p Delegate {m.unit}").read()
        assert f"MemoryMax={64 << 20}" in show and "TasksMax=20" in show
        assert "CPUQuotaPerSecUSec=500ms" in show and "Delegate=yes" in show
        # update goes through SetUnitProperties + fs
        m.update({"pids": {"limit": 30}})
        assert fsutil.read(d, "pids.max").strip() == "30"
        assert "TasksMax=30" in os.popen(f"systemctl show -p TasksMax {m.unit}").read()
        m2 = cgroups.manager_from_state(m.to_state())
        m2.freeze()
        assert m2.frozen()
        m2.thaw()
        m2.destroy()
        assert kids.wait(pid) == -signal.SIGKILL or True
        assert not os.path.exists(d)
        assert "could not be found" in os.popen(f"systemctl status {m.unit} 2>&1").read() or \
            "inactive" in os.popen(f"systemctl is-active {m.unit}").read()
    finally:
        try:
            m.destroy()
        except Exception:
            pass


@needs_root
@needs_systemd
def test_systemd_error_is_reported():
    m = cgroups.new_manager(None, f"bad{os.getpid()}", systemd=True)
    from ocirun.cgroups.manager import CgroupError
    with pytest.raises(CgroupError) as e:
        m.add_pid(0x3FFFFFFF)   # no such process: systemd refuses the scope
    assert m.unit in str(e.value)
    m.destroy()
