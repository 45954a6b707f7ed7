"""Capabilities, seccomp (podman's profile, notify, the BPF cache), no_new_privs,
LSM labels, session keyring and the process extras, with real containers:
every check reads the result from inside the container (or from the host's
/proc of the container's init while it waits in "created")."""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import threading
import time

import pytest

from ocitest import OCIRUN
from sectest import (NR, all_caps, build_sysc, cap_mask, caps_of, install, parse_sysc,
                     podman_seccomp, status_fields)

STATUS = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status"
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


@pytest.fixture(scope="session")
def sysc_bin(tmp_path_factory):
    return build_sysc(str(tmp_path_factory.mktemp("sysc")))


@pytest.fixture
def sbundle(bundle, sysc_bin):
    install(bundle.rootfs, sysc_bin)
    return bundle


def run_out(oci, bundle, *extra, cid="t") -> str:
    r = oci.run(bundle, cid, *extra)
    assert r.rc == 0, r
    return r.out


def caps_cfg(**sets) -> dict:
    return {k: list(sets.get(k, [])) for k in
            ("bounding", "effective", "permitted", "inheritable", "ambient")}


# --- capabilities ------------------------------------------------------------------
SETS = dict(
    bounding=["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_BIND_SERVICE",
              "CAP_SYS_PTRACE", "CAP_NET_RAW"],
    permitted=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
    effective=["CAP_CHOWN", "CAP_KILL"],
    inheritable=["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_PTRACE"],
    ambient=["CAP_KILL", "CAP_NET_BIND_SERVICE"],
)


@pytest.mark.parametrize("uid,nnp", [(0, True), (0, False), (1000, True), (1000, False)])
def test_five_sets_exactly_as_configured_across_uid_change(oci, bundle, uid, nnp):
    """While the container waits in "created", its init has done everything
    but execve: the five sets are exactly the configured ones, for root and
    after the change to uid 1000. After execve the kernel's rules apply:
    a non-root process keeps only ambient in permitted/effective, root gets
    bounding | inheritable | ambient, or no more than it had under
    no_new_privs."""
    bundle.process["user"] = {"uid": uid, "gid": uid}
    bundle.process["noNewPrivileges"] = nnp
    bundle.process["capabilities"] = caps_cfg(**SETS)
    bundle.args("sh", "-c", STATUS)
    oci.ok("create", "--bundle", bundle.path, "c")
    pid = oci.state("c")["pid"]
    with open(f"/proc/{pid}/status") as f:
        st = status_fields(f.read())
    assert caps_of(st) == {"CapBnd": cap_mask(SETS["bounding"]),
                           "CapPrm": cap_mask(SETS["permitted"]),
                           "CapEff": cap_mask(SETS["effective"]),
                           "CapInh": cap_mask(SETS["inheritable"]),
                           "CapAmb": cap_mask(SETS["ambient"])}
    assert st["Uid"].split() == [str(uid)] * 4
    oci.ok("delete", "--force", "c")

    inside = caps_of(status_fields(run_out(oci, bundle)))
    amb, inh, bnd = (cap_mask(SETS[k]) for k in ("ambient", "inheritable", "bounding"))
    after_exec_prm = amb if uid else (bnd | inh | amb)
    if uid == 0 and nnp:
        after_exec_prm &= cap_mask(SETS["permitted"])
    assert inside == {"CapBnd": bnd, "CapInh": inh, "CapAmb": amb,
                      "CapPrm": after_exec_prm, "CapEff": after_exec_prm}


def test_no_capabilities_object_means_none(oci, bundle):
    bundle.process.pop("capabilities")
    bundle.process["user"] = {"uid": 0, "gid": 0}
    bundle.args("sh", "-c", STATUS)
    caps = caps_of(status_fields(run_out(oci, bundle)))
    assert caps == {"CapBnd": 0, "CapPrm": 0, "CapEff": 0, "CapInh": 0, "CapAmb": 0}


