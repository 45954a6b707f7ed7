"""NOTIFY_SOCKET: the container's READY reaches the host's socket through
ocirun (runc's way: /run/notify/notify.sock inside, READY + MAINPID +
BARRIER=1 outside). Real containers; the host side is a datagram socket
of the test's; the container side a 10-line static C sender, tests/helpers/sdn.c
(busybox has no sd_notify)."""
from __future__ import annotations

import itertools
import os
import socket
import subprocess
import threading
import time

import pytest

from ocitest import OCIRUN

SDN_SRC = os.path.join(os.path.dirname(__file__), "helpers", "sdn.c")

_ids = itertools.count()


def new_id() -> str:
    return f"ntf{os.getpid()}x{next(_ids)}"


@pytest.fixture(scope="session")
def sdn_bin(tmp_path_factory):
    """Built here, or (the cgroup v2 guest has no compiler) taken from
    $OCIRUN_TEST_HELPERS, where tools/vm/test-cgroupv2.sh built it."""
    pre = os.path.join(os.environ.get("OCIRUN_TEST_HELPERS", "/nonexistent"), "sdn")
    if os.path.exists(pre):
        return pre
    d = tmp_path_factory.mktemp("sdn")
    subprocess.run(["gcc", "-static", "-Os", "-o", str(d / "sdn"), SDN_SRC],
                   check=True, capture_output=True)
    return str(d / "sdn")


@pytest.fixture
def nbundle(bundle, sdn_bin):
    import shutil
    shutil.copy2(sdn_bin, os.path.join(bundle.rootfs, "bin", "sdn"))
    return bundle


