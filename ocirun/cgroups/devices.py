"""Device access rules: validation and the v1 devices.allow/deny lines
(v2's eBPF program that replaces them: cgroups/v2/devices.py).

Semantics (both versions): a fresh cgroup allows everything; rules apply in
order and the last matching rule decides. The spec's usual list starts with
{"allow": false, "access": "rwm"} (deny all) and then allows some devices.
"""
from __future__ import annotations

from ocirun.errors import ConfigError


class Rule:
    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str = "a", major: int | None = None,
                 minor: int | None = None, access: str = "rwm") -> None:
        self.allow, self.type, self.major, self.minor = allow, type, major, minor
        self.access = access

    def v1_line(self) -> str:
        """'c 1:3 rwm' as written to devices.allow / devices.deny."""
        if self.type == "a" and self.major is None and self.minor is None:
            return "a"  # (the kernel also reads 'a' as all types, all numbers)
        ma = "*" if self.major is None else str(self.major)
        mi = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {ma}:{mi} {self.access}"

    def __repr__(self) -> str:
        return f"Rule({'allow' if self.allow else 'deny'} {self.v1_line()})"


def parse_rules(devices: list, path: str) -> list[Rule]:
    """linux.resources.devices -> [Rule]; ConfigError names the bad entry."""
    if not isinstance(devices, list):
        raise ConfigError(path, "must be an array")
    out = []
    for i, d in enumerate(devices):
        p = f"{path}[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(p, "must be an object")
        allow = d.get("allow")
        if not isinstance(allow, bool):
            raise ConfigError(p + ".allow", "is required and must be a boolean")
        t = d.get("type", "a")
        if t not in ("a", "b", "c"):
            raise ConfigError(p + ".type", f"invalid device type {t!r} (must be a, b or c)")
        nums = []
        for k in ("major", "minor"):
            v = d.get(k)
            if v is None or v == -1:
                nums.append(None)
            elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{p}.{k}", f"invalid device number {v!r}")
            else:
                nums.append(v)
        acc = d.get("access", "rwm")
        if acc is None or acc == "":
            acc = "rwm"
        # other letters are ignored, as runc does (its own tests deny "rwa")
        if not isinstance(acc, str) or not any(c in "rwm" for c in acc):
            raise ConfigError(p + ".access", f"invalid access {acc!r} (letters of 'rwm')")
        acc = "".join(c for c in "rwm" if c in acc)
        out.append(Rule(allow, t, nums[0], nums[1], acc))
    return out


def default_rules() -> list[Rule]:
    """Devices every container gets (runc's default allow list).

    The runtime appends these after the spec's rules: /dev/null, zero, full,
    tty, random, urandom, ptmx/pts, and mknod of any char/block device.
    """
    return [Rule(True, "c", None, None, "m"), Rule(True, "b", None, None, "m"),
            Rule(True, "c", 1, 3), Rule(True, "c", 1, 8), Rule(True, "c", 1, 7),
            Rule(True, "c", 5, 0), Rule(True, "c", 1, 5), Rule(True, "c", 1, 9),
            Rule(True, "c", 5, 2), Rule(True, "c", 136, None), Rule(True, "c", 10, 200)]
