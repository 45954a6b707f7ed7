"""Fuzzed input: configs mutated from a valid one (wrong types, missing
fields, huge values, unicode, deep nesting, absurd sizes, wrong enum
values). The library may only raise OciError subclasses; the CLI never
prints a traceback, fails with exactly one stderr line and leaves nothing.
Bounded for CI; OCIRUN_FUZZ_EXAMPLES=N runs N library examples (and N/10
through the CLI)."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from relutil import area, env_int, one_line_error  # noqa: F401

import ocirun
from ocirun import plan as planmod, spec
from ocirun.errors import OciError
from ocirun.specgen import default_spec

N = env_int("OCIRUN_FUZZ_EXAMPLES", 300)
# CI runs the same examples every time (no flaky red); a long run explores
DERANDOMIZE = not os.environ.get("OCIRUN_FUZZ_EXAMPLES")
N_CLI = max(10, N // 10)

HUGE = st.sampled_from([2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64, -2 ** 63 - 1, 10 ** 30, -1,
                        1e308, -0.0, float("inf")])
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "/", "..", "../../..", "/proc/self/fd/3", "/dev/../../etc",
                     "\x00", "é\u202e", "\ud7ff", "rw", "bind", "rbind", "cgroup", "proc",
                     "mount", "pid", "user", "network", "SIGKILL", "CAP_SYS_ADMIN",
                     "RLIMIT_NOFILE", "a" * 5000]))
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), HUGE,
                 st.floats(allow_nan=False), TEXT)
VALUE = st.recursive(LEAF, lambda c: st.one_of(st.lists(c, max_size=4),
                                               st.dictionaries(TEXT, c, max_size=4)),
                     max_leaves=12)


def deep(n: int, kind: str):
    v = 1
    for _ in range(n):
        v = [v] if kind == "list" else {"a": v}
    return v


ODD = st.one_of(st.builds(deep, st.integers(50, 900), st.sampled_from(["list", "dict"])),
                st.builds(lambda n: ["x"] * n, st.integers(1000, 20000)),
                st.builds(lambda n: {f"k{i}": "v" for i in range(n)}, st.integers(500, 5000)))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def base_config() -> dict:
    cfg = default_spec()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sleep", "60"]
    cfg["root"]["readonly"] = False
    cfg["linux"]["resources"].update({"memory": {"limit": 64 << 20}, "pids": {"limit": 100},
                                      "cpu": {"shares": 512}})
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "0"}
    cfg["linux"]["uidMappings"] = []
    cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                "fileMode": 0o666, "uid": 0, "gid": 0}]
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mknod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 1, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    cfg["linux"]["personality"] = {"domain": "LINUX", "flags": []}
    cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 4}
    cfg["process"]["scheduler"] = {"policy": "SCHED_OTHER", "nice": 1}
    cfg["annotations"] = {"a": "b"}
    return cfg


PATHS = list(_paths(base_config()))


@st.composite
def mutated(draw):
    cfg = base_config()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent, key = cfg, None
        try:
            for k in path[:-1]:
                parent = parent[k]
            key = path[-1] if path else None
            if key is not None:
                parent[key]  # noqa: B018 (still there after earlier mutations?)
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "replace", "odd", "delete", "add"]))
        if key is None:  # the whole document
            if action in ("replace", "odd"):
                cfg = draw(VALUE if action == "replace" else ODD)
            continue
        if action == "replace":
            parent[key] = draw(VALUE)
        elif action == "odd":
            parent[key] = draw(ODD)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(TEXT)] = draw(VALUE)
        elif isinstance(parent[key], list):
            parent[key].append(draw(VALUE))
    return cfg


def library_create_checks(cfg, bundle: str) -> None:
    """Everything create does before it makes anything, in order."""
    from ocirun import cgroups, creation
    from ocirun.linux import namespaces
    spec.validate(cfg, spec.Checker())
    p = planmod.build(cfg, bundle)
    namespaces.check_paths(p.ns, p.linux.get("namespaces") or [])
    planmod.check_hook_paths(p.hooks)
    creation.prepare_security(p, cfg, bundle)  # root: where the seccomp cache lives
    cgroups.new_manager(p.linux.get("cgroupsPath"), "fuzz", rootless=False)


@pytest.fixture(scope="module")
def lib_bundle(tmp_path_factory):
    b = tmp_path_factory.mktemp("fuzzlib")
    os.makedirs(b / "rootfs" / "bin")
    return str(b)


@settings(max_examples=N, deadline=None, database=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
@given(cfg=mutated())
def test_library_raises_only_oci_errors(lib_bundle, cfg):
    try:
        library_create_checks(cfg, lib_bundle)
    except OciError as e:
        msg = str(e)
        assert msg and "\n" not in msg, repr(msg)
    except RecursionError:
        pytest.fail("RecursionError escaped (deep nesting)")


def test_library_malformed_json_documents(tmp_path):
    for text in ["", "{", "[" * 100000, '{"ociVersion": "1.0.0"', "\xff\xfe", "null",
                 "1e99999", '{"a": NaN}', '"\\ud800"', "{}" * 3, "\x00"]:
        (tmp_path / "config.json").write_bytes(text.encode("utf-8", "surrogatepass")
                                               if isinstance(text, str) else text)
        with pytest.raises(OciError) as e:
            cfg = spec.load(str(tmp_path))
            planmod.build(cfg, str(tmp_path))
        assert "\n" not in str(e.value)


@settings(max_examples=N_CLI, deadline=None, database=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
@given(cfg=mutated())
def test_cli_create_with_mutated_config(area, cfg):
    counter = getattr(test_cli_create_with_mutated_config, "n", 0) + 1
    test_cli_create_with_mutated_config.n = counter
    cid = area.cid(f"fz{counter}")
    if isinstance(cfg, dict) and isinstance(cfg.get("process"), dict) and isinstance(
            cfg["process"].get("env"), list):
        cfg["process"]["env"].append(f"OCIRUN_RELTAG={area.tag}")
    with open(os.path.join(area.bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    p = area.run("create", "-b", area.bundle, cid, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    assert "internal error" not in p.stderr, (p.stderr, cfg)  # one line, but a bug
    if p.returncode == 0:
        d = area.run("delete", "--force", cid)
        assert d.returncode == 0, d.stderr
    else:
        one_line_error(p)
    left = area.wait_clean(cid, timeout=5)
    assert not left, (p.stderr, left)


@pytest.mark.parametrize("res", [{"devices": ["x"]}, {"devices": [{"allow": "yes"}]},
                                 {"memory": "big"}, {"pids": {"limit": "many"}},
                                 {"cpu": {"shares": -5}}, {"cpu": 5}, {"devices": 5}])
def test_cli_bad_resources_one_line(area, res):
    """Found by the fuzzer: resources are checked when the cgroup is set up,
    after the init is forked; the init must not add a second line."""
    cid = area.cid("res")
    area.config["linux"]["resources"] = res
    area.save()
    p = area.run("create", "-b", area.bundle, cid)
    line = one_line_error(p)
    assert "linux.resources" in line, line
    assert not area.wait_clean(cid)
