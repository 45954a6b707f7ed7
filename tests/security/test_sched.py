"""Process extras: personality, ioPriority, scheduler, execCPUAffinity, memoryPolicy."""
from __future__ import annotations

import ctypes
import os

import pytest

from ocirun.errors import ConfigError
from ocirun.linux import sched
from sec_util import raw_syscall, run_child, syscall_nr


def in_child(proc, linux, probe):
    for n in ("ioprio_get", "get_mempolicy"):
        syscall_nr(n)

    def child():
        sched.apply(proc, linux)
        return probe()
    return run_child(child)


def test_nothing_configured_is_a_no_op():
    sched.validate(None, None)
    sched.validate({}, {})


def test_personality_linux32():
    r = in_child({}, {"personality": {"domain": "LINUX32"}},
                 lambda: [os.uname().machine, raw_syscall(syscall_nr("personality"), 0xFFFFFFFF)[0]])
    machine, pers = r.ok()
    assert machine in ("i686", "armv8l", "armv7l") and pers & 0xFF == 8


def test_personality_linux():
    r = in_child({}, {"personality": {"domain": "LINUX"}}, lambda: os.uname().machine)
    assert r.ok() == os.uname().machine


@pytest.mark.parametrize("cls, num, prio", [("IOPRIO_CLASS_IDLE", 3, 0), ("IOPRIO_CLASS_BE", 2, 6),
                                            ("IOPRIO_CLASS_RT", 1, 1)])
def test_io_priority(cls, num, prio):
    r = in_child({"ioPriority": {"class": cls, "priority": prio}}, {},
                 lambda: raw_syscall(syscall_nr("ioprio_get"), 1, 0)[0])
    assert r.ok() == num << 13 | prio


def test_scheduler_batch_with_nice():
    r = in_child({"scheduler": {"policy": "SCHED_BATCH", "nice": 7}}, {},
                 lambda: [os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)])
    assert r.ok() == [os.SCHED_BATCH, 7]


def test_scheduler_idle_reset_on_fork():
    r = in_child({"scheduler": {"policy": "SCHED_IDLE", "flags": ["SCHED_FLAG_RESET_ON_FORK"]}}, {},
                 lambda: os.sched_getscheduler(0))
    assert r.ok() == os.SCHED_IDLE | os.SCHED_RESET_ON_FORK


def test_scheduler_fifo_priority():
    def probe():
        return [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]
    r = in_child({"scheduler": {"policy": "SCHED_FIFO", "priority": 10}}, {}, probe)
    if r.error and "Operation not permitted" in r.error:  # pragma: no cover
        pytest.skip("no real-time budget in this cgroup")
    assert r.ok() == [os.SCHED_FIFO, 10]


def test_scheduler_deadline():
    cfg = {"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 1_000_000,
                         "deadline": 10_000_000, "period": 10_000_000}}
    r = in_child(cfg, {}, lambda: os.sched_getscheduler(0))
    if r.error and ("busy" in r.error or "not permitted" in r.error):  # pragma: no cover
        pytest.skip(f"deadline admission refused here: {r.error.splitlines()[0]}")
    assert r.ok() == 6


def test_kernel_refusal_is_a_config_error():
    # SCHED_ISO was never merged: valid per spec, refused by the kernel.
    r = in_child({"scheduler": {"policy": "SCHED_ISO"}}, {}, lambda: None)
    assert "process.scheduler: sched_setattr: Invalid argument" in r.error


def test_exec_cpu_affinity_initial_and_final():
    cpus = sorted(os.sched_getaffinity(0))
    last = str(cpus[-1])
    cfg = {"execCPUAffinity": {"initial": last, "final": f"0-{cpus[-1]}"}}
    assert in_child(cfg, {}, lambda: sorted(os.sched_getaffinity(0))).ok() == [cpus[-1]]

    def final():
        sched.set_exec_affinity(cfg, "initial")
        a = sorted(os.sched_getaffinity(0))
        sched.set_exec_affinity(cfg, "final")
        return [a, sorted(os.sched_getaffinity(0))]
    assert run_child(final).ok() == [[cpus[-1]], list(range(cpus[-1] + 1))]


