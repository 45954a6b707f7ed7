"""Resources this host's v1 controllers can take that the other cgroup tests
do not touch: blkio throttling, CPU burst / idle, realtime budget. Written
at create and read back from the container's own cgroup files."""
import os
import stat

import pytest

from ocirun import cgroups

LAYOUT = cgroups.detect()
pytestmark = pytest.mark.skipif(LAYOUT.mode == "v2" or os.geteuid() != 0,
                                reason="v1 controller files (this host layout: "
                                       f"{LAYOUT.mode}) and root needed")


def _own_dir(pid: int, controller: str) -> str:
    by_key = {h.key: h for h in LAYOUT.hierarchies}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, key, path = line.rstrip("\n").split(":", 2)
            if controller in key.split(",") and key in by_key:
                h = by_key[key]
                rel = path[len(h.root):] if h.root != "/" and path.startswith(h.root) else path
                return h.mountpoint + rel.rstrip("/")
    raise AssertionError(f"{controller} hierarchy not found for {pid}")


def _read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def _root_block_device() -> tuple[int, int] | None:
    for dev in ("/dev/vda", "/dev/sda", "/dev/nvme0n1"):
        try:
            st = os.stat(dev)
        except FileNotFoundError:
            continue
        if stat.S_ISBLK(st.st_mode):
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    return None


def test_blkio_throttle_written(oci, bundle):
    dev = _root_block_device()
    if dev is None or not os.path.exists("/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device"):
        pytest.skip("no block device or no blkio throttling on this host")
    major, minor = dev
    bundle.args("sleep", "60")
    bundle.linux["resources"]["blockIO"] = {
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    }
    bundle.save()
    oci.ok("run", "-d", "-b", bundle.path, "bio")
    d = _own_dir(oci.state("bio")["pid"], "blkio")
    assert f"{major}:{minor} 1048576" in _read(d, "blkio.throttle.read_bps_device")
    assert f"{major}:{minor} 100" in _read(d, "blkio.throttle.write_iops_device")


@pytest.fixture
def bfq_loop(tmp_path):
    """A loop device on the BFQ scheduler (runc's cgroups.bats does the same)."""
    import subprocess
    img = tmp_path / "backing.img"
    img.write_bytes(b"\0" * 4096)
    r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        sched = f"/sys/block/{os.path.basename(dev)}/queue/scheduler"
        try:
            with open(sched, "w") as f:
                f.write("bfq")
        except OSError as e:
            pytest.skip(f"BFQ scheduler not available: {e}")
        st = os.stat(dev)
        yield os.major(st.st_rdev), os.minor(st.st_rdev)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_blkio_bfq_weights(oci, bundle, bfq_loop):
    """Per-device weights go to blkio.bfq.weight_device (a write of
    "MAJ:MIN W" to blkio.bfq.weight is EINVAL on this kernel)."""
    major, minor = bfq_loop
    bundle.args("sleep", "60")
    bundle.linux["resources"]["blockIO"] = {
        "weight": 333, "weightDevice": [{"major": major, "minor": minor, "weight": 444}]}
    bundle.save()
    oci.ok("run", "-d", "-b", bundle.path, "bfq")
    d = _own_dir(oci.state("bfq")["pid"], "blkio")
    assert _read(d, "blkio.bfq.weight").split()[-1] == "333"
    assert f"{major}:{minor} 444" in _read(d, "blkio.bfq.weight_device")