def test_all_capabilities_the_runtime_has(oci, bundle):
    with open("/proc/self/status") as f:
        host_bnd = caps_of(status_fields(f.read()))["CapBnd"]
    every = [c for i, c in enumerate(all_caps()) if host_bnd >> i & 1]
    bundle.process["capabilities"] = caps_cfg(bounding=every, effective=every,
                                              permitted=every)
    bundle.args("sh", "-c", STATUS)
    caps = caps_of(status_fields(run_out(oci, bundle)))
    assert caps["CapBnd"] == caps["CapEff"] == caps["CapPrm"] == host_bnd


def test_unknown_capability_warns_and_is_ignored(oci, bundle):
    bundle.process["capabilities"] = caps_cfg(bounding=["CAP_KILL", "CAP_FOO"],
                                              effective=["CAP_KILL"], permitted=["CAP_KILL"])
    bundle.args("sh", "-c", STATUS)
    r = oci.run(bundle)
    assert r.rc == 0, r
    assert "warning" in r.err and "CAP_FOO" in r.err and "process.capabilities.bounding" in r.err
    caps = caps_of(status_fields(r.out))
    assert caps["CapBnd"] == cap_mask(["CAP_KILL"])


def test_capset_refused_is_a_clear_error(oci, bundle):
    # effective outside permitted: the kernel refuses capset
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["capabilities"] = caps_cfg(bounding=["CAP_KILL"], effective=["CAP_SYS_ADMIN"])
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert line == ("ocirun: config.json: process.capabilities: capset: Operation not permitted:"
                    " effective CAP_SYS_ADMIN not in permitted"), line


def test_capability_the_host_does_not_have_is_named(oci, bundle):
    """A capability missing from the runtime's own bounding set (this host
    drops CAP_SYS_RESOURCE; runtime-tools' process_capabilities asks for
    all) is named, not the whole request."""
    with open("/proc/self/status") as f:
        bnd = int(next(ln for ln in f if ln.startswith("CapBnd:")).split()[1], 16)
    from ocirun.linux import caps as capmod
    absent = [n for i, n in enumerate(capmod.NAMES) if not bnd >> i & 1]
    if not absent:
        pytest.skip("this host's bounding set holds every capability")
    bundle.process["capabilities"] = caps_cfg(
        bounding=list(capmod.NAMES), effective=list(capmod.NAMES), permitted=list(capmod.NAMES))
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert line == ("ocirun: config.json: process.capabilities: capset: Operation not permitted: "
                    f"{', '.join(absent)} not in the runtime's own permitted capabilities "
                    "(e.g. dropped from the host's bounding set)"), line


# --- no_new_privs -----------------------------------------------------------------
@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(oci, bundle, nnp):
    bundle.process["noNewPrivileges"] = nnp
    bundle.args("sh", "-c", STATUS)
    st = status_fields(run_out(oci, bundle))
    assert st["NoNewPrivs"] == ("1" if nnp else "0")


def test_no_new_privileges_blocks_setuid_gain(oci, sbundle, sysc_bin):
    """A setuid-root binary does not make uid 1000 root under no_new_privs."""
    install(sbundle.rootfs, sysc_bin, "suidsysc")
    os.chmod(os.path.join(sbundle.rootfs, "bin/suidsysc"), 0o4755)
    sbundle.process["user"] = {"uid": 1000, "gid": 1000}
    for nnp, want in ((True, 1000), (False, 0)):
        sbundle.process["noNewPrivileges"] = nnp
        sbundle.args("suidsysc", "107")  # geteuid
        assert parse_sysc(run_out(oci, sbundle)) == (want, 0), nnp


