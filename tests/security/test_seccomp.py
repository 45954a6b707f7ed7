"""linux.seccomp: validation, compile + cache, and real filters in children."""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import stat

import pytest

from ocirun.errors import ConfigError
from ocirun.linux import seccomp
from sec_util import nnp_and_load, proc_status, raw_syscall, run_child, syscall_nr

MARK = 0x5EC0  # an argument value nothing else passes to getppid()


def allow_but(action: str, **extra) -> dict:
    """Default allow; getppid(MARK) gets `action`."""
    rule = {"names": ["getppid"], "action": action,
            "args": [{"index": 0, "value": MARK, "op": "SCMP_CMP_EQ"}], **extra}
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}


def under(cfg: dict, fn, *args, cache_dir=None):
    flt = seccomp.compile(cfg, cache_dir=cache_dir)

    def child():
        nnp_and_load(flt)
        return fn(*args)
    return run_child(child)


def getppid_with(arg: int, arg1: int = 0):
    return raw_syscall(syscall_nr("getppid"), arg, arg1)


# --- validation --------------------------------------------------------------
@pytest.mark.parametrize("cfg, msg", [
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"}] * 3
      + [{"names": ["b"], "action": "SCMP_ACT_FOO"}]},
     'config.json: linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": "SCMP_ACT_NOPE"},
     'config.json: linux.seccomp.defaultAction: unknown action "SCMP_ACT_NOPE"'),
    ({}, "config.json: linux.seccomp.defaultAction: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]},
     'config.json: linux.seccomp.architectures[1]: unknown architecture "SCMP_ARCH_Z80"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]},
     'config.json: linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_BOGUS"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
     'config.json: linux.seccomp.syscalls[0].args[0].op: unknown operator "SCMP_CMP_ABOUT"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
      "args": [{"index": 0, "value": 1, "op": {}}]}]},  # (found by fuzzing: was a TypeError)
     'config.json: linux.seccomp.syscalls[0].args[0].op: unknown operator {}'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "config.json: linux.seccomp.syscalls[0].args[0].index: must be an integer from 0 to 5"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
     "config.json: linux.seccomp.syscalls[0].names: must be a non-empty array of strings"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_LOG",
                                                        "errnoRet": 5}]},
     "config.json: linux.seccomp.syscalls[0].errnoRet: not supported with action SCMP_ACT_LOG"),
    ({"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 5},
     "config.json: linux.seccomp.defaultErrnoRet: not supported with action SCMP_ACT_KILL"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"},
     "config.json: linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]},
     "config.json: linux.seccomp.listenerPath: is required when SCMP_ACT_NOTIFY is used"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"},
     "config.json: linux.seccomp.listenerMetadata: must not be set without listenerPath"),
])
def test_validation_errors_name_the_field(cfg, msg):
    with pytest.raises(ConfigError) as ei:
        seccomp.compile(cfg, cache_dir=None)
    assert str(ei.value) == msg


def test_unknown_syscall_names_are_skipped():
    flt = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall", "getcwd"], "action": "SCMP_ACT_ERRNO"}]},
        cache_dir=None)
    assert flt.skipped == ("no_such_syscall",)
    r = under({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall", "getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77}]},
        lambda: raw_syscall(syscall_nr("getcwd"), 0, 0))
    assert r.ok() == [-1, 77]


# --- status and operators ----------------------------------------------------
def test_seccomp_mode_2_in_proc_status():
    r = under(allow_but("SCMP_ACT_ERRNO"), lambda: proc_status("Seccomp"))
    assert r.ok() == "2"


OPS = [  # op, value, valueTwo, {arg: matches?}
    ("SCMP_CMP_EQ", 10, 0, {9: False, 10: True, 11: False}),
    ("SCMP_CMP_NE", 10, 0, {9: True, 10: False, 11: True}),
    ("SCMP_CMP_LT", 10, 0, {9: True, 10: False, 11: False}),
    ("SCMP_CMP_LE", 10, 0, {9: True, 10: True, 11: False}),
    ("SCMP_CMP_GT", 10, 0, {9: False, 10: False, 11: True}),
    ("SCMP_CMP_GE", 10, 0, {9: False, 10: True, 11: True}),
    ("SCMP_CMP_MASKED_EQ", 0xF0, 0x30, {0x35: True, 0x3F: True, 0x45: False, 0x30: True}),
    # 64-bit values: libseccomp compares both 32-bit halves
    ("SCMP_CMP_GT", 1 << 33, 0, {1 << 33: False, (1 << 33) + 1: True, 1 << 34: True, 5: False}),
    ("SCMP_CMP_EQ", (1 << 40) | 7, 0, {(1 << 40) | 7: True, 7: False, 1 << 40: False}),
]


