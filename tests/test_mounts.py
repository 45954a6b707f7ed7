"""root and mounts (config.md "Root", "Mounts"; config-linux.md
"rootfsPropagation", "maskedPaths", "readonlyPaths"): every filesystem type
and option, checked in /proc/self/mountinfo inside the container, and
symlink escapes out of the rootfs."""
import itertools
import os
import subprocess

import pytest

from ocitest import OCIRUN

_ids = itertools.count()


def new_id() -> str:
    """Unique across concurrent test sessions: the default cgroup path is the id."""
    return f"ocit{os.getpid()}x{next(_ids)}"


def run_out(oci, bundle, *extra, cid=None) -> str:
    r = oci.run(bundle, cid or new_id(), *extra)
    assert r.rc == 0, r
    return r.out


class Mnt:
    def __init__(self, line: str) -> None:
        left, _, right = line.partition(" - ")
        f = left.split()
        self.root, self.point = f[3], f[4]
        self.opts = set(f[5].split(","))
        self.optional = f[6:]
        self.fstype, self.source, sup = (right.split() + ["", "", ""])[:3]
        self.super = set(sup.split(","))

    def __repr__(self) -> str:
        return f"Mnt({self.point} {self.fstype} {sorted(self.opts)} {self.optional} {self.super})"


def mountinfo(out: str) -> dict[str, Mnt]:
    """mountpoint -> its top mount, from `cat /proc/self/mountinfo` output."""
    res = {}
    for ln in out.splitlines():
        if " - " in ln:
            m = Mnt(ln)
            res[m.point] = m
    return res


def add_mount(bundle, dest, typ, source=None, options=None):
    m = {"destination": dest, "type": typ}
    if source is not None:
        m["source"] = source
    if options is not None:
        m["options"] = options
    bundle.config["mounts"].append(m)
    bundle.save()


@pytest.fixture
def host_mounts():
    """Mounts the test makes on the host, undone even on failure."""
    made = []

    def mount(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)
        made.append(args[-1])

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", target], capture_output=True)


# --- root ----------------------------------------------------------------------
@pytest.mark.parametrize("absolute", [False, True])
def test_root_path_relative_and_absolute(oci, bundle, absolute):
    with open(os.path.join(bundle.rootfs, "marker"), "w") as f:
        f.write("in-rootfs\n")
    bundle.config["root"]["path"] = bundle.rootfs if absolute else "rootfs"
    bundle.args("cat", "/marker")
    assert run_out(oci, bundle) == "in-rootfs\n"


def test_root_path_with_dotdot_and_symlink(oci, bundle, tmp_path):
    os.symlink(bundle.rootfs, tmp_path / "link")
    bundle.config["root"]["path"] = "../link"
    bundle.args("true")
    run_out(oci, bundle)