# --- seccomp: podman's default profile ------------------------------------------------
def test_podman_profile(oci, sbundle):
    bnd = sbundle.process["capabilities"]["bounding"] = list(DEFAULT_CAPS)
    for k in ("effective", "permitted"):
        sbundle.process["capabilities"][k] = list(DEFAULT_CAPS)
    sbundle.linux["seccomp"] = podman_seccomp(bnd)
    sbundle.sh(STATUS + "; echo busybox-ok: $(echo hi | tr a-z A-Z) $(ls / | wc -l);"
               f" sysc {NR['swapon']} s:/dev/null 0; sysc {NR['add_key']} s:user s:k s:v 1 -3;"
               f" sysc {NR['request_key']} s:user s:k 0 0; hostname new 2>&1; "
               f"sysc {NR['sethostname']} s:x 1; swapon /dev/null 2>&1; "
               "ls /nope 2>&1; mkdir /d && echo mkdir-ok")
    lines = run_out(oci, sbundle).splitlines()
    st = status_fields("\n".join(lines[:8]))
    assert st["Seccomp"] == "2"
    assert int(st.get("Seccomp_filters", "1")) >= 1
    rest = lines[len(st):]
    assert rest[0].startswith("busybox-ok: HI ")
    assert parse_sysc(rest[1]) == (-1, 1)    # swapon: EPERM (explicit rule)
    assert parse_sysc(rest[2]) == (-1, 38)   # add_key: ENOSYS (defaultErrnoRet)
    assert parse_sysc(rest[3]) == (-1, 38)   # request_key
    assert "Operation not permitted" in rest[4]  # busybox hostname
    assert parse_sysc(rest[5]) == (-1, 1)    # sethostname without CAP_SYS_ADMIN
    assert "Operation not permitted" in rest[6]
    assert "No such file" in rest[7] and rest[8] == "mkdir-ok"


def test_podman_profile_with_sys_admin_allows_sethostname(oci, sbundle):
    caps = DEFAULT_CAPS + ["CAP_SYS_ADMIN"]
    sbundle.process["capabilities"] = caps_cfg(bounding=caps, effective=caps, permitted=caps)
    sbundle.linux["seccomp"] = podman_seccomp(caps)
    sbundle.sh(f"sysc {NR['sethostname']} s:newname 7; hostname")
    out = run_out(oci, sbundle).splitlines()
    assert parse_sysc(out[0]) == (0, 0) and out[1] == "newname"


def test_seccomp_without_no_new_privs_root_caps(oci, sbundle):
    """No noNewPrivileges: the filter is loaded while the init still has
    CAP_SYS_ADMIN (before the capabilities are dropped)."""
    sbundle.process["noNewPrivileges"] = False
    sbundle.process["user"] = {"uid": 1000, "gid": 1000}
    sbundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}
    sbundle.sh(STATUS + f"; sysc {NR['getpid']}")
    lines = run_out(oci, sbundle).splitlines()
    st = status_fields("\n".join(lines[:-1]))
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "0" and st["CapEff"] == "0" * 16
    assert parse_sysc(lines[-1]) == (-1, 42)


# An allowlist with what a small static program needs, and no socket calls:
# after its filter is loaded the init only reads, writes, opens the exec
# fifo, resets signals and calls execve (crun's seccomp-errno-default list).
MINIMAL_ALLOWLIST = [
    "read", "write", "exit", "exit_group", "rt_sigreturn", "brk", "mmap", "munmap",
    "mprotect", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64",
    "futex", "getrandom", "close", "execve", "openat", "newfstatat", "fstat", "access",
    "readlink", "getuid", "getgid", "geteuid", "getegid", "prctl", "uname", "readlinkat",
    "fcntl", "dup", "dup2", "dup3", "lseek", "ioctl", "getcwd", "chdir", "rt_sigaction",
    "rt_sigprocmask", "sigaltstack", "clock_gettime", "gettid", "tgkill", "getpid",
    "getppid", "wait4"]


