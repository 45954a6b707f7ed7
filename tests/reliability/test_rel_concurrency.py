"""Concurrency: engines call the runtime in parallel. Same-id creates, many
containers at once with `list` polled throughout, and kill/delete racing a
container's own exit."""
from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
import threading
import time

from relutil import area, env_int, one_line_error, seed, soak, state  # noqa: F401


def _popen_files(area, *args):
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    p = subprocess.Popen(area.cmd(*args), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                         text=True, env=area.env())
    return p, out, err


def _finish(p, out, err):
    p.wait(timeout=60)
    out.seek(0)
    err.seek(0)
    p.stdout, p.stderr = out.read(), err.read()
    out.close()
    err.close()
    return p


def test_ten_creates_of_one_id_one_wins(area):
    for rnd in range(3):
        cid = area.cid(f"same{rnd}")
        procs = [_popen_files(area, "create", "-b", area.bundle, cid) for _ in range(10)]
        done = [_finish(*t) for t in procs]
        ok = [p for p in done if p.returncode == 0]
        assert len(ok) == 1, [(p.returncode, p.stderr) for p in done]
        for p in done:
            if p.returncode:
                one_line_error(p, "exists", cid)
        st = state(area, cid)
        assert st["status"] == "created" and st["pid"] > 0
        json.load(open(os.path.join(area.root, cid, "state.json")))
        assert {"exec.fifo", "state.json"} <= set(os.listdir(os.path.join(area.root, cid)))
        assert area.run("start", cid).returncode == 0
        assert state(area, cid)["status"] == "running"
        assert area.run("delete", "--force", cid).returncode == 0
        assert not area.wait_clean(cid)


def test_fifty_containers_in_parallel_list_stays_consistent(area):
    n = env_int("OCIRUN_PARALLEL_CONTAINERS", 50)
    r = soak.concurrent_cli(area, n, workers=5)
    assert not r["errors"], "\n".join(r["errors"])
    assert not r["bad_list"], "\n".join(r["bad_list"][:20])
    assert r["polls"] > 3
    assert area.ids() == []
    assert not area.wait_clean()


def _race(area, cid, rng):
    """The container exits on its own (after 0-40 ms) while kill, delete,
    delete --force and state are sent at once."""
    results = {}

    def call(name, *args):
        time.sleep(rng_delays[name])
        results[name] = area.run(*args)

    rng_delays = {n: rng.uniform(0, 0.05) for n in ("kill", "delete", "force", "state", "kill9")}
    threads = [threading.Thread(target=call, args=a) for a in (
        ("kill", "kill", cid, "TERM"), ("kill9", "kill", cid, "KILL"),
        ("delete", "delete", cid), ("force", "delete", "--force", cid), ("state", "state", cid))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


SENSIBLE = ("not running", "does not exist", "not stopped", "stopped")


def test_kill_and_delete_racing_the_containers_exit(area):
    s = seed("exit race")
    rng = random.Random(s)
    area.set_args("sh", "-c", f"sleep 0.0{rng.randrange(1, 5)}")
    problems = []
    for i in range(env_int("OCIRUN_RACE_ITERS", 15)):
        area.set_args("sh", "-c", f"usleep {rng.randrange(0, 40000)}")
        cid = area.cid(f"race{i}")
        p = area.run("run", "-d", "-b", area.bundle, cid)
        assert p.returncode == 0, p.stderr
        for name, r in _race(area, cid, rng).items():
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            if "Traceback" in r.stderr or (r.returncode and (
                    len(lines) != 1 or not any(w in lines[0] for w in SENSIBLE))):
                problems.append(f"seed {s} #{i} {name}: rc={r.returncode} {r.stderr!r}")
            if name == "state" and r.returncode == 0:
                st = json.loads(r.stdout)
                if st["status"] not in ("running", "stopped"):
                    problems.append(f"#{i} state: {st['status']}")
        if cid in area.ids():
            r = area.run("delete", "--force", cid)
            if r.returncode != 0 and "does not exist" not in r.stderr:
                problems.append(f"#{i} final delete: {r.stderr!r}")
        left = area.wait_clean(cid)
        if left:
            problems.append(f"#{i} leftovers {left}")
    assert not problems, "\n".join(problems)


def test_delete_force_racing_create(area):
    """delete --force sent while the create of the same id is half way: the
    create either wins (a whole, working container) or fails in one line;
    never a traceback, never a leak."""
    s = seed("create/delete race")
    rng = random.Random(s)
    problems = []
    for i in range(env_int("OCIRUN_RACE_ITERS", 15)):
        cid = area.cid(f"cd{i}")
        c = _popen_files(area, "create", "-b", area.bundle, cid)
        time.sleep(rng.uniform(0, 0.05))
        d = area.run("delete", "--force", cid)
        c = _finish(*c)
        for name, r in (("create", c), ("delete", d)):
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            if "Traceback" in r.stderr or (r.returncode and len(lines) != 1):
                problems.append(f"seed {s} #{i} {name}: rc={r.returncode} {r.stderr!r}")
        if cid in area.ids():
            st = json.loads(area.run("state", cid).stdout or "{}")
            if c.returncode == 0 and st.get("status") not in ("created", "stopped"):
                problems.append(f"#{i} after the race: {st}")
            area.run("delete", "--force", cid)
        left = area.wait_clean(cid)
        if left:
            problems.append(f"seed {s} #{i} (create rc={c.returncode} {c.stderr.strip()!r}, "
                            f"delete rc={d.returncode} {d.stderr.strip()!r}) leftovers {left}")
    assert not problems, "\n".join(problems)
