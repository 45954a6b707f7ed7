"""Bad input (the core issue's list): every case gives one clear line naming
the problem (file and JSON path for config errors), a non-zero exit, no
traceback, and leaves nothing behind: no state dir, mount, cgroup or
process. The `oci` fixture checks mounts; each test checks the rest."""
import itertools
import json
import os

import pytest

_ids = itertools.count()


def new_id() -> str:
    """Unique across concurrent test sessions: the default cgroup path is the id."""
    return f"ocit{os.getpid()}x{next(_ids)}"


def procs_mentioning(text: str) -> list[int]:
    """Processes whose command line holds `text` (the runtime and its init)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    out.append(int(p))
        except OSError:
            pass
    return out


def assert_nothing_left(oci, cid: str) -> None:
    assert oci.ids() == []
    for hier in os.listdir("/sys/fs/cgroup"):
        assert not os.path.exists(f"/sys/fs/cgroup/{hier}/{cid}"), hier
    assert procs_mentioning(cid) == []


def create_fails(oci, bundle, *extra: str, also_run: bool = False) -> str:
    """`create` (and `run`) fail with one line; nothing is left."""
    cid = new_id()
    line = oci.fail("create", "-b", bundle.path, *extra, cid)
    assert_nothing_left(oci, cid)
    if also_run:
        line2 = oci.fail("run", "-b", bundle.path, *extra, cid)
        assert line2 == line
        assert_nothing_left(oci, cid)
    return line


def set_path(cfg: dict, path: str, value) -> None:
    """Set cfg[a][b][0]... from "a.b[0]"; value DELETE removes the key."""
    parts = []
    for seg in path.split("."):
        while "[" in seg:
            name, _, rest = seg.partition("[")
            if name:
                parts.append(name)
            idx, _, seg = rest.partition("]")
            parts.append(int(idx))
        if seg:
            parts.append(seg)
    obj = cfg
    for p in parts[:-1]:
        obj = obj[p]
    if value is DELETE:
        del obj[parts[-1]]
    else:
        obj[parts[-1]] = value


DELETE = object()


def test_unknown_namespace_exact_line(oci, bundle):
    bundle.linux["namespaces"][2] = {"type": "pidd"}
    bundle.save()
    line = create_fails(oci, bundle, also_run=True)
    assert line == 'ocirun: config.json: linux.namespaces[2].type: unknown namespace "pidd"'


def test_control_characters_in_a_key_stay_on_one_line(oci, bundle):
    bundle.config["hooks"] = {"pre\nstart": []}
    bundle.save()
    line = create_fails(oci, bundle)
    assert line == "ocirun: config.json: hooks.pre\\nstart: unknown hook kind"


def test_malformed_json(oci, bundle):
    bundle.write_raw('{"ociVersion": "1.0.0",\n "process": {')
    line = create_fails(oci, bundle, also_run=True)
    assert line.startswith("ocirun: config.json: malformed JSON: "), line
    assert "line 2" in line


@pytest.mark.parametrize("text,msg", [
    ("", "malformed JSON"),
    ("[]", "must be a JSON object, got array"),
    ("null", "must be a JSON object, got null"),
    ('"x"', "must be a JSON object, got string"),
    ("\xff\xfe", "malformed JSON"),
    ("[" * 100000, "malformed JSON"),
])
def test_not_a_config(oci, bundle, text, msg):
    with open(os.path.join(bundle.path, "config.json"), "wb") as f:
        f.write(text.encode("latin-1"))
    line = create_fails(oci, bundle)
    assert line.startswith("ocirun: config.json: ") and msg in line, line


def test_missing_config(oci, bundle):
    os.unlink(os.path.join(bundle.path, "config.json"))
    line = create_fails(oci, bundle, also_run=True)
    assert line == f"ocirun: config.json: cannot read {bundle.path}/config.json: no such file"


def test_config_flag_names_its_file(oci, bundle, tmp_path):
    other = tmp_path / "other.json"
    cfg = dict(bundle.config)
    cfg["process"] = dict(cfg["process"], args="sh")
    other.write_text(json.dumps(cfg))
    line = create_fails(oci, bundle, "--config", str(other))
    assert line == "ocirun: other.json: process.args: must be an array, got string"


MISSING = [
    ("ociVersion", "is required"),
    ("process.cwd", "is required"),
    ("process.user", "is required"),
    ("process.user.uid", "is required"),
    ("process.user.gid", "is required"),
    ("root.path", "is required"),
    ("mounts[0].destination", "is required"),
    ("linux.namespaces[1].type", "is required"),
    ("process.rlimits[0].hard", "is required"),
    ("process", "is required to create a container"),
    ("root", "is required to create a container"),

]


def _each_case(bundle, cases, check) -> None:
    """Run every case on one bundle (fast); report all mismatches together."""
    import copy
    good = copy.deepcopy(bundle.config)
    bad = []
    for case in cases:
        bundle.config = copy.deepcopy(good)
        try:
            check(*case)
        except AssertionError as e:
            bad.append(f"{case[0]}: {e}")
    assert not bad, "\n".join(bad)


def test_missing_field(oci, bundle):
    def check(path, msg):
        set_path(bundle.config, path, DELETE)
        bundle.save()
        line = create_fails(oci, bundle)
        assert line == f"ocirun: config.json: {path}: {msg}", line
    _each_case(bundle, MISSING, check)


WRONG_TYPE = [
    ("ociVersion", 1, "must be a string, got number"),
    ("process.args", "sh", "must be an array, got string"),
    ("process.args[0]", 5, "must be a string, got number"),
    ("process.env", {"A": "1"}, "must be an array, got object"),
    ("process.env[0]", True, "must be a string, got boolean"),
    ("process.terminal", "no", "must be a boolean, got string"),
    ("process.cwd", ["/"], "must be a string, got array"),
    ("process.user.uid", "0", "must be an integer, got string"),
    ("process.user.gid", 1.5, "must be an integer, got number"),
    ("process.user.uid", -1, "must be between 0 and 4294967295"),
    ("process.user.additionalGids", [1, "2"], None),
    ("process.rlimits[0].soft", "1024", "must be an integer, got string"),
    ("process.noNewPrivileges", 1, "must be a boolean, got number"),
    ("process.oomScoreAdj", "5", "must be an integer, got string"),
    ("process.oomScoreAdj", 1001, "must be between -1000 and 1000"),
    ("root", "rootfs", "must be an object, got string"),
    ("root.path", None, "is required"),
    ("root.readonly", "true", "must be a boolean, got string"),
    ("hostname", 7, "must be a string, got number"),
    ("mounts", {}, "must be an array, got object"),
    ("mounts[0]", "proc", "must be an object, got string"),
    ("mounts[1].destination", False, "must be a string, got boolean"),
    ("mounts[1].options", "nosuid", "must be an array, got string"),
    ("mounts[1].options[0]", 1, "must be a string, got number"),
    ("linux", [], "must be an object, got array"),
    ("linux.namespaces", {"type": "pid"}, "must be an array, got object"),
    ("linux.namespaces[0]", "pid", "must be an object, got string"),
    ("linux.namespaces[0].type", 1, "must be a string, got number"),
    ("linux.maskedPaths[0]", None, "must be a string, got null"),
    ("linux.readonlyPaths", "/proc", "must be an array, got string"),
    ("linux.resources", [], "must be an object, got array"),
    ("linux.resources.cpu", 5, "must be an object, got number"),
    ("linux.devices", [{"path": "/dev/x", "type": "c", "major": 1, "minor": 1 << 31}], None),
    ("linux.devices", [{"path": "/dev/x", "type": "c", "major": -1, "minor": 3}], None),
    ("linux.resources.devices", -1, "must be an array, got number"),
    ("linux.resources.memory", "1g", "must be an object, got string"),
    ("linux.cgroupsPath", 1, "must be a string, got number"),
    ("linux.sysctl", {"net.ipv4.ip_forward": 1}, None),
    ("annotations", {"a": 1}, None),

]


def test_wrong_type(oci, bundle):
    def check(path, value, msg):
        set_path(bundle.config, path, value)
        bundle.save()
        line = create_fails(oci, bundle)
        if msg is None:  # the path of the bad element is deeper than `path`
            assert line.startswith(f"ocirun: config.json: {path}"), line
            assert "must be" in line
        else:
            assert line == f"ocirun: config.json: {path}: {msg}", line
    _each_case(bundle, WRONG_TYPE, check)


INVALID = [
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}),
     'linux.namespaces[5].type: duplicate namespace "pid"'),
    (lambda c: c["linux"].update(namespaces=[{"type": "pid"}, {"type": "mount"},
                                             {"type": "network", "path": "net"}]),
     "linux.namespaces[2].path: must be an absolute path, got 'net'"),
    (lambda c: c["process"].update(cwd="relative"),
     "process.cwd: must be an absolute path, got 'relative'"),
    (lambda c: c["process"].update(env=["NOEQUALS"]),
     "process.env[0]: must be KEY=VALUE, got 'NOEQUALS'"),
    (lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}),
     "process.rlimits[1].type: unknown rlimit 'RLIMIT_BOGUS'"),
    (lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}),
     "process.rlimits[1].type: duplicate rlimit 'RLIMIT_NOFILE'"),
    (lambda c: c["process"]["rlimits"][0].update(soft=2048, hard=1024),
     "process.rlimits[0]: soft limit 2048 is greater than hard limit 1024"),
    (lambda c: c["linux"].update(rootfsPropagation="sideways"),
     "linux.rootfsPropagation: unknown propagation 'sideways'"),
    (lambda c: c.update(hooks={"prestart": [{"path": "relative/hook"}]}),
     "hooks.prestart[0].path: must be an absolute path, got 'relative/hook'"),
    (lambda c: c.update(hooks={"prestart": [{"path": "/bin/true", "timeout": 0}]}),
     "hooks.prestart[0].timeout: must be greater than zero"),
    (lambda c: c.update(hooks={"preStart": []}), "hooks.preStart: unknown hook kind"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "linux.uidMappings: mappings need a user namespace"),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "bind"}),
     "mounts[7].source: a bind mount needs a source"),
    (lambda c: c["mounts"].append({"destination": "/x"}),
     "mounts[7].type: is required for a mount that is not a bind mount"),
    (lambda c: c["linux"].update(sysctl={"kernel/../x": "1"}),
     "linux.sysctl.kernel/../x: invalid sysctl name"),
    # a NUL in a path, argument or name the kernel would take
    (lambda c: c["mounts"][3].update(destination="/dev/\0shm"),
     "mounts[3].destination: must not contain a NUL character"),
    (lambda c: c["process"]["args"].append("a\0b"),
     "process.args[1]: must not contain a NUL character"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward\0": "1"}),
     "linux.sysctl.net.ipv4.ip_forward\\x00: invalid sysctl name"),

]


def test_invalid_values(oci, bundle):
    def check(change, want):
        change(bundle.config)
        bundle.save()
        line = create_fails(oci, bundle)
        assert line.startswith("ocirun: config.json: " + want), line
    _each_case(bundle, [(c, w) for c, w in INVALID], check)


def test_missing_rootfs(oci, bundle):
    bundle.config["root"]["path"] = "nosuch"
    bundle.save()
    line = create_fails(oci, bundle, also_run=True)
    assert line == (f"ocirun: config.json: root.path: rootfs {bundle.path}/nosuch "
                    "does not exist or is not a directory")


def test_rootfs_is_a_file(oci, bundle):
    with open(os.path.join(bundle.path, "afile"), "w") as f:
        f.write("")
    bundle.config["root"]["path"] = "afile"
    bundle.save()
    line = create_fails(oci, bundle)
    assert "root.path" in line and "not a directory" in line


def test_hook_binary_missing(oci, bundle, tmp_path):
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        bundle.config["hooks"] = {kind: [{"path": str(tmp_path / "nohook")}]}
        bundle.save()
        line = create_fails(oci, bundle)
        assert line == (f"ocirun: config.json: hooks.{kind}[0].path: {tmp_path}/nohook: "
                        "no such file"), line


@pytest.mark.parametrize("platform", ["windows", "solaris", "vm", "zos", "freebsd"])
def test_other_platforms_not_supported(oci, bundle, platform):
    bundle.config[platform] = {}
    bundle.save()
    line = create_fails(oci, bundle)
    assert line.startswith(f"ocirun: config.json: {platform}: not supported: "), line


@pytest.mark.parametrize("cid,what", [("", "empty"), ("x" * 1025, "long"), ("a/b", "/"),
                                      ("..", ".."), ("../etc", "/"), (".", "."),
                                      ("a\nb", "newline")])
def test_bad_container_id(oci, bundle, cid, what):
    bundle.args("true")
    for cmd in ("create", "run"):
        line = oci.fail(cmd, "-b", bundle.path, cid)
        assert "container id" in line, line
        assert oci.ids() == []
    assert not os.path.exists(os.path.join(os.path.dirname(oci.root), "etc"))


def test_duplicate_id_leaves_first_alone(oci, bundle):
    bundle.args("sleep", "60")
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    before = oci.state(cid)
    for cmd in ("create", "run"):
        line = oci.fail(cmd, "-b", bundle.path, cid)
        assert line == f"ocirun: container with id exists: {cid}", line
    assert oci.state(cid) == before
    assert oci.ids() == [cid]
    oci.ok("delete", "-f", cid)
    assert_nothing_left(oci, cid)


@pytest.mark.parametrize("argv,want", [
    (["nosuch"], "ocirun: unknown command 'nosuch' (see ocirun --help)"),
    (["create", "--nosuch", "x"], "ocirun: flag provided but not defined: --nosuch"),
    (["--nosuch", "list"], "ocirun: flag provided but not defined: --nosuch"),
    (["run", "-Z", "x"], None),
    (["create"], 'ocirun: "create" requires a container id'),
    (["state"], 'ocirun: "state" requires a container id'),
    (["state", "nosuchcontainer"], "ocirun: container does not exist: nosuchcontainer"),
    (["delete", "nosuchcontainer"], "ocirun: container does not exist: nosuchcontainer"),
    (["kill", "nosuchcontainer"], "ocirun: container does not exist: nosuchcontainer"),
    (["start", "nosuchcontainer"], "ocirun: container does not exist: nosuchcontainer"),
    (["create", "--preserve-fds", "x", "c"], None),
])
def test_bad_command_lines(oci, argv, want):
    line = oci.fail(*argv)
    if want:
        assert line == want
    assert oci.ids() == []


def test_create_error_in_init_leaves_nothing(oci, bundle, tmp_path):
    """An error found in the init (after the fork) is cleaned up as well."""
    bundle.config["mounts"].append({"destination": "/x", "type": "bind",
                                    "source": str(tmp_path / "gone"), "options": ["rbind"]})
    bundle.save()
    line = create_fails(oci, bundle, also_run=True)
    assert line.startswith("ocirun: mounts[7]: bind source"), line


# --- in-process: any bytes give a ConfigError, never anything else --------------
def _good_config_bytes() -> bytes:
    from ocirun.specgen import default_spec
    return json.dumps(default_spec(), indent=1).encode()


def test_every_truncation_of_a_config_is_a_config_error(tmp_path):
    from ocirun import spec
    from ocirun.errors import ConfigError
    data = _good_config_bytes()
    path = tmp_path / "config.json"
    for n in list(range(0, 200)) + list(range(200, len(data) - 1, 37)):
        path.write_bytes(data[:n])
        with pytest.raises(ConfigError) as e:
            spec.load(str(tmp_path))
        assert str(e.value).startswith("config.json: malformed JSON: "), (n, str(e.value))


def test_random_json_values_never_crash_the_validator():
    from hypothesis import given, settings, strategies as st

    from ocirun import spec
    from ocirun.errors import ConfigError
    base = json.loads(_good_config_bytes())
    leaves = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text()
    values = st.recursive(leaves, lambda ch: st.lists(ch, max_size=3) |
                          st.dictionaries(st.text(max_size=5), ch, max_size=3), max_leaves=8)
    paths = st.sampled_from(["ociVersion", "process", "process.args", "process.user",
                             "process.user.uid", "process.rlimits", "process.capabilities",
                             "root", "mounts", "hooks", "linux", "linux.namespaces",
                             "linux.devices", "linux.sysctl", "linux.timeOffsets",
                             "linux.uidMappings", "annotations", "process.env",
                             "process.consoleSize", "linux.maskedPaths"])

    @settings(max_examples=300, deadline=None)
    @given(paths, values)
    def check(path, value):
        cfg = json.loads(json.dumps(base))
        obj = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            obj = obj[k]
        obj[keys[-1]] = value
        try:
            spec.validate(cfg, spec.Checker())
        except ConfigError as e:
            assert "\n" not in str(e) and str(e).startswith("config.json: ")
    check()
