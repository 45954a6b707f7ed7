"""The console-socket path, end to end: a forked "init" in its own mount
namespace with its own devpts opens the pty, sends the master to a real
console-socket receiver, and becomes a shell on the slave."""
from __future__ import annotations

import os
import signal

import pytest

from ocirun.linux import terminal
from termhelpers import procs, short_tmp  # noqa: F401  (fixtures)
from termhelpers import (Reader, child, exec_sh, private_devpts,
                         wait_for_child_of, wait_for_exec, wait_status)


def start_in_container(sock: str, script: str, size=(24, 80),
                       preconnect: bool = True) -> tuple[int, int, bytes]:
    """What create does, in miniature. Returns (pid, master fd, payload).

    The parent connects to the console socket before fork (as `create`
    should); the child opens the pty in its private devpts, applies the
    size, sends the master over the inherited fd, and execs the shell with
    the slave as controlling terminal and stdio.
    """
    with terminal.ConsoleReceiver(sock) as rcv:
        csock = terminal.connect_console(sock) if preconnect else -1

        def init() -> None:
            private_devpts()
            pty = terminal.open_pty()
            assert pty.slave_path == "/dev/pts/0", pty.slave_path
            if size:
                terminal.apply_size(pty.master, *size)
            terminal.send_console(csock if preconnect else sock, pty.master)
            os.close(pty.master)
            if preconnect:
                os.close(csock)
            terminal.make_controlling(pty.slave)
            exec_sh(script)

        pid = child(init)
        if preconnect:
            os.close(csock)
        master = rcv.receive(timeout=10)
        return pid, master, rcv.payload


@pytest.mark.parametrize("preconnect", [True, False],
                         ids=["fd-connected-before-fork", "path-in-child"])
def test_tty_and_size_through_console_socket(short_tmp, procs, preconnect):
    pid, master, payload = start_in_container(
        f"{short_tmp}/c.sock", "busybox tty; busybox stty size; exit 5",
        size=(33, 121), preconnect=preconnect)
    procs.append(pid)
    try:
        assert payload == b"/dev/ptmx"  # what runc sends
        assert os.get_inheritable(master) is False  # O_CLOEXEC on receipt
        out = Reader(master).read_to_eof()
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(wait_status(pid)) == 5
    lines = out.decode().split("\r\n")
    assert lines[0] == "/dev/pts/0"
    assert lines[1] == "33 121"


def test_host_devpts_untouched(short_tmp, procs):
    before = sorted(os.listdir("/dev/pts"))
    pid, master, _ = start_in_container(f"{short_tmp}/c.sock",
                                        "echo ready; sleep 30")
    procs.append(pid)
    try:
        Reader(master).expect("ready")
        assert sorted(os.listdir("/dev/pts")) == before
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_status(pid)
        os.close(master)


def test_resize_reaches_child_as_sigwinch(short_tmp, procs):
    pid, master, _ = start_in_container(
        f"{short_tmp}/c.sock",
        "trap 'busybox stty size' WINCH; echo ready; "
        "while :; do busybox sleep 0.05; done")
    procs.append(pid)
    r = Reader(master)
    try:
        r.expect("ready")
        terminal.apply_size(master, 50, 132)
        r.expect("50 132")
        assert terminal.get_size(master) == (50, 132)
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_status(pid)
        os.close(master)


def test_ctrl_c_interrupts_sleep(short_tmp, procs):
    pid, master, _ = start_in_container(
        f"{short_tmp}/c.sock",
        "trap 'echo INT' INT; echo ready; busybox sleep 30; echo \"after $?\"")
    procs.append(pid)
    r = Reader(master)
    try:
        r.expect("ready")
        wait_for_child_of(pid)  # the sleep is running
        os.write(master, b"\x03")  # VINTR: the line discipline sends SIGINT
        r.expect("after 130", timeout=5)  # sleep died of SIGINT (128+2)
        assert b"INT" in r.buf
        assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    finally:
        os.close(master)


def test_ctrl_c_kills_foreground_process(short_tmp, procs):
    pid, master, _ = start_in_container(f"{short_tmp}/c.sock",
                                        "echo ready; exec busybox sleep 30")
    procs.append(pid)
    r = Reader(master)
    try:
        r.expect("ready")
        wait_for_exec(pid)  # ash catches SIGINT until it has exec'd sleep
        os.write(master, b"\x03")
        status = wait_status(pid, timeout=5)
    finally:
        os.close(master)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT
    assert terminal.exit_code(status) == 130


def test_input_goes_to_the_process(short_tmp, procs):
    pid, master, _ = start_in_container(
        f"{short_tmp}/c.sock", "echo ready; read -r line; echo \"got:$line\"")
    procs.append(pid)
    r = Reader(master)
    try:
        r.expect("ready")
        os.write(master, b"hello world\r")
        r.expect("got:hello world")
    finally:
        wait_status(pid)
        os.close(master)


def test_bind_console_and_chown(short_tmp, procs):
    """/dev/console becomes the slave (bind mount, in the child's private
    mount namespace), and make_controlling hands the slave to the user."""
    target = f"{short_tmp}/console"
    r, w = os.pipe()

    def init() -> None:
        os.close(r)
        private_devpts()
        pty = terminal.open_pty()
        terminal.bind_console(pty.slave_path, target)
        same = os.stat(target).st_rdev == os.fstat(pty.slave).st_rdev
        terminal.make_controlling(pty.slave, uid=1234, gid=5)
        st = os.fstat(0)
        ctty = os.tcgetpgrp(0) == os.getpgrp() == os.getsid(0) == os.getpid()
        os.write(w, f"{same} {st.st_uid} {st.st_gid} {ctty}".encode())

    pid = child(init)
    procs.append(pid)
    os.close(w)
    out = os.read(r, 100).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(wait_status(pid)) == 0
    assert out == "True 1234 5 True"
    assert os.path.getsize(target) == 0  # host side: only the empty file
    assert not os.path.ismount(target)
