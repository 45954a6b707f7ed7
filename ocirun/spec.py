"""config.json: load it and check every field ocirun reads, with JSON paths.

Validation is hand-written (no jsonschema: it is slow to import) and follows
the runtime-spec schema: a wrong type, a missing required field or an
unknown enum value raises ConfigError("linux.namespaces[2].type", ...).
Fields that the spec defines but ocirun does not implement raise
NotSupported, so a config is never half-honoured in silence.
"""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.errors import ConfigError, NotSupported

NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean",
               list: "an array", dict: "an object", float: "a number"}


class Checker:
    """Typed accessors that raise ConfigError naming the JSON path."""

    __slots__ = ("file",)

    def __init__(self, file: str = "config.json") -> None:
        self.file = file

    def fail(self, path: str, msg: str) -> ConfigError:
        return ConfigError(path, msg, self.file)

    def typed(self, value, typ, path: str):
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            return self._mistyped(value, typ, path)
        if typ is str and "\0" in value:  # (no path, argument or name the kernel takes has one)
            raise self.fail(path, "must not contain a NUL character")
        return value

    def _mistyped(self, value, typ, path: str):
        """The rare case: value is not a typ, or is a bool where an int is
        wanted. An integer is still a JSON number (float); the rest fails."""
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.fail(path, f"must be {_TYPE_NAMES[typ]}, got {_json_type(value)}")

    def get(self, obj: dict, key: str, typ, path: str, default=None, required=False):
        if key not in obj or obj[key] is None:
            if required:
                raise self.fail(_join(path, key), "is required")
            return default
        return self.typed(obj[key], typ, _join(path, key))

    def uint(self, obj: dict, key: str, path: str, default=None, bits: int = 32,
             required: bool = False):
        v = self.get(obj, key, int, path, default, required)
        if v is not None and not 0 <= v < (1 << bits):
            raise self.fail(_join(path, key), f"must be between 0 and {(1 << bits) - 1}")
        return v

    def strlist(self, obj: dict, key: str, path: str) -> list[str]:
        v = self.get(obj, key, list, path, [])
        p = _join(path, key)
        for i, s in enumerate(v):
            self.typed(s, str, f"{p}[{i}]")
        return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def load(bundle: str, config_path: str | None = None) -> dict:
    """Read and validate the bundle's config; return the parsed dict."""
    path = config_path or os.path.join(bundle, "config.json")
    name = os.path.basename(path) if config_path else "config.json"
    cfg = read_json(path, name)
    validate(cfg, Checker(name))
    return cfg


def read_json(path: str, name: str):
    """Parse a JSON input file; errors name the file (one line)."""
    try:
        data = os.read_bytes(path)
    except FileNotFoundError:
        raise ConfigError("", f"cannot read {path}: no such file", name) from None
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}", name) from None
    from ocirun.jsonutil import loads
    try:
        cfg = loads(data)
    except (ValueError, RecursionError, SystemError, StopIteration):
        # the bare _json scanner reports some truncated documents as a
        # SystemError or a stray StopIteration: all mean "not JSON"
        raise ConfigError("", f"malformed JSON: {json_error(data)}", name) from None
    return cfg


def json_error(data: bytes) -> str:
    """Why data is not JSON, with line and column (the slow stdlib parser is
    only loaded to explain an error)."""
    import json
    try:
        json.loads(data)
    except (ValueError, RecursionError) as e:
        return _json_error(e)
    return "not a single JSON document"


def _json_error(e: Exception) -> str:
    import json
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at line {e.lineno} column {e.colno}"
    if isinstance(e, UnicodeDecodeError):
        return "not valid UTF-8"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e)


