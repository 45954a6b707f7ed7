"""Pure config -> plan checks (no container needed)."""
import os

from ocirun import plan
from ocirun.specgen import default_spec


def test_mount_label_goes_to_the_filesystems_runc_labels(tmp_path):
    """linux.mountLabel becomes a context= option of tmpfs/devpts/mqueue
    mounts (the host must run SELinux: create checks that first)."""
    os.mkdir(tmp_path / "rootfs")
    cfg = default_spec()
    label = "system_u:object_r:container_file_t:s0"
    cfg["linux"]["mountLabel"] = label
    cfg["mounts"].append({"destination": "/b", "type": "bind", "source": "/tmp",
                          "options": ["rbind"]})
    p = plan.build(cfg, str(tmp_path))
    data = {s.dest: s.data for s in p.mounts_now + p.mounts_later}
    for dest in ("/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
        assert data[dest].endswith(f'context="{label}"'), dest
    for dest in ("/proc", "/sys", "/sys/fs/cgroup", "/b"):
        assert "context=" not in data[dest], dest
