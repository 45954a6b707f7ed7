"""Foreground `run`: proxy() under a real user terminal (a pty made by the
test), and forward_signals()."""
from __future__ import annotations

import json
import os
import signal
import termios

import pytest

from ocirun.linux import terminal
from termhelpers import procs  # noqa: F401  (fixtures)
from termhelpers import (Reader, child, exec_sh, wait_for_child_of,
                         wait_status)


def attrs_json(fd: int) -> list:
    a = termios.tcgetattr(fd)
    a[6] = [c if isinstance(c, int) else c[0] for c in a[6]]
    return a


def start_runtime(script: str, outer: terminal.Pty, report_w: int,
                  interrupted_ok: bool = False) -> int:
    """Fork "ocirun run": a session on the outer pty (the user's terminal)
    that makes an inner pty, forks the container process on it and calls
    proxy(); it reports {code, before, after} as JSON on report_w."""

    def runtime() -> None:
        os.close(outer.master)
        terminal.make_controlling(outer.slave)
        before = attrs_json(0)
        inner = terminal.open_pty()

        def container() -> None:
            os.close(inner.master)
            terminal.make_controlling(inner.slave)
            exec_sh(script)

        cpid = child(container)
        os.close(inner.slave)
        res: dict = {"before": before}
        try:
            res["code"] = terminal.proxy(inner.master, cpid)
        except KeyboardInterrupt:
            res["interrupted"] = True
            os.kill(cpid, signal.SIGKILL)
            os.waitpid(cpid, 0)
        res["after"] = attrs_json(0)
        os.write(report_w, json.dumps(res).encode())

    return child(runtime)


def report(r: int) -> dict:
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    return json.loads(data)


@pytest.fixture
def outer():
    """The user's terminal: a pty whose slave the runtime gets as stdio."""
    pty = terminal.open_pty()
    terminal.apply_size(pty.master, 30, 90)
    yield pty
    pty.close()


def test_proxy_raw_mode_io_resize_exit_code(outer, procs):
    script = ("echo ready; read -r line; echo \"got:$line\"; busybox stty size; "
              "trap 'busybox stty size; exit 7' WINCH; echo armed; "
              "while :; do busybox sleep 0.05; done")
    r, w = os.pipe()
    pid = start_runtime(script, outer, w)
    procs.append(pid)
    os.close(w)
    cooked = termios.tcgetattr(outer.slave)
    out = Reader(outer.master)
    out.expect("ready")
    # the runtime put the user's terminal in raw mode
    raw = termios.tcgetattr(outer.slave)
    assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
    assert not raw[1] & termios.OPOST
    os.write(outer.master, b"hello\r")
    out.expect("got:hello")
    assert out.buf.count(b"hello") == 2  # echoed once (inner), not twice
    out.expect("30 90")  # the user's size was copied at start
    out.expect("armed")
    terminal.apply_size(outer.master, 40, 100)  # the user resizes the window
    out.expect("40 100")  # SIGWINCH -> resize of the inner pty -> SIGWINCH
    assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    res = report(r)
    assert res["code"] == 7
    assert res["after"] == res["before"]  # restored
    assert termios.tcgetattr(outer.slave) == cooked


def test_proxy_ctrl_c_passes_through_raw_terminal(outer, procs):
    """^C typed on the user's terminal is a byte in raw mode: it reaches the
    container's pty, whose line discipline turns it into SIGINT there. The
    runtime itself is not interrupted; it returns 128+2."""
    r, w = os.pipe()
    pid = start_runtime("echo ready; exec busybox sleep 30", outer, w)
    procs.append(pid)
    os.close(w)
    Reader(outer.master).expect("ready")
    wait_for_child_of(pid)
    os.write(outer.master, b"\x03")
    assert os.waitstatus_to_exitcode(wait_status(pid, timeout=5)) == 0
    res = report(r)
    assert res == {"before": res["before"], "code": 130, "after": res["before"]}


