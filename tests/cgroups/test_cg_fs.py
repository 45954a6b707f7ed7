"""cgroupfs driver on the real kernel (v1/hybrid here, v2 in the guest): a forked
child is put in the cgroup and the limits are checked by their effects."""
from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from ocirun import cgroups
from ocirun.cgroups import fsutil

from .conftest import IS_V2, LAYOUT, leftovers, needs_root

pytestmark = needs_root


def _read(m, ctl_v1: str, name_v1: str, name_v2: str) -> str:
    if IS_V2:
        return fsutil.read(m.dir, name_v2).strip()
    return fsutil.read(m.ctl[ctl_v1], name_v1).strip()


def test_create_is_idempotent_and_destroy_removes(base):
    m = cgroups.new_manager(base + "/a/b/c", "c")
    m.create()
    m.create()
    for d in m.dirs():
        assert os.path.isdir(d)
    m.destroy()
    m.destroy()
    for d in m.dirs():
        assert not os.path.exists(d)


def test_destroy_kills_and_waits_for_every_process(base, kids):
    """destroy() SIGKILLs what is left and waits on pidfds until it is gone,
    then removes the directories (the `delete --force` of a running container)."""
    m = cgroups.new_manager(base + "/busy", "busy")
    m.create()
    pids = [kids.fork(lambda: time.sleep(30)) for _ in range(6)]
    for pid in pids:
        m.add_pid(pid)
        kids.go(pid)
    assert sorted(m.pids()) == sorted(pids)
    m.destroy()
    for d in m.dirs():
        assert not os.path.exists(d)
    for pid in pids:
        assert kids.wait(pid) == -signal.SIGKILL


@pytest.mark.skipif(IS_V2, reason="v1 cpuset: a new level starts empty (v2 inherits)")
def test_v1_cpuset_fills_empty_levels_above_from_their_ancestors(base, kids):
    """A parent made by someone else with mkdir (an engine's pod cgroup) has
    an empty cpuset that would refuse our tasks: filled as runc does."""
    root = "/sys/fs/cgroup/cpuset"
    os.makedirs(root + base + "/pod")  # (no values written: empty)
    assert fsutil.read(root + base + "/pod", "cpuset.cpus").strip() == ""
    m = cgroups.new_manager(base + "/pod/ctr", "ctr")
    m.create()
    want = fsutil.read(root, "cpuset.cpus").strip()
    assert fsutil.read(root + base + "/pod", "cpuset.cpus").strip() == want
    assert fsutil.read(m.ctl["cpuset"], "cpuset.cpus").strip() == want
    assert fsutil.read(m.ctl["cpuset"], "cpuset.mems").strip() != ""
    pid = kids.fork(lambda: time.sleep(30))
    m.add_pid(pid)
    assert m.pids() == [pid]


def test_add_pid_and_pids(mgr, kids):
    pid = kids.fork(lambda: time.sleep(30))
    mgr.add_pid(pid)
    assert mgr.pids() == [pid]
    own = open(f"/proc/{pid}/cgroup").read()
    assert mgr.path in own


