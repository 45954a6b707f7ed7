"""statedir: state.json is always whole for readers, however it is saved."""
import json
import os
import threading
import time

import pytest

from ocirun.statedir import StateDir, is_init, proc_start_time


@pytest.mark.parametrize("replacing", [False, True])
def test_saves_are_atomic_for_readers(tmp_path, replacing):
    sd = StateDir(str(tmp_path), "c1")
    sd.make()
    try:
        sd.save({"id": "c1", "n": 0, "pad": "x" * 3000})
        path = os.path.join(sd.path, "state.json")
        seen, bad, stop = [], [], threading.Event()

        def read():
            while not stop.is_set():
                try:
                    with open(path) as f:
                        seen.append(json.load(f)["n"])
                except (OSError, ValueError) as e:  # missing or partial
                    bad.append(repr(e))

        t = threading.Thread(target=read)
        t.start()
        try:
            for n in range(1, 300):
                sd.save({"id": "c1", "n": n, "pad": "x" * 3000}, replacing=replacing)
        finally:
            stop.set()
            t.join()
        assert not bad, bad[:3]
        assert seen and seen == sorted(seen)
        with open(path) as f:
            assert json.load(f)["n"] == 299
        # the swapped-out old file is gone: only the state (and the marker
        # of a directory made without a state)
        assert sorted(os.listdir(sd.path)) == [".ocirun", "state.json"]
    finally:
        sd.remove()
    assert os.listdir(tmp_path) == []


def test_made_with_its_state_the_dir_holds_just_that(tmp_path):
    sd = StateDir(str(tmp_path), "c2")
    sd.make({"id": "c2", "pid": 0, "status": "creating"})
    try:
        assert os.listdir(sd.path) == ["state.json"]
        with open(os.path.join(sd.path, "state.json")) as f:
            assert json.load(f)["status"] == "creating"
        assert StateDir(str(tmp_path), "c2").status() == "creating"  # we hold the lock
    finally:
        sd.remove()
    assert os.listdir(tmp_path) == []


def test_a_dead_or_zombie_init_is_never_the_init():
    """A `run` whose process exited before create saved the state has no
    start time recorded (a zombie's is not read): its pid, once it is a
    zombie or gone, must not count as the running init. It did (None ==
    None), and delete then took a stopped container for a running one:
    the kill path, with SIGKILL to a pid that may have been reused."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    end = time.monotonic() + 10
    while proc_start_time(pid) is not None:  # (None once it is a zombie)
        assert time.monotonic() < end
        time.sleep(0.01)
    assert not is_init(pid, {"pid": pid, "start_time": None})  # zombie
    os.waitpid(pid, 0)
    assert not is_init(pid, {"pid": pid, "start_time": None})  # gone
    me = os.getpid()
    assert is_init(me, {"pid": me, "start_time": proc_start_time(me)})
    assert not is_init(me, {"pid": me, "start_time": None})