def validate(cfg, c: Checker) -> None:
    """Check the whole config (types, required fields, enums)."""
    if not isinstance(cfg, dict):
        raise c.fail("", f"must be a JSON object, got {_json_type(cfg)}")
    c.get(cfg, "ociVersion", str, "", required=True)
    # first: the rest of another platform's config follows that platform's rules
    for os_key in ("windows", "solaris", "vm", "zos", "freebsd"):
        if cfg.get(os_key) is not None:
            raise NotSupported(os_key, f"{os_key} containers (this runtime runs Linux containers)",
                               c.file)
    root = c.get(cfg, "root", dict, "")
    if root is not None:
        c.get(root, "path", str, "root", required=True)
        c.get(root, "readonly", bool, "root")
    c.get(cfg, "hostname", str, "")
    c.get(cfg, "domainname", str, "")
    ann = c.get(cfg, "annotations", dict, "", {})
    for k, v in ann.items():
        if not isinstance(v, str):  # (any string: annotations are data, never a path)
            raise c.fail(f"annotations.{k}", f"must be a string, got {_json_type(v)}")
    for i, m in enumerate(c.get(cfg, "mounts", list, "", [])):
        check_mount(m, f"mounts[{i}]", c)
    proc = c.get(cfg, "process", dict, "")
    if proc is not None:
        check_process(proc, "process", c)
    hooks = c.get(cfg, "hooks", dict, "")
    if hooks is not None:
        check_hooks(hooks, c)
    linux = c.get(cfg, "linux", dict, "")
    if linux is not None:
        check_linux(linux, c)


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer",
              "poststart", "poststop")


def check_hooks(hooks: dict, c: Checker) -> None:
    for kind, lst in hooks.items():
        if kind not in HOOK_KINDS:
            raise c.fail(f"hooks.{kind}", "unknown hook kind")
        c.typed(lst, list, f"hooks.{kind}")
        for i, h in enumerate(lst):
            check_hook(h, f"hooks.{kind}[{i}]", c)


def check_hook(h, path: str, c: Checker) -> None:
    c.typed(h, dict, path)
    p = c.get(h, "path", str, path, required=True)
    if not p.startswith("/"):
        raise c.fail(f"{path}.path", f"must be an absolute path, got {p!r}")
    c.strlist(h, "args", path)
    c.strlist(h, "env", path)
    t = c.get(h, "timeout", int, path)
    if t is not None and t < 1:
        raise c.fail(f"{path}.timeout", "must be greater than zero")


def check_mount(m, path: str, c: Checker) -> None:
    c.typed(m, dict, path)
    c.get(m, "destination", str, path, required=True)
    c.get(m, "type", str, path)
    c.get(m, "source", str, path)
    c.strlist(m, "options", path)
    if "uidMappings" in m or "gidMappings" in m:
        check_idmaps(m, path, c)


def check_idmaps(obj: dict, path: str, c: Checker) -> None:
    """The uidMappings and gidMappings of obj (a mount, or linux)."""
    for key in ("uidMappings", "gidMappings"):
        for i, idm in enumerate(c.get(obj, key, list, path, [])):
            check_idmap(idm, f"{path}.{key}[{i}]", c)


def check_idmap(idm, path: str, c: Checker) -> None:
    c.typed(idm, dict, path)
    for k in ("containerID", "hostID", "size"):
        c.uint(idm, k, path, required=True)


RLIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
           "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
           "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO",
           "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK")


