"""Command line compatible with runc and crun: argv -> library calls.

A small table-driven parser instead of argparse (which costs ~2 ms of
import on every container start). Like runc's, it accepts `--flag value`,
`--flag=value`, Go-style `-flag`, and short aliases; `--` ends the flags.
"""
from ocirun import oslite as os
import sys

VERSION = "0.1.0"

# option spec: name -> (aliases, takes_value, help)
GLOBAL = {
    "root": ((), True, "root directory for container state (default /run/ocirun; rootless: $XDG_RUNTIME_DIR/ocirun)"),
    "log": ((), True, "log file (default: stderr); opened at start, as runc"),
    "log-format": ((), True, "log format: text (default) or json"),
    "log-level": ((), True, "log level: debug, info, warning, error"),
    "debug": ((), False, "enable debug logging"),
    "systemd-cgroup": ((), False, "use systemd for cgroups (cgroupsPath slice:prefix:name)"),
    "cgroup-manager": ((), True, "cgroup manager: cgroupfs, systemd or disabled"),
    "rootless": ((), True, "ignore cgroup permission errors: true, false or auto"),
    "criu": ((), True, "accepted for compatibility; checkpoint is not supported"),
    "help": (("h",), False, "show help"),
    "version": (("v",), False, "print the version"),
}
_CREATE = {
    "bundle": (("b",), True, "path to the bundle (default: current directory)"),
    "config": (("f",), True, "path to the config file (default: BUNDLE/config.json)"),
    "console-socket": ((), True, "AF_UNIX socket that receives the pty master"),
    "pid-file": ((), True, "file to write the container's pid to"),
    "no-pivot": ((), False, "use MS_MOVE + chroot instead of pivot_root"),
    "no-new-keyring": ((), False, "keep the caller's session keyring"),
    "preserve-fds": ((), True, "pass N extra fds (3 .. 3+N-1) to the process"),
    "help": (("h",), False, "show help"),
}
COMMANDS = {
    "create": ("create a container", "[options] ID", dict(_CREATE)),
    "run": ("create and start a container", "[options] ID",
            dict(_CREATE, detach=(("d",), False, "detach from the container's process"),
                 **{"keep": ((), False, "do not delete the container after it exits")})),
    "start": ("start a created container", "ID", {"help": (("h",), False, "show help")}),
    "state": ("print the state of a container", "ID", {"help": (("h",), False, "show help")}),
    "list": ("list containers", "[options]",
             {"format": (("f",), True, "table (default) or json"),
              "quiet": (("q",), False, "print only the ids"),
              "help": (("h",), False, "show help")}),
    "kill": ("send a signal to the container's init", "[options] ID [SIGNAL]",
             {"all": (("a",), False, "send the signal to every process of the container"),
              "regex": (("r",), False, "ID is a regular expression"),
              "help": (("h",), False, "show help")}),
    "delete": ("delete a container and everything it holds", "[options] ID",
               {"force": (("f",), False, "kill a running container first"),
                "regex": (("r",), False, "ID is a regular expression"),
                "help": (("h",), False, "show help")}),
    "spec": ("write a new config.json", "[options]",
             {"bundle": (("b",), True, "bundle directory to write config.json into"),
              "rootless": ((), False, "a config for a non-root user"),
              "help": (("h",), False, "show help")}),
}
ALIASES = {"ls": "list", "rm": "delete"}
# Commands that live in their own modules, loaded only when called. Each
# module has COMMANDS (same shape as above) and dispatch(cmd, argv, g).
EXTERNAL = {"exec": "ocirun.cli_exec", "features": "ocirun.cli_features",
            "ps": "ocirun.cli_cgroup", "pause": "ocirun.cli_cgroup",
            "resume": "ocirun.cli_cgroup", "update": "ocirun.cli_cgroup",
            "events": "ocirun.cli_cgroup"}


def _external(cmd: str):
    try:  # __import__, not importlib: that module costs another import
        return __import__(EXTERNAL[cmd], fromlist=["_"])
    except ModuleNotFoundError:
        return None


class Args:
    __slots__ = ("opts", "pos")

    def __init__(self) -> None:
        self.opts: dict = {}
        self.pos: list[str] = []


def _usage_error(msg: str):
    from ocirun.errors import UsageError
    return UsageError(msg)