@pytest.mark.parametrize("op, value, value2, cases", OPS, ids=[f"{o[0]}-{o[1]:#x}" for o in OPS])
def test_operator(op, value, value2, cases):
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
         "args": [{"index": 1, "value": value, "valueTwo": value2, "op": op}]}]}
    got = under(cfg, lambda: {str(a): getppid_with(0, a)[1] for a in cases}).ok()
    assert got == {str(a): (99 if m else 0) for a, m in cases.items()}


def test_args_on_different_indexes_are_anded():
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 98,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]}]}
    got = under(cfg, lambda: [getppid_with(a, b)[1] for a, b in ((1, 2), (1, 3), (0, 2))]).ok()
    assert got == [98, 0, 0]


def test_args_on_the_same_index_are_ored_like_runc():
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}
    got = under(cfg, lambda: [getppid_with(a)[1] for a in (1, 2, 3)]).ok()
    assert got == [97, 97, 0]


# --- actions -------------------------------------------------------------------
def test_errno_with_errnoret_and_default_eperm():
    assert under(allow_but("SCMP_ACT_ERRNO", errnoRet=123),
                 lambda: [getppid_with(MARK), getppid_with(1)[0] > 0]).ok() == [[-1, 123], True]
    assert under(allow_but("SCMP_ACT_ERRNO"), lambda: getppid_with(MARK)).ok() == [-1, errno.EPERM]


def test_default_errno_ret():
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 50,
         "args": [{"index": 0, "value": MARK, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getppid"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": MARK, "op": "SCMP_CMP_NE"}]},
        # just enough for the child to report and exit
        {"names": ["write", "exit", "exit_group", "getpid", "rt_sigprocmask", "munmap",
                   "mmap", "brk", "close", "madvise"], "action": "SCMP_ACT_ALLOW"}]}
    got = under(cfg, lambda: [getppid_with(MARK), getppid_with(1)[0] > 0,
                              raw_syscall(syscall_nr("getuid"))]).ok()
    assert got == [[-1, 50], True, [-1, 38]]


def test_syscalls_newer_than_the_profile_get_enosys_as_in_runc():
    """runc's ENOSYS stub: a number above every syscall the profile names
    gets ENOSYS (libc then falls back), one below it the default errno."""
    names = ["write", "exit_group", "exit", "getppid", "mmap", "munmap", "brk",
             "rt_sigprocmask", "close", "madvise", "getpid"]
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64",
                                                                 "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
           "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}
    last = max(syscall_nr(n) for n in names)
    got = under(cfg, lambda: [raw_syscall(1000), raw_syscall(last + 1),
                              raw_syscall(syscall_nr("geteuid"))]).ok()
    assert got == [[-1, errno.ENOSYS], [-1, errno.ENOSYS], [-1, errno.EPERM]]
    # no stub under a default that lets calls through (or one that is ENOSYS already)
    ret_enosys = (0x00050000 | errno.ENOSYS).to_bytes(4, "little")
    assert ret_enosys in seccomp.compile(cfg, cache_dir=None).bpf
    for default in ({"defaultAction": "SCMP_ACT_ALLOW"}, {"defaultAction": "SCMP_ACT_LOG"},
                    {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS}):
        bpf = seccomp.compile({**default, "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL"}]},
                              cache_dir=None).bpf
        assert (ret_enosys in bpf) == (default.get("defaultErrnoRet") == errno.ENOSYS)


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL"])
def test_kill_actions_end_the_child_with_sigsys(action):
    r = under(allow_but(action), lambda: getppid_with(MARK))
    assert r.payload is None and r.signal == signal.SIGSYS


def test_trap_sends_sigsys():
    def child():
        hits = []
        signal.signal(signal.SIGSYS, lambda s, f: hits.append(s))
        ret = getppid_with(MARK)
        normal = getppid_with(1)[0] > 0
        return [len(hits), ret[0] != os.getppid(), normal]  # syscall skipped
    assert under(allow_but("SCMP_ACT_TRAP"), child).ok() == [1, True, True]
    r = under(allow_but("SCMP_ACT_TRAP"), lambda: getppid_with(MARK))  # default handler
    assert r.payload is None and r.signal == signal.SIGSYS