@pytest.mark.parametrize("default", ["SCMP_ACT_ERRNO", "SCMP_ACT_KILL"])
@pytest.mark.parametrize("how", ["run", "create-start"])
def test_minimal_allowlist_without_socket_calls(oci, sbundle, default, how):
    sbundle.process["noNewPrivileges"] = True
    sbundle.linux["seccomp"] = {"defaultAction": default, "syscalls": [
        {"names": MINIMAL_ALLOWLIST, "action": "SCMP_ACT_ALLOW"}]}
    sbundle.args("echo", "hi")
    if how == "run":
        r = oci.run(sbundle)
        assert r.rc == 0 and r.out == "hi\n", r
        return
    out = sbundle.path + "/out"
    with open(out, "w") as f:  # the container writes here after start
        subprocess.run([OCIRUN, "--root", oci.root, "create", "-b", sbundle.path, "mini"],
                       stdout=f, stdin=subprocess.DEVNULL, check=True, timeout=60)
    oci.ok("start", "mini")
    oci.wait_status("mini", "stopped")
    oci.ok("delete", "mini")
    with open(out) as f:
        assert f.read() == "hi\n"


@pytest.mark.parametrize("rule,want", [
    ({"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}, (-1, 1)),  # default errno EPERM
    ({"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}, (-1, 5)),
    # arguments: only swapon(..., flags=7) is refused; flags=0 reaches the kernel (EPERM
    # without CAP_SYS_ADMIN would hide that: use ENOENT from a missing path instead)
    ({"names": ["swapon"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
      "args": [{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}]}, (-1, 33)),
])
def test_seccomp_rules(oci, sbundle, rule, want):
    sbundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}
    nr = NR[rule["names"][0]]
    sbundle.sh(f"sysc {nr} s:/nope 7; sysc {nr} s:/nope 0")
    out = run_out(oci, sbundle).splitlines()
    assert parse_sysc(out[0]) == want
    if rule.get("args"):
        assert parse_sysc(out[1])[1] != 33


def test_seccomp_kill_process(oci, sbundle):
    sbundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["sysinfo"], "action": "SCMP_ACT_KILL_PROCESS"}]}
    sbundle.sh(f"sysc {NR['sysinfo']} 0; echo survived $?")
    r = oci.run(sbundle)
    assert r.rc == 0 and "survived 159" in r.out and "ret=" not in r.out, r
    sbundle.args("sysc", str(NR["sysinfo"]), "0")
    assert oci.run(sbundle).rc == 128 + 31  # SIGSYS


# --- seccomp: SCMP_ACT_NOTIFY -----------------------------------------------------------
class Agent:
    """A seccomp agent: receives the listener fd and state over listenerPath
    and answers every mkdir() with EXDEV (18) and getpid() with 4242."""

    def __init__(self, path: str) -> None:
        from ocirun.kernel import seccomp as ks
        self.ks = ks
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.msg: dict | None = None
        self.fds: list[int] = []
        self.seen: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                while True:
                    more = conn.recv(65536)
                    if not more:
                        break
                    data += more
            self.msg, self.fds = json.loads(data), fds
            fd = fds[0]
            while True:
                try:
                    n = self.ks.notif_recv(fd)
                except OSError:
                    return  # the filter's last user is gone
                self.seen.append(n["nr"])
                if n["nr"] == NR["getpid"]:
                    self.ks.notif_send(fd, n["id"], val=4242)
                else:
                    self.ks.notif_send(fd, n["id"], error=-18)
        except BaseException as e:  # reported by the test
            self.error = e

    def close(self) -> None:
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.thread.join(5)


def test_notify_listener_gets_fd_state_and_answers(oci, sbundle, tmp_path):
    path = str(tmp_path / "agent.sock")
    agent = Agent(path)
    try:
        sbundle.linux["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
            "listenerMetadata": "meta-42",
            "syscalls": [{"names": ["mkdir", "mkdirat", "getpid"], "action": "SCMP_ACT_NOTIFY"}]}
        sbundle.sh(f"mkdir /made 2>&1; ls -d /made 2>&1; sysc {NR['getpid']}")
        r = oci.run(sbundle, "notify")
        assert r.rc == 0, r
        out = r.out.splitlines()
        assert "Invalid cross-device link" in out[0]   # the agent's EXDEV
        assert "No such file" in out[1]                # nothing was created
        assert parse_sysc(out[2]) == (4242, 0)         # the agent's return value
        assert agent.error is None, agent.error
        msg = agent.msg
        assert msg["fds"] == ["seccompFd"] and msg["metadata"] == "meta-42"
        assert msg["state"]["id"] == "notify" and msg["state"]["status"] == "creating"
        assert msg["pid"] == msg["state"]["pid"] > 0
        assert msg["state"]["bundle"] == sbundle.path
        assert len(agent.fds) == 1
        assert os.readlink(f"/proc/self/fd/{agent.fds[0]}") == "anon_inode:seccomp notify"
        assert NR["getpid"] in agent.seen
    finally:
        agent.close()


def test_listener_without_notify_rules_still_gets_state_and_fd(oci, sbundle, tmp_path):
    """A listenerPath with no SCMP_ACT_NOTIFY rule: the agent still gets the
    state and a listener fd (as crun sends them; crun's own test waits in
    accept() for it), and the container runs."""
    path = str(tmp_path / "agent.sock")
    agent = Agent(path)
    try:
        sbundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
                                    "listenerMetadata": "no-rules"}
        sbundle.sh("echo ran")
        r = oci.run(sbundle, "norules")
        assert r.rc == 0 and r.out.strip() == "ran", r
        agent.thread.join(5)
        assert agent.error is None, agent.error
        assert agent.msg["metadata"] == "no-rules"
        assert agent.msg["state"]["id"] == "norules"
        assert agent.msg["state"]["status"] == "creating"
        assert len(agent.fds) == 1
        assert os.readlink(f"/proc/self/fd/{agent.fds[0]}") == "anon_inode:seccomp notify"
    finally:
        agent.close()