def parse(argv: list[str], spec: dict, stop_at_positional: bool = False,
          max_pos: int | None = None) -> Args:
    """Parse flags per spec; positionals collected in order."""
    short = {a: name for name, (al, _, _) in spec.items() for a in al}
    out = Args()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            out.pos.extend(argv[i:])
            break
        if a.startswith("-") and len(a) > 1 and not (stop_at_positional and out.pos):
            body = a.lstrip("-")
            name, eq, value = body.partition("=")
            if name not in spec:
                name = short.get(name, name)
            if name not in spec:
                raise _usage_error(f"flag provided but not defined: {a.split('=')[0]}")
            takes = spec[name][1]
            if takes:
                if not eq:
                    if i >= len(argv):
                        raise _usage_error(f"flag needs an argument: {a}")
                    value = argv[i]
                    i += 1
                if spec[name][1] == "multi":
                    out.opts.setdefault(name, []).append(value)
                else:
                    out.opts[name] = value
            else:
                if eq and value not in ("true", "false"):
                    raise _usage_error(f"invalid boolean value {value!r} for {a}")
                out.opts[name] = value != "false"
        else:
            out.pos.append(a)
            if stop_at_positional and max_pos is not None and len(out.pos) >= max_pos:
                out.pos.extend(argv[i:])
                break
    return out


def _need_id(a: Args, cmd: str, extra_ok: int = 0) -> str:
    if not a.pos or len(a.pos) > 1 + extra_ok:
        raise _id_args_error(a, cmd, extra_ok)
    return a.pos[0]


def _id_args_error(a: Args, cmd: str, extra_ok: int):
    if not a.pos:
        return _usage_error(f'"{cmd}" requires a container id')
    return _usage_error(f'"{cmd}" takes {1 + extra_ok} argument(s), got {len(a.pos)}: '
                        + " ".join(a.pos))


def _print_json(obj) -> None:
    from ocirun.jsonutil import dumps_pretty
    sys.stdout.write(dumps_pretty(obj) + "\n")


def _help(cmd: str | None = None) -> int:
    from ocirun.cli_extra import show_help
    return show_help(cmd)


def _all_commands() -> dict:
    from ocirun.cli_extra import all_commands
    return all_commands()


def _version() -> int:
    from ocirun.cli_extra import show_version
    return show_version()


def parse_signal(s: str) -> int:
    from ocirun.cli_extra import parse_signal
    return parse_signal(s)


def _create_opts(a: Args, g: Args):
    from ocirun.container import CreateOptions
    pf = a.opts.get("preserve-fds", "0")
    try:
        preserve = os.decimal(pf)
        if preserve < 0:
            raise ValueError
    except ValueError:
        raise _usage_error(f"--preserve-fds: not a number: {pf!r}") from None
    return CreateOptions(config=a.opts.get("config"), pid_file=a.opts.get("pid-file"),
                         console_socket=a.opts.get("console-socket"),
                         no_pivot=a.opts.get("no-pivot", False),
                         no_new_keyring=a.opts.get("no-new-keyring", False),
                         preserve_fds=preserve,
                         systemd_cgroup=g.opts.get("systemd-cgroup", False),
                         cgroup_manager=g.opts.get("cgroup-manager"),
                         notify_socket=os.getenv("NOTIFY_SOCKET") or None,
                         rootless=_rootless(g.opts.get("rootless")))


_BOOL_WORDS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
               "0": False, "f": False, "F": False, "false": False, "FALSE": False,
               "False": False}


def _rootless(value: str | None) -> bool | None:
    """--rootless: true, false, or auto/absent (None), in the words runc
    (Go's ParseBool) takes."""
    if value is None or value in ("", "auto"):
        return None
    try:
        return _BOOL_WORDS[value]
    except KeyError:
        raise _usage_error(f"--rootless: invalid value {value!r}: "
                           "want true, false or auto") from None


def _extra():
    from ocirun import cli_extra
    return cli_extra


def dispatch(cmd: str, rest: list[str], g: Args) -> int:
    if cmd not in COMMANDS:
        return _external(cmd).dispatch(cmd, rest, g)
    a = parse(rest, COMMANDS[cmd][2], stop_at_positional=False)
    if a.opts.get("help"):
        return _help(cmd)
    return _HANDLERS[cmd](a, g)