def test_proxy_restores_terminal_on_error(outer, procs):
    """KeyboardInterrupt inside proxy (SIGINT sent to the runtime itself):
    the terminal is restored on the way out."""
    r, w = os.pipe()
    pid = start_runtime("echo ready; exec busybox sleep 30", outer, w)
    procs.append(pid)
    os.close(w)
    Reader(outer.master).expect("ready")
    raw = termios.tcgetattr(outer.slave)
    assert not raw[3] & termios.ICANON
    os.kill(pid, signal.SIGINT)
    assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    res = report(r)
    assert res["interrupted"] is True
    assert res["after"] == res["before"]
    assert termios.tcgetattr(outer.slave)[3] & termios.ICANON


def test_proxy_without_tty_and_lots_of_output(procs):
    """stdin/stdout are pipes (no raw mode, no SIGWINCH); all output written
    before exit arrives; stdin EOF does not end the session."""
    with terminal.open_pty() as inner:
        def container() -> None:
            os.close(inner.master)
            terminal.make_controlling(inner.slave)
            exec_sh("read -r x; echo \"in:$x\"; i=0; "
                    "while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; "
                    "exit 3")
        cpid = child(container)
        procs.append(cpid)
        os.close(inner.slave)
        inner.slave = -1
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        os.write(in_w, b"abc\n")
        os.close(in_w)  # EOF right away
        import threading
        got = []
        t = threading.Thread(target=lambda: got.append(Reader(out_r).read_to_eof()))
        t.start()
        try:
            code = terminal.proxy(inner.master, cpid, stdin=in_r, stdout=out_w)
        finally:
            os.close(out_w)
            t.join(10)
            os.close(in_r)
            os.close(out_r)
    assert code == 3
    text = got[0].decode()
    assert "in:abc" in text
    lines = [l for l in text.split("\r\n") if l.startswith("line")]
    assert lines == [f"line{i}" for i in range(3000)]


def test_proxy_child_closes_tty_before_exit(procs):
    """The process closes its tty (EIO on the master) and lives on: proxy
    keeps waiting on the pidfd without spinning, then returns its status."""
    with terminal.open_pty() as inner:
        def container() -> None:
            os.close(inner.master)
            terminal.make_controlling(inner.slave)
            exec_sh("echo bye; exec busybox sleep 0.3 </dev/null >/dev/null 2>&1")
        cpid = child(container)
        procs.append(cpid)
        os.close(inner.slave)
        inner.slave = -1
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        t0 = os.times()
        code = terminal.proxy(inner.master, cpid, stdin=in_r, stdout=out_w)
        t1 = os.times()
        os.close(out_w)
        assert b"bye" in Reader(out_r).read_to_eof()
        for fd in (out_r, in_r, in_w):
            os.close(fd)
    assert code == 0
    assert (t1.user - t0.user) + (t1.system - t0.system) < 0.2  # no busy loop


# --- forward_signals ---------------------------------------------------------

def start_forwarder(script: str, out_w: int, report_w: int) -> int:
    """Fork "ocirun run" without a tty: it forks the container process (stdout
    to out_w) and waits inside forward_signals(); reports "armed" then the
    exit code on report_w."""

    def runtime() -> None:
        def container() -> None:
            os.dup2(out_w, 1)
            os.setsid()  # like init: no shared process group with the runtime
            # signals the test runner was started with ignored (nohup: HUP)
            # stay ignored across exec, and sh cannot trap them
            for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            exec_sh(script)

        cpid = child(container)
        with terminal.forward_signals(cpid) as fw:
            os.write(report_w, b"armed\n")
            code = fw.wait()
        os.write(report_w, f"{code} {sorted(set(fw.forwarded))}\n".encode())

    return child(runtime)


