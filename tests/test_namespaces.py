"""linux.namespaces (config-linux.md "Namespaces"): new ones, joined ones,
user namespace id maps, time offsets, cgroup namespace; hostname,
domainname and sysctl, which live in those namespaces. Checked from inside
the container."""
import itertools
import os
import subprocess
import time

import pytest

ALL = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROC = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
        "user": "user", "cgroup": "cgroup", "time": "time"}
SHIFT = 100000

_ids = itertools.count()


def new_id() -> str:
    """Unique across concurrent test sessions: the default cgroup path is the id."""
    return f"ocit{os.getpid()}x{next(_ids)}"


def run_out(oci, bundle, cid=None) -> str:
    r = oci.run(bundle, cid or new_id())
    assert r.rc == 0, r
    return r.out


def host_ns(t: str) -> str:
    return os.readlink(f"/proc/self/ns/{PROC[t]}")


def ns_links_script(types) -> str:
    return "; ".join(f"echo {t}=$(readlink /proc/self/ns/{PROC[t]})" for t in types)


def parse_kv(out: str) -> dict:
    return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)


@pytest.fixture
def holder():
    """Start `unshare <flags> sleep` as a namespace holder; killed after the test."""
    procs = []

    def start(*flags: str, fork: bool = False) -> int:
        cmd = ["unshare", *flags] + (["--fork"] if fork else []) + ["sleep", "120"]
        p = subprocess.Popen(cmd)
        procs.append(p)
        # wait until the namespaces exist (the exec of sleep happens after unshare)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"sleep") or fork:
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        if fork:  # the namespaces are ready once the forked child exists
            while time.monotonic() < end and not _children(p.pid):
                time.sleep(0.01)
        return p.pid

    yield start
    for p in procs:
        for c in _children(p.pid):
            try:
                os.kill(c, 9)
            except ProcessLookupError:
                pass
        p.kill()
        p.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def test_seven_new_namespaces_differ_from_host(oci, bundle):
    types = [t for t in ALL if t != "user"]
    bundle.ns(*types)
    bundle.sh(ns_links_script(ALL))
    got = parse_kv(run_out(oci, bundle))
    for t in types:
        assert got[t] != host_ns(t), t
    assert got["user"] == host_ns("user")


def test_all_eight_new_namespaces(oci, bundle, shifted_rootfs):
    bundle.ns(*ALL)
    bundle.sh(ns_links_script(ALL) + "; echo pid1=$$")
    got = parse_kv(run_out(oci, bundle))
    for t in ALL:
        assert got[t].startswith(PROC[t] + ":["), got
        assert got[t] != host_ns(t), t
    assert got["pid1"] == "1"


def test_without_namespaces_shares_host(oci, bundle):
    bundle.ns("mount")
    bundle.config["hostname"] = None
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if m["type"] not in ("sysfs", "cgroup", "mqueue")]
    bundle.sh(ns_links_script(ALL))
    got = parse_kv(run_out(oci, bundle))
    for t in ALL:
        assert (got[t] == host_ns(t)) == (t != "mount"), t


def _no_namespaces(bundle) -> None:
    """Nothing in linux.namespaces: every one is the runtime's (the spec's
    "inherit"), the mount namespace too."""
    bundle.ns()
    bundle.config["hostname"] = None
    for key in ("maskedPaths", "readonlyPaths"):
        bundle.linux.pop(key, None)
    bundle.save()


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(path + "/")]


