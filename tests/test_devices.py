"""/dev inside the container (config-linux.md "Devices", "Default
Devices", "Default Filesystems"): the default nodes and links,
linux.devices with their type, numbers, mode and owner, and device binds in
a user namespace. Checked with stat and ls inside the container."""
import itertools
import os
import subprocess

import pytest

from ocitest import OCIRUN, syscall_refused

_ids = itertools.count()
SHIFT = 100000
# busybox stat: name, type, major/minor in hex, octal mode, uid, gid
STAT = "stat -c '%n|%F|%t|%T|%a|%u|%g'"


def new_id() -> str:
    """Unique across concurrent test sessions: the default cgroup path is the id."""
    return f"ocit{os.getpid()}x{next(_ids)}"


def run_out(oci, bundle) -> str:
    r = oci.run(bundle, new_id())
    assert r.rc == 0, r
    return r.out


def stats(out: str) -> dict[str, list[str]]:
    res = {}
    for ln in out.splitlines():
        if ln.count("|") == 6:
            name, *rest = ln.split("|")
            res[name] = rest
    return res


DEFAULTS = {"/dev/null": ("1", "3"), "/dev/zero": ("1", "5"), "/dev/full": ("1", "7"),
            "/dev/random": ("1", "8"), "/dev/urandom": ("1", "9"), "/dev/tty": ("5", "0")}
LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
         "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
         "/dev/ptmx": "pts/ptmx"}


def test_default_devices_and_links(oci, bundle):
    bundle.sh(f"{STAT} {' '.join(DEFAULTS)} /dev/pts /dev/shm /dev/mqueue;"
              + "".join(f" echo {ln}=$(readlink {ln});" for ln in LINKS)
              + " ls -l /dev")
    out = run_out(oci, bundle)
    st = stats(out)
    for path, (ma, mi) in DEFAULTS.items():
        assert st[path] == ["character special file", ma, mi, "666", "0", "0"], path
    assert st["/dev/pts"][0] == "directory" and st["/dev/shm"][0] == "directory"
    for link, target in LINKS.items():
        assert f"{link}={target}" in out.splitlines(), link
    names = {ln.split()[-1] if "->" not in ln else ln.split()[-3] for ln in out.splitlines()
             if ln.startswith(("c", "l", "d", "b", "p"))}
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "fd", "stdin",
            "stdout", "stderr", "pts", "shm", "mqueue"} <= names, out
    assert "console" not in names  # only with a terminal
    # /dev/core -> /proc/kcore only where the kernel has /proc/kcore (runc)
    assert ("core" in names) == os.path.exists("/proc/kcore"), out


def test_default_devices_work(oci, bundle):
    bundle.sh("echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c"
              " && (echo x > /dev/full) 2>&1; echo stdout >> /dev/stdout")  # >: would truncate our file
    out = run_out(oci, bundle).split("\n")
    assert out[0].strip() == "4" and out[1].strip() == "8"
    assert "No space left on device" in out[2]
    assert out[3] == "stdout"


def test_linux_devices_exact(oci, bundle):
    bundle.linux["devices"] = [
        {"path": "/dev/mychar", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
         "uid": 1000, "gid": 1001},
        {"path": "/dev/myblk", "type": "b", "major": 7, "minor": 200, "fileMode": 0o640,
         "uid": 0, "gid": 6},
        {"path": "/dev/myfifo", "type": "p", "fileMode": 0o620},
        {"path": "/dev/deep/er/node", "type": "c", "major": 1, "minor": 5},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o660,
         "uid": 5, "gid": 5},  # overrides the default entry
    ]
    bundle.save()
    bundle.sh(f"{STAT} /dev/mychar /dev/myblk /dev/myfifo /dev/deep/er/node /dev/null")
    st = stats(run_out(oci, bundle))
    assert st["/dev/mychar"] == ["character special file", "1", "3", "600", "1000", "1001"]
    assert st["/dev/myblk"] == ["block special file", "7", "c8", "640", "0", "6"]
    assert st["/dev/myfifo"][0] == "fifo" and st["/dev/myfifo"][3:] == ["620", "0", "0"]
    assert st["/dev/deep/er/node"] == ["character special file", "1", "5", "666", "0", "0"]
    assert st["/dev/null"] == ["character special file", "1", "3", "660", "5", "5"]


def test_device_mode_not_masked_by_umask(oci, bundle):
    bundle.linux["devices"] = [{"path": "/dev/open", "type": "c", "major": 1, "minor": 3,
                                "fileMode": 0o666}]
    bundle.process["user"]["umask"] = 0o077
    bundle.save()
    bundle.sh(f"{STAT} /dev/open")
    assert stats(run_out(oci, bundle))["/dev/open"][3] == "666"


