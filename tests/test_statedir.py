"""statedir: state.json is always whole for readers, however it is saved."""
import json
import os
import threading

import pytest

from ocirun.statedir import StateDir


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