def test_no_namespace_at_all_inherits_every_one(oci, bundle):
    """runtime-tools' linux_ns_itype: the init's namespaces are the runtime's,
    its root is the rootfs (chroot); its mounts are made in the runtime's
    namespace under the rootfs and removed by delete, not before."""
    _no_namespaces(bundle)
    with open(os.path.join(bundle.rootfs, "marker"), "w") as f:
        f.write("in the rootfs\n")
    bundle.sh("cat /marker; " + ns_links_script(ALL))
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    pid = oci.state(cid)["pid"]
    for t in ALL:
        assert os.readlink(f"/proc/{pid}/ns/{PROC[t]}") == host_ns(t), t
    assert os.readlink(f"/proc/{pid}/root") == bundle.rootfs
    made = _mounts_under(bundle.rootfs)
    assert bundle.rootfs + "/proc" in made and bundle.rootfs + "/dev/pts" in made, made
    # exec shares them too, and is chrooted like the init
    out = oci.ok("exec", cid, "sh", "-c", "cat /marker; " + ns_links_script(ALL))
    got = parse_kv(out)
    assert out.startswith("in the rootfs\n") and all(got[t] == host_ns(t) for t in ALL), out
    oci.ok("start", cid)
    oci.wait_status(cid, "stopped")
    assert _mounts_under(bundle.rootfs) == made  # still there: delete removes them
    oci.ok("delete", cid)
    assert _mounts_under(bundle.rootfs) == []


def test_no_mount_namespace_keeps_mounts_that_were_there(oci, bundle, tmp_path):
    """A mount under the rootfs made before create (as an engine may) is not
    the container's: delete leaves it."""
    _no_namespaces(bundle)
    bundle.args("true")
    pre = os.path.join(bundle.rootfs, "mnt")
    subprocess.run(["mount", "-t", "tmpfs", "pre", pre], check=True)
    try:
        r = oci.run(bundle)
        assert r.rc == 0, r
        assert _mounts_under(bundle.rootfs) == [pre]
    finally:
        subprocess.run(["umount", pre], check=True)


def test_no_mount_namespace_failed_create_removes_its_mounts(oci, bundle):
    _no_namespaces(bundle)
    # the kernel refuses this one, after the first mounts are made
    bundle.config["mounts"].append({"destination": "/late", "type": "tmpfs",
                                    "source": "tmpfs", "options": ["size=nonsense"]})
    bundle.save()
    cid = new_id()
    r = oci("create", "-b", bundle.path, cid)
    assert r.rc != 0 and "Traceback" not in r.err and len(r.err.splitlines()) == 1, r
    assert "/late" in r.err, r
    assert _mounts_under(bundle.rootfs) == [] and oci.ids() == []


@pytest.mark.parametrize("key, value, where", [
    ("maskedPaths", ["/proc/kcore"], "linux.maskedPaths"),
    ("readonlyPaths", ["/proc/sys"], "linux.readonlyPaths"),
    ("rootfsPropagation", "rslave", "linux.rootfsPropagation"),
    ("readonly", True, "root.readonly"),
])
def test_no_mount_namespace_refuses_what_would_change_host_mounts(oci, bundle, key, value, where):
    _no_namespaces(bundle)
    if key == "readonly":
        bundle.config["root"]["readonly"] = True
    else:
        bundle.linux[key] = value
    bundle.save()
    cid = new_id()
    line = oci.fail("create", "-b", bundle.path, cid)
    assert line == (f"ocirun: config.json: {where}: needs a mount namespace "
                    "(it would change the host's mounts)"), line
    assert oci.ids() == [] and _mounts_under(bundle.rootfs) == []


def test_user_namespace_without_network_namespace_binds_host_sys(oci, bundle, shifted_rootfs):
    """sysfs may not be mounted from a user namespace that does not own the
    network namespace (rootless podman --network=host): the host's /sys is
    bound instead, read-only all the way down, as runc does."""
    bundle.ns("pid", "mount", "ipc", "uts", "user")
    bundle.sh("ls /sys/class/net; grep ' /sys' /proc/self/mountinfo | grep -vc ' ro,';"
              " touch /sys/kernel/x 2>&1 | grep -c Read-only")
    out = run_out(oci, bundle).split()
    assert "lo" in out and os.listdir("/sys/class/net")[0] in out, out
    assert out[-2:] == ["0", "1"], out