def _cmd_create(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    cid = _need_id(a, "create")
    ctr.create(cid, a.opts.get("bundle", "."), g.opts.get("root"), _create_opts(a, g))
    return 0


def _cmd_run(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    cid = _need_id(a, "run")
    return ctr.run(cid, a.opts.get("bundle", "."), g.opts.get("root"), _create_opts(a, g),
                   detach=a.opts.get("detach", False), then_exit=_exits_after,
                   keep=a.opts.get("keep", False))


def _cmd_start(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    ctr.start(_need_id(a, "start"), g.opts.get("root"), os.getenv("NOTIFY_SOCKET") or None)
    return 0


def _cmd_state(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    _print_json(ctr.state(_need_id(a, "state"), g.opts.get("root")))
    return 0


def _cmd_kill(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    root = g.opts.get("root")
    cid = _need_id(a, "kill", extra_ok=1)
    sig = parse_signal(a.pos[1]) if len(a.pos) > 1 else 15
    ids = _extra().ids_matching(cid, root) if a.opts.get("regex") else [cid]
    for i in ids:
        ctr.kill(i, sig, root, a.opts.get("all", False))
    return 0


def _cmd_delete(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    root = g.opts.get("root")
    cid = _need_id(a, "delete")
    ids = _extra().ids_matching(cid, root) if a.opts.get("regex") else [cid]
    for i in ids:
        ctr.delete(i, root, a.opts.get("force", False))
    return 0


def _cmd_list(a: Args, g: Args) -> int:
    from ocirun import container as ctr
    if a.pos:
        raise _usage_error('"list" takes no arguments')
    states = ctr.list_containers(g.opts.get("root"))
    fmt = a.opts.get("format", "table")
    if a.opts.get("quiet"):
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif fmt == "json":  # (runc's: one line, the owner by name, unlike `state`)
        from ocirun.jsonutil import dumps
        sys.stdout.write(dumps([dict(s, owner=_extra().owner_name(s)) for s in states]
                               or None) + "\n")
    elif fmt == "table":
        _extra().print_table(states)
    else:
        raise _usage_error(f"invalid format option {fmt!r}: use table or json")
    return 0


def _cmd_spec(a: Args, g: Args) -> int:
    return _extra().write_spec(a)


# one function per command (a: its arguments, g: the global options), so
# that a command loads only its own code
_HANDLERS = {"create": _cmd_create, "run": _cmd_run, "start": _cmd_start,
             "state": _cmd_state, "kill": _cmd_kill, "delete": _cmd_delete,
             "list": _cmd_list, "spec": _cmd_spec}


def main(argv: list[str] | None = None) -> int:
    import gc
    gc.disable()  # a short-lived process: collection only costs time
    from ocirun import log
    argv = sys.argv[1:] if argv is None else argv
    g = Args()
    try:
        # global options run until the first non-flag word: the command
        i = 0
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
            name = argv[i].lstrip("-").partition("=")[0]
            i += 1
            spec = GLOBAL.get(name) or GLOBAL.get({"h": "help", "v": "version"}.get(name, ""))
            if spec and spec[1] and "=" not in argv[i - 1]:
                i += 1
        g = parse(argv[:i], GLOBAL)
        log.configure(g.opts.get("log"), g.opts.get("log-format", "text"),
                      g.opts.get("log-level"), g.opts.get("debug", False))
        if g.opts.get("log-format", "text") not in ("text", "json"):
            raise _usage_error(f"invalid log-format {g.opts['log-format']!r}: use text or json")
        if g.opts.get("cgroup-manager") not in (None, "cgroupfs", "systemd", "disabled"):
            raise _usage_error(f"unknown cgroup manager {g.opts['cgroup-manager']!r}")
        if g.opts.get("version"):
            return _version()
        rest = argv[i:]
        if not rest or g.opts.get("help"):
            return _help()
        cmd = ALIASES.get(rest[0], rest[0])
        if cmd == "help":
            return _help_command(rest[1:])
        if cmd not in COMMANDS and (cmd not in EXTERNAL or _external(cmd) is None):
            raise _usage_error(f"unknown command {rest[0]!r} (see ocirun --help)")
        if log.debugging():
            log.debug(f"{cmd} {' '.join(rest[1:])} (pid {os.getpid()})")
        return dispatch(cmd, rest[1:], g)
    except (Exception, KeyboardInterrupt) as e:
        return _report_error(e)


def _help_command(args: list[str]) -> int:
    """`ocirun help [COMMAND]`: an unknown COMMAND gets the general help."""
    return _help(args[0] if args and args[0] in _all_commands() else None)


def _report_error(e: BaseException) -> int:
    """The exit code for an error that ended main(), after logging it as
    one line (never a traceback)."""
    from ocirun import log
    from ocirun.errors import OciError, os_error_line
    if isinstance(e, OciError):
        log.error(str(e))
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, BrokenPipeError):
        return 1
    if isinstance(e, OSError):  # a system error nobody turned into an OciError: still one line
        log.error(os_error_line(e))
        return 1
    # a bug: still one line, with what is needed to find it
    log.error(f"internal error: {type(e).__name__}: {e}")
    return 1


_exits_after = False  # main() returns to run_and_exit, which exits at once


def run_and_exit() -> None:
    """The launchers' entry point: main(), then leave with os._exit.

    The interpreter's teardown (destroying every module and object, ~1 ms
    after a container run) buys nothing here: ocirun starts no threads,
    registers no atexit handlers and writes its log with os.write; the
    only buffered output, stdout/stderr, is flushed first."""
    global _exits_after
    _exits_after = True
    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    try:
        sys.stdout.flush()
    except OSError:  # a closed pipe: as main() does for BrokenPipeError
        code = code or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)