def test_cpu_quota_burst_idle_written(oci, bundle):
    d0 = "/sys/fs/cgroup/cpu"
    if not os.path.exists(f"{d0}/cpu.cfs_burst_us") or not os.path.exists(f"{d0}/cpu.idle"):
        pytest.skip("kernel without cpu.cfs_burst_us / cpu.idle")
    bundle.args("sleep", "60")
    bundle.linux["resources"]["cpu"] = {"quota": 50000, "period": 100000, "burst": 20000,
                                        "shares": 512}
    bundle.save()
    oci.ok("run", "-d", "-b", bundle.path, "cpu")
    d = _own_dir(oci.state("cpu")["pid"], "cpu")
    assert _read(d, "cpu.cfs_quota_us") == "50000"
    assert _read(d, "cpu.cfs_period_us") == "100000"
    assert _read(d, "cpu.cfs_burst_us") == "20000"
    assert _read(d, "cpu.shares") == "512"
    oci.ok("delete", "-f", "cpu")
    bundle.linux["resources"]["cpu"] = {"idle": 1}
    bundle.save()
    oci.ok("run", "-d", "-b", bundle.path, "idle")
    assert _read(_own_dir(oci.state("idle")["pid"], "cpu"), "cpu.idle") == "1"


def test_realtime_budget_written(oci, bundle):
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("kernel without RT group scheduling")
    bundle.args("sleep", "60")
    bundle.linux["resources"]["cpu"] = {"realtimePeriod": 1000000, "realtimeRuntime": 1000}
    bundle.save()
    oci.ok("run", "-d", "-b", bundle.path, "rt")
    d = _own_dir(oci.state("rt")["pid"], "cpu")
    assert _read(d, "cpu.rt_period_us") == "1000000"
    assert _read(d, "cpu.rt_runtime_us") == "1000"


def test_zero_values_are_unset_as_in_runc(oci, bundle):
    """Spec generators write zeros for what they leave unset: runc takes a
    0 for "not set" in cpu, memory (a limit of 0 bytes was written as such:
    the init could not start), pids and blkio weights."""
    bundle.args("true")
    bundle.linux["resources"]["cpu"] = {"shares": 0, "quota": 0, "period": 0,
                                        "realtimePeriod": 0, "realtimeRuntime": 0}
    bundle.linux["resources"]["memory"] = {"limit": 0, "reservation": 0, "swap": 0,
                                           "kernelTCP": 0}
    bundle.linux["resources"]["pids"] = {"limit": 0}
    bundle.linux["resources"]["blockIO"] = {"weight": 0, "leafWeight": 0}
    bundle.save()
    r = oci.run(bundle, "zero")
    assert r.rc == 0, r


def test_sched_fifo_runs_with_a_realtime_budget(oci, bundle):
    """process.scheduler SCHED_FIFO in a container whose cpu cgroup has
    real-time runtime (linux.resources.cpu.realtimeRuntime)."""
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("kernel without RT group scheduling (cgroup v1 cpu.rt_runtime_us)")
    bundle.process["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
    bundle.linux["resources"]["cpu"] = {"realtimePeriod": 1000000, "realtimeRuntime": 10000}
    bundle.sh("grep -E '^(policy|prio)' /proc/self/sched")
    r = oci.run(bundle, "fifo")
    assert r.rc == 0, r
    fields = {k.strip(): v.strip() for k, v in (line.split(":") for line in r.out.splitlines())}
    assert fields["policy"] == "1" and fields["prio"] == str(99 - 10)  # SCHED_FIFO, 10


def test_sched_fifo_without_a_realtime_budget_is_one_clear_line(oci, bundle):
    """A new v1 cpu cgroup has no real-time runtime: the kernel refuses the
    SCHED_FIFO init with a bare EINVAL at the join; the line names the
    scheduler and the setting that gives it one, and nothing is left."""
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("kernel without RT group scheduling (cgroup v1 cpu.rt_runtime_us)")
    bundle.process["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
    bundle.args("true")
    for cmd in ("run", "create"):
        line = oci.fail(cmd, "--bundle", bundle.path, "nofifo")
        assert "process.scheduler" in line and "realtimeRuntime" in line, line
        assert oci.ids() == []
        assert not any(os.path.exists(f"/sys/fs/cgroup/{h}/nofifo")
                       for h in os.listdir("/sys/fs/cgroup"))