def test_new_network_namespace_has_loopback_up(oci, bundle):
    """As runc and crun: lo is up in a new network namespace."""
    bundle.sh("cat /sys/class/net/lo/flags")
    assert int(run_out(oci, bundle), 16) & 1  # IFF_UP


def test_pid_namespace_init_is_pid1(oci, bundle):
    bundle.sh("echo $$; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'")
    out = run_out(oci, bundle).split("\n")
    assert out[0] == "1" and out[1] == "sh"
    assert int(out[2]) <= 4  # sh, ls, grep: no host processes visible


def test_user_namespace_maps_and_ownership(oci, bundle, shifted_rootfs):
    bundle.ns("pid", "ipc", "uts", "mount", "user", "network")
    with open(os.path.join(shifted_rootfs, "mine"), "w") as f:
        f.write("x")
    os.chown(os.path.join(shifted_rootfs, "mine"), SHIFT + 1000, SHIFT + 1001)
    with open(os.path.join(shifted_rootfs, "hostroot"), "w") as f:
        f.write("x")
    os.chown(os.path.join(shifted_rootfs, "hostroot"), 0, 0)
    bundle.sh("cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -u; id -g;"
              " stat -c '%u:%g' /mine /hostroot /bin/busybox")
    lines = [ln.split() for ln in run_out(oci, bundle).splitlines()]
    assert lines[0] == ["0", str(SHIFT), "65536"]
    assert lines[1] == ["0", str(SHIFT), "65536"]
    assert lines[2] == ["allow"]  # root writes the maps: setgroups stays allowed (as runc)
    assert lines[3] == ["0"] and lines[4] == ["0"]
    assert lines[5] == ["1000:1001"]
    assert lines[6] == ["65534:65534"]  # unmapped host root shows as the overflow id
    assert lines[7] == ["0:0"]


def _root_subid_range(kind: str):
    """root's first range in /etc/subuid (subgid), or None."""
    try:
        with open(f"/etc/sub{kind}") as f:
            for ln in f:
                parts = ln.strip().split(":")
                if len(parts) == 3 and parts[0] in ("root", "0"):
                    return int(parts[1]), int(parts[2])
    except OSError:
        pass
    return None


def test_user_namespace_without_mappings_maps_root_to_itself(oci, bundle):
    """As crun (runc refuses the config): no uidMappings/gidMappings, and a
    root runtime maps the container's root to itself (plus, as crun, the
    rest of a range /etc/subuid grants root, if any)."""
    bundle.ns("pid", "ipc", "uts", "mount", "user", "network")
    assert "uidMappings" not in bundle.linux and "gidMappings" not in bundle.linux
    for m in bundle.config["mounts"]:  # (gid 5 is not mapped: devpts would refuse it)
        if m["type"] == "devpts":
            m["options"] = [o for o in m["options"] if not o.startswith("gid=")]
    bundle.sh("cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id -u; id -g;"
              " grep CapEff /proc/self/status")
    out = run_out(oci, bundle).split("--")
    for kind, text in (("uid", out[0]), ("gid", out[1])):
        want = [["0", "0", "1"]]
        rng = _root_subid_range(kind)
        if rng:
            want.append(["1", str(rng[0]), str(rng[1])])
        assert [ln.split() for ln in text.strip().splitlines()] == want, kind
    rest = out[2].split()
    assert rest[:2] == ["0", "0"]
    assert rest[3] != "0000000000000000"  # root of its own namespace, with its caps


def test_user_namespace_several_ranges(oci, bundle, shifted_rootfs):
    bundle.ns("pid", "ipc", "uts", "mount", "user", "network")
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": SHIFT, "size": 1000},
                                   {"containerID": 1000, "hostID": SHIFT + 5000, "size": 10}]
    bundle.save()
    bundle.sh("cat /proc/self/uid_map")
    lines = [ln.split() for ln in run_out(oci, bundle).splitlines()]
    assert lines == [["0", str(SHIFT), "1000"], ["1000", str(SHIFT + 5000), "10"]]


