"""linux.netDevices (config-linux.md "Network Devices", runtime-spec 1.3):
host network devices moved into the container's network namespace, renamed,
with their permanent global addresses and set up; checked from inside the
container and from the host. This kernel has no dummy driver, so the
devices are one end of a veth pair the test makes (and removes)."""
import os
import subprocess
import time

import pytest

from test_config_errors import assert_nothing_left, create_fails, new_id

_n = iter(range(10 ** 6))


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def link_exists(name: str, netns: str | None = None) -> bool:
    pre = ("-n", netns) if netns else ()
    return ip(*pre, "link", "show", "dev", name, check=False).returncode == 0


@pytest.fixture
def veth():
    """A veth pair (host end, peer) with unique names; both gone afterwards
    (the kernel destroys the pair when the container's namespace dies)."""
    made = []

    def make() -> tuple[str, str]:
        tag = f"{os.getpid() % 100000}x{next(_n)}"
        a, b = f"ocna{tag}", f"ocnb{tag}"
        ip("link", "add", a, "type", "veth", "peer", "name", b)
        made.append(b)
        return a, b

    yield make
    for b in made:
        ip("link", "del", b, check=False)


@pytest.fixture
def netns():
    """A named network namespace (ip netns), deleted afterwards."""
    made = []

    def make() -> str:
        name = f"ocirun-t{os.getpid()}-{next(_n)}"
        ip("netns", "add", name)
        made.append(name)
        return name

    yield make
    for name in made:
        ip("netns", "del", name, check=False)


def test_moved_renamed_with_global_addresses_and_up(oci, bundle, veth):
    dev, peer = veth()
    ip("addr", "add", "192.0.2.10/24", "dev", dev)
    ip("addr", "add", "2001:db8::10/64", "dev", dev)
    ip("addr", "add", "10.99.0.1/32", "dev", dev, "scope", "link")  # not global: not kept
    bundle.linux["netDevices"] = {dev: {"name": "eth7"}}
    bundle.sh("busybox ip -o addr show dev eth7; echo flags=$(cat /sys/class/net/eth7/flags);"
              " ls /sys/class/net")
    r = oci.run(bundle)
    assert r.rc == 0, r
    assert "inet 192.0.2.10/24" in r.out
    assert "inet6 2001:db8::10/64" in r.out
    assert "10.99.0.1" not in r.out
    flags = int(r.out.split("flags=")[1].split()[0], 16)
    assert flags & 1, "not up"  # IFF_UP
    assert sorted(r.out.split("flags=")[1].split()[1:]) == ["eth7", "lo"]
    # the container's namespace is gone, and with it the veth pair: nothing
    # is moved back (the spec forbids it; physical devices return by
    # themselves). The kernel frees a namespace in a work queue: wait for it.
    end = time.monotonic() + 20
    while link_exists(peer) and time.monotonic() < end:
        time.sleep(0.05)
    assert not link_exists(dev) and not link_exists(peer)


def test_created_container_has_it_while_the_host_does_not(oci, bundle, veth):
    dev, _peer = veth()
    bundle.linux["netDevices"] = {dev: {}}  # no new name: it keeps the host's
    bundle.args("true")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    pid = oci.state(cid)["pid"]
    inside = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show"],
                            capture_output=True, text=True, check=True).stdout
    assert f" {dev}@" in inside and "state" in inside
    assert not link_exists(dev)
    oci.ok("delete", "--force", cid)


def test_template_name_gets_a_kernel_number(oci, bundle, veth):
    dev, _peer = veth()
    bundle.linux["netDevices"] = {dev: {"name": "net%d"}}
    bundle.sh("ls /sys/class/net")
    r = oci.run(bundle)
    assert r.rc == 0, r
    assert sorted(r.out.split()) == ["lo", "net0"]


def test_joined_namespace_keeps_the_device_after_the_container(oci, bundle, veth, netns):
    dev, _peer = veth()
    ns = netns()
    for n in bundle.linux["namespaces"]:
        if n["type"] == "network":
            n["path"] = f"/var/run/netns/{ns}"
    bundle.linux["netDevices"] = {dev: {"name": "ext0"}}
    bundle.sh("cat /sys/class/net/ext0/flags")
    r = oci.run(bundle)
    assert r.rc == 0, r
    assert int(r.out, 16) & 1
    # the namespace outlives the container: the device stays there, up
    assert link_exists("ext0", ns) and not link_exists(dev)
    assert ",UP" in ip("-n", ns, "link", "show", "ext0").stdout


def test_name_taken_in_the_container_fails_cleanly(oci, bundle, veth):
    dev, _peer = veth()
    bundle.linux["netDevices"] = {dev: {"name": "lo"}}
    bundle.save()
    line = create_fails(oci, bundle)
    assert f"linux.netDevices.{dev}" in line and "already exists" in line, line
    assert link_exists(dev), "a failed move must leave the device on the host"


def test_missing_device_refused_before_anything_is_made(oci, bundle):
    bundle.linux["netDevices"] = {"ocnomissing0": {}}
    bundle.save()
    line = create_fails(oci, bundle, also_run=True)
    assert line == ("ocirun: config.json: linux.netDevices.ocnomissing0: "
                    "no such network device on the host"), line


@pytest.mark.parametrize("devices, where", [
    ({"a/b": {}}, "linux.netDevices.a/b"),
    ({"eth0": {"name": "x" * 16}}, "linux.netDevices.eth0.name"),
    ({"eth0": {"name": "a%d%d"}}, "linux.netDevices.eth0.name"),
    ({"e%d": {}}, "linux.netDevices.e%d"),
    ({"eth0": {"name": 23}}, "linux.netDevices.eth0.name"),
    ({"eth0": {"name": "x"}, "eth1": {"name": "x"}}, "linux.netDevices.eth1.name"),
], ids=["slash", "too-long", "two-templates", "template-on-host", "not-string", "twice"])
def test_bad_names_refused(oci, bundle, devices, where):
    bundle.linux["netDevices"] = devices
    bundle.save()
    line = create_fails(oci, bundle)
    assert line.startswith(f"ocirun: config.json: {where}: "), line


def test_needs_a_network_namespace(oci, bundle, veth):
    dev, _peer = veth()
    bundle.ns("pid", "mount", "ipc", "uts")
    bundle.linux["netDevices"] = {dev: {}}
    bundle.save()
    line = create_fails(oci, bundle)
    assert line == ("ocirun: config.json: linux.netDevices: "
                    "moving network devices needs a network namespace"), line
    assert link_exists(dev)


def test_features_say_enabled(oci):
    import json
    assert json.loads(oci.ok("features"))["linux"]["netDevices"] == {"enabled": True}