def check_process(proc, path: str, c: Checker, exec_process: bool = False) -> None:
    c.typed(proc, dict, path)
    args = c.strlist(proc, "args", path)
    if not args and proc.get("commandLine") is None:
        raise c.fail(f"{path}.args", "must name the program to run")
    c.get(proc, "cwd", str, path, required=not exec_process)
    cwd = proc.get("cwd")
    if cwd is not None and not cwd.startswith("/"):
        raise c.fail(f"{path}.cwd", f"must be an absolute path, got {cwd!r}")
    for i, e in enumerate(c.strlist(proc, "env", path)):
        if "=" not in e:
            raise c.fail(f"{path}.env[{i}]", f"must be KEY=VALUE, got {e!r}")
    c.get(proc, "terminal", bool, path)
    cs = c.get(proc, "consoleSize", dict, path)
    if cs is not None:
        c.uint(cs, "height", f"{path}.consoleSize", required=True)
        c.uint(cs, "width", f"{path}.consoleSize", required=True)
    user = c.get(proc, "user", dict, path, required=not exec_process)
    if user is not None:
        up = f"{path}.user"
        c.uint(user, "uid", up, required=True)
        c.uint(user, "gid", up, required=True)
        c.uint(user, "umask", up)
        for i, g in enumerate(c.get(user, "additionalGids", list, up, [])):
            c.uint({"g": g}, "g", f"{up}.additionalGids[{i}]")
    caps = c.get(proc, "capabilities", dict, path)
    if caps is not None:
        for k, v in caps.items():
            if k not in ("bounding", "effective", "inheritable", "permitted", "ambient"):
                raise c.fail(f"{path}.capabilities.{k}", "unknown capability set")
            c.strlist(caps, k, f"{path}.capabilities")
    seen = set()
    for i, r in enumerate(c.get(proc, "rlimits", list, path, [])):
        rp = f"{path}.rlimits[{i}]"
        c.typed(r, dict, rp)
        t = c.get(r, "type", str, rp, required=True)
        if t not in RLIMITS:
            raise c.fail(f"{rp}.type", f"unknown rlimit {t!r}")
        if t in seen:
            raise c.fail(f"{rp}.type", f"duplicate rlimit {t!r}")
        seen.add(t)
        soft = c.uint(r, "soft", rp, required=True, bits=64)
        hard = c.uint(r, "hard", rp, required=True, bits=64)
        if soft > hard:
            raise c.fail(rp, f"soft limit {soft} is greater than hard limit {hard}")
    c.get(proc, "noNewPrivileges", bool, path)
    c.get(proc, "apparmorProfile", str, path)
    c.get(proc, "selinuxLabel", str, path)
    oom = c.get(proc, "oomScoreAdj", int, path)
    if oom is not None and not -1000 <= oom <= 1000:
        raise c.fail(f"{path}.oomScoreAdj", "must be between -1000 and 1000")


