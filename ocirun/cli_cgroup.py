"""`ocirun ps | pause | resume | update | events`: runc-compatible commands on a
container's cgroup, loaded by cli.py only when one of them is called."""
from __future__ import annotations

import sys

from ocirun.cli import _need_id, _usage_error, parse

_H = {"help": (("h",), False, "show help")}

# update flag -> (section, field, kind); kind: mem (byte sizes with suffixes,
# -1 = unlimited), int, uint, str
UPDATE_FLAGS = {
    "memory": ("memory", "limit", "mem", "memory limit in bytes (suffixes k, m, g ...; -1 unlimited)"),
    "memory-swap": ("memory", "swap", "mem", "memory + swap limit; -1 for unlimited swap"),
    "memory-reservation": ("memory", "reservation", "mem", "memory soft limit in bytes"),
    "kernel-memory": ("memory", "kernel", "mem", "kernel memory limit (deprecated, ignored)"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "mem", "kernel TCP buffer memory limit"),
    "cpu-shares": ("cpu", "shares", "uint", "CPU shares (relative weight)"),
    "cpu-share": ("cpu", "shares", "uint", "same as --cpu-shares (runc's spelling)"),
    "cpu-quota": ("cpu", "quota", "int", "CFS quota in us per period (-1 unlimited)"),
    "cpu-period": ("cpu", "period", "uint", "CFS period in us"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "uint", "realtime period in us"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int", "realtime runtime in us per period"),
    "cpuset-cpus": ("cpu", "cpus", "str", "CPUs to use (e.g. 0-2,4)"),
    "cpuset-mems": ("cpu", "mems", "str", "memory nodes to use"),
    "pids-limit": ("pids", "limit", "int", "maximum number of pids (-1 unlimited)"),
    "blkio-weight": ("blockIO", "weight", "uint", "block IO weight, 10 to 1000"),
}

COMMANDS = {
    "pause": ("freeze every process of a container", "ID", dict(_H)),
    "resume": ("thaw a paused container", "ID", dict(_H)),
    "ps": ("list the processes of a container", "[options] ID [ps options]",
           {"format": (("f",), True, "table (default: runs ps with the ps options) or json"),
            **_H}),
    "update": ("change the resource limits of a container", "[options] ID",
               {"resources": (("r",), True, "file with a JSON LinuxResources object, or - "
                              "for stdin (the other flags are then ignored, as runc)"),
                **{k: ((), True, v[3]) for k, v in UPDATE_FLAGS.items()},
                "l3-cache-schema": ((), True, "Intel RDT: not supported"),
                "mem-bw-schema": ((), True, "Intel RDT: not supported"),
                **_H}),
    "events": ("print container events (stats, oom) as JSON lines", "[options] ID",
               {"stats": ((), False, "print the stats once and exit"),
                "interval": ((), True, "stats interval (Go duration, default 5s)"),
                **_H}),
}

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(flag: str, s: str) -> int:
    """A size as runc (go-units RAMInBytes) reads it: digits[.digits], an optional
    space, then k/m/g/t/p with optional 'i' and 'b' (binary units): '4m', '1.5G',
    '512KiB', '2mb'; '-1' is unlimited."""
    if s.strip() == "-1":
        return -1
    t = s.strip().lower()
    i = 0
    while i < len(t) and (t[i].isdigit() or t[i] == "."):
        i += 1
    num, rest = t[:i], t[i:].lstrip(" ")
    unit = rest[0] if rest and rest[0] in _UNITS and rest[0] else ""
    rest = rest[len(unit):]
    if rest.startswith("i"):
        rest = rest[1:]
    if rest.startswith("b"):
        rest = rest[1:]
    try:
        if rest or not num or num.startswith(".") or num.endswith("."):
            raise ValueError
        value = float(num) if "." in num else int(num)
    except ValueError:
        raise _usage_error(f"invalid value for --{flag}: invalid size: {s!r}") from None
    return int(value * _UNITS[unit])


def _int(flag: str, s: str, unsigned: bool) -> int:
    try:
        v = int(s, 10)
    except ValueError:
        raise _usage_error(f"invalid value for --{flag}: {s!r} is not an integer") from None
    if unsigned and v < 0:
        raise _usage_error(f"invalid value for --{flag}: {s!r} must not be negative")
    return v


def parse_duration(s: str) -> float:
    """A Go duration ('5s', '100ms', '1m30s', '1.5h') in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, i, t = 0.0, 0, s.strip()
    if t == "0":
        return 0.0
    if not t:
        raise _usage_error(f"invalid duration {s!r}")
    while i < len(t):
        j = i
        while j < len(t) and (t[j].isdigit() or t[j] == "."):
            j += 1
        k = j
        while k < len(t) and not (t[k].isdigit() or t[k] == "."):
            k += 1
        num, unit = t[i:j], t[j:k]
        if not num or unit not in units:
            raise _usage_error(f"invalid duration {s!r} (e.g. 5s, 500ms, 1m)")
        try:
            total += float(num) * units[unit]
        except ValueError:
            raise _usage_error(f"invalid duration {s!r}") from None
        i = k
    return total


def resources_from_flags(opts: dict) -> dict:
    """The LinuxResources object the update flags describe (only given fields)."""
    res: dict = {}
    for flag, (section, field, kind, _) in UPDATE_FLAGS.items():
        if flag not in opts:
            continue
        s = opts[flag]
        if kind == "mem":
            v = parse_bytes(flag, s)
        elif kind == "str":
            v = s
        else:
            v = _int(flag, s, kind == "uint")
        res.setdefault(section, {})[field] = v
    return res


def _read_resources(src: str) -> dict:
    import json
    from ocirun.errors import OciError
    try:
        if src == "-":
            text = sys.stdin.read()
        else:
            with open(src) as f:
                text = f.read()
    except OSError as e:
        raise OciError(f"cannot read resources from {src}: {e.strerror}") from None
    try:
        res = json.loads(text)
    except ValueError as e:
        raise OciError(f"resources {'(stdin)' if src == '-' else src}: invalid JSON: {e}") from None
    if not isinstance(res, dict):
        raise OciError("resources: must be a JSON object (a LinuxResources)")
    return res


def _flag_error(e, flags_used: dict):
    """Name the command-line flag in an error about a field it set."""
    from ocirun.errors import OciError
    for flag, (section, field, _, _) in UPDATE_FLAGS.items():
        if flag in flags_used and e.path.startswith(f"resources.{section}.{field}"):
            return OciError(f"update: --{flag}: {e.msg}")
    return e


def _ps_table(pids: list[int], args: list[str]) -> int:
    """runc: run `ps ARGS` (default -ef), keep the header and the container's lines."""
    import subprocess
    from ocirun.errors import OciError
    try:
        out = subprocess.run(["ps", *(args or ["-ef"])], capture_output=True, text=True,
                             check=False)
    except OSError as e:
        raise OciError(f"cannot run ps: {e.strerror}") from None
    if out.returncode != 0:
        raise OciError(f"ps {' '.join(args or ['-ef'])}: "
                       f"{(out.stderr.strip().splitlines() or ['failed'])[0]}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise OciError("couldn't find PID field in ps output")
    col = header.index("PID")
    keep = set(pids)
    sys.stdout.write(lines[0] + "\n")
    for ln in lines[1:]:
        fields = ln.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in keep:
            sys.stdout.write(ln + "\n")
    return 0


def dispatch(cmd: str, argv: list[str], g) -> int:
    from ocirun import control
    from ocirun.cli import _help
    root = g.opts.get("root")
    spec = COMMANDS[cmd][2]
    # ps: everything after the id goes to ps(1)
    a = parse(argv, spec, stop_at_positional=cmd == "ps", max_pos=1 if cmd == "ps" else None)
    if a.opts.get("help"):
        return _help(cmd)
    if cmd == "pause":
        control.pause(_need_id(a, cmd), root)
        return 0
    if cmd == "resume":
        control.resume(_need_id(a, cmd), root)
        return 0
    if cmd == "ps":
        if not a.pos:
            raise _usage_error('"ps" requires a container id')
        cid, ps_args = a.pos[0], a.pos[1:]
        fmt = a.opts.get("format", "table")
        if fmt not in ("table", "json"):
            raise _usage_error(f"invalid format option {fmt!r}: use table or json")
        pids = control.ps(cid, root)
        if fmt == "json":
            import json
            sys.stdout.write(json.dumps(pids, separators=(",", ":")) + "\n")  # (runc's: one line)
            return 0
        return _ps_table(pids, ps_args)
    if cmd == "update":
        cid = _need_id(a, cmd)
        for f in ("l3-cache-schema", "mem-bw-schema"):
            if f in a.opts:
                from ocirun.errors import NotSupported
                raise NotSupported(f"--{f}", "Intel RDT", file="update")
        from ocirun.errors import ConfigError
        if "resources" in a.opts:
            res, used = _read_resources(a.opts["resources"]), {}
        else:
            used = {k: v for k, v in a.opts.items() if k in UPDATE_FLAGS}
            res = resources_from_flags(used)
        try:
            control.update(cid, res, root)
        except ConfigError as e:
            raise _flag_error(e, used) from None
        return 0
    if cmd == "events":
        import json
        cid = _need_id(a, cmd)
        interval = parse_duration(a.opts.get("interval", "5s"))
        if interval <= 0:
            raise _usage_error("duration must be greater than 0")
        out = sys.stdout
        for ev in control.events(cid, root, stats=a.opts.get("stats", False),
                                 interval=interval):
            out.write(json.dumps(ev, separators=(",", ":")) + "\n")
            out.flush()
        return 0
    raise _usage_error(f"unknown command {cmd!r}")  # pragma: no cover