def test_listener_path_without_notify_rules_is_only_tried(oci, sbundle, tmp_path):
    """runtime-spec: with no SCMP_ACT_NOTIFY action the path is ignored, so
    a missing agent is no error."""
    sbundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                "listenerPath": str(tmp_path / "nobody.sock")}
    sbundle.sh("echo ran")
    r = oci.run(sbundle, "noagent")
    assert r.rc == 0 and r.out.strip() == "ran", r


# --- seccomp: the BPF cache in a real container start ----------------------------------
def _timed_run(oci, bundle, env=None) -> float:
    t = time.perf_counter()
    r = oci.run(bundle, "cache", env=env)
    dt = time.perf_counter() - t
    assert r.rc == 0, r
    return dt


def test_bpf_cache_used_in_container_start(oci, bundle, tmp_path):
    """First start compiles (dlopen libseccomp) and stores the program under
    <root>/.cache/seccomp; the next start reads it and never loads
    libseccomp (seen with LD_DEBUG=files). Times are printed for the report."""
    bundle.linux["seccomp"] = podman_seccomp(bundle.process["capabilities"]["bounding"])
    bundle.args("true")
    cache = os.path.join(oci.root, ".cache", "seccomp")
    debug = str(tmp_path / "ld")
    env = dict(os.environ, LD_DEBUG="files", LD_DEBUG_OUTPUT=debug)

    def libseccomp_loaded() -> bool:
        found = False
        for name in os.listdir(tmp_path):
            if name.startswith("ld."):
                with open(tmp_path / name, errors="replace") as f:
                    found |= "libseccomp" in f.read()
                os.unlink(tmp_path / name)
        return found

    _timed_run(oci, bundle, env)
    assert libseccomp_loaded()
    entries = os.listdir(cache)
    assert len(entries) == 1
    st = os.stat(os.path.join(cache, entries[0]))
    assert st.st_mode & 0o777 == 0o600
    _timed_run(oci, bundle, env)
    assert not libseccomp_loaded()
    assert os.listdir(cache) == entries

    miss, hit = [], []
    for _ in range(5):
        for name in os.listdir(cache):
            os.unlink(os.path.join(cache, name))
        miss.append(_timed_run(oci, bundle))
        hit.append(_timed_run(oci, bundle))
    print(f"\nBPF cache, `ocirun run` with podman's profile: miss median "
          f"{statistics.median(miss) * 1000:.1f} ms, hit median "
          f"{statistics.median(hit) * 1000:.1f} ms")


