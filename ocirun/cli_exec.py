"""`ocirun exec` (runc's flags): argv -> ocirun.execute."""
from __future__ import annotations

from ocirun.cli import Args, _usage_error, parse
from ocirun.errors import OciError, UsageError, os_error_line

COMMANDS = {
    "exec": ("run a new process inside a running container",
             "[options] ID COMMAND [ARG...]  |  --process FILE ID",
             {"console-socket": ((), True, "AF_UNIX socket that receives the pty master"),
              "cwd": ((), True, "current working directory in the container"),
              "env": (("e",), "multi", "set an environment variable KEY=VALUE (repeatable)"),
              "tty": (("t",), False, "allocate a pseudo-TTY"),
              "user": (("u",), True, "uid[:gid] to run as"),
              "additional-gids": (("g",), "multi", "an additional gid (repeatable)"),
              "process": (("p",), True, "a process.json file (all other process flags ignored)"),
              "detach": (("d",), False, "detach from the process"),
              "pid-file": ((), True, "file to write the process's pid to"),
              "process-label": ((), True, "SELinux label for the process"),
              "apparmor": ((), True, "AppArmor profile for the process"),
              "no-new-privs": ((), False, "set no_new_privs for the process"),
              "cap": (("c",), "multi", "add a capability (repeatable)"),
              "preserve-fds": ((), True, "pass N extra fds (3 .. 3+N-1) to the process"),
              "cgroup": ((), "multi", "run in a sub-cgroup of the container: "
                         "[controller[,controller...]:]path (repeatable)"),
              "ignore-paused": ((), False, "allow exec in a paused container"),
              "help": (("h",), False, "show help")}),
}


def dispatch(cmd: str, argv: list[str], g: Args) -> int:
    from ocirun import execute
    a = parse(argv, COMMANDS["exec"][2], stop_at_positional=True, max_pos=1)
    if a.opts.get("help"):
        from ocirun.cli import _help
        return _help("exec")
    if not a.pos:
        raise _usage_error('"exec" requires a container id')
    try:
        return _exec(a, g, execute)
    except (UsageError, BrokenPipeError):
        raise
    except (OciError, OSError) as e:
        # runc and crun: exit 255 when the process could not be started
        # (engines tell that from the process's own exit code)
        raise _ExecFailed(e) from None


class _ExecFailed(OciError):
    exit_code = 255

    def __init__(self, e: OciError | OSError) -> None:
        if isinstance(e, OciError):
            super().__init__(str(e))
        else:
            super().__init__(os_error_line(e))


def _exec(a: Args, g: Args, execute) -> int:
    cid = a.pos[0]
    root = g.opts.get("root")
    from ocirun.container import Container
    c = Container(cid, root)
    if a.opts.get("process"):
        proc = execute.load_process_file(a.opts["process"])
    else:
        base = (c._data().get("config") or {}).get("process") or {}
        proc = execute.process_from_flags(
            base, a.pos[1:], tty=a.opts.get("tty", False), env=a.opts.get("env"),
            cwd=a.opts.get("cwd"), user=a.opts.get("user"),
            additional_gids=a.opts.get("additional-gids"), caps=a.opts.get("cap"),
            no_new_privs=a.opts.get("no-new-privs", False), apparmor=a.opts.get("apparmor"),
            process_label=a.opts.get("process-label"))
    pf = a.opts.get("preserve-fds", "0")
    if not pf.isdigit():
        raise _usage_error(f"--preserve-fds: not a number: {pf!r}")
    opts = execute.ExecOptions(detach=a.opts.get("detach", False), pid_file=a.opts.get("pid-file"),
                               console_socket=a.opts.get("console-socket"), preserve_fds=int(pf),
                               cgroup=a.opts.get("cgroup"),
                               ignore_paused=a.opts.get("ignore-paused", False))
    from ocirun import cli  # (its flag, read now: set by run_and_exit)
    return execute.exec_in(cid, proc, root, opts, then_exit=cli._exits_after)
