"""process.capabilities: parse, and the init sequence on a real child."""
from __future__ import annotations

import os

import pytest

from ocirun.errors import ConfigError
from ocirun.linux import caps
from sec_util import proc_status, run_child

FIELDS = {"bounding": "CapBnd", "effective": "CapEff", "permitted": "CapPrm",
          "inheritable": "CapInh", "ambient": "CapAmb"}

RUNC_DEFAULT = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
                "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
                "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def _host_bounding() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapBnd")


def _available_names() -> list[str]:
    """Capabilities this test process may hand out (the VM lacks some)."""
    bnd = _host_bounding()
    return [n for i, n in enumerate(caps.NAMES) if bnd >> i & 1]


def _init_sequence(cfg: dict, uid: int, gid: int) -> dict:
    cs = caps.parse(cfg)
    caps.drop_bounding(cs)
    caps.keep_caps()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    caps.apply(cs)
    from ocirun.kernel import capability as k
    out = {s: proc_status(f) for s, f in FIELDS.items()}
    out["keepcaps"] = k.get_keepcaps()
    return out


def _expect(cfg: dict) -> dict:
    cs = caps.parse(cfg)
    return {s: f"{getattr(cs, s):016x}" for s in FIELDS}


def _check(cfg: dict, uid: int, gid: int) -> None:
    got = run_child(_init_sequence, cfg, uid, gid).ok()
    assert got.pop("keepcaps") is False
    assert got == _expect(cfg)


def test_parse_names_to_masks():
    cs = caps.parse({"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"]})
    assert cs.bounding == (1 << 0) | (1 << 5)
    assert cs.effective == 1 << 5
    assert cs.permitted == cs.inheritable == cs.ambient == 0
    assert cs.names("bounding") == ["CAP_CHOWN", "CAP_KILL"]


def test_parse_none_means_no_capabilities():
    assert caps.parse(None) == caps.CapSets()


@pytest.mark.parametrize("uid", [1000, 0])
def test_runc_default_set_with_ambient(uid):
    names = [n for n in RUNC_DEFAULT if n in _available_names()]
    cfg = {"bounding": names, "permitted": names, "inheritable": names,
           "effective": names[:-3], "ambient": ["CAP_NET_BIND_SERVICE", "CAP_KILL"]}
    _check(cfg, uid, uid)


@pytest.mark.parametrize("uid", [1000, 0])
def test_all_available_capabilities(uid):
    names = _available_names()
    cfg = {s: names for s in FIELDS}
    _check(cfg, uid, uid)


@pytest.mark.parametrize("uid", [1000, 0])
def test_empty_sets(uid):
    _check({}, uid, uid)


def test_only_bounding_and_distinct_sets():
    cfg = {"bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
           "permitted": ["CAP_KILL", "CAP_CHOWN", "CAP_SYS_ADMIN"],
           "effective": ["CAP_CHOWN"], "inheritable": ["CAP_NET_RAW"]}
    _check(cfg, 1000, 1000)


def test_ambient_survives_execve_as_non_root():
    """End to end: the exec'd program (not Python) holds the ambient caps."""
    names = ["CAP_NET_BIND_SERVICE", "CAP_KILL"]
    cfg = {s: names for s in FIELDS}

    def child():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.dup2(w, 1)
                cs = caps.parse(cfg)
                caps.drop_bounding(cs)
                caps.keep_caps()
                os.setgroups([])
                os.setresgid(1000, 1000, 1000)
                os.setresuid(1000, 1000, 1000)
                caps.apply(cs)
                os.execv("/bin/busybox", ["grep", "^Cap", "/proc/self/status"])
            finally:
                os._exit(127)
        os.close(w)
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        os.waitpid(pid, 0)
        return dict(line.split(":\t") for line in out.decode().splitlines())

    got = run_child(child).ok()
    want = f"{(1 << 10) | (1 << 5):016x}"
    assert got == {"CapInh": want, "CapPrm": want, "CapEff": want,
                   "CapBnd": want, "CapAmb": want}


def test_unknown_capability_warns_and_is_ignored(capsys):
    cs = caps.parse({"bounding": ["CAP_KILL", "CAP_FOO"], "effective": ["CAP_FOO"]})
    assert cs.bounding == 1 << 5 and cs.effective == 0
    err = capsys.readouterr().err
    assert "unknown capability 'CAP_FOO'" in err
    assert "process.capabilities.bounding[1]" in err
    assert err.count("\n") == 1  # one warning per name


def test_unknown_capability_custom_warn():
    msgs = []
    caps.parse({"ambient": ["cap_kill"]}, warn=msgs.append)
    assert msgs == ["process.capabilities.ambient[0]: unknown capability 'cap_kill', ignored"]


def test_capability_newer_than_kernel_dropped_quietly(monkeypatch, capsys):
    monkeypatch.setattr(caps, "_last_cap", 37)
    cs = caps.parse({"bounding": ["CAP_KILL", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]})
    assert cs.bounding == 1 << 5
    assert capsys.readouterr().err == ""


def test_ambient_not_permitted_and_inheritable_is_dropped_quietly():
    """runc's default spec asks for such ambient caps: drop them, no warning."""
    msgs = []
    cs = caps.parse({"permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"],
                     "ambient": ["CAP_KILL", "CAP_CHOWN"]}, warn=msgs.append)
    assert cs.ambient == 1 << 5
    assert msgs == []


@pytest.mark.parametrize("cfg, where", [
    ([], "process.capabilities"),
    ({"bounding": "CAP_KILL"}, "process.capabilities.bounding"),
    ({"effective": ["CAP_KILL", 3]}, "process.capabilities.effective[1]"),
])
def test_bad_types(cfg, where):
    with pytest.raises(ConfigError) as ei:
        caps.parse(cfg)
    assert ei.value.path == where


def test_capset_failure_is_one_clear_error():
    """Asking for a permitted capability we no longer hold fails cleanly."""
    def child():
        caps.apply(caps.parse({"permitted": ["CAP_KILL"]}))
        try:
            caps.apply(caps.parse({"permitted": ["CAP_KILL", "CAP_CHOWN"]}))
        except ConfigError as e:
            return str(e)
        return None
    msg = run_child(child).ok()
    assert msg == ("config.json: process.capabilities: capset: Operation not permitted: "
                   "CAP_CHOWN not in the runtime's own permitted capabilities "
                   "(e.g. dropped from the host's bounding set)")