# --- seccomp / capabilities: bad input ---------------------------------------------------
@pytest.mark.parametrize("sc,field", [
    ({"defaultAction": "SCMP_ACT_FOO"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_BAR"}]},
     "linux.seccomp.syscalls[0].action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_NOPE"}]}]},
     "linux.seccomp.syscalls[0].args[0].op"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]},
     "linux.seccomp.architectures[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]},
     "linux.seccomp.flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/agent.sock",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath"),
    ({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath"),
])
def test_bad_seccomp_is_one_line_naming_the_field(oci, bundle, sc, field):
    bundle.linux["seccomp"] = sc
    bundle.args("true")
    for cmd in (("run",), ("create",)):
        line = oci.fail(*cmd, "--bundle", bundle.path, "bad")
        assert field in line, line
        assert oci.ids() == []
        assert not subprocess.run(["pgrep", "-f", f"ocirun.*{bundle.path}"],
                                  capture_output=True).stdout


def test_listener_path_not_a_socket_fails_cleanly(oci, sbundle, tmp_path):
    path = tmp_path / "plain"
    path.write_text("")
    sbundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(path),
                                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    sbundle.args("true")
    line = oci.fail("create", "--bundle", sbundle.path, "bad")
    assert "seccomp" in line and str(path) in line
    assert oci.ids() == []


# --- LSM ----------------------------------------------------------------------------
def _lsm_on(name: str) -> bool:
    from ocirun.linux import lsm
    return lsm.apparmor_enabled() if name == "apparmor" else lsm.selinux_enabled()


@pytest.mark.parametrize("where,key,value,lsm_name", [
    ("process", "apparmorProfile", "ocirun-test-profile", "apparmor"),
    ("process", "selinuxLabel", "system_u:system_r:container_t:s0", "selinux"),
    ("linux", "mountLabel", "system_u:object_r:container_file_t:s0", "selinux"),
])
def test_lsm_label(oci, bundle, where, key, value, lsm_name):
    getattr(bundle, where)[key] = value
    bundle.save()
    bundle.args("cat", "/proc/self/attr/current")
    if _lsm_on(lsm_name):  # applied: the process runs under the label
        if lsm_name == "apparmor":
            pytest.fail("AppArmor host: load the profile first (not written yet)")
        out = run_out(oci, bundle)
        if key == "selinuxLabel":
            assert out.strip("\0\n") == value
        return
    line = oci.fail("run", "--bundle", bundle.path, "lsm")
    assert f"{where}.{key}" in line and lsm_name.lower() in line.lower()
    assert oci.ids() == []


def test_apparmor_unconfined_accepted_without_apparmor(oci, bundle):
    bundle.process["apparmorProfile"] = "unconfined"
    bundle.args("true")
    assert oci.run(bundle).rc == 0


# --- session keyring -------------------------------------------------------------------
def _host_session_keyring() -> int:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(NR["keyctl"], 0, -3, 0)  # KEYCTL_GET_KEYRING_ID, SESSION