def _get_mempolicy():
    libc = ctypes.CDLL(None, use_errno=True)
    mode = ctypes.c_int(-1)
    mask = (ctypes.c_ulong * 16)()
    ret = libc.syscall(ctypes.c_long(syscall_nr("get_mempolicy")), ctypes.byref(mode), mask,
                       ctypes.c_ulong(16 * 64), ctypes.c_ulong(0), ctypes.c_ulong(0))
    assert ret == 0, ctypes.get_errno()
    return [mode.value, mask[0]]


@pytest.mark.parametrize("mp, want", [
    ({"mode": "MPOL_BIND", "nodes": "0"}, [2, 1]),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0"}, [3, 1]),
    ({"mode": "MPOL_PREFERRED", "nodes": "0"}, [1, 1]),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, [2 | 1 << 15, 1]),
    ({"mode": "MPOL_LOCAL"}, [4, 0]),
    ({"mode": "MPOL_DEFAULT"}, [0, 0]),
])
def test_memory_policy(mp, want):
    assert in_child({}, {"memoryPolicy": mp}, _get_mempolicy).ok() == want


@pytest.mark.parametrize("proc, linux, path", [
    ({}, {"personality": {"domain": "LINUX64"}}, "linux.personality.domain"),
    ({}, {"personality": {"domain": "LINUX", "flags": ["X"]}}, "linux.personality.flags"),
    ({"ioPriority": {"class": "IOPRIO_CLASS_FAST", "priority": 1}}, {}, "process.ioPriority.class"),
    ({"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}, {}, "process.ioPriority.priority"),
    ({"scheduler": {"policy": "SCHED_NOPE"}}, {}, "process.scheduler.policy"),
    ({"scheduler": {"policy": "SCHED_OTHER", "nice": 20}}, {}, "process.scheduler.nice"),
    ({"scheduler": {"policy": "SCHED_OTHER", "priority": 5}}, {}, "process.scheduler.priority"),
    ({"scheduler": {"policy": "SCHED_FIFO"}}, {}, "process.scheduler.priority"),
    ({"scheduler": {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}}, {}, "process.scheduler.flags[0]"),
    ({"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 5, "deadline": 4}}, {}, "process.scheduler"),
    ({"scheduler": {"policy": "SCHED_OTHER", "runtime": 5}}, {}, "process.scheduler"),
    ({"execCPUAffinity": {"initial": "3-1"}}, {}, "process.execCPUAffinity.initial"),
    ({"execCPUAffinity": {"final": "a"}}, {}, "process.execCPUAffinity.final"),
    ({}, {"memoryPolicy": {"mode": "MPOL_FAST"}}, "linux.memoryPolicy.mode"),
    ({}, {"memoryPolicy": {"mode": "MPOL_BIND"}}, "linux.memoryPolicy.nodes"),
    ({}, {"memoryPolicy": {"mode": "MPOL_LOCAL", "nodes": "0"}}, "linux.memoryPolicy.nodes"),
    ({}, {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0",
                           "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}},
     "linux.memoryPolicy.flags"),
    ({}, {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_X"]}},
     "linux.memoryPolicy.flags[0]"),
    # names that are not strings (found by fuzzing: they were TypeErrors)
    ({}, {"personality": {"domain": ["LINUX"]}}, "linux.personality.domain"),
    ({"ioPriority": {"class": [], "priority": 1}}, {}, "process.ioPriority.class"),
    ({"scheduler": {"policy": {}}}, {}, "process.scheduler.policy"),
    ({"scheduler": {"policy": "SCHED_OTHER", "flags": [["x"]]}}, {}, "process.scheduler.flags[0]"),
    ({}, {"memoryPolicy": {"mode": ["MPOL_BIND"]}}, "linux.memoryPolicy.mode"),
])
def test_validation_errors(proc, linux, path):
    with pytest.raises(ConfigError) as ei:
        sched.validate(proc, linux)
    assert ei.value.path == path
    assert str(ei.value).startswith(f"config.json: {path}: ")


def test_parse_list():
    assert sched.parse_list("0-3,7", "x") == [0, 1, 2, 3, 7]
    assert sched.parse_list(" 2 , 0-1,1", "x") == [0, 1, 2]