def test_log_allows():
    ppid = os.getpid()
    assert under(allow_but("SCMP_ACT_LOG"), lambda: getppid_with(MARK)).ok() == [ppid, 0]


def test_trace_without_tracer_gives_enosys():
    assert under(allow_but("SCMP_ACT_TRACE", errnoRet=7),
                 lambda: getppid_with(MARK)).ok() == [-1, errno.ENOSYS]


def test_allow_rule_under_errno_default():
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 61},
        {"names": ["write", "exit_group", "exit", "getppid", "mmap", "munmap", "brk",
                   "rt_sigprocmask", "close", "madvise", "getpid"], "action": "SCMP_ACT_ALLOW"}]}
    got = under(cfg, lambda: [raw_syscall(syscall_nr("getuid")),
                              raw_syscall(syscall_nr("geteuid"))]).ok()
    assert got == [[-1, 61], [-1, errno.EPERM]]


@pytest.mark.parametrize("flags", [["SECCOMP_FILTER_FLAG_TSYNC"], ["SECCOMP_FILTER_FLAG_LOG"],
                                   ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                                   ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                                   list(seccomp.FLAGS)])
def test_flags_load(flags):
    cfg = dict(allow_but("SCMP_ACT_ERRNO", errnoRet=42), flags=flags)
    assert under(cfg, lambda: getppid_with(MARK)).ok() == [-1, 42]