class Host:
    """The host's notify socket (what systemd would hold): records each
    datagram and closes the fds that come with it (the barrier's pipe)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addr = path if not path.startswith("@") else "\0" + path[1:]
        self.sock.bind(self.addr)
        self.stopping = False
        self.got: list[bytes] = []
        self.fds_seen = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.sock, 4096, 4)
            except OSError:
                return
            if self.stopping:
                return
            self.got.append(msg)
            self.fds_seen += len(fds)
            for fd in fds:
                os.close(fd)
            if msg.startswith(b"BARRIER="):
                return

    def close(self) -> None:
        self.stopping = True
        if self.thread.is_alive():  # wake its recv
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"", self.addr)
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def host(tmp_path):
    h = Host(str(tmp_path / "host-notify.sock"))
    yield h
    h.close()


def env_with(path: str) -> dict:
    return dict(os.environ, NOTIFY_SOCKET=path)


def test_foreground_run_relays_ready_with_our_pid(oci, nbundle, host):
    nbundle.sh("echo $NOTIFY_SOCKET; grep ' /run/notify ' /proc/self/mountinfo | "
               "grep -c ' ro,'; sdn 'STATUS=starting'; sdn 'READY=1'; echo sent=$?")
    cid = new_id()
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "run", "--bundle", nbundle.path, cid],
                         env=env_with(host.path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.split() == ["/run/notify/notify.sock", "1", "sent=0"]
    host.thread.join(5)
    # only READY is relayed; MAINPID is the runtime, which stays in front
    assert host.got == [b"READY=1\n", f"MAINPID={p.pid}\n".encode(), b"BARRIER=1"]
    assert host.fds_seen == 1
    assert oci.ids() == []


def test_start_waits_for_ready_and_names_the_init(oci, nbundle, host):
    nbundle.sh("sleep 0.5; sdn 'READY=1'; sleep 30")
    cid = new_id()
    oci.ok("create", "--bundle", nbundle.path, cid, env=env_with(host.path))
    assert os.path.isdir(os.path.join(oci.root, cid, "notify"))
    pid = oci.state(cid)["pid"]
    t = time.monotonic()
    oci.ok("start", cid, env=env_with(host.path))
    assert time.monotonic() - t >= 0.4  # it returned after READY, not at once
    host.thread.join(5)
    assert host.got == [b"READY=1\n", f"MAINPID={pid}\n".encode(), b"BARRIER=1"]
    assert oci.state(cid)["status"] == "running"
    oci.ok("delete", "--force", cid)
    assert not os.path.exists(os.path.join(oci.root, cid))


def test_detached_run_relays_ready(oci, nbundle, host):
    nbundle.sh("sdn 'READY=1'; sleep 30")
    cid = new_id()
    oci.ok("run", "--detach", "--bundle", nbundle.path, cid, env=env_with(host.path))
    pid = oci.state(cid)["pid"]
    host.thread.join(5)
    assert host.got == [b"READY=1\n", f"MAINPID={pid}\n".encode(), b"BARRIER=1"]
    oci.ok("delete", "--force", cid)


def test_a_process_that_exits_without_ready_sends_nothing(oci, nbundle, host):
    nbundle.sh("exit 3")
    r = oci.run(nbundle, new_id(), env=env_with(host.path))
    assert r.rc == 3, r
    cid = new_id()
    oci.ok("create", "--bundle", nbundle.path, cid, env=env_with(host.path))
    oci.ok("start", cid, env=env_with(host.path))  # returns: the init has exited
    oci.ok("delete", cid)
    assert host.got == []


def test_abstract_host_socket(oci, nbundle):
    h = Host(f"@ocirun-test-{os.getpid()}")
    try:
        nbundle.sh("sdn 'READY=1'")
        r = oci.run(nbundle, new_id(), env=env_with(h.path))
        assert r.rc == 0, r
        h.thread.join(5)
        assert h.got[0] == b"READY=1\n" and h.got[2] == b"BARRIER=1"
    finally:
        h.close()


def test_no_host_listening_is_a_warning(oci, nbundle, tmp_path):
    nbundle.sh("sdn 'READY=1'; echo ran")
    r = oci.run(nbundle, new_id(), env=env_with(str(tmp_path / "nobody.sock")))
    assert r.rc == 0 and r.out.strip() == "ran", r
    assert "NOTIFY_SOCKET" in r.err and "Traceback" not in r.err


def test_start_with_notify_socket_after_a_plain_create(oci, nbundle, host):
    """The container has no socket to send to: start neither waits nor fails."""
    nbundle.sh("sleep 30")
    cid = new_id()
    oci.ok("create", "--bundle", nbundle.path, cid)
    oci.ok("start", cid, env=env_with(host.path), timeout=10)
    assert oci.state(cid)["status"] == "running"
    oci.ok("delete", "--force", cid)
    assert host.got == []


def test_config_env_notify_socket_is_replaced(oci, nbundle, host):
    nbundle.process["env"] = nbundle.process.get("env", []) + ["NOTIFY_SOCKET=/elsewhere"]
    nbundle.sh("env | grep -c NOTIFY_SOCKET; echo $NOTIFY_SOCKET")
    r = oci.run(nbundle, new_id(), env=env_with(host.path))
    assert r.rc == 0 and r.out.split() == ["1", "/run/notify/notify.sock"], r


def _systemd_pid1() -> bool:
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


@pytest.mark.skipif(not _systemd_pid1(), reason="needs systemd as PID 1 (the cgroup v2 "
                    "guest of tools/vm/test-cgroupv2.sh runs it)")
def test_systemd_type_notify_unit_becomes_active_on_ready(oci, nbundle):
    """A Type=notify unit running `ocirun run`: systemd-run returns once the
    unit is active, i.e. once the container's READY reached systemd, and
    the unit's main process is ocirun (MAINPID), which stays in front."""
    # (the shell is the container's PID 1: without a TERM trap it would
    # ignore the stop's SIGTERM, relayed by ocirun, until its sleep ends)
    nbundle.sh("trap 'exit 0' TERM; sleep 0.3; sdn 'READY=1'; sleep 30 & wait")
    cid = new_id()
    unit = f"ocirun-notify-{cid}"
    r = subprocess.run(["systemd-run", f"--unit={unit}", "-p", "Type=notify",
                        "-p", "TimeoutStartSec=20", "--collect",
                        OCIRUN, "--root", oci.root, "run", "--bundle", nbundle.path, cid],
                       capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r
        show = subprocess.run(["systemctl", "show", "-p", "ActiveState", "-p", "MainPID",
                               unit], capture_output=True, text=True).stdout
        props = dict(line.split("=", 1) for line in show.split())
        assert props["ActiveState"] == "active", show
        with open(f"/proc/{props['MainPID']}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"run" in argv and cid.encode() in argv, argv
        assert oci.state(cid)["status"] == "running"
        t = time.monotonic()
        subprocess.run(["systemctl", "stop", unit], capture_output=True, timeout=60)
        assert time.monotonic() - t < 10  # the TERM reached the container through ocirun
        assert oci.ids() == []            # and ocirun cleaned up after it
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, timeout=60)


def test_foreground_run_with_a_terminal_relays_ready(oci, nbundle, host):
    """run -t: the pty proxy serves the notify socket too (READY relayed
    while the terminal is live; BARRIER sent, not waited for there)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "terminal"))
    from termhelpers import Reader, child, wait_status
    from ocirun.linux import terminal
    nbundle.process["terminal"] = True
    nbundle.sh("sdn 'READY=1'; echo notified; read line; echo got $line")
    outer = terminal.open_pty()
    cid = new_id()
    env = env_with(host.path)

    def run() -> None:
        os.close(outer.master)
        terminal.make_controlling(outer.slave)
        os.execve(OCIRUN, [OCIRUN, "--root", oci.root, "run", "--bundle", nbundle.path, cid],
                  env)
    pid = child(run)
    try:
        r = Reader(outer.master)
        r.expect("notified")
        host.thread.join(5)
        assert host.got[:2] == [b"READY=1\n", f"MAINPID={pid}\n".encode()]
        assert host.got[2] == b"BARRIER=1"
        os.write(outer.master, b"still-live\r")  # the terminal still works after READY
        r.expect("got still-live")
        assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        outer.close()
    assert oci.ids() == []