def test_resources_written(mgr, kids):
    res = {"memory": {"limit": 64 << 20, "reservation": 32 << 20},
           "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
           "pids": {"limit": 33}}
    mgr.apply(res)
    assert _read(mgr, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    assert _read(mgr, "memory", "memory.soft_limit_in_bytes", "memory.low") == str(32 << 20)
    assert _read(mgr, "pids", "pids.max", "pids.max") == "33"
    assert _read(mgr, "cpuset", "cpuset.cpus", "cpuset.cpus") == "0"
    if IS_V2:
        assert fsutil.read(mgr.dir, "cpu.max").split() == ["20000", "100000"]
        assert fsutil.read(mgr.dir, "cpu.weight").strip() == str(1 + (510 * 9999) // 262142)
    else:
        assert fsutil.read(mgr.ctl["cpu"], "cpu.shares").strip() == "512"
        assert fsutil.read(mgr.ctl["cpu"], "cpu.cfs_quota_us").strip() == "20000"
    # update merges: only pids changes
    mgr.update({"pids": {"limit": -1}})
    assert _read(mgr, "pids", "pids.max", "pids.max") == "max"
    assert _read(mgr, "memory", "memory.limit_in_bytes", "memory.max") == str(64 << 20)
    mgr.update({"memory": {"limit": -1}})
    assert _read(mgr, "memory", "memory.limit_in_bytes", "memory.max") in ("max", str(0x7FFFFFFFFFFFF000))


def test_swap_semantics(mgr):
    has_swap = os.path.exists(os.path.join(mgr.dir, "memory.swap.max") if IS_V2 else
                              os.path.join(mgr.ctl["memory"], "memory.memsw.limit_in_bytes"))
    if not has_swap:
        pytest.skip("needs swap accounting (memory.swap.max / memory.memsw.*)")
    mgr.apply({"memory": {"limit": 64 << 20, "swap": 96 << 20}})
    if IS_V2:
        assert fsutil.read(mgr.dir, "memory.swap.max").strip() == str(32 << 20)
    else:
        assert fsutil.read(mgr.ctl["memory"], "memory.memsw.limit_in_bytes").strip() == str(96 << 20)
    # growing both: order must keep memory <= memory+swap
    mgr.apply({"memory": {"limit": 256 << 20, "swap": 512 << 20}})
    mgr.apply({"memory": {"limit": 16 << 20, "swap": 16 << 20}})


def _forker():
    kids = []
    try:
        for _ in range(20):
            try:
                p = os.fork()
            except BlockingIOError:
                break
            if p == 0:
                time.sleep(60)
                os._exit(0)
            kids.append(p)
    finally:
        for p in kids:
            os.kill(p, signal.SIGKILL)
            os.waitpid(p, 0)
    return len(kids)


def test_pids_limit_stops_forks(mgr, kids):
    mgr.apply({"pids": {"limit": 5}})
    pid = kids.fork(_forker)
    mgr.add_pid(pid)
    kids.go(pid)
    assert kids.wait(pid) == 4  # itself + 4 children
    st = mgr.stats()["pids"]
    assert st["limit"] == 5


def _hog():
    chunks = []
    for _ in range(64):
        chunks.append(b"x" * (8 << 20))  # touches every page
    return 0


def test_memory_limit_oom_kills(mgr, kids):
    lim = 32 << 20
    res = {"memory": {"limit": lim}}
    swapfile = "memory.swap.max" if IS_V2 else "memory.memsw.limit_in_bytes"
    if os.path.exists(os.path.join(mgr.procs_path() if IS_V2 else mgr.ctl["memory"], swapfile)):
        res["memory"]["swap"] = lim   # no swap: the hog cannot escape to swap
    mgr.apply(res)
    assert mgr.oom_count() == 0
    pid = kids.fork(_hog)
    mgr.add_pid(pid)
    kids.go(pid)
    assert kids.wait(pid, 60) == -signal.SIGKILL
    assert mgr.oom_count() >= 1
    st = mgr.stats()["memory"]
    assert st["usage"]["limit"] == lim and "oom_kill" not in st  # (runc's keys)


def _writer(w):
    def run():
        while True:
            os.write(w, b".")
            time.sleep(0.01)
    return run


def test_freeze_thaw(mgr, kids):
    r, w = os.pipe()
    os.set_blocking(r, False)
    pid = kids.fork(_writer(w))
    os.close(w)
    mgr.add_pid(pid)
    kids.go(pid)
    time.sleep(0.2)
    assert not mgr.frozen()
    mgr.freeze()
    assert mgr.frozen()
    if not IS_V2:
        assert fsutil.read(mgr.ctl["freezer"], "freezer.state").strip() == "FROZEN"
    time.sleep(0.05)
    try:
        os.read(r, 65536)
    except BlockingIOError:
        pass
    time.sleep(0.3)
    with pytest.raises(BlockingIOError):
        os.read(r, 65536)   # no progress while frozen
    mgr.thaw()
    assert not mgr.frozen()
    time.sleep(0.3)
    assert os.read(r, 65536)
    os.close(r)


def _open_null():
    try:
        os.close(os.open("/dev/null", os.O_RDWR))
        return 0
    except PermissionError:
        return 1


def _child_open(mgr, kids) -> int:
    pid = kids.fork(_open_null)
    mgr.add_pid(pid)
    kids.go(pid)
    return kids.wait(pid)


def test_devices_deny_and_allow(mgr, kids):
    # v1: devices.allow/deny files (here); v2: the eBPF program (in the guest)
    mgr.apply({"devices": [{"allow": False, "access": "rwm"}]})
    assert _child_open(mgr, kids) == 1
    mgr.update({"devices": [{"allow": False, "access": "rwm"},
                            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]})
    assert _child_open(mgr, kids) == 0
    mgr.update({"devices": [{"allow": True, "access": "rwm"},
                            {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]})
    assert _child_open(mgr, kids) == 1   # O_RDWR needs w
    if IS_V2:
        from ocirun.kernel import bpf
        fd = os.open(mgr.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert len(bpf.prog_query(fd, bpf.BPF_CGROUP_DEVICE)[1]) == 1  # replaced, not stacked
        finally:
            os.close(fd)
    else:
        lst = fsutil.read(mgr.ctl["devices"], "devices.list")
        assert "a *:* rwm" in lst


def test_default_device_rules_allow_null(mgr, kids):
    mgr.apply({"devices": [{"allow": False, "access": "rwm"}] + cgroups.default_device_rules()})
    assert _child_open(mgr, kids) == 0


def _family():
    for _ in range(3):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    time.sleep(60)


def test_kill_all_and_destroy(mgr, kids):
    pid = kids.fork(_family)
    mgr.add_pid(pid)
    kids.go(pid)
    deadline = time.monotonic() + 10
    while len(mgr.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(mgr.pids()) == 4
    mgr.kill_all(signal.SIGTERM)
    assert kids.wait(pid) == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while mgr.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mgr.pids() == []
    mgr.destroy()
    assert not any(os.path.exists(d) for d in mgr.dirs())


def test_destroy_kills_remaining(mgr, kids):
    pid = kids.fork(lambda: time.sleep(60))
    mgr.add_pid(pid)
    mgr.freeze()
    mgr.destroy()  # frozen and populated: must still go away
    assert kids.wait(pid) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in mgr.dirs())


def test_hundred_managers_leave_nothing(base):
    for i in range(100):
        m = cgroups.new_manager(f"{base}/m{i}", f"m{i}")
        m.create()
        m.apply({"pids": {"limit": 10}, "memory": {"limit": 1 << 30}})
        m2 = cgroups.manager_from_state(m.to_state())
        m2.destroy()
    for mnt in [h.mountpoint for h in LAYOUT.hierarchies] + [LAYOUT.unified]:
        if mnt and os.path.isdir(mnt + base):
            assert os.listdir(mnt + base) == [] or all(
                not os.path.isdir(os.path.join(mnt + base, x)) for x in os.listdir(mnt + base))
    assert leftovers(base + "/m0") == []


def test_stats_shape(mgr, kids):
    pid = kids.fork(lambda: sum(range(3_000_000)))
    mgr.add_pid(pid)
    kids.go(pid)
    kids.wait(pid)
    st = mgr.stats()
    assert set(st) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
    assert st["cpu"]["usage"]["total"] > 0
    assert "usage" in st["memory"] and "raw" in st["memory"]
    assert "ioServiceBytesRecursive" in st["blkio"]
    import json
    json.dumps(st)


def test_hugetlb_limit(mgr):
    sizes = [n for n in os.listdir("/sys/kernel/mm/hugepages")]
    if not sizes:
        pytest.skip("needs hugepage support in the kernel")
    mgr.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    d = mgr.dir if IS_V2 else mgr.ctl.get("hugetlb", mgr.paths.get(""))
    f = "hugetlb.2MB.limit_in_bytes" if "hugetlb" in getattr(mgr, "ctl", {}) else "hugetlb.2MB.max"
    assert fsutil.read(d, f).strip() == str(4 << 20)


def test_blkio_weight(mgr):
    try:
        mgr.apply({"blockIO": {"weight": 500}})
    except Exception as e:
        if "not supported" in str(e):
            pytest.skip(f"needs an io weight file: {e}")
        raise


@pytest.mark.skipif(IS_V2, reason="v1 CFS files")
def test_v1_shorter_period_and_quota_under_a_parent_limit(base):
    """runc's update.bats 'pod limit': a shorter period written before the
    quota can exceed the parent's limit (EINVAL); written again after it."""
    m = cgroups.new_manager(base + "/pod/ctr", "ctr")
    m.create()
    pod = os.path.dirname(m.ctl["cpu"])
    fsutil.write(pod, "cpu.cfs_quota_us", "50000", "pod")  # 50% of the 100 ms period
    m.apply({"cpu": {"quota": 500000, "period": 1000000}})  # 50% too (runc's test config)
    with pytest.raises(Exception):
        m.update({"cpu": {"quota": 600000}})  # more than the pod allows
    m.update({"cpu": {"period": 10000, "quota": 3000}})
    assert fsutil.read(m.ctl["cpu"], "cpu.cfs_period_us").strip() == "10000"
    assert fsutil.read(m.ctl["cpu"], "cpu.cfs_quota_us").strip() == "3000"