def test_user_namespace_process_uid(oci, bundle, shifted_rootfs):
    bundle.ns("pid", "ipc", "uts", "mount", "user", "network")
    bundle.process["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    bundle.process.pop("capabilities", None)
    bundle.sh("id -u; id -g; id -G; cat /proc/self/status | grep -E '^(Uid|Gid):'")
    out = run_out(oci, bundle).splitlines()
    assert out[0] == "1000" and out[1] == "1000"
    assert set(out[2].split()) == {"1000", "10"}
    # /proc/self/status inside shows ids as seen from the container's namespace
    assert out[3].split()[1:] == ["1000"] * 4


def test_join_namespaces_by_path(oci, bundle, holder):
    pid = holder("--net", "--uts", "--ipc")
    want = {t: os.readlink(f"/proc/{pid}/ns/{PROC[t]}") for t in ("network", "uts", "ipc")}
    assert want["network"] != host_ns("network")
    bundle.linux["namespaces"] = [{"type": "pid"}, {"type": "mount"}] + [
        {"type": t, "path": f"/proc/{pid}/ns/{PROC[t]}"} for t in ("network", "uts", "ipc")]
    bundle.config["hostname"] = None
    bundle.sh(ns_links_script(("network", "uts", "ipc", "pid")) + "; echo pid1=$$")
    got = parse_kv(run_out(oci, bundle))
    for t, link in want.items():
        assert got[t] == link, t
    assert got["pid"] != host_ns("pid") and got["pid1"] == "1"


def test_join_hostname_set_in_joined_uts(oci, bundle, holder):
    """runc sets the hostname even in a joined uts namespace."""
    pid = holder("--uts")
    bundle.linux["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "network"},
                                  {"type": "ipc"}, {"type": "uts", "path": f"/proc/{pid}/ns/uts"}]
    bundle.config["hostname"] = "joined"
    bundle.args("hostname")
    host_name = os.uname().nodename
    try:
        assert run_out(oci, bundle).strip() == "joined"
        r = subprocess.run(["nsenter", "-t", str(pid), "--uts", "hostname"],
                           capture_output=True, text=True)
        assert r.stdout.strip() == "joined"
        assert os.uname().nodename == host_name
    finally:  # a runtime that failed to join must not leave the host renamed
        if os.uname().nodename != host_name:
            subprocess.run(["hostname", host_name])


def test_join_user_and_network_by_path(oci, bundle, holder):
    """A user namespace by path takes the slow path (join, unshare, second fork)."""
    pid = holder("--user", "--map-root-user", "--net")
    user_link = os.readlink(f"/proc/{pid}/ns/user")
    net_link = os.readlink(f"/proc/{pid}/ns/net")
    bundle.linux["namespaces"] = [
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
        {"type": "user", "path": f"/proc/{pid}/ns/user"},
        {"type": "network", "path": f"/proc/{pid}/ns/net"}]
    # this user namespace does not own the host's cgroup/sysfs: keep the mounts simple
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if m["type"] not in ("cgroup",)]
    for m in bundle.config["mounts"]:  # only root is mapped there: no gid=5
        if m["type"] == "devpts":
            m["options"] = [o for o in m["options"] if o != "gid=5"]
    bundle.sh(ns_links_script(("user", "network", "pid")) + "; echo pid1=$$;"
              " echo map=$(cat /proc/self/uid_map)")
    got = parse_kv(run_out(oci, bundle))
    assert got["user"] == user_link and got["network"] == net_link
    assert got["pid"] != host_ns("pid") and got["pid1"] == "1"
    assert got["map"].split() == ["0", "0", "1"]


