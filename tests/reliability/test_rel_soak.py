"""A small, bounded version of tools/soak.py: sequential library cycles
(the caller's own fd count must not grow), the runtime process's fd count
stays flat over runs, and nothing is left."""
from __future__ import annotations

import subprocess
import time

from relutil import area, env_int, soak  # noqa: F401


def test_sequential_library_cycles_do_not_leak_fds(area):
    r = soak.sequential_library(area, env_int("OCIRUN_SOAK_CYCLES", 40))
    assert not r["errors"], r["errors"]
    assert r["fd_growth"] <= 0, f"fds of the calling process grew: {r['fds']}"
    assert not area.wait_clean()


def test_runtime_process_fd_count_is_flat(area):
    """The fds of a foreground `ocirun run` while its container runs: the
    same small number every time."""
    area.set_args("sleep", "0.3")
    counts = []
    for i in range(6):
        p = area.popen("run", "-b", area.bundle, area.cid(f"fd{i}"))
        time.sleep(0.15)
        try:
            counts.append(soak.fd_count(p.pid))
        except FileNotFoundError:
            pass
        assert p.wait(timeout=30) == 0
    assert counts and len(set(counts)) == 1 and counts[0] < 16, counts
    assert not area.wait_clean()


def test_soak_tool_small_run(tmp_path):
    r = subprocess.run([soak.sys.executable, soak.__file__, "--sequential", "10",
                        "--concurrent", "10", "--workers", "3", "--crash", "12",
                        "--seed", "1", "--dir", str(tmp_path / "soak")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "leftovers after crash: none" in r.stdout, r.stdout
