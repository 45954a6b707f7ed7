"""ocirun.linux.mountinfo: the parsing that decides which mounts the init
makes private or slave (pure functions, fed a mountinfo file of our own)."""
from ocirun.linux.mountinfo import holding_mount, unescape, whole_proc_sys_outside

INFO = """\
20 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
21 20 0:21 / /proc rw,relatime shared:2 - proc proc rw
22 20 0:22 / /sys rw,relatime shared:3 - sysfs sysfs rw
23 20 254:0 /srv /var/lib/c rw,relatime - ext4 /dev/vda rw
24 23 0:40 / /var/lib/c/rootfs rw,relatime shared:9 master:1 - overlay overlay rw
25 24 0:41 / /var/lib/c/rootfs rw,relatime - tmpfs tmpfs rw
26 20 0:42 / /run/a\\040b rw shared:7 - tmpfs tmpfs rw
27 20 0:43 /sys /run/a\\040b/sysbind rw - sysfs sysfs rw
28 20 0:44 / /var/lib/c/rootfs/proc rw - proc proc rw
29 22 0:45 / /sys/kernel/debug rw shared:10 - debugfs debugfs rw
"""


def _file(tmp_path):
    p = tmp_path / "mountinfo"
    p.write_text(INFO)
    return str(p)


def test_holding_mount_is_the_longest_prefix_and_the_top_of_a_stack(tmp_path):
    f = _file(tmp_path)
    assert holding_mount("/var/lib/c/rootfs", f) == ("/var/lib/c/rootfs", False)  # 25 on 24
    assert holding_mount("/var/lib/c/rootfs/etc", f) == ("/var/lib/c/rootfs", False)
    assert holding_mount("/var/lib/c", f) == ("/var/lib/c", False)
    assert holding_mount("/var/lib/cx", f) == ("/", True)  # a prefix of the name is not a parent
    assert holding_mount("/srv/x", f) == ("/", True)
    assert holding_mount("/run/a b/c", f) == ("/run/a b", True)  # escapes undone


def test_whole_proc_sys_outside_with_their_parents(tmp_path):
    f = _file(tmp_path)
    # the bind of a sysfs subtree (root /sys) is not whole; the proc under
    # the rootfs is the container's own
    assert whole_proc_sys_outside("/var/lib/c/rootfs", f) == [("/proc", "/"), ("/sys", "/")]


def test_unescape():
    assert unescape("/a\\040b\\134c") == "/a b\\c"
    assert unescape("/plain") == "/plain"