def test_root_readonly(oci, bundle):
    bundle.config["root"]["readonly"] = True
    bundle.sh("touch /newfile 2>&1; echo rc=$?; cat /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert "touch: /newfile: Read-only file system\nrc=1\n" in out
    assert "ro" in mountinfo(out)["/"].opts
    assert not os.path.exists(os.path.join(bundle.rootfs, "newfile"))
    # the other mounts (tmpfs /dev, ...) stay writable
    bundle.sh("echo x > /dev/shm/f && cat /dev/shm/f")
    assert run_out(oci, bundle) == "x\n"


def test_root_writable(oci, bundle):
    bundle.sh("echo hi > /written; cat /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert "rw" in mountinfo(out)["/"].opts
    with open(os.path.join(bundle.rootfs, "written")) as f:
        assert f.read() == "hi\n"


@pytest.mark.parametrize("prop,want", [("shared", "shared:"), ("rshared", "shared:"),
                                       ("private", None), ("rprivate", None),
                                       ("unbindable", "unbindable"),
                                       ("runbindable", "unbindable"),
                                       ("slave", None), ("rslave", None)])
def test_rootfs_propagation(oci, bundle, prop, want):
    bundle.linux["rootfsPropagation"] = prop
    bundle.args("cat", "/proc/self/mountinfo")
    root = mountinfo(run_out(oci, bundle))["/"]
    if want is None:
        # the host's mounts here are private: a slave has no master to show
        assert not [o for o in root.optional if o.startswith(("shared:", "unbindable"))], root
    else:
        assert any(o.startswith(want) for o in root.optional), root


@pytest.mark.parametrize("rootfs_mount", ["rootfs in /", "rootfs a mount"])
@pytest.mark.parametrize("pivot", ["pivot_root", "no-pivot"])
def test_rshared_rootfs_propagation_is_bidirectional(oci, bundle, tmp_path, pivot, rootfs_mount):
    """What containerd gives a Kubernetes Bidirectional volume, on a host
    whose mounts are shared (systemd makes / rshared; here a mount namespace
    of the test's own does): rootfsPropagation "rshared" and an rshared bind.
    A mount the host makes under the volume after create shows up in the
    container, and one the container makes shows up on the host (critest's
    mount propagation test). Nothing else crosses: the rootfs's own bind
    does not show on the host, and the container's detaching of the old
    root (or, with --no-pivot, of the host's proc and sysfs) unmounts
    nothing of the host's, whose cgroup mounts the runtime is still using.
    The rootfs is either a directory of the shared / or a mount of its own
    (as containerd's overlay is), which leaves / shared."""
    vol = tmp_path / "vol"
    vol.mkdir()
    bundle.linux["rootfsPropagation"] = "rshared"
    caps = bundle.process["capabilities"]
    for s in ("bounding", "effective", "permitted"):
        caps[s] = caps.get(s, []) + ["CAP_SYS_ADMIN"]
    add_mount(bundle, "/vol", "bind", str(vol), ["rbind", "rshared"])
    bundle.sh("mkdir -p /vol/c && mount -t tmpfs ctr /vol/c && touch /vol/c/made-in-ctr; "
              "grep -q ' /vol/h ' /proc/self/mountinfo && echo host-mount-seen")
    cid = new_id()
    rt = f"{OCIRUN} --root {oci.root}"
    extra = "--no-pivot" if pivot == "no-pivot" else ""
    own = f"mount --bind {bundle.path}/rootfs {bundle.path}/rootfs" if "a mount" in rootfs_mount else ":"
    script = f"""set -eu
mount --bind {vol} {vol}
{own}
awk '{{print $5}}' /proc/self/mountinfo | sort >{tmp_path}/before
{rt} create {extra} --bundle {bundle.path} {cid} >{tmp_path}/out 2>&1 || {{ cat {tmp_path}/out; exit 1; }}
mkdir -p {vol}/h && mount -t tmpfs host {vol}/h
[ "$(grep -c ' {bundle.path}/rootfs ' /proc/self/mountinfo)" = {1 if "a mount" in rootfs_mount else 0} ] \
  || echo rootfs-bind-leaked
{rt} start {cid}
i=0; while {rt} state {cid} | grep -q '"running"'; do i=$((i+1)); [ $i -lt 500 ]; sleep 0.01; done
{rt} delete {cid}
cat {tmp_path}/out
test -e {vol}/c/made-in-ctr && echo ctr-mount-seen
awk '{{print $5}}' /proc/self/mountinfo | grep -v '/vol/[ch]$' | sort | diff {tmp_path}/before - >&2 \
  && echo host-mounts-intact
"""
    r = subprocess.run(["unshare", "-m", "--propagation", "shared", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["host-mount-seen", "ctr-mount-seen", "host-mounts-intact"], \
        r.stdout + r.stderr


def test_no_pivot(oci, bundle):
    bundle.sh("cat /proc/self/mountinfo; echo; ls /")
    out = run_out(oci, bundle, "--no-pivot")
    assert "/" in mountinfo(out)
    assert "bin" in out.split()
    with open("/proc/self/mountinfo") as f:
        assert bundle.path not in f.read()


def test_no_pivot_does_not_let_the_container_mount_a_bare_proc(oci, bundle):
    """runc's no_pivot.bats: the host's whole proc (and sysfs), still in the
    namespace under the chroot, would let a user namespace in the container
    mount a fresh proc, with nothing masked."""
    bundle.args("unshare", "-mrpf", "sh", "-euxc",
                "mount -t proc none /proc && echo h > /proc/sysrq-trigger")
    caps = bundle.process["capabilities"]
    for s in ("bounding", "permitted"):
        caps[s] = caps.get(s, []) + ["CAP_SETFCAP"]
    bundle.save()
    r = oci("run", "--no-pivot", "-b", bundle.path, new_id())
    assert r.rc == 1 and "mount: permission denied" in r.out + r.err, r
    with open("/proc/self/mountinfo") as f:  # the host's own are still there
        types = [ln.split(" - ")[1].split()[0] for ln in f]
    assert "proc" in types and "sysfs" in types


# --- bind mounts ----------------------------------------------------------------
def test_bind_file_and_dir_destinations_created(oci, bundle, tmp_path):
    src = tmp_path / "srcdir"
    src.mkdir()
    (src / "inner").write_text("dir-content\n")
    f = tmp_path / "srcfile"
    f.write_text("file-content\n")
    add_mount(bundle, "/deep/er/dir", "bind", str(src), ["bind"])
    add_mount(bundle, "/new/dir/file.txt", "none", str(f), ["rbind"])
    add_mount(bundle, "/etc/hostfile", "bind", str(f), ["bind", "ro"])
    bundle.sh("cat /deep/er/dir/inner /new/dir/file.txt /etc/hostfile;"
              " test -d /deep/er/dir && test -f /new/dir/file.txt && echo types-ok;"
              " echo changed > /deep/er/dir/inner")
    out = run_out(oci, bundle)
    assert out.splitlines() == ["dir-content", "file-content", "file-content", "types-ok"]
    assert (src / "inner").read_text() == "changed\n"  # it is the host's dir itself
    assert os.path.isdir(os.path.join(bundle.rootfs, "deep/er/dir"))
    assert os.path.isfile(os.path.join(bundle.rootfs, "new/dir/file.txt"))


def test_bind_relative_source_is_in_bundle(oci, bundle):
    os.mkdir(os.path.join(bundle.path, "data"))
    with open(os.path.join(bundle.path, "data", "f"), "w") as f:
        f.write("bundle-relative\n")
    add_mount(bundle, "/data", "bind", "data", ["rbind"])
    bundle.args("cat", "/data/f")
    assert run_out(oci, bundle) == "bundle-relative\n"


def test_bind_missing_source_is_clear_error(oci, bundle, tmp_path):
    add_mount(bundle, "/x", "bind", str(tmp_path / "nosuch"), ["rbind"])
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert "mounts[7]" in line and "nosuch" in line and "No such file" in line
    assert oci.ids() == []


def test_bind_vs_rbind_submounts(oci, bundle, tmp_path, host_mounts):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    host_mounts("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "sub"))
    (src / "sub" / "in-submount").write_text("x")
    add_mount(bundle, "/b", "bind", str(src), ["bind"])
    add_mount(bundle, "/rb", "bind", str(src), ["rbind"])
    bundle.sh("ls /b/sub; echo --; ls /rb/sub")
    out = run_out(oci, bundle).split("--")
    assert "in-submount" not in out[0]
    assert "in-submount" in out[1]


FLAG_CASES = [("ro", "ro"), ("nosuid", "nosuid"), ("nodev", "nodev"), ("noexec", "noexec"),
              ("noatime", "noatime"), ("relatime", "relatime"), ("strictatime", None),
              ("nodiratime", "nodiratime")]


def mount_each_option(oci, bundle, tmp_path, kind: str, cases) -> dict:
    """One mount per option at /m-<option>, all in one container (fast);
    the container's mountinfo."""
    (tmp_path / "src").mkdir()
    for opt, _ in cases:
        if kind == "bind":
            add_mount(bundle, f"/m-{opt}", "bind", str(tmp_path / "src"), ["rbind", opt])
        else:
            add_mount(bundle, f"/m-{opt}", "tmpfs", "tmpfs", [opt])
    bundle.args("cat", "/proc/self/mountinfo")
    return mountinfo(run_out(oci, bundle))


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_mount_flag_options(oci, bundle, tmp_path, kind):
    mi = mount_each_option(oci, bundle, tmp_path, kind, FLAG_CASES)
    for opt, flag in FLAG_CASES:
        m = mi[f"/m-{opt}"]
        if flag:
            assert flag in m.opts, m
        else:  # strictatime: neither noatime nor relatime
            assert not ({"noatime", "relatime"} & m.opts), m
        if opt != "ro":
            assert "rw" in m.opts, m


def test_acl_options_are_flags_as_in_runc(oci, bundle, tmp_path):
    """"acl"/"noacl" (runc's MS_POSIXACL), not options for the filesystem
    (tmpfs refuses an "acl" it does not know)."""
    (tmp_path / "src").mkdir()
    add_mount(bundle, "/a1", "tmpfs", "tmpfs", ["acl", "size=1m"])
    add_mount(bundle, "/a2", "tmpfs", "tmpfs", ["noacl"])
    add_mount(bundle, "/a3", "bind", str(tmp_path / "src"), ["rbind", "acl"])
    bundle.args("cat", "/proc/self/mountinfo")
    mi = mountinfo(run_out(oci, bundle))
    assert mi["/a1"].fstype == mi["/a2"].fstype == "tmpfs" and "/a3" in mi


def test_flags_really_apply(oci, bundle, tmp_path):
    (tmp_path / "src").mkdir()
    add_mount(bundle, "/ro", "bind", str(tmp_path / "src"), ["rbind", "ro"])
    add_mount(bundle, "/nx", "tmpfs", "tmpfs", ["noexec"])
    bundle.sh("touch /ro/f 2>&1; cp /bin/busybox /nx/bb; /nx/bb true 2>&1; echo rc=$?")
    out = run_out(oci, bundle)
    assert "Read-only file system" in out
    assert "Permission denied" in out and "rc=126" in out


PROP_CASES = [("shared", "shared:"), ("private", None), ("unbindable", "unbindable"),
              ("rshared", "shared:"), ("slave", None), ("rprivate", None), ("rslave", None),
              ("runbindable", "unbindable")]


@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_mount_propagation_options(oci, bundle, tmp_path, kind):
    mi = mount_each_option(oci, bundle, tmp_path, kind, PROP_CASES)
    for opt, want in PROP_CASES:
        m = mi[f"/m-{opt}"]
        if want:
            assert any(o.startswith(want) for o in m.optional), m
        else:
            assert not [o for o in m.optional if not o.startswith("master:")], m


REC_CASES = [("rro", "ro"), ("rnosuid", "nosuid"), ("rnodev", "nodev"), ("rnoexec", "noexec"),
             ("rnoatime", "noatime"), ("rnodiratime", "nodiratime")]


def test_recursive_options_reach_submounts(oci, bundle, tmp_path, host_mounts):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    host_mounts("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "sub"))
    for opt, flag in REC_CASES:
        add_mount(bundle, f"/r-{opt}", "bind", str(src), ["rbind", opt])
        add_mount(bundle, f"/nr-{opt}", "bind", str(src), ["rbind", flag])
    bundle.args("cat", "/proc/self/mountinfo")
    mi = mountinfo(run_out(oci, bundle))
    for opt, flag in REC_CASES:
        top, sub = mi[f"/r-{opt}"], mi[f"/r-{opt}/sub"]
        assert flag in top.opts and flag in sub.opts, (opt, top, sub)
        assert flag in mi[f"/nr-{opt}"].opts
        # a plain option is for the top mount only
        assert flag not in mi[f"/nr-{opt}/sub"].opts, (opt, mi[f"/nr-{opt}/sub"])


def test_rro_on_tmpfs(oci, bundle):
    add_mount(bundle, "/t", "tmpfs", "tmpfs", ["rro", "rnosuid"])
    bundle.args("cat", "/proc/self/mountinfo")
    m = mountinfo(run_out(oci, bundle))["/t"]
    assert {"ro", "nosuid"} <= m.opts


# --- filesystems ----------------------------------------------------------------
def test_default_filesystems(oci, bundle):
    bundle.args("cat", "/proc/self/mountinfo")
    mi = mountinfo(run_out(oci, bundle))
    assert mi["/proc"].fstype == "proc"
    assert mi["/sys"].fstype == "sysfs" and "ro" in mi["/sys"].opts
    assert mi["/dev"].fstype == "tmpfs" and "mode=755" in mi["/dev"].super
    assert mi["/dev/pts"].fstype == "devpts"
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= mi["/dev/pts"].super
    assert mi["/dev/shm"].fstype == "tmpfs" and "size=65536k" in mi["/dev/shm"].super
    assert {"nosuid", "nodev", "noexec"} <= mi["/dev/shm"].opts
    assert mi["/dev/mqueue"].fstype == "mqueue"
    cg = [m for p, m in mi.items() if p.startswith("/sys/fs/cgroup")]
    assert cg and all("ro" in m.opts for m in cg if m.fstype in ("cgroup", "cgroup2")), cg
    assert any(m.fstype in ("cgroup", "cgroup2") for m in cg)


def test_readonly_dev_is_made_readonly_after_its_contents(oci, bundle):
    """runc's order: /dev gets its nodes, symlinks and devpts first."""
    for m in bundle.config["mounts"]:
        if m["destination"] == "/dev":
            m["options"] = m.get("options", []) + ["ro"]
    bundle.save()
    bundle.sh("cat /proc/self/mountinfo; ls /dev/pts/ptmx /dev/null /dev/fd; echo x > /dev/null; "
              "touch /dev/new 2>/dev/null || echo refused")
    out = run_out(oci, bundle)
    mi = mountinfo(out)
    assert "ro" in mi["/dev"].opts and "ro" not in mi["/dev/pts"].opts
    assert "ro" not in mi["/dev/shm"].opts
    assert "/dev/pts/ptmx" in out and out.rstrip().endswith("refused")


def test_tmpfs_size_and_mode(oci, bundle):
    add_mount(bundle, "/t", "tmpfs", "tmpfs", ["size=1m", "mode=1750", "nr_inodes=100"])
    bundle.sh("stat -c %a /t; cat /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert out.splitlines()[0] == "1750"
    m = mountinfo(out)["/t"]
    assert {"size=1024k", "mode=1750", "nr_inodes=100"} <= m.super, m


def test_tmpfs_on_existing_dir_keeps_its_mode(oci, bundle):
    """runc: the mount point's mode, unless the options give one; a
    directory the runtime makes gets tmpfs's own 1777."""
    os.makedirs(os.path.join(bundle.rootfs, "t700"))
    os.chmod(os.path.join(bundle.rootfs, "t700"), 0o700)
    os.makedirs(os.path.join(bundle.rootfs, "t750"))
    add_mount(bundle, "/t700", "tmpfs", "tmpfs", ["nosuid"])
    add_mount(bundle, "/t750", "tmpfs", "tmpfs", ["mode=750"])
    add_mount(bundle, "/tnew", "tmpfs", "tmpfs", [])
    bundle.sh("stat -c %a /t700 /t750 /tnew")
    assert run_out(oci, bundle).split() == ["700", "750", "1777"]


def test_tmpfs_bad_data_is_clear_error(oci, bundle):
    add_mount(bundle, "/t", "tmpfs", "tmpfs", ["size=lots"])
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert "mounts[7]" in line and "tmpfs" in line
    assert oci.ids() == []


def test_unknown_filesystem_type(oci, bundle):
    add_mount(bundle, "/t", "nosuchfs", "x")
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert line.endswith("mounts[7]: unknown filesystem type 'nosuchfs'"), line
    assert oci.ids() == []


def test_extra_proc_sysfs_mqueue_devpts(oci, bundle):
    add_mount(bundle, "/proc2", "proc", "proc", ["nosuid", "noexec"])
    add_mount(bundle, "/sys2", "sysfs", "sysfs", ["ro"])
    add_mount(bundle, "/mq", "mqueue", "mqueue")
    add_mount(bundle, "/pts2", "devpts", "devpts", ["newinstance", "ptmxmode=0600"])
    bundle.args("cat", "/proc/self/mountinfo")
    mi = mountinfo(run_out(oci, bundle))
    assert mi["/proc2"].fstype == "proc" and {"nosuid", "noexec"} <= mi["/proc2"].opts
    assert mi["/sys2"].fstype == "sysfs" and "ro" in mi["/sys2"].opts
    assert mi["/mq"].fstype == "mqueue"
    assert mi["/pts2"].fstype == "devpts" and "ptmxmode=600" in mi["/pts2"].super


def test_overlay(oci, bundle, tmp_path):
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "from-lower").write_text("lower\n")
    add_mount(bundle, "/ov", "overlay", "overlay",
              [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"])
    bundle.sh("cat /ov/from-lower; echo new > /ov/written; rm /ov/from-lower;"
              " grep ' /ov ' /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert out.startswith("lower\n")
    assert " - overlay " in out
    assert (upper / "written").read_text() == "new\n"
    assert (lower / "from-lower").exists()  # the lower layer is untouched


def test_relative_destination(oci, bundle, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("rel\n")
    add_mount(bundle, "rel/dir", "bind", str(tmp_path / "src"), ["rbind"])
    add_mount(bundle, "reltmp", "tmpfs", "tmpfs", ["size=1m"])
    bundle.sh("cat /rel/dir/f; grep -c ' /reltmp ' /proc/self/mountinfo")
    assert run_out(oci, bundle).split() == ["rel", "1"]


def test_dotdot_destination_refused(oci, bundle):
    add_mount(bundle, "/a/../../etc", "tmpfs", "tmpfs")
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "config.json: mounts[7].destination" in line or "mounts[7].destination" in line
    assert oci.ids() == []


def test_tmpcopyup(oci, bundle):
    add_mount(bundle, "/etc", "tmpfs", "tmpfs", ["tmpcopyup", "size=4m"])
    bundle.sh("cat /etc/passwd | head -1; echo new > /etc/extra; ls -ld /etc/extra;"
              " grep ' /etc ' /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert out.startswith("root:")
    assert " - tmpfs " in out
    assert not os.path.exists(os.path.join(bundle.rootfs, "etc", "extra"))


def test_tmpcopyup_keeps_owners_and_modes(oci, bundle):
    """As runc: what is copied keeps its owner and mode; the tmpfs's root
    takes the directory's mode when the directory was there, tmpfs's 1777
    when the runtime makes it (podman's --tmpfs on a path the image lacks)."""
    d = os.path.join(bundle.rootfs, "data")
    os.makedirs(os.path.join(d, "sub"))
    os.chmod(d, 0o750)
    with open(os.path.join(d, "sub", "f"), "w") as f:
        f.write("x")
    os.chown(os.path.join(d, "sub"), 1000, 1001)
    os.chmod(os.path.join(d, "sub"), 0o711)
    os.chown(os.path.join(d, "sub", "f"), 1002, 1003)
    os.chmod(os.path.join(d, "sub", "f"), 0o4710)
    os.symlink("sub/f", os.path.join(d, "link"))
    add_mount(bundle, "/data", "tmpfs", "tmpfs", ["tmpcopyup"])
    add_mount(bundle, "/fresh", "tmpfs", "tmpfs", ["tmpcopyup"])
    bundle.args("stat", "-c", "%n %a %u:%g", "/data", "/data/sub", "/data/sub/f", "/fresh")
    out = run_out(oci, bundle).split("\n")
    assert out[:4] == ["/data 750 0:0", "/data/sub 711 1000:1001", "/data/sub/f 4710 1002:1003",
                       "/fresh 1777 0:0"], out
    assert os.readlink(os.path.join(d, "link")) == "sub/f"


def test_mounts_in_order_later_covers_earlier(oci, bundle, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "fa").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "fb").write_text("b")
    add_mount(bundle, "/m", "bind", str(tmp_path / "a"), ["rbind"])
    add_mount(bundle, "/m", "bind", str(tmp_path / "b"), ["rbind"])
    bundle.args("ls", "/m")
    assert run_out(oci, bundle).split() == ["fb"]


# --- escapes ---------------------------------------------------------------------
@pytest.fixture
def hostdir(tmp_path):
    d = tmp_path / "hostdir"
    d.mkdir()
    (d / "keep").write_text("host\n")
    return d


def _assert_untouched(hostdir):
    assert sorted(os.listdir(hostdir)) == ["keep"]
    assert (hostdir / "keep").read_text() == "host\n"
    with open("/proc/self/mountinfo") as f:
        assert str(hostdir) not in f.read()


@pytest.mark.parametrize("how", ["absolute", "relative"])
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_symlink_destination_stays_in_rootfs(oci, bundle, tmp_path, hostdir, how, kind):
    target = str(hostdir) if how == "absolute" else "../../../../../../../../" + str(hostdir)
    os.symlink(target, os.path.join(bundle.rootfs, "evil"))
    src = tmp_path / "payload"
    src.mkdir()
    (src / "payload").write_text("p\n")
    if kind == "bind":
        add_mount(bundle, "/evil", "bind", str(src), ["rbind"])
    else:
        add_mount(bundle, "/evil", "tmpfs", "tmpfs", ["size=1m"])
    bundle.sh("echo written > /evil/new; ls /evil")
    out = run_out(oci, bundle)
    assert "new" in out.split()
    _assert_untouched(hostdir)
    # the mount landed where the symlink points inside the rootfs
    inside = os.path.join(bundle.rootfs, str(hostdir).lstrip("/"))
    assert os.path.isdir(inside)


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_symlink_parent_of_destination_stays_in_rootfs(oci, bundle, tmp_path, hostdir, how):
    target = str(hostdir) if how == "absolute" else "../../../../../../../../" + str(hostdir)
    os.symlink(target, os.path.join(bundle.rootfs, "evilparent"))
    src = tmp_path / "payload"
    src.mkdir()
    (src / "payload").write_text("p\n")
    add_mount(bundle, "/evilparent/sub/dir", "bind", str(src), ["rbind"])
    add_mount(bundle, "/evilparent/t", "tmpfs", "tmpfs", ["size=1m"])
    add_mount(bundle, "/evilparent/file", "bind", str(src / "payload"), ["bind"])
    bundle.sh("cat /evilparent/sub/dir/payload /evilparent/file; touch /evilparent/t/x")
    assert run_out(oci, bundle) == "p\np\n"
    _assert_untouched(hostdir)


def test_symlink_bind_source_is_followed_on_host(oci, bundle, tmp_path):
    """The source is a host path (the runtime's view): a symlink there is fine."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("real\n")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    add_mount(bundle, "/a", "bind", str(tmp_path / "alias"), ["rbind"])
    bundle.args("cat", "/a/f")
    assert run_out(oci, bundle) == "real\n"


@pytest.mark.parametrize("fstype", ["proc", "sysfs"])
def test_proc_onto_symlink_refused(oci, bundle, hostdir, fstype):
    os.symlink(str(hostdir), os.path.join(bundle.rootfs, "badproc"))
    add_mount(bundle, "/badproc", fstype, fstype)
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert line.endswith(f"mounts[7]: /badproc is a symlink; {fstype} must be mounted on "
                         "ordinary directory"), line  # (runc's words after the ;)
    assert oci.ids() == []
    _assert_untouched(hostdir)


def test_proc_over_symlinked_proc_refused(oci, bundle, hostdir):
    """The CVE-2019-16884 shape: the rootfs's own /proc is a symlink."""
    proc = os.path.join(bundle.rootfs, "proc")
    os.rmdir(proc)
    os.symlink(str(hostdir), proc)
    bundle.args("true")
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert "/proc is a symlink" in line
    assert oci.ids() == []
    _assert_untouched(hostdir)


# --- maskedPaths / readonlyPaths -------------------------------------------------
def test_masked_paths(oci, bundle):
    os.makedirs(os.path.join(bundle.rootfs, "secretdir"))
    with open(os.path.join(bundle.rootfs, "secretdir", "s"), "w") as f:
        f.write("secret")
    with open(os.path.join(bundle.rootfs, "secretfile"), "w") as f:
        f.write("secret")
    bundle.linux["maskedPaths"] += ["/secretdir", "/secretfile", "/does/not/exist"]
    # /proc/keys: a default masked file this kernel has (/proc/kcore may be absent)
    bundle.sh("wc -c < /proc/keys; ls -A /sys/firmware | wc -l; ls -A /secretdir | wc -l;"
              " wc -c < /secretfile; touch /secretdir/x 2>&1; cat /proc/self/mountinfo")
    out = run_out(oci, bundle)
    lines = out.splitlines()
    assert [ln.strip() for ln in lines[:4]] == ["0", "0", "0", "0"]
    assert "Read-only file system" in lines[4]
    mi = mountinfo(out)
    assert mi["/secretdir"].fstype == "tmpfs" and "ro" in mi["/secretdir"].opts
    assert mi["/proc/keys"].fstype == "tmpfs" and mi["/proc/keys"].root == "/null"
    assert mi["/secretfile"].root == "/null"
    with open(os.path.join(bundle.rootfs, "secretfile")) as f:
        assert f.read() == "secret"


def test_readonly_paths(oci, bundle):
    os.makedirs(os.path.join(bundle.rootfs, "data", "sub"))
    # /bin too: read-only, not noexec (the shell below runs from it)
    bundle.linux["readonlyPaths"] += ["/data", "/not/there", "/bin"]
    bundle.sh("(echo 1 > /proc/sys/kernel/ns_last_pid) 2>&1; touch /data/x 2>&1;"
              " touch /data/sub/y 2>&1; /bin/true && echo ran; echo done;"
              " cat /proc/self/mountinfo")
    out = run_out(oci, bundle)
    assert out.count("Read-only file system") == 3, out
    assert "ran" in out.splitlines(), out
    mi = mountinfo(out)
    assert "ro" in mi["/proc/sys"].opts and "ro" in mi["/data"].opts and "ro" in mi["/bin"].opts
    # nothing but "ro" is added (runc and crun keep the source's flags)
    assert not {"nosuid", "nodev", "noexec"} & (mi["/data"].opts | mi["/bin"].opts)
