"""The six hook kinds (config.md "POSIX-platform Hooks").

Each hook gets the container state JSON on stdin, its own args and env,
and is killed after `timeout` seconds. A hook without an `env` key that runs
in the runtime namespace inherits the runtime's environment (as with runc
and crun); one with `"env": []` gets none, and so do the hooks run by the
init, in the container. Who runs which:
  prestart, createRuntime   the runtime, in the runtime namespace, during create
  createContainer           the init, in the container namespaces, before pivot_root
  startContainer            the init, in the container, just before execve
  poststart                 `start`, after the process has been executed
  poststop                  `delete`
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import OciError
from ocirun.jsonutil import dumps


def run_hooks(hooks: list[dict] | None, kind: str, state: dict) -> None:
    """Run hooks in order; the first failure raises OciError."""
    if not hooks:
        return
    data = dumps(state).encode()
    for i, h in enumerate(hooks):
        run_one(h, data, f"{kind}[{i}]", inherit_env=kind in _RUNTIME_KINDS)


def run_hooks_warn(hooks: list[dict] | None, kind: str, state: dict, log) -> None:
    """poststart/poststop: a failure is a warning and the rest still run."""
    if not hooks:
        return
    data = dumps(state).encode()
    for i, h in enumerate(hooks):
        try:
            run_one(h, data, f"{kind}[{i}]", inherit_env=kind in _RUNTIME_KINDS)
        except OciError as e:
            log(f"warning: {e}")


_RUNTIME_KINDS = ("prestart", "createRuntime", "poststart", "poststop")


def run_one(hook: dict, stdin: bytes, where: str, inherit_env: bool = False) -> None:
    path = hook["path"]
    args = hook.get("args") or [path]
    env = hook.get("env")
    if env is None:
        env = os.environ_copy() if inherit_env else {}
    else:
        env = dict(e.split("=", 1) for e in env if "=" in e)
    timeout = hook.get("timeout")
    r, w = os.pipe2(os.O_CLOEXEC)
    er, ew = os.pipe2(os.O_CLOEXEC)  # the execve's errno; EOF once it succeeded
    try:
        pid = os.fork()
    except OSError as e:
        for fd in (r, w, er, ew):
            os.close(fd)
        raise OciError(f"error running hook {where}: cannot fork: {e.strerror}") from None
    if pid == 0:  # child: stdin from the pipe, stdout/stderr inherited
        try:
            os.dup2(r, 0)
            os.execve(path, args, env)
        except OSError as e:
            os.write(ew, str(e.errno).encode())
        os._exit(127)
    os.close(r)
    os.close(ew)
    try:
        failed = os.read(er, 16)
    finally:
        os.close(er)
    if failed:  # (one line, the runtime's: the child printed nothing)
        os.close(w)
        os.waitpid(pid, 0)
        raise OciError(f"error running hook {where} {path}: {os.strerror(int(failed))}")
    try:
        os.write(w, stdin)
    except BrokenPipeError:
        pass
    finally:
        os.close(w)
    status = _wait(pid, timeout)
    if status is None:
        raise OciError(f"error running hook {where} {path}: timed out after {timeout}s")
    if os.WIFSIGNALED(status):
        import _signal
        sig = os.WTERMSIG(status)
        raise OciError(f"error running hook {where} {path}: killed by signal {sig} "
                       f"({(_signal.strsignal(sig) or '?').lower()})")
    code = os.WEXITSTATUS(status)
    if code == 127 and not os.path.exists(path):
        raise OciError(f"error running hook {where} {path}: no such file or directory")
    if code:
        raise OciError(f"error running hook {where} {path}: exited with status {code}")


def _wait(pid: int, timeout: int | None) -> int | None:
    if timeout is None:
        return os.waitpid(pid, 0)[1]
    import select
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
    finally:
        os.close(pidfd)
    return os.waitpid(pid, 0)[1]
