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


def test_default_id_map_as_crun(monkeypatch):
    """A new user namespace without mappings (crun's defaults): the
    process's id is the runtime's own, ids below and above it come from the
    first /etc/subuid range; without one, a root runtime maps only 0."""
    from ocirun.linux import userns
    ranges = []
    monkeypatch.setattr(userns, "subordinate_ranges", lambda kind="uid": list(ranges))
    monkeypatch.setattr(userns.os, "geteuid", lambda: 0)
    m = lambda c, h, s: {"containerID": c, "hostID": h, "size": s}  # noqa: E731
    assert userns.default_id_map("uid", 0) == [m(0, 0, 1)]
    assert userns.default_id_map("uid", 1000) == [m(0, 0, 1)]
    monkeypatch.setattr(userns.os, "geteuid", lambda: 1500)
    assert userns.default_id_map("uid", 0) == [m(0, 1500, 1)]
    assert userns.default_id_map("uid", 1000) == [m(1000, 1500, 1)]
    ranges.append((100000, 165536))
    helper = [True]
    monkeypatch.setattr(userns, "_on_path", lambda name: helper[0])
    assert userns.default_id_map("uid", 0) == [m(0, 1500, 1), m(1, 100000, 65536)]
    helper[0] = False  # no newuidmap to write several ranges: the user's own id only
    assert userns.default_id_map("uid", 0) == [m(0, 1500, 1)]
    helper[0] = True
    assert userns.default_id_map("uid", 1000) == [
        m(0, 100000, 1000), m(1000, 1500, 1), m(1001, 101000, 64536)]
    ranges[0] = (100000, 100010)  # fewer ids than the ones below the process's
    assert userns.default_id_map("uid", 1000) == [m(0, 100000, 10), m(1000, 1500, 1)]
    monkeypatch.setattr(userns.os, "geteuid", lambda: 0)  # root needs no helper
    helper[0] = False
    assert userns.default_id_map("uid", 0) == [m(0, 0, 1), m(1, 100000, 10)]


def test_user_namespace_without_mappings_gets_defaults(tmp_path, monkeypatch):
    from ocirun.linux import userns
    monkeypatch.setattr(userns, "subordinate_ranges", lambda kind="uid": [])
    os.mkdir(tmp_path / "rootfs")
    cfg = default_spec()
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 5000, "size": 10}]
    p = plan.build(cfg, str(tmp_path))
    own = os.geteuid()
    assert p.uid_maps == [{"containerID": 0, "hostID": own, "size": 1}]
    assert p.gid_maps == cfg["linux"]["gidMappings"]  # what the config says stays