def test_join_pid_namespace_by_path(oci, bundle, holder):
    pid = holder("--pid", "--mount-proc", fork=True)
    link = os.readlink(f"/proc/{pid}/ns/pid_for_children")
    ns = [n for n in bundle.linux["namespaces"] if n["type"] != "pid"]
    bundle.linux["namespaces"] = ns + [{"type": "pid", "path": f"/proc/{pid}/ns/pid_for_children"}]
    bundle.sh("readlink /proc/self/ns/pid; echo $$")
    out = run_out(oci, bundle).split()
    assert out[0] == link
    assert out[1] != "1"  # the holder's sleep is PID 1 there


@pytest.mark.parametrize("nstype,link", [("uts", "net"), ("network", "uts"), ("mount", "pid")])
def test_join_path_of_wrong_type_is_clear_error(oci, bundle, nstype, link):
    ns = [n for n in bundle.linux["namespaces"] if n["type"] != nstype]
    bundle.linux["namespaces"] = ns + [{"type": nstype, "path": f"/proc/self/ns/{link}"}]
    bundle.save()
    i = len(ns)
    line = oci.fail("run", "-b", bundle.path, new_id())
    assert line.startswith(f"ocirun: config.json: linux.namespaces[{i}].path: ") or \
        f"linux.namespaces[{i}].path" in line, line
    assert f"not a {nstype} namespace" in line
    assert oci.ids() == []


def test_join_path_not_a_namespace(oci, bundle, tmp_path):
    f = tmp_path / "plain"
    f.write_text("")
    bundle.linux["namespaces"] = [n for n in bundle.linux["namespaces"] if n["type"] != "network"]
    bundle.linux["namespaces"].append({"type": "network", "path": str(f)})
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "linux.namespaces[4].path" in line and "not a namespace" in line
    bundle.linux["namespaces"][4]["path"] = str(tmp_path / "missing")
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "linux.namespaces[4].path" in line and "No such file" in line
    assert oci.ids() == []


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def test_time_namespace_offsets(oci, bundle):
    bundle.ns("pid", "network", "ipc", "uts", "mount", "time")
    bundle.linux["timeOffsets"] = {"boottime": {"secs": 864000, "nanosecs": 0},
                                   "monotonic": {"secs": 3600, "nanosecs": 500}}
    bundle.sh("cat /proc/self/timens_offsets; cat /proc/uptime")
    before = _uptime()
    out = run_out(oci, bundle).splitlines()
    after = _uptime()
    offs = {ln.split()[0]: ln.split()[1:] for ln in out[:2]}
    assert offs["monotonic"] == ["3600", "500"]
    assert offs["boottime"] == ["864000", "0"]
    up = float(out[2].split()[0])
    assert before + 864000 - 1 <= up <= after + 864000 + 1


def test_time_namespace_offsets_with_user_namespace(oci, bundle, shifted_rootfs):
    bundle.ns(*ALL)
    bundle.linux["timeOffsets"] = {"boottime": {"secs": 86400}, "monotonic": {"secs": 7200}}
    bundle.save()
    bundle.sh("cat /proc/self/timens_offsets")
    offs = {ln.split()[0]: ln.split()[1:] for ln in run_out(oci, bundle).splitlines()}
    assert offs == {"monotonic": ["7200", "0"], "boottime": ["86400", "0"]}


def test_time_namespace_without_offsets(oci, bundle):
    bundle.ns("pid", "mount", "time", "network", "ipc", "uts")
    bundle.sh("readlink /proc/self/ns/time; cat /proc/self/timens_offsets")
    out = run_out(oci, bundle).splitlines()
    assert out[0] != host_ns("time")
    assert {ln.split()[0]: ln.split()[1:] for ln in out[1:]} == {
        "monotonic": ["0", "0"], "boottime": ["0", "0"]}


def test_time_offsets_need_time_namespace(oci, bundle):
    bundle.linux["timeOffsets"] = {"monotonic": {"secs": 1}}
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "config.json: linux.timeOffsets: needs a time namespace" in line
    assert oci.ids() == []


def test_cgroup_namespace_root(oci, bundle):
    bundle.ns("pid", "network", "ipc", "uts", "mount", "cgroup")
    bundle.sh("cat /proc/self/cgroup")
    lines = run_out(oci, bundle).splitlines()
    assert lines and all(ln.rsplit(":", 1)[1] == "/" for ln in lines), lines


