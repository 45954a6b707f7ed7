"""Crash safety: SIGKILL the runtime at random points of create, start, run
and delete (seeded; the seed is printed). Afterwards `state` tells the truth
(never "running" for a container whose create died, "creating" only while a
create is alive, "created" only while the init has not exec'd), `delete
--force` removes everything, and no mount, cgroup, process, fifo or state
dir is left. OCIRUN_CRASH_ITERS raises the number of iterations."""
from __future__ import annotations

import os
import random
import time

from relutil import area, env_int, one_line_error, seed, soak, state  # noqa: F401

OPS = ("create", "start", "run", "run-d", "delete", "delete-created")


def test_sigkill_runtime_at_random_points(area):
    n = env_int("OCIRUN_CRASH_ITERS", 60)
    s = seed("crash")
    rng = random.Random(s)
    problems, kills = [], 0
    for i in range(n):
        r = soak.crash_iteration(area, rng, i, OPS[i % len(OPS)])
        kills += bool(r.get("killed"))
        problems += [f"seed {s} iteration {i} {r['op']} after {r.get('delay', 0) * 1e3:.1f} ms:"
                     f" {p}" for p in r["problems"]]
    sweep = area.cid("sweep")  # the next delete sweeps hidden leftovers
    area.run("run", "-d", "-b", area.bundle, sweep)
    area.run("delete", "--force", sweep)
    hidden = [i for i in area.ids() if i.startswith(".")]
    assert not hidden, f"hidden state dirs of killed creates/deletes not swept: {hidden}"
    print(f"crash: {n} iterations, {kills} runtimes killed mid-operation")
    assert not problems, "\n".join(problems)
    assert kills >= n // 3, f"only {kills} of {n} kills hit a live runtime: delays too long"


def test_start_killed_after_exec_is_running_not_created(area):
    """A `start` killed after the init exec'd but before it removed the exec
    fifo: the container runs, so it is "running"; a second start fails at
    once (it used to wait on the fifo for ever) and delete needs --force."""
    cid = area.cid("startkill")
    assert area.run("create", "-b", area.bundle, cid).returncode == 0
    assert area.run("start", cid).returncode == 0
    fifo = os.path.join(area.root, cid, "exec.fifo")
    os.mkfifo(fifo, 0o622)  # what the killed start left
    st = state(area, cid)
    assert st["status"] == "running", st
    t = time.monotonic()
    one_line_error(area.run("start", cid, timeout=10), "running")
    assert time.monotonic() - t < 5
    one_line_error(area.run("delete", cid), "not stopped")
    assert area.run("delete", "--force", cid).returncode == 0
    assert not area.wait_clean(cid)


def test_create_killed_while_hook_runs_then_state_and_delete(area):
    """Killed while a createRuntime hook runs: 'creating' while the create
    lives, 'stopped' (pid 0) once it is dead; delete --force cleans all."""
    area.config["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"]}]}
    area.save()
    cid = area.cid("hook")
    p = area.popen("create", "-b", area.bundle, cid)
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and not soak.cgroups_named(cid, exact=True):
            time.sleep(0.01)
        time.sleep(0.1)
        assert state(area, cid)["status"] == "creating"
    finally:
        p.kill()
        p.wait()
    time.sleep(0.1)
    st = state(area, cid)
    assert st["status"] == "stopped" and st["pid"] == 0, st
    assert area.run("delete", "--force", cid).returncode == 0
    # the orphaned hook (sleep 30) is ours to end: it is not the runtime's
    for pid in soak.tagged_processes(area.tag, area.base):
        os.kill(pid, 9)
    assert not area.wait_clean(cid)


def test_state_dir_of_dead_create_without_state_json(area):
    """What a create killed between mkdir and the first save leaves: an empty
    dir. It is "stopped", listed, and delete (even without --force) removes it."""
    cid = area.cid("empty")
    os.makedirs(os.path.join(area.root, cid))
    st = state(area, cid)
    assert st["status"] == "stopped" and st["pid"] == 0
    p = area.run("list", "-q")
    assert cid in p.stdout.split()
    assert area.run("delete", cid).returncode == 0
    assert area.ids() == []


def test_truncated_state_json_is_not_a_traceback(area):
    """A state.json cut short (a crash of something that wrote it in place):
    state/list/delete still answer in one line, delete --force cleans up."""
    cid = area.cid("trunc")
    assert area.run("create", "-b", area.bundle, cid).returncode == 0
    path = os.path.join(area.root, cid, "state.json")
    data = open(path).read()
    pid = state(area, cid)["pid"]
    with open(path, "w") as f:
        f.write(data[: len(data) // 2])
    p = area.run("state", cid)
    assert "Traceback" not in p.stderr
    p = area.run("list", "--format", "json")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    p = area.run("delete", "--force", cid)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    # the init is in the container's cgroup: delete --force cannot know its
    # pid any more, but it must not be left running for ever either
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    assert not area.wait_clean(cid)