def check_linux(linux: dict, c: Checker) -> None:
    seen = set()
    for i, ns in enumerate(c.get(linux, "namespaces", list, "linux", [])):
        p = f"linux.namespaces[{i}]"
        c.typed(ns, dict, p)
        t = c.get(ns, "type", str, p, required=True)
        if t not in NAMESPACES:
            raise c.fail(f"{p}.type", f"unknown namespace {t!r}".replace("'", '"'))
        if t in seen:
            raise c.fail(f"{p}.type", f'duplicate namespace "{t}"')
        seen.add(t)
        nsp = c.get(ns, "path", str, p)
        if nsp is not None and not nsp.startswith("/"):
            raise c.fail(f"{p}.path", f"must be an absolute path, got {nsp!r}")
    if "uidMappings" in linux or "gidMappings" in linux:
        check_linux_idmaps(linux, "user" in seen, c)
    for key in ("maskedPaths", "readonlyPaths"):
        for i, p in enumerate(c.strlist(linux, key, "linux")):
            if not p.startswith("/"):
                raise c.fail(f"linux.{key}[{i}]", f"must be an absolute path, got {p!r}")
    sysctl = c.get(linux, "sysctl", dict, "linux")
    if sysctl:
        check_sysctl(sysctl, c)
    devices = c.get(linux, "devices", list, "linux")
    if devices:
        check_devices(devices, c)
    c.get(linux, "cgroupsPath", str, "linux")
    res = c.get(linux, "resources", dict, "linux")
    if res is not None:
        check_resources_shape(res, c)
    prop = c.get(linux, "rootfsPropagation", str, "linux")
    if prop is not None and prop not in PROPAGATIONS:
        raise c.fail("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    offsets = c.get(linux, "timeOffsets", dict, "linux")
    if offsets is not None:
        check_time_offsets(offsets, "time" in seen, c)
    c.get(linux, "seccomp", dict, "linux")
    c.get(linux, "mountLabel", str, "linux")
    c.get(linux, "personality", dict, "linux")
    if linux.get("intelRdt") is not None:
        raise NotSupported("linux.intelRdt", "Intel RDT", c.file)
    nd = c.get(linux, "netDevices", dict, "linux")
    if nd:
        check_net_devices(nd, c)


def check_linux_idmaps(linux: dict, has_user_ns: bool, c: Checker) -> None:
    """has_user_ns: whether the config asks for a user namespace."""
    check_idmaps(linux, "linux", c)
    if (linux.get("uidMappings") or linux.get("gidMappings")) and not has_user_ns:
        raise c.fail("linux.uidMappings", "mappings need a user namespace")


def check_sysctl(sysctl: dict, c: Checker) -> None:
    for k, v in sysctl.items():
        c.typed(v, str, f"linux.sysctl.{k}")
        if "/" in k or ".." in k.split(".") or "\0" in k:
            raise c.fail(f"linux.sysctl.{k}", "invalid sysctl name")


def check_devices(devices: list, c: Checker) -> None:
    for i, d in enumerate(devices):
        p = f"linux.devices[{i}]"
        c.typed(d, dict, p)
        c.get(d, "path", str, p, required=True)
        t = c.get(d, "type", str, p, required=True)
        if t not in ("c", "b", "u", "p"):
            raise c.fail(f"{p}.type", f"unknown device type {t!r}")
        if t != "p":  # (the kernel's dev_t: 12 bits of major, 20 of minor)
            c.uint(d, "major", p, required=True, bits=12)
            c.uint(d, "minor", p, required=True, bits=20)
        c.uint(d, "fileMode", p)
        c.uint(d, "uid", p)
        c.uint(d, "gid", p)


def check_time_offsets(offsets: dict, has_time_ns: bool, c: Checker) -> None:
    """has_time_ns: whether the config asks for a new time namespace."""
    if not has_time_ns:
        raise c.fail("linux.timeOffsets", "needs a time namespace")
    for clock, off in offsets.items():
        p = f"linux.timeOffsets.{clock}"
        if clock not in ("boottime", "monotonic"):
            raise c.fail(p, "unknown clock (boottime or monotonic)")
        c.typed(off, dict, p)
        c.get(off, "secs", int, p)
        n = c.uint(off, "nanosecs", p)
        if n is not None and n >= 10 ** 9:
            raise c.fail(f"{p}.nanosecs", "must be below 1000000000")


def check_net_devices(nd: dict, c: Checker) -> None:
    from ocirun.linux.netdev import name_problem
    names = {}
    for host, dev in nd.items():
        p = f"linux.netDevices.{host}"
        c.typed(dev, dict, p)
        bad = name_problem(host, template_ok=False)
        if bad:
            raise c.fail(p, bad)
        new = c.get(dev, "name", str, p)
        bad = new is not None and name_problem(new, template_ok=True)
        if bad:
            raise c.fail(f"{p}.name", bad)
        new = new or host
        if new in names and "%" not in new:
            raise c.fail(f"{p}.name", f"{new!r} is also the name of "
                                      f"linux.netDevices.{names[new]}")
        names[new] = host


def check_resources_shape(res: dict, c: Checker) -> None:
    """Schema-level shape of the resources the cgroup code does not see until
    it writes (values are checked against the host by the cgroup manager)."""
    p = "linux.resources"
    for key, typ in (("cpu", dict), ("memory", dict), ("pids", dict), ("blockIO", dict),
                     ("network", dict), ("unified", dict), ("devices", list)):
        c.get(res, key, typ, p)  # (the cgroup code reads them as these)
    hugepages = c.get(res, "hugepageLimits", list, p)
    if hugepages:
        check_hugepage_limits(hugepages, c)
    rdma = c.get(res, "rdma", dict, p)
    if rdma:
        check_rdma(rdma, c)


def check_hugepage_limits(limits: list, c: Checker) -> None:
    for i, h in enumerate(limits):
        hp = f"linux.resources.hugepageLimits[{i}]"
        c.typed(h, dict, hp)
        size = c.get(h, "pageSize", str, hp, required=True)
        num, unit = size[:-2], size[-2:]
        if unit not in ("KB", "MB", "GB") or not num.isdigit() or num.startswith("0"):
            raise c.fail(f"{hp}.pageSize", f"malformed page size {size!r} (e.g. \"2MB\")")
        c.uint(h, "limit", hp, required=True, bits=64)


def check_rdma(rdma: dict, c: Checker) -> None:
    for dev, lim in rdma.items():
        rp = f"linux.resources.rdma.{dev}"
        c.typed(lim, dict, rp)
        c.uint(lim, "hcaHandles", rp)
        c.uint(lim, "hcaObjects", rp)


PROPAGATIONS = {"shared": 1 << 20, "slave": 1 << 19, "private": 1 << 18,
                "unbindable": 1 << 17, "rshared": (1 << 20) | 16384,
                "rslave": (1 << 19) | 16384, "rprivate": (1 << 18) | 16384,
                "runbindable": (1 << 17) | 16384}
