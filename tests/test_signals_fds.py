"""Foreground run: signals to ocirun reach the container process, exit
codes for normal exit and death by signal, poststop/delete afterwards;
`run -d` leaves the container running; the caller's stdio pipes are the
container's own fds (no copying); --preserve-fds and LISTEN_FDS."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

import pytest

from ocitest import OCIRUN


class Fg:
    """`ocirun run` in the foreground with stdout on a pipe we read."""

    def __init__(self, oci, bundle, cid: str) -> None:
        self.oci, self.cid = oci, cid
        self.p = subprocess.Popen([OCIRUN, "--root", oci.root, "run", "-b", bundle.path, cid],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.buf = b""

    def expect(self, text: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while text.encode() not in self.buf:
            left = end - time.monotonic()
            r, _, _ = select.select([self.p.stdout], [], [], max(left, 0))
            assert r, f"{text!r} not seen; got {self.buf!r}"
            chunk = os.read(self.p.stdout.fileno(), 65536)
            assert chunk, f"EOF before {text!r}; got {self.buf!r} err={self.p.stderr.read()!r}"
            self.buf += chunk

    def wait(self) -> int:
        rc = self.p.wait(timeout=30)
        self.buf += self.p.stdout.read()
        return rc

    def close(self) -> None:
        if self.p.poll() is None:
            subprocess.run([OCIRUN, "--root", self.oci.root, "kill", self.cid, "KILL"],
                           capture_output=True)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()
        self.p.stderr.close()


@pytest.fixture
def fg(oci, bundle):
    started = []

    def start(cid: str = "fg") -> Fg:
        f = Fg(oci, bundle, cid)
        started.append(f)
        return f
    yield start
    for f in started:
        f.close()


TRAPPED = ("TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH", "CONT")


def test_signals_to_ocirun_reach_the_container(bundle, fg, oci):
    # PID 1 only receives signals it has a handler for: a shell with traps
    traps = " ".join(f"trap 'echo got-{s}' {s};" for s in TRAPPED if s != "TERM")
    bundle.sh(traps + " trap 'echo got-TERM; exit 42' TERM; echo ready;"
              " while :; do sleep 0.02; done")
    f = fg()
    f.expect("ready")
    for s in TRAPPED:
        if s == "TERM":
            continue
        f.p.send_signal(getattr(signal, "SIG" + s))
        f.expect(f"got-{s}")
    f.p.send_signal(signal.SIGTERM)
    assert f.wait() == 42
    assert b"got-TERM" in f.buf
    assert oci.ids() == []  # deleted after exit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_forwarded_signal_kills_process_128_plus_n(bundle, fg, oci, sig):
    # without a pid namespace the process is not a namespace init, so a
    # default-action signal kills it (as it would under runc)
    bundle.ns("mount", "ipc", "uts", "network")
    bundle.config["linux"]["maskedPaths"] = []
    bundle.sh("echo ready; exec sleep 1000")
    f = fg()
    f.expect("ready")
    pid = _wait_running(oci, "fg", b"sleep")
    f.p.send_signal(sig)
    assert f.wait() == 128 + sig
    assert not os.path.exists(f"/proc/{pid}/cmdline") or \
        not open(f"/proc/{pid}/cmdline", "rb").read()
    assert oci.ids() == []


def _wait_running(oci, cid: str, argv0: bytes) -> int:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        r = oci("state", cid)
        if r.rc == 0 and json.loads(r.out)["status"] == "running":
            pid = json.loads(r.out)["pid"]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if fh.read().split(b"\0")[0] == argv0:
                        return pid
            except FileNotFoundError:
                pass
        time.sleep(0.01)
    raise AssertionError(f"{cid} never ran {argv0!r}")


@pytest.mark.parametrize("sig,code", [("KILL", 137), ("TERM", 143)])
def test_kill_from_outside_exit_code_and_poststop(bundle, fg, oci, tmp_path, sig, code):
    mark = tmp_path / "poststop"
    bundle.config["hooks"] = {"poststop": [{"path": "/bin/sh",
                                            "args": ["sh", "-c", f"cat > {mark}"]}]}
    if sig == "TERM":  # a pid-namespace init ignores TERM without a handler
        bundle.ns("mount", "ipc", "uts", "network")
        bundle.config["linux"]["maskedPaths"] = []
    bundle.sh("echo ready; exec sleep 1000")
    f = fg()
    f.expect("ready")
    _wait_running(oci, "fg", b"sleep")
    oci.ok("kill", "fg", sig)
    assert f.wait() == code
    state = json.loads(mark.read_text())  # poststop got the state on stdin
    assert state["id"] == "fg" and state["status"] == "stopped"
    assert oci.ids() == []


def test_pid1_without_handler_ignores_term_then_kill(bundle, fg, oci):
    bundle.sh("echo ready; exec sleep 1000")
    f = fg()
    f.expect("ready")
    _wait_running(oci, "fg", b"sleep")
    f.p.send_signal(signal.SIGTERM)  # forwarded; the namespace init ignores it
    time.sleep(0.2)  # nothing to wait for: checking that nothing happens
    assert f.p.poll() is None and oci.state("fg")["status"] == "running"
    oci.ok("kill", "fg", "KILL")
    assert f.wait() == 137


@pytest.mark.parametrize("code", [0, 3, 255])
def test_normal_exit_code(bundle, fg, code):
    bundle.sh(f"echo bye; exit {code}")
    f = fg()
    assert f.wait() == code and f.buf == b"bye\n"


def test_run_detach_returns_at_once_container_outlives_ocirun(oci, bundle):
    bundle.args("sleep", "1000")
    t = time.monotonic()
    p = subprocess.Popen([OCIRUN, "--root", oci.root, "run", "-d", "-b", bundle.path, "d"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the container holds the stdio pipes; ocirun itself must exit
    assert p.wait(timeout=20) == 0
    assert time.monotonic() - t < 10
    st = oci.state("d")
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != p.pid
    with open(f"/proc/{st['pid']}/status") as f:  # no parent-death signal killed it
        assert "State:\tS" in f.read()
    p.stdout.close()
    p.stderr.close()


def _pipe_ino(fd: int) -> str:
    return f"pipe:[{os.fstat(fd).st_ino}]"


def test_stdio_pipes_go_straight_to_the_container(oci, bundle):
    """conmon / the shim pass pipes: the container's fds 0-2 are those very
    pipes, ocirun copies nothing."""
    bundle.sh("for i in 0 1 2; do echo fd$i=$(readlink /proc/$$/fd/$i) >&2; done;"
              " cat; echo out")
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        p = subprocess.Popen([OCIRUN, "--root", oci.root, "run", "-b", bundle.path, "io"],
                             stdin=r0, stdout=w1, stderr=w2)
        for fd in (r0, w1, w2):
            os.close(fd)
        want = {"fd0": _pipe_ino(w0), "fd1": _pipe_ino(r1), "fd2": _pipe_ino(r2)}
        os.write(w0, b"through\n")
        os.close(w0)
        w0 = -1
        assert p.wait(timeout=30) == 0
        out = os.read(r1, 65536)
        err = os.read(r2, 65536).decode()
    finally:
        for fd in (w0, r1, r2):
            if fd >= 0:
                os.close(fd)
    got = dict(ln.split("=", 1) for ln in err.split())
    assert got == want
    assert out == b"through\nout\n"


def test_stdio_pipes_detached_and_exec(oci, bundle):
    bundle.args("sleep", "1000")
    r1, w1 = os.pipe()
    try:
        subprocess.run([OCIRUN, "--root", oci.root, "run", "-d", "-b", bundle.path, "dp"],
                       stdin=subprocess.DEVNULL, stdout=w1, stderr=subprocess.DEVNULL,
                       check=True, timeout=30)
        pid = oci.state("dp")["pid"]
        assert os.readlink(f"/proc/{pid}/fd/1") == _pipe_ino(r1)
        p = subprocess.run([OCIRUN, "--root", oci.root, "exec", "dp", "readlink",
                            "/proc/self/fd/1"], stdout=w1, stderr=subprocess.PIPE, timeout=30)
        assert p.returncode == 0, p.stderr
        os.close(w1)
        w1 = -1
        oci.ok("delete", "-f", "dp")
        assert os.read(r1, 65536).decode().strip() == _pipe_ino(r1)
    finally:
        if w1 >= 0:
            os.close(w1)
        os.close(r1)


def _files(tmp_path, n: int) -> str:
    for i in range(n):
        (tmp_path / f"f{i}").write_text(f"c{i}\n")
    return " ".join(f"{3 + i}<{tmp_path}/f{i}" for i in range(n))


# A profile without close_range (runtime-tools' default, older Docker ones):
# the fds are sealed before the filter is loaded, so the start still works.
DENY_CLOSE_RANGE = {"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}]}


@pytest.mark.parametrize("profile", [None, DENY_CLOSE_RANGE], ids=["plain", "no-close_range"])
def test_run_preserve_fds(oci, bundle, tmp_path, profile):
    if profile:
        bundle.linux["seccomp"] = profile
    bundle.sh("cat <&3; cat <&4; ls /proc/self/fd | tr '\\n' ' '; echo;"
              " grep ^Seccomp: /proc/self/status")
    redir = _files(tmp_path, 3)
    r = subprocess.run(["sh", "-c", f'exec "$0" --root {oci.root} run --preserve-fds 2 '
                        f'-b {bundle.path} pf {redir}', OCIRUN],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[:2] == ["c0", "c1"]
    assert sorted(int(x) for x in lines[2].split()) == [0, 1, 2, 3, 4, 5]  # 5: ls's own dir
    assert "c2" not in r.stdout
    assert lines[3].split() == ["Seccomp:", "2" if profile else "0"]


def test_listen_fds_socket_activation_as_runc(oci, bundle, tmp_path):
    """runc: when the caller's LISTEN_FDS is set and LISTEN_PID is the
    runtime's pid, fds 3..3+N-1 go to the process, whose env gets
    LISTEN_FDS=N and LISTEN_PID=1; --preserve-fds come after them."""
    bundle.sh("echo fds=$LISTEN_FDS pid=$LISTEN_PID; cat <&3; cat <&4; cat <&5")
    redir = _files(tmp_path, 3)
    r = subprocess.run(["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" --root {oci.root} '
                        f'run --preserve-fds 1 -b {bundle.path} lf {redir}', OCIRUN],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["fds=2 pid=1", "c0", "c1", "c2"], r


def test_listen_fds_for_another_pid_are_ignored(oci, bundle, tmp_path):
    bundle.sh("echo fds=$LISTEN_FDS; ls /proc/self/fd | tr '\\n' ' '")
    redir = _files(tmp_path, 2)
    r = subprocess.run(["sh", "-c", f'LISTEN_PID=1 LISTEN_FDS=2 exec "$0" --root {oci.root} '
                        f'run -b {bundle.path} lf {redir}', OCIRUN],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "fds="
    assert sorted(int(x) for x in lines[1].split()) == [0, 1, 2, 3]  # 3: ls's own dir


LIB_RUN = r"""
import signal, sys
sys.path.insert(0, sys.argv[1])
from ocirun import container
then_exit = sys.argv[5] == "1"
code = container.run(sys.argv[2], sys.argv[3], sys.argv[4], then_exit=then_exit)
blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
print(code, blocked, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
if then_exit:
    signal.raise_signal(signal.SIGTERM)  # the handler left in place drops it
    print("alive")
"""


def test_library_run_leaves_the_signal_state_as_it_found_it(oci, bundle):
    """`run` blocks the signals it forwards from the "go" until it forwards
    them, and puts the handlers back; only a caller that exits right after
    (then_exit, the CLI) keeps them, and then they drop what comes."""
    bundle.args("/bin/true")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(OCIRUN)))
    for then_exit, default_term in (("0", "True"), ("1", "False")):
        r = subprocess.run(["/usr/bin/python3", "-c", LIB_RUN, repo, f"lib{os.getpid()}x{then_exit}",
                            bundle.path, oci.root, then_exit],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[0] == f"0 [] {default_term}", r
        if then_exit == "1":
            assert out[1] == "alive", r


def test_forwarder_drops_a_signal_that_arrives_while_it_closes(monkeypatch):
    """A `run` (restore=False) keeps its handlers after the block: a signal
    caught while the pidfd is being closed must be dropped, not sent to a
    closed fd (a signal storm once made `run` fail with EBADF there)."""
    from ocirun.linux import foreground as fg
    real = fg.os

    class ClosingSignals:  # the signal lands right after the close
        def __getattr__(self, name):
            return getattr(real, name)

        def close(self, fd):
            real.close(fd)
            real.kill(real.getpid(), signal.SIGUSR1)

    p = subprocess.Popen(["sleep", "30"])
    old = signal.getsignal(signal.SIGUSR1)
    try:
        monkeypatch.setattr(fg, "os", ClosingSignals())
        with fg.forward_signals(p.pid, signals={signal.SIGUSR1}, restore=False) as fw:
            pass
        os.kill(os.getpid(), signal.SIGUSR1)  # and one later: dropped too
        assert fw.forwarded == []
        assert p.poll() is None  # never reached the process
    finally:
        signal.signal(signal.SIGUSR1, old)
        p.kill()
        p.wait()
