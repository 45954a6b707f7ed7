"""The runtime-spec's own JSON schemas and examples (../shared/runtime-spec):
`spec` and `state` output validate against them, every good example config
is accepted by ocirun's validator (or refused as NotSupported for what
ocirun does not run), and the bad examples are refused."""
import glob
import itertools
import json
import os

import pytest

from ocitest import SHARED

SCHEMA_DIR = os.path.join(SHARED, "runtime-spec", "schema")
EXAMPLES = os.path.join(SCHEMA_DIR, "test", "config")
pytestmark = pytest.mark.skipif(not os.path.isdir(SCHEMA_DIR),
                                reason=f"runtime-spec schemas not found at {SCHEMA_DIR}")
_ids = itertools.count()
# Platforms ocirun does not run: a config for them is NotSupported.
OTHER_PLATFORMS = ("windows", "solaris", "vm", "zos", "freebsd")


def new_id() -> str:
    return f"ocit{os.getpid()}x{next(_ids)}"


def _validator(name: str):
    """A validator for one schema file, its relative $refs ("defs.json#...")
    resolved from the schema directory."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str):
        path = os.path.join(SCHEMA_DIR, uri.removeprefix("file://").rsplit("/", 1)[-1])
        with open(path) as f:
            return referencing.Resource.from_contents(json.load(f), default_specification=DRAFT4)

    registry = referencing.Registry(retrieve=retrieve)
    with open(os.path.join(SCHEMA_DIR, name)) as f:
        schema = json.load(f)
    schema.setdefault("$id", f"file://{SCHEMA_DIR}/{name}")
    return jsonschema.Draft4Validator(schema, registry=registry)


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


@pytest.fixture(scope="module")
def config_schema():
    return _validator("config-schema.json")


@pytest.fixture(scope="module")
def state_schema():
    return _validator("state-schema.json")


def test_schema_validator_works(config_schema):
    """The resolver really follows the $refs: a wrong ociVersion type fails."""
    assert _errors(config_schema, {"ociVersion": 1})
    assert _errors(config_schema, {"ociVersion": "1.0.0", "linux": {"namespaces": [
        {"type": "pidd"}]}})


@pytest.mark.parametrize("rootless", [False, True])
def test_spec_output_validates(oci, tmp_path, config_schema, rootless):
    d = tmp_path / ("rootless" if rootless else "root")
    d.mkdir()
    oci.ok("spec", "-b", str(d), *(["--rootless"] if rootless else []))
    with open(d / "config.json") as f:
        cfg = json.load(f)
    assert _errors(config_schema, cfg) == []
    # and ocirun accepts what it writes
    from ocirun import spec
    spec.validate(cfg, spec.Checker())


def test_spec_refuses_to_overwrite(oci, tmp_path):
    oci.ok("spec", "-b", str(tmp_path))
    line = oci.fail("spec", "-b", str(tmp_path))
    assert "config.json" in line and "exists" in line


def test_state_output_validates(oci, bundle, state_schema):
    bundle.args("sleep", "60")
    bundle.config["annotations"] = {"org.example.key": "value"}
    bundle.save()
    cid = new_id()
    oci.ok("create", "-b", bundle.path, cid)
    st = oci.state(cid)
    assert _errors(state_schema, st) == [] and st["status"] == "created"
    assert st["annotations"] == {"org.example.key": "value"}
    oci.ok("start", cid)
    assert _errors(state_schema, oci.state(cid)) == []
    oci.ok("kill", cid, "KILL")
    for _ in range(500):
        st = oci.state(cid)
        if st["status"] == "stopped":
            break
        import time
        time.sleep(0.02)
    assert st["status"] == "stopped"
    assert _errors(state_schema, st) == []
    for entry in json.loads(oci.ok("list", "--format", "json")):
        assert _errors(state_schema, entry) == []
    oci.ok("delete", cid)


def _examples(kind: str) -> list[str]:
    return sorted(glob.glob(os.path.join(EXAMPLES, kind, "*.json")))


def _load(path: str):
    with open(path, "rb") as f:
        return json.loads(f.read())


@pytest.mark.parametrize("path", _examples("good"), ids=os.path.basename)
def test_good_examples_accepted_or_not_supported(path, config_schema):
    from ocirun import spec
    from ocirun.errors import ConfigError, NotSupported
    cfg = _load(path)
    assert _errors(config_schema, cfg) == []  # the example itself is valid
    platform = next((p for p in OTHER_PLATFORMS if cfg.get(p) is not None), None)
    try:
        spec.validate(cfg, spec.Checker(os.path.basename(path)))
    except NotSupported as e:
        assert "not supported" in str(e) and "\n" not in str(e)
        if platform is None:
            # a Linux example: only features ocirun lists as not built yet
            assert e.path.startswith(("linux.intelRdt", "linux.memoryPolicy",
                                      "process.commandLine")), str(e)
        else:
            assert e.path == platform, str(e)
        return
    except ConfigError as e:
        pytest.fail(f"a good example was refused: {e}")
    assert platform is None, f"{platform} config accepted"


@pytest.mark.parametrize("path", [p for p in _examples("bad")
                                  if not os.path.basename(p).startswith(OTHER_PLATFORMS)],
                         ids=os.path.basename)
def test_bad_examples_refused(path):
    from ocirun import spec
    from ocirun.errors import ConfigError, NotSupported
    name = os.path.basename(path)
    with pytest.raises(ConfigError) as e:
        spec.load(os.path.dirname(path), path)
    assert not isinstance(e.value, NotSupported), str(e.value)
    assert str(e.value).startswith(f"{name}: ") and "\n" not in str(e.value)


def test_good_linux_example_runs_or_not_supported(oci, bundle):
    """spec-example.json through the CLI: refused in one clear line, or created."""
    cfg = _load(os.path.join(EXAMPLES, "good", "spec-example.json"))
    cfg["root"]["path"] = bundle.rootfs
    bundle.config = cfg
    bundle.save()
    cid = new_id()
    r = oci("create", "-b", bundle.path, cid)
    assert "Traceback" not in r.err
    if r.rc:
        assert len(r.err.strip().splitlines()) == 1, r.err
    else:
        oci.ok("delete", "-f", cid)
    assert oci.ids() == []