def test_device_fields_given_as_null_take_their_defaults(oci, bundle):
    """(Found by fuzzing: a null uid reached chown in the init.)"""
    bundle.linux["devices"] = [{"path": "/dev/nulls", "type": "c", "major": 1, "minor": 3,
                                "fileMode": None, "uid": None, "gid": None}]
    bundle.save()
    bundle.sh(f"{STAT} /dev/nulls")
    st = stats(run_out(oci, bundle))["/dev/nulls"]
    assert st[3] == "666" and st[4:6] == ["0", "0"], st


def test_device_outside_dev_is_made_inside_the_rootfs(oci, bundle):
    """config-linux.md: the path "MAY be anywhere in the container
    filesystem, notably outside of /dev"; a symlink in the rootfs cannot
    send it to the host."""
    os.symlink("/", os.path.join(bundle.rootfs, "escape"))
    bundle.linux["devices"] = [
        {"path": "/foo-dev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
        {"path": "/opt/sub/null2", "type": "c", "major": 1, "minor": 3},
        {"path": "/escape/ocirun-escaped-dev", "type": "c", "major": 1, "minor": 3}]
    bundle.save()
    bundle.sh(f"{STAT} /foo-dev /opt/sub/null2 /ocirun-escaped-dev; echo hi > /opt/sub/null2")
    st = stats(run_out(oci, bundle))
    assert st["/foo-dev"][:4] == ["character special file", "1", "3", "600"], st
    assert st["/opt/sub/null2"][:3] == ["character special file", "1", "3"], st
    assert "/ocirun-escaped-dev" in st  # resolved inside the rootfs ...
    assert not os.path.exists("/ocirun-escaped-dev")  # ... never on the host


def test_device_in_a_setgid_dir_and_over_an_existing_file(oci, bundle):
    """The node gets the configured owner even where a setgid directory
    would give it its own group; a file already at the path is replaced (as
    runc). A directory in the way is an error, not removed."""
    sg = os.path.join(bundle.rootfs, "sg")
    os.mkdir(sg)
    os.chown(sg, 0, 4242)
    os.chmod(sg, 0o2775)
    with open(os.path.join(sg, "old"), "w") as f:
        f.write("a file")
    bundle.linux["devices"] = [
        {"path": "/sg/node", "type": "c", "major": 1, "minor": 3},
        {"path": "/sg/owned", "type": "c", "major": 1, "minor": 5, "uid": 7, "gid": 8},
        {"path": "/sg/old", "type": "c", "major": 1, "minor": 7}]
    bundle.save()
    bundle.sh(f"{STAT} /sg/node /sg/owned /sg/old")
    st = stats(run_out(oci, bundle))
    assert st["/sg/node"] == ["character special file", "1", "3", "666", "0", "0"], st
    assert st["/sg/owned"] == ["character special file", "1", "5", "666", "7", "8"], st
    assert st["/sg/old"] == ["character special file", "1", "7", "666", "0", "0"], st
    os.mkdir(os.path.join(sg, "dir"))
    bundle.linux["devices"] = [{"path": "/sg/dir", "type": "c", "major": 1, "minor": 3}]
    bundle.save()
    r = oci.run(bundle, new_id())
    assert r.rc != 0 and "cannot create device /sg/dir: a directory is in the way" in r.err, r
    assert os.path.isdir(os.path.join(sg, "dir"))


def test_device_path_is_cleaned(oci, bundle):
    """A trailing slash or a "." does not change the node's name (runc's
    filepath.Clean; crun's handle-device-trailing-slash test)."""
    bundle.linux["devices"] = [
        {"path": "/newdev/", "type": "b", "major": 10, "minor": 229},
        {"path": "//dev/./dotted", "type": "c", "major": 1, "minor": 3}]
    bundle.save()
    bundle.sh(f"{STAT} /newdev /dev/dotted")
    st = stats(run_out(oci, bundle))
    assert st["/newdev"][:3] == ["block special file", "a", "e5"], st
    assert st["/dev/dotted"][:3] == ["character special file", "1", "3"], st


@pytest.mark.parametrize("path", ["relative/dev", "/dev/../../x", "/"])
def test_device_path_must_be_absolute_and_inside(oci, bundle, path):
    bundle.linux["devices"] = [{"path": path, "type": "c", "major": 1, "minor": 3}]
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "config.json: linux.devices[0].path" in line, line
    assert oci.ids() == []


@pytest.mark.parametrize("dev,msg", [
    ({"path": "/dev/x", "type": "q", "major": 1, "minor": 1}, "linux.devices[0].type"),
    ({"path": "/dev/x", "type": "c", "minor": 1}, "linux.devices[0].major: is required"),
    ({"path": "/dev/x", "type": "c", "major": "1", "minor": 1}, "linux.devices[0].major: must be"),
    ({"type": "c", "major": 1, "minor": 1}, "linux.devices[0].path: is required"),
    ({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": -1},
     "linux.devices[0].fileMode"),
])
def test_bad_device_entries(oci, bundle, dev, msg):
    bundle.linux["devices"] = [dev]
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert f"config.json: {msg}" in line, line
    assert oci.ids() == []


def test_dev_bind_from_host_has_no_default_nodes_made(oci, bundle):
    """/dev bound from the host: the default devices are the host's own."""
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if not m["destination"].startswith("/dev")]
    bundle.config["mounts"].append({"destination": "/dev", "type": "bind", "source": "/dev",
                                    "options": ["rbind", "nosuid"]})
    bundle.save()
    bundle.sh(f"{STAT} /dev/null; grep -c ' /dev ' /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert stats(out)["/dev/null"][:3] == ["character special file", "1", "3"]


@pytest.fixture
def shifted_rootfs(shifted_rootfs, bundle):
    """The shared shifted rootfs, in a container with a user namespace."""
    bundle.ns("pid", "network", "ipc", "uts", "mount", "user")
    return shifted_rootfs


def test_user_namespace_devices_are_binds_of_runtime_made_nodes(oci, bundle, shifted_rootfs):
    """No mknod in a user namespace: the runtime (host root) makes the
    nodes on a detached tmpfs and the init binds them in; owned by the
    container's root, as mknod would make them, not the host's (unmapped)
    root; the staging mount and directory are gone."""
    bundle.sh(f"{STAT} {' '.join(DEFAULTS)}; echo x > /dev/null && echo null-ok;"
              " ls -a /dev; cat /proc/self/mountinfo")
    out = run_out(oci, bundle)
    st = stats(out)
    for path, (ma, mi) in DEFAULTS.items():
        assert st[path][:3] == ["character special file", ma, mi], path
        assert st[path][4:] == ["0", "0"], path
    assert "null-ok" in out
    points = {ln.split(" - ")[0].split()[4] for ln in out.splitlines() if " - " in ln}
    for path in DEFAULTS:
        assert path in points, f"{path} is not a bind mount"
    assert ".ocirun-devices" not in out


def test_user_namespace_device_the_host_lacks(oci, bundle, shifted_rootfs):
    """A block device 1:5 (the host's 1:5 is a char device) with its owner
    (crun's owner-device test): made by the runtime, not bound from a host
    path that has another node or none."""
    bundle.linux["devices"] = [{"path": "/dev/foo", "type": "b", "major": 1, "minor": 5,
                                "uid": 10, "gid": 11, "fileMode": 0o640}]
    bundle.save()
    bundle.sh(f"{STAT} /dev/foo")
    st = stats(run_out(oci, bundle))
    assert st["/dev/foo"][:3] == ["block special file", "1", "5"]
    assert st["/dev/foo"][3:] == ["640", "10", "11"]


def test_user_namespace_linux_devices_bound(oci, bundle, shifted_rootfs):
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("host has no /dev/loop-control to bind")
    bundle.linux["devices"] = [{"path": "/dev/loop-control", "type": "c", "major": 10,
                                "minor": 237}]
    bundle.save()
    bundle.sh(f"{STAT} /dev/loop-control; grep -c ' /dev/loop-control ' /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert stats(out)["/dev/loop-control"][:3] == ["character special file", "a", "ed"]
    assert out.splitlines()[-1] == "1"


def test_user_namespace_devices_without_the_new_mount_api(oci, bundle, shifted_rootfs):
    """A runtime that cannot make its tmpfs (fsopen refused, as by an older
    kernel or a seccomp profile) falls back to binding the host's nodes."""
    bundle.sh(f"{STAT} /dev/null; echo x > /dev/null && echo null-ok")
    cid = new_id()
    r = subprocess.run([*syscall_refused("fsopen"), OCIRUN, "--root", oci.root,
                        "run", "-b", bundle.path, cid],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    st = stats(r.stdout)
    assert st["/dev/null"][:3] == ["character special file", "1", "3"]
    assert st["/dev/null"][4:] == ["65534", "65534"]  # the host's node, its root unmapped
    assert "null-ok" in r.stdout
    assert oci.ids() == []
