"""The command line itself: help, version, features, usage errors, logs."""
import json
import os

import pytest

from ocitest import SHARED, schema_validator

needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED),
                                  reason="../shared (runtime-spec schemas) is not beside the repo")


@needs_shared
def test_features_validates_and_is_true(oci):
    feats = json.loads(oci.ok("features"))
    schema_validator("features-schema.json").validate(feats)
    assert feats["ociVersionMax"] == "1.3.0"
    assert set(feats["linux"]["namespaces"]) == {"pid", "network", "mount", "ipc", "uts",
                                                 "user", "cgroup", "time"}
    assert "CAP_SYS_ADMIN" in feats["linux"]["capabilities"]
    assert "SCMP_ACT_NOTIFY" in feats["linux"]["seccomp"]["actions"]
    assert {"rro", "rbind", "idmap", "tmpcopyup"} <= set(feats["mountOptions"])
    assert feats["linux"]["mountExtensions"]["idmap"]["enabled"] is True


def test_version_and_help(oci):
    out = oci.ok("--version")
    assert out.startswith("ocirun version ") and "spec: 1.3.0" in out
    assert oci.ok("-v") == out
    top = oci.ok("--help")
    for cmd in ("create", "start", "run", "exec", "kill", "delete", "state", "list", "spec",
                "ps", "pause", "resume", "update", "events", "features"):
        assert f"   {cmd} " in top, cmd
    assert "--bundle" in oci.ok("create", "--help")
    assert "--tty" in oci.ok("help", "exec")


@pytest.mark.parametrize("argv,expect", [
    (["bogus"], "unknown command 'bogus'"),
    (["create", "--bogus", "x"], "flag provided but not defined: --bogus"),
    (["--bogus", "list"], "flag provided but not defined: --bogus"),
    (["create"], '"create" requires a container id'),
    (["kill"], '"kill" requires a container id'),
    (["create", "--bundle"], "flag needs an argument: --bundle"),
    (["--log-format", "xml", "list"], "invalid log-format"),
    (["--cgroup-manager", "nope", "list"], "unknown cgroup manager"),
    (["list", "--format", "yaml"], "invalid format"),
    (["run", "--preserve-fds", "x", "c"], "--preserve-fds"),
    (["--rootless", "maybe", "run", "c"], "--rootless: invalid value 'maybe'"),
])
def test_usage_errors_are_one_line(oci, argv, expect):
    assert expect in oci.fail(*argv)


def test_go_style_single_dash_flags(oci, bundle):
    bundle.sh("exit 4")
    assert oci("run", "-bundle", bundle.path, "g").rc == 4
    assert oci("run", f"--bundle={bundle.path}", "g").rc == 4


def test_json_log_gets_the_error(oci, bundle, tmp_path):
    log = tmp_path / "log.json"
    bundle.args("nosuch")
    line = oci.fail("--log", str(log), "--log-format", "json", "create", "-b", bundle.path, "c")
    assert 'exec: "nosuch": executable file not found in $PATH' in line
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error"
    assert entries[-1]["msg"] == line.removeprefix("ocirun: ")
    assert entries[-1]["time"].endswith("Z")
    assert oci.ids() == []


def test_text_log(oci, tmp_path):
    log = tmp_path / "log.txt"
    oci.fail("--log", str(log), "state", "nope")
    assert 'level=error msg="container does not exist: nope"' in log.read_text()


def test_debug_lines_go_to_stderr_or_the_log(oci, bundle, tmp_path):
    """--debug: runc-like level=debug lines on stderr, or in --log only."""
    bundle.args("true")
    r = oci("--debug", "run", "-b", bundle.path, "d1")
    assert r.rc == 0 and 'level=debug msg="run -b' in r.err
    assert 'level=debug msg="container d1: init ' in r.err
    log = tmp_path / "log.json"
    r = oci("--debug", "--log", str(log), "--log-format", "json", "run", "-b", bundle.path, "d2")
    assert r.rc == 0 and "debug" not in r.err
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [e["level"] for e in entries] == ["debug", "debug"]
    assert entries[1]["msg"].startswith("container d2: init ")
    assert "debug" not in oci("run", "-b", bundle.path, "d3").err


def test_log_file_is_opened_at_start(oci, tmp_path):
    """As runc: the log file exists after any command, and one that cannot
    be opened fails even a command that would log nothing."""
    log = tmp_path / "log.txt"
    oci.ok("--log", str(log), "list")
    assert log.exists() and log.read_text() == ""
    line = oci.fail("--log", str(tmp_path / "no" / "such" / "log"), "list")
    assert line == f"ocirun: --log {tmp_path}/no/such/log: cannot open it: " \
                   "No such file or directory"


def test_spec_writes_runc_like_config(oci, tmp_path):
    oci.ok("spec", "--bundle", str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    assert "exists" in oci.fail("spec", "--bundle", str(tmp_path))
    (tmp_path / "r").mkdir()
    oci.ok("spec", "--rootless", "-b", str(tmp_path / "r"))
    r = json.loads((tmp_path / "r" / "config.json").read_text())
    assert {"type": "user"} in r["linux"]["namespaces"]
    assert r["linux"]["uidMappings"][0]["hostID"] == os.geteuid()


def test_man_page_is_current():
    """docs/ocirun.1.md is generated from the flag tables: keep it in step."""
    import subprocess
    import sys
    from ocitest import REPO
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gen_manpage.py")],
                         capture_output=True, text=True, check=True).stdout
    with open(os.path.join(REPO, "docs", "ocirun.1.md")) as f:
        assert f.read() == out, "run: tools/gen_manpage.py > docs/ocirun.1.md"
