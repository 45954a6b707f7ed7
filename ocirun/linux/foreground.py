"""A foreground process: wait for it, forward our signals to it, and turn
its wait status into the shell-style exit code (`run`, `exec`).

Split from ocirun.linux.terminal so a container without a tty does not
load the pty code. `_signal` / `select` are used instead of `signal` (which
imports enum).
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import OciError


def exit_code(status: int) -> int:
    """Shell-style exit code from a wait status: the code, or 128+N when the
    process was killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# Not forwarded: uncatchable; SIGCHLD (ours to reap); faults and resource
# limits raised by the runtime's own code; job-control signals the kernel
# sends the runtime about its own terminal access.
_NO_FORWARD = frozenset({9, 19,            # SIGKILL, SIGSTOP
                         17,               # SIGCHLD
                         4, 5, 6, 7, 8, 11, 31,  # ILL TRAP ABRT BUS FPE SEGV SYS
                         13,               # SIGPIPE
                         21, 22,           # SIGTTIN, SIGTTOU
                         24, 25})          # SIGXCPU, SIGXFSZ


def forwarded_signals() -> frozenset[int]:
    """The signals forward_signals() relays by default (including SIGTERM,
    SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH, SIGCONT, SIGTSTP, SIGURG,
    SIGALRM, real-time signals)."""
    import _signal
    return frozenset(_signal.valid_signals()) - _NO_FORWARD


class _Wakeup:
    """signal.set_wakeup_fd() on a private pipe, for poll().

    A Python handler runs at a bytecode boundary, so a signal arriving just
    before a blocking call is entered would otherwise wait for that call to
    return. With the wakeup fd in the poll set, poll() returns at once and
    the handler runs. Inactive (fd == -1) outside the main thread.
    """

    def __init__(self) -> None:
        import _signal
        self.fd = -1
        self._w = -1
        self._old = -1
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._old = _signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            os.close(r)
            os.close(w)
            return
        self.fd, self._w = r, w

    def drain(self) -> None:
        try:
            while os.read(self.fd, 256):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            import _signal
            _signal.set_wakeup_fd(self._old)
            os.close(self.fd)
            os.close(self._w)
            self.fd = -1


class forward_signals:
    """Context manager: while active, signals sent to this process are sent
    to the container process through a pidfd (no pid-reuse race).

    Main thread only (Python delivers signals there). Handlers run even
    while the main thread is blocked in waitpid()/poll(): the kernel
    interrupts the call, Python runs the handler and retries (PEP 475), so
    nothing polls. wait() reaps the process and returns exit_code(); SIGCHLD
    keeps its default disposition so waitpid() works. Use as
    `with forward_signals(pid) as fw: code = fw.wait()`, or with proxy()
    inside the block for a tty.
    """

    def __init__(self, pid: int, *, pidfd: int | None = None,
                 signals: frozenset[int] | set[int] | None = None,
                 restore: bool = True) -> None:
        """restore=False: for a caller about to exit (the CLI's `run`), the
        handlers stay, and from the block's end on they drop what arrives
        (~50 rt_sigaction calls less, and the cleanup after the container's
        exit cannot be interrupted)."""
        self.pid = pid
        self._restore = restore
        self._pidfd = pidfd
        self._own_pidfd = pidfd is None
        self._signals = forwarded_signals() if signals is None else frozenset(signals)
        self._saved: dict[int, object] = {}
        self._queue: list[int] = []
        self._busy = False
        self.forwarded: list[int] = []  # for logs and tests

    def _handler(self, signum: int, frame: object) -> None:
        # Python may run a handler inside another one (at any bytecode): a
        # nested call only queues, so a flood cannot recurse without bound.
        if self._pidfd is None:  # after the block, restore=False: dropped
            return
        self._queue.append(signum)
        if self._busy:
            return
        self._busy = True
        try:
            import _signal
            while self._queue:
                sig = self._queue.pop(0)
                try:
                    _signal.pidfd_send_signal(self._pidfd, sig)
                    self.forwarded.append(sig)
                except ProcessLookupError:
                    pass  # already exited; wait() will report it
        finally:
            self._busy = False

    def __enter__(self) -> forward_signals:
        import _signal
        if self._pidfd is None:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError:
                raise OciError(f"process {self.pid}: no such process") from None
        try:
            for sig in sorted(self._signals):
                try:
                    self._saved[sig] = _signal.signal(sig, self._handler)
                except (OSError, ValueError) as e:
                    if isinstance(e, ValueError) and "main thread" in str(e):
                        raise
                    # reserved by libc or otherwise not settable: skip
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved and self._restore:
            self._restore_handlers()
        self._saved.clear()
        # None first: a handler that runs between the two (restore=False
        # leaves them in place) must drop its signal, not send it to a
        # closed fd
        fd, self._pidfd = self._pidfd, None
        if self._own_pidfd and fd is not None:
            os.close(fd)

    def _restore_handlers(self) -> None:
        """Put back the handlers __enter__ replaced, with the signals blocked
        meanwhile: a signal caught by the C handler just as its Python
        handler is reset would otherwise be reported ("Signal N ignored due
        to race condition"). What arrives meanwhile is delivered after, to
        the restored handlers."""
        import _signal
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, self._saved)
        try:
            for sig, old in self._saved.items():
                _signal.signal(sig, old)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)

    def wait(self) -> int:
        """Block until the process exits; its exit_code().

        Sleeps in poll() on the pidfd and a signal wakeup fd, so a signal
        that arrives at any moment is forwarded at once.
        """
        import select
        wake = _Wakeup()
        try:
            p = select.poll()
            p.register(self._pidfd, select.POLLIN)
            if wake.fd >= 0:
                p.register(wake.fd, select.POLLIN)
            while True:
                ready = [fd for fd, _ in p.poll()]
                if wake.fd in ready:
                    wake.drain()  # handlers run at the next bytecode
                if self._pidfd in ready:
                    break
        finally:
            wake.close()
        _, status = os.waitpid(self.pid, 0)
        return exit_code(status)
