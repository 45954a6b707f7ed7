"""The command line's rarely used parts, loaded only when called: help and
version text, list's table, spec, kill's signal names and the --regex ids.
(The commands an engine calls per container stay in cli.py.)"""
from ocirun import oslite as os
import sys

from ocirun.cli import COMMANDS, EXTERNAL, GLOBAL, VERSION, Args, _external, _usage_error


def show_help(cmd: str | None = None) -> int:
    if cmd is None:
        lines = [f"ocirun {VERSION} - an OCI container runtime in Python", "",
                 "usage: ocirun [global options] COMMAND [options] [arguments]", "",
                 "commands:"]
        for name, (desc, _, _) in all_commands().items():
            lines.append(f"   {name:<10} {desc}")
        lines += ["", "global options:"]
        for name, (al, takes, desc) in GLOBAL.items():
            flag = f"--{name}" + (" value" if takes else "")
            lines.append(f"   {flag:<24} {desc}")
    else:
        desc, usage, spec = all_commands()[cmd]
        lines = [f"ocirun {cmd} - {desc}", "", f"usage: ocirun {cmd} {usage}", "", "options:"]
        for name, (al, takes, d) in spec.items():
            flag = ", ".join([f"--{name}"] + [f"-{x}" for x in al]) + (" value" if takes else "")
            lines.append(f"   {flag:<28} {d}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def all_commands() -> dict:
    cmds = dict(COMMANDS)
    for cmd in EXTERNAL:
        mod = _external(cmd)
        if mod is not None and cmd in mod.COMMANDS:
            cmds[cmd] = mod.COMMANDS[cmd]
    return cmds


def show_version() -> int:
    from ocirun.specgen import OCI_VERSION
    sys.stdout.write(f"ocirun version {VERSION}\nspec: {OCI_VERSION}\n"
                     f"python: {sys.version.split()[0]}\n")
    return 0


def parse_signal(s: str) -> int:
    import signal
    if s.isdigit():
        n = int(s)
        if not 0 <= n < 65:  # (0: only checks the process is there, as in runc)
            raise _usage_error(f"invalid signal number {s}")
        return n
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    sig = getattr(signal, name, None)
    if not isinstance(sig, signal.Signals):
        if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
            try:
                off = int(name[9:])
            except ValueError:
                raise _usage_error(f'unknown signal "{s}"') from None
            base = signal.SIGRTMIN if name.startswith("SIGRTMIN") else signal.SIGRTMAX
            return base + off if name.startswith("SIGRTMIN") else base - off
        raise _usage_error(f'unknown signal "{s}"')
    return int(sig)


def ids_matching(pattern: str, root: str | None) -> list[str]:
    import re
    from ocirun.statedir import default_root, list_ids
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise _usage_error(f"invalid regular expression {pattern!r}: {e}") from None
    # unanchored, as crun (regexec): anchor with ^ and $ for a whole id
    return [i for i in list_ids(root or default_root()) if rx.search(i)]


def owner_name(state: dict) -> str:
    """`list`'s OWNER, as runc's: the user name of the owner's uid ("" is
    root), or "#<uid>" without one."""
    uid = state.get("owner") or "0"
    try:
        import pwd
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError, OverflowError):
        return f"#{uid}"


def print_table(states: list[dict]) -> None:
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for s in states:
        rows.append((s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"],
                     owner_name(s)))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        sys.stdout.write("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")


def write_spec(a: Args) -> int:
    import json
    from ocirun.errors import OciError
    from ocirun.specgen import default_spec
    bundle = a.opts.get("bundle", ".")
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise OciError(f"File {path} exists. Remove it first")
    rootless = a.opts.get("rootless", False)
    cfg = default_spec(rootless=rootless, uid=os.geteuid(), gid=os.getegid())
    try:
        with open(path, "x") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise OciError(f"cannot write {path}: {e.strerror}") from None
    return 0