def test_without_cgroup_namespace_shows_host_path(oci, bundle):
    bundle.args("cat", "/proc/self/cgroup")
    cid = new_id()
    lines = run_out(oci, bundle, cid).splitlines()
    assert any(ln.endswith("/" + cid) for ln in lines), lines


# --- uts: hostname / domainname -------------------------------------------------
def test_hostname_and_domainname(oci, bundle):
    bundle.config["hostname"] = "box1"
    bundle.config["domainname"] = "example.org"
    bundle.sh("hostname; cat /proc/sys/kernel/domainname")
    assert run_out(oci, bundle).split() == ["box1", "example.org"]
    assert os.uname().nodename != "box1"


def test_hostname_without_uts_namespace_is_refused(oci, bundle):
    bundle.ns("pid", "mount", "ipc", "network")
    bundle.config["hostname"] = "nope"
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert line.endswith("config.json: hostname: setting a hostname needs a uts namespace")
    assert oci.ids() == []


# --- sysctl ------------------------------------------------------------------------
def test_sysctl_in_net_and_ipc_namespaces(oci, bundle):
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        host_fwd = f.read().strip()
    with open("/proc/sys/kernel/shmmax") as f:
        host_shm = f.read().strip()
    new_fwd = "0" if host_fwd == "1" else "1"
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": new_fwd, "kernel.shmmax": "123456789",
                              "kernel.domainname": "sysctl.test"}
    bundle.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax"
              " /proc/sys/kernel/domainname")
    assert run_out(oci, bundle).split() == [new_fwd, "123456789", "sysctl.test"]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == host_fwd
    with open("/proc/sys/kernel/shmmax") as f:
        assert f.read().strip() == host_shm


@pytest.mark.parametrize("key,nss,msg", [
    ("kernel.panic", ALL[:5], "is not namespaced: refusing to change the host"),
    ("vm.swappiness", ALL[:5], "is not namespaced: refusing to change the host"),
    ("net.ipv4.ip_forward", ("pid", "mount", "ipc", "uts"), "needs a network namespace"),
    ("kernel.shmmax", ("pid", "mount", "network", "uts"), "needs an ipc namespace"),
    ("fs.mqueue.msg_max", ("pid", "mount", "network", "uts"), "needs an ipc namespace"),
    ("kernel.hostname", ALL[:5], 'conflicts with the OCI "hostname" field'),
    ("kernel.domainname", ("pid", "mount", "network", "ipc"), "needs a uts namespace"),
])
def test_sysctl_refused(oci, bundle, key, nss, msg):
    bundle.ns(*nss)
    if "uts" not in nss:
        bundle.config["hostname"] = None
    bundle.linux["sysctl"] = {key: "1"}
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert line.endswith(f"config.json: linux.sysctl.{key}: {msg}"), line
    assert oci.ids() == []


def test_domainname_sysctl_must_agree_with_the_field(oci, bundle):
    """As crun: kernel.domainname and "domainname" together only if equal."""
    bundle.config["domainname"] = "field.test"
    bundle.linux["sysctl"] = {"kernel.domainname": "sysctl.test"}
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert line.endswith("config.json: linux.sysctl.kernel.domainname: 'sysctl.test' conflicts"
                         " with the OCI \"domainname\" field 'field.test'"), line
    bundle.linux["sysctl"] = {"kernel.domainname": "field.test"}
    bundle.sh("cat /proc/sys/kernel/domainname")
    assert run_out(oci, bundle).strip() == "field.test"


def test_sysctl_bad_value_fails_cleanly(oci, bundle):
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": "notanumber"}
    bundle.save()
    line = oci.fail("create", "-b", bundle.path, new_id())
    assert "linux.sysctl.net.ipv4.ip_forward" in line
    assert oci.ids() == []
