"""SelfJoin: a new process enters its v1 cgroups by itself (writing "0" to
`tasks` fds the runtime opened) and, on a hybrid host, starts life in its
cgroup2 directory through clone3(CLONE_INTO_CGROUP). Checked on the real
kernel through /proc/<pid>/cgroup; pure v2 has no such path (None)."""
from __future__ import annotations

import os
import time

import pytest

from ocirun.cgroups.layout import own_cgroups
from ocirun.kernel import syscalls

from .conftest import IS_V2, LAYOUT, needs_root, needs_v1

pytestmark = needs_root


def _rel(mgr, key: str) -> str:
    d = mgr.paths[key]
    return d[len(mgr.mounts[key]):]


@needs_v1
def test_child_enters_every_v1_hierarchy_by_itself(mgr, kids):
    join = mgr.self_join()
    assert join is not None
    v1_keys = {k for k in mgr.paths if k}
    assert v1_keys <= join.done and len(join.task_fds) == len(v1_keys)
    r, w = os.pipe()
    try:
        def child():
            join.enter()  # nobody writes this pid anywhere
            os.write(w, b"in")
            time.sleep(30)
        pid = kids.fork(child)
        kids.go(pid)
        assert os.read(r, 2) == b"in"
        lines = own_cgroups(pid)
        for key in v1_keys:
            assert lines[key] == _rel(mgr, key), key
        assert pid in mgr.pids()
    finally:
        join.close()
        os.close(r)
        os.close(w)


@needs_v1
def test_enter_reports_a_removed_cgroup(mgr, kids):
    join = mgr.self_join()
    mgr.destroy()  # the fds now point at removed cgroups

    def child():
        try:
            join.enter()
        except Exception as e:  # CgroupError with the errno text
            return 7 if "joining the container's cgroup" in str(e) else 8
        return 9
    pid = kids.fork(child)
    kids.go(pid)
    assert kids.wait(pid) == 7
    join.close()


@pytest.mark.skipif(LAYOUT.mode != "hybrid", reason=f"needs a hybrid layout (this host is "
                    f"{LAYOUT.mode})")
def test_clone_into_cgroup_on_the_hybrid_cgroup2_dir(mgr):
    join = mgr.self_join()
    assert join is not None and join.into_fd >= 0 and "" in join.done and join.complete
    r, w = os.pipe()
    pid = syscalls.clone_into_cgroup(0, join.into_fd)
    if pid == 0:  # the child: report, then wait to be killed
        try:
            os.write(w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"x"
        lines = own_cgroups(pid)
        assert lines[""] == _rel(mgr, "")
        # only the cgroup2 part: v1 hierarchies are still the parent's
        own = own_cgroups(os.getpid())
        assert all(lines[k] == own[k] for k in lines if k)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        join.close()
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not IS_V2, reason="pure v2 only")
def test_no_self_join_on_pure_v2(mgr):
    assert mgr.self_join() is None  # the runtime writes cgroup.procs (see docs/cgroups.md)