def test_new_session_keyring_per_container(oci, sbundle):
    sbundle.args("sysc", str(NR["keyctl"]), "0", "-3", "0")
    a = parse_sysc(run_out(oci, sbundle, cid="k1"))
    b = parse_sysc(run_out(oci, sbundle, cid="k2"))
    host = _host_session_keyring()
    assert a[0] > 0 and b[0] > 0 and host > 0
    assert len({a[0], b[0], host}) == 3
    same = parse_sysc(run_out(oci, sbundle, "--no-new-keyring", cid="k3"))
    assert same[0] == host


# --- process extras ----------------------------------------------------------------------
def test_personality_linux32(oci, bundle):
    bundle.linux["personality"] = {"domain": "LINUX32"}
    bundle.args("uname", "-m")
    assert run_out(oci, bundle).strip() in ("i686", "i386")


def test_io_priority(oci, sbundle):
    sbundle.process["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
    sbundle.args("sysc", str(NR["ioprio_get"]), "1", "0")  # IOPRIO_WHO_PROCESS, self
    ret, err = parse_sysc(run_out(oci, sbundle))
    assert err == 0 and ret == (2 << 13) | 6


def test_scheduler_and_exec_cpu_affinity(oci, bundle):
    bundle.process["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
    bundle.process["execCPUAffinity"] = {"initial": "0"}
    bundle.sh("grep -E '^policy' /proc/self/sched; cut -d' ' -f19 /proc/self/stat;"
              " grep Cpus_allowed_list /proc/self/status")
    out = run_out(oci, bundle).splitlines()
    assert out[0].split()[-1] == "3"  # SCHED_BATCH
    assert out[1] == "7"
    assert out[2].split()[-1] == "0"


def test_memory_policy(oci, bundle):
    if not os.path.exists("/proc/self/numa_maps"):
        pytest.fail("kernel without CONFIG_NUMA: memoryPolicy cannot be shown")
    bundle.linux["memoryPolicy"] = {"mode": "MPOL_INTERLEAVE", "nodes": "0"}
    bundle.args("grep", "-m1", "heap", "/proc/self/numa_maps")
    assert "interleave:0" in run_out(oci, bundle)


@pytest.mark.parametrize("where,key,value,field", [
    ("process", "ioPriority", {"class": "IOPRIO_CLASS_NOPE", "priority": 1},
     "process.ioPriority.class"),
    ("process", "scheduler", {"policy": "SCHED_OTHER", "nice": 40}, "process.scheduler.nice"),
    ("linux", "personality", {"domain": "LINUX64"}, "linux.personality.domain"),
    ("linux", "memoryPolicy", {"mode": "MPOL_BIND"}, "linux.memoryPolicy"),
])
def test_bad_process_extras(oci, bundle, where, key, value, field):
    getattr(bundle, where)[key] = value
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "x")
    assert field in line
    assert oci.ids() == []


# --- idmapped mounts (runtime-spec 1.2) ---------------------------------------------------
def _idmap_source(tmp_path) -> str:
    src = tmp_path / "idsrc"
    src.mkdir()
    for name, owner in (("root-file", 0), ("user-file", 1000), ("far-file", 9000)):
        (src / name).write_text(name)
        os.chown(src / name, owner, owner)
    return str(src)


def _idmap_mount(bundle, tmp_path, opt: str, host_id: int, size: int) -> str:
    """/idm: an idmapped bind (0 -> host_id) of the files _idmap_source makes."""
    src = _idmap_source(tmp_path)
    m = [{"containerID": 0, "hostID": host_id, "size": size}]
    bundle.config["mounts"].append({"destination": "/idm", "type": "bind", "source": src,
                                    "options": ["bind", opt], "uidMappings": m,
                                    "gidMappings": m})
    return src


@pytest.mark.parametrize("opt", ["idmap", "ridmap"])
def test_idmapped_bind_mount_shows_mapped_owner(oci, bundle, tmp_path, opt):
    src = _idmap_mount(bundle, tmp_path, opt, host_id=5000, size=2000)
    bundle.sh("stat -c '%n %u:%g' /idm/root-file /idm/user-file /idm/far-file;"
              " grep ' /idm ' /proc/self/mountinfo | grep -c idmapped")
    out = run_out(oci, bundle).splitlines()
    assert out[0] == "/idm/root-file 5000:5000"   # on disk 0 -> shown as 5000
    assert out[1] == "/idm/user-file 6000:6000"
    assert out[2] == "/idm/far-file 65534:65534"  # outside the mapping: overflow id
    assert out[3] == "1"
    assert os.stat(os.path.join(src, "root-file")).st_uid == 0  # the source is unchanged


def _userns(bundle) -> None:
    bundle.linux["namespaces"].append({"type": "user"})
    bundle.save()


@pytest.mark.parametrize("opt", ["idmap", "ridmap"])
def test_idmapped_bind_mount_in_a_user_namespace(oci, bundle, tmp_path, shifted_rootfs, opt):
    """Inside the container's own user namespace the init cannot idmap a
    host mount (the superblock is the host's): the runtime prepares it on
    the host and passes the mount. On-disk 0 -> host 100000 = root inside."""
    from ocitest import SHIFT
    _userns(bundle)
    src = _idmap_mount(bundle, tmp_path, opt, host_id=SHIFT, size=65536)
    bundle.sh("stat -c '%n %u:%g' /idm/root-file /idm/user-file /idm/far-file; id -u;"
              " grep ' /idm ' /proc/self/mountinfo | grep -c idmapped")
    out = run_out(oci, bundle).splitlines()
    assert out == ["/idm/root-file 0:0", "/idm/user-file 1000:1000", "/idm/far-file 9000:9000",
                   "0", "1"], out
    assert os.stat(os.path.join(src, "root-file")).st_uid == 0


def test_bind_source_the_user_namespace_cannot_reach(oci, bundle, tmp_path, shifted_rootfs):
    """crun's mount-userns-bind-mount: the source sits under a directory
    the container's root (host uid 100000) cannot enter (pytest's tmp dirs
    are 0700 root); the runtime opens it on the host, as runc and crun do."""
    closed = tmp_path / "closed"
    (closed / "m").mkdir(parents=True)
    (closed / "m" / "f").write_text("reachable\n")
    closed.chmod(0)
    _userns(bundle)
    bundle.config["mounts"].append({"destination": "/data", "type": "bind",
                                    "source": str(closed / "m"), "options": ["rbind", "ro"]})
    bundle.sh("cat /data/f; touch /data/g 2>&1 | grep -c Read-only")
    try:
        assert run_out(oci, bundle).split() == ["reachable", "1"]
    finally:
        closed.chmod(0o755)


def test_bind_source_missing_in_a_user_namespace_is_one_line(oci, bundle, tmp_path,
                                                              shifted_rootfs):
    _userns(bundle)
    m = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["mounts"].append({"destination": "/idm", "type": "bind", "options": ["idmap"],
                                    "source": str(tmp_path / "nope"), "uidMappings": m,
                                    "gidMappings": m})
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert line.startswith("ocirun: mounts[") and "bind source" in line and \
        "No such file" in line, line
    assert oci.ids() == []


def test_idmap_without_mappings_is_a_clear_error(oci, bundle, tmp_path):
    src = _idmap_source(tmp_path)
    bundle.config["mounts"].append({"destination": "/idm", "type": "bind", "source": src,
                                    "options": ["bind", "idmap"]})
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert "mounts[" in line and "uidMappings" in line
    assert oci.ids() == []


def test_idmap_needs_a_bind_mount(oci, bundle):
    m = [{"containerID": 0, "hostID": 5000, "size": 10}]
    bundle.config["mounts"].append({"destination": "/idm", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["idmap"], "uidMappings": m, "gidMappings": m})
    bundle.args("true")
    line = oci.fail("run", "--bundle", bundle.path, "t")
    assert "mounts[" in line and "bind" in line