def test_extra_architectures_load():
    cfg = dict(allow_but("SCMP_ACT_ERRNO", errnoRet=42),
               architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    one = seccomp.compile(allow_but("SCMP_ACT_ERRNO", errnoRet=42), cache_dir=None)
    three = seccomp.compile(cfg, cache_dir=None)
    assert len(three.bpf) > len(one.bpf)
    assert under(cfg, lambda: getppid_with(MARK)).ok() == [-1, 42]


def test_load_without_nnp_or_cap_sys_admin_is_a_clear_error():
    flt = seccomp.compile(allow_but("SCMP_ACT_ERRNO"), cache_dir=None)

    def child():
        from ocirun.kernel import capability as k
        k.capset(0, 0, 0)
        try:
            seccomp.load(flt)
        except Exception as e:  # noqa: BLE001
            return str(e)
    msg = run_child(child).ok()
    assert "Permission denied" in msg and "noNewPrivileges" in msg


# --- notify --------------------------------------------------------------------
def test_notify_listener_sent_to_agent_and_answered(tmp_path):
    """The whole runtime-spec flow with a real unix-socket agent.

    The child loads a filter that sends getppid(MARK) to user space, passes
    the listener fd to the agent with send_listener() (in ocirun the runtime
    does that part), and calls getppid(MARK) twice: the agent answers once
    with a value and once with an error.
    """
    sock_path = str(tmp_path / "agent.sock")
    cfg = dict(allow_but("SCMP_ACT_NOTIFY"), listenerPath=sock_path,
               listenerMetadata="hello agent",
               flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)  # before compile(): it checks that listenerPath is a socket
    srv.listen(1)
    srv.settimeout(10)
    flt = seccomp.compile(cfg, cache_dir=None)
    assert flt.notify and flt.listener_path == sock_path

    def child():
        fd = nnp_and_load(flt)
        assert isinstance(fd, int) and fd > 2
        state = {"ociVersion": "1.2.0", "id": "c1", "status": "creating",
                 "pid": os.getpid(), "bundle": "/b", "annotations": {}}
        seccomp.send_listener(flt.listener_path, fd, state, flt.listener_metadata)
        os.close(fd)
        return [getppid_with(MARK, 1), getppid_with(MARK, 2), getppid_with(1)[0] > 0]

    import threading
    result = {}
    t = threading.Thread(target=lambda: result.update(r=run_child(child)))
    t.start()
    conn = None
    listener = None
    try:
        conn, _ = srv.accept()
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
        while chunk := conn.recv(65536):  # the runtime closes after one state
            data += chunk
        msg = json.loads(data)
        assert len(fds) == 1
        listener = fds[0]
        assert msg["fds"] == ["seccompFd"]
        assert msg["metadata"] == "hello agent"
        assert msg["state"]["status"] == "creating" and msg["state"]["id"] == "c1"
        assert msg["pid"] == msg["state"]["pid"]
        assert msg["ociVersion"]
        from ocirun.kernel import seccomp as k
        answers = {1: dict(val=4242), 2: dict(error=-errno.EACCES)}
        for _ in range(2):
            rd, _, _ = select.select([listener], [], [], 10)
            assert rd, "no notification"
            n = k.notif_recv(listener)
            assert n["pid"] == msg["pid"]
            assert n["nr"] == syscall_nr("getppid")
            assert n["args"][0] == MARK
            k.notif_send(listener, n["id"], **answers[n["args"][1]])
    finally:
        t.join(20)
        if conn:
            conn.close()
        if listener is not None:
            os.close(listener)
        srv.close()
    assert result["r"].ok() == [[4242, 0], [-1, errno.EACCES], True]


def test_send_listener_error_is_clear(tmp_path):
    with pytest.raises(Exception) as ei:
        seccomp.send_listener(str(tmp_path / "nobody"), 0, {"pid": 1}, "")
    assert "sending the seccomp fd to" in str(ei.value)


# --- cache ---------------------------------------------------------------------
def test_cache_hit_does_not_touch_libseccomp(cache_dir, monkeypatch):
    cfg = allow_but("SCMP_ACT_ERRNO", errnoRet=33)
    first = seccomp.compile(cfg, cache_dir=cache_dir)
    assert not first.cached
    st = os.stat(cache_dir)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert os.listdir(cache_dir) == [first.key]

    from ocirun.kernel import seccomp as k
    syscall_nr("getppid")  # the test's own helper uses libseccomp: warm it

    def boom(*a, **kw):
        raise AssertionError("libseccomp used on a cache hit")
    monkeypatch.setattr(k, "lib", boom)
    monkeypatch.setattr(k, "Ctx", boom)
    # same profile, keys in another order: same canonical JSON
    again = seccomp.compile(json.loads(json.dumps(cfg, sort_keys=True)), cache_dir=cache_dir)
    assert again.cached and again.bpf == first.bpf and again.key == first.key
    assert under(cfg, lambda: getppid_with(MARK), cache_dir=cache_dir).ok() == [-1, 33]


def test_cache_key_changes_with_the_rules_not_with_listener_fields(cache_dir):
    a = seccomp.cache_key(allow_but("SCMP_ACT_ERRNO", errnoRet=33))
    assert a != seccomp.cache_key(allow_but("SCMP_ACT_ERRNO", errnoRet=34))
    assert a == seccomp.cache_key(dict(allow_but("SCMP_ACT_ERRNO", errnoRet=33),
                                       flags=["SECCOMP_FILTER_FLAG_LOG"]))


@pytest.mark.parametrize("garbage", [b"", b"junk", b"OCIRSC1\n" + b"\0" * 32 + b"12345678",
                                     "truncate"])
def test_corrupt_cache_entry_is_ignored_and_rewritten(cache_dir, garbage):
    cfg = allow_but("SCMP_ACT_ERRNO", errnoRet=31)
    first = seccomp.compile(cfg, cache_dir=cache_dir)
    entry = os.path.join(cache_dir, first.key)
    if garbage == "truncate":
        with open(entry, "rb") as f:
            data = f.read()
        garbage = data[:-3]
    with open(entry, "wb") as f:
        f.write(garbage)
    again = seccomp.compile(cfg, cache_dir=cache_dir)
    assert not again.cached and again.bpf == first.bpf
    assert seccomp.compile(cfg, cache_dir=cache_dir).cached


def test_cache_dir_writable_by_others_is_not_trusted(cache_dir):
    cfg = allow_but("SCMP_ACT_ERRNO", errnoRet=30)
    seccomp.compile(cfg, cache_dir=cache_dir)
    os.chmod(cache_dir, 0o777)
    assert not seccomp.compile(cfg, cache_dir=cache_dir).cached
    os.chmod(cache_dir, 0o700)
    assert seccomp.compile(cfg, cache_dir=cache_dir).cached


def test_no_cache_dir_means_no_cache(tmp_path):
    cfg = allow_but("SCMP_ACT_ERRNO", errnoRet=29)
    assert not seccomp.compile(cfg, cache_dir=None).cached
    assert not seccomp.compile(cfg, cache_dir=None).cached


def test_concurrent_compiles_leave_a_valid_entry(cache_dir):
    cfg = allow_but("SCMP_ACT_ERRNO", errnoRet=28)
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                seccomp.compile(cfg, cache_dir=cache_dir)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    assert [n for n in os.listdir(cache_dir) if n.endswith(".tmp")] == []
    assert seccomp.compile(cfg, cache_dir=cache_dir).cached
