"""Run a function in a forked child and collect what it reports.

The child applies a setting to itself (capabilities, seccomp, scheduling),
then reports back over a pipe as JSON. Children always end with os._exit so
pytest's state never runs twice; every child is reaped, and killed first if
it outlives its timeout.
"""
from __future__ import annotations

import json
import os
import signal
import time
import traceback


class Child:
    """Outcome of run_child: exit code or signal, and the reported value."""

    def __init__(self, status: int, payload: dict | None) -> None:
        self.status = status
        self.signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        self.code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        self.payload = payload
        self.value = payload.get("value") if payload else None
        self.error = payload.get("error") if payload else None

    def ok(self):
        assert self.payload is not None, f"child died: status {self.status:#x}"
        assert self.error is None, self.error
        return self.value


def run_child(fn, *args, timeout: float = 20.0) -> Child:
    """fork(); run fn(*args) in the child; return what it reported.

    fn's return value must be JSON-serialisable. An exception is reported as
    text. The pipe write is a single write() so seccomp filters that allow
    write still let the result through.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            out = {"value": fn(*args)}
        except BaseException as e:  # noqa: BLE001 - everything goes to the parent
            out = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        import select
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                break
            rd, _, _ = select.select([r], [], [], left)
            if not rd:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    return Child(status, json.loads(data) if data else None)


def proc_status(field: str) -> str:
    """A field of the caller's /proc/self/status (in a child)."""
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == field:
                return v.strip()
    raise KeyError(field)


def raw_syscall(nr: int, *args: int) -> tuple[int, int]:
    """syscall(nr, args...) -> (return value, errno) without raising."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    return ret, ctypes.get_errno() if ret == -1 else 0


_NRS: dict[str, int] = {}


def syscall_nr(name: str) -> int:
    """Native number of a syscall (libseccomp's table), memoised."""
    if name in _NRS:
        return _NRS[name]
    from ocirun.kernel import seccomp as k
    nr = k.syscall_number(name)
    assert nr is not None and nr >= 0, name
    _NRS[name] = nr
    return nr


def nnp_and_load(flt):
    """What the init does last before execve: no_new_privs, then the filter."""
    from ocirun.kernel import syscalls
    from ocirun.linux import seccomp
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    return seccomp.load(flt)