def test_forward_signals_reach_the_child(procs):
    script = ("trap 'echo USR1' USR1; trap 'echo USR2' USR2; trap 'echo HUP' HUP; "
              "trap 'echo INT' INT; trap 'echo QUIT' QUIT; trap 'echo WINCH' WINCH; "
              "trap 'echo TERM; exit 3' TERM; echo ready; "
              "while :; do busybox sleep 0.05; done")
    out_r, out_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = start_forwarder(script, out_w, rep_w)
    procs.append(pid)
    os.close(out_w)
    os.close(rep_w)
    out, rep = Reader(out_r), Reader(rep_r)
    rep.expect("armed")
    out.expect("ready")
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGINT,
                signal.SIGQUIT, signal.SIGWINCH):
        os.kill(pid, sig)
        out.expect(sig.name[3:] + "\n")
    os.kill(pid, signal.SIGTERM)
    out.expect("TERM")
    rep.read_to_eof()
    assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    code, fwd = rep.buf.decode().split("\n")[1].split(" ", 1)
    assert code == "3"
    assert json.loads(fwd) == sorted([1, 2, 3, 10, 12, 15, 28])
    os.close(out_r)
    os.close(rep_r)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                 signal.SIGQUIT, signal.SIGUSR1])
def test_forward_signals_exit_code_128_plus_n(procs, sig):
    out_r, out_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = start_forwarder("echo ready; exec busybox sleep 30", out_w, rep_w)
    procs.append(pid)
    os.close(out_w)
    os.close(rep_w)
    rep = Reader(rep_r)
    rep.expect("armed")
    Reader(out_r).expect("ready")
    wait_for_child_of(pid)  # sh has exec'd sleep (ash would catch SIGQUIT)
    os.kill(pid, sig)
    rep.read_to_eof()
    assert rep.buf.decode().split("\n")[1].split(" ")[0] == str(128 + sig)
    assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    os.close(out_r)
    os.close(rep_r)


def test_forward_signals_restores_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    pid = child(lambda: os.execv("/bin/busybox", ["true"]))
    with terminal.forward_signals(pid) as fw:
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
        assert fw.wait() == 0
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd was put back


def test_forwarded_set():
    s = terminal.forwarded_signals()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
                signal.SIGTSTP, signal.SIGRTMIN):
        assert sig in s
    for sig in (signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV,
                signal.SIGPIPE, signal.SIGTTIN, signal.SIGTTOU):
        assert sig not in s


def test_forward_signals_gone_process():
    pid = child(lambda: None)
    os.waitpid(pid, 0)
    from ocirun.errors import OciError
    with pytest.raises(OciError):
        with terminal.forward_signals(pid):
            pass



def test_forward_signals_exit_under_a_signal_storm():
    """Handlers are restored with the signals blocked: a signal caught just
    as its handler goes back must neither be reported as "ignored due to
    race condition" (CPython's unraisable error) nor nest handlers until
    RecursionError. Two shells flood us with SIGWINCH meanwhile."""
    import subprocess
    import sys
    reported = []
    saved_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: reported.append(repr(u.exc_value))
    target = child(lambda: os.execv("/bin/busybox", ["sleep", "30"]))
    storms = [subprocess.Popen(["/bin/busybox", "sh", "-c",
                                f"while kill -WINCH {os.getpid()}; do :; done"],
                               stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        for _ in range(3000):
            with terminal.forward_signals(target, signals={signal.SIGWINCH, signal.SIGUSR1}):
                pass
    finally:
        for p in storms:
            p.kill()
            p.wait()
        os.kill(target, signal.SIGKILL)
        os.waitpid(target, 0)
        sys.unraisablehook = saved_hook
    assert not reported, reported[:3]


def test_forward_signals_wait_under_a_signal_storm():
    """A flood while waiting is forwarded without nesting handlers until
    RecursionError; wait() still returns the exit code."""
    import subprocess
    target = child(lambda: os.execv("/bin/busybox", ["sh", "-c", "trap '' WINCH; sleep 1; exit 7"]))
    storms = [subprocess.Popen(["/bin/busybox", "sh", "-c",
                                f"while kill -WINCH {os.getpid()}; do :; done"],
                               stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with terminal.forward_signals(target, signals={signal.SIGWINCH}) as fw:
            code = fw.wait()
    finally:
        for p in storms:
            p.kill()
            p.wait()
    assert code == 7
    assert fw.forwarded and set(fw.forwarded) == {signal.SIGWINCH}
