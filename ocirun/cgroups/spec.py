"""Validation of linux.resources values, shared by the v1 and v2 drivers.

Every helper takes the JSON path of the value so errors point at the field.
"""
from __future__ import annotations

from ocirun.errors import ConfigError

UNLIMITED = -1


def section(res: dict, key: str, path: str) -> dict:
    v = res.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{path}.{key}", "must be an object")
    return v


def get_int(d: dict, key: str, path: str, *, minimum: int | None = 0,
            unlimited: bool = False, maximum: int | None = None) -> int | None:
    """An integer field or None; -1 is accepted when `unlimited`."""
    v = d.get(key)
    if v is None:
        return None
    p = f"{path}.{key}"
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(p, f"must be an integer, not {type(v).__name__}")
    if unlimited and v == UNLIMITED:
        return v
    if minimum is not None and v < minimum:
        raise ConfigError(p, f"{v} is out of range (minimum {minimum}"
                          f"{', or -1 for unlimited' if unlimited else ''})")
    if maximum is not None and v > maximum:
        raise ConfigError(p, f"{v} is out of range (maximum {maximum})")
    return v


def get_weight(d: dict, key: str, path: str, zero: bool = False) -> int | None:
    """A blkio weight (10-1000) or None; 0 is "not set" as in runc (zero:
    kept, for a device's entry, where writing it clears the device's rule)."""
    w = get_int(d, key, path, maximum=1000)
    if not w:
        return 0 if zero and w == 0 else None
    if w < 10:
        raise ConfigError(f"{path}.{key}", f"{w} is out of range (10-1000, or 0 for unset)")
    return w


def get_bool(d: dict, key: str, path: str) -> bool | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise ConfigError(f"{path}.{key}", "must be a boolean")
    return v


def get_str(d: dict, key: str, path: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{path}.{key}", "must be a string")
    return v


def get_list(d: dict, key: str, path: str) -> list:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ConfigError(f"{path}.{key}", "must be an array")
    return v


def cpuset(d: dict, key: str, path: str) -> str | None:
    """A cpus/mems list such as '0-3,7'; returned normalised, or None."""
    s = get_str(d, key, path)
    if s is None:
        return None
    s = s.strip()
    if s == "":
        return s
    for part in s.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise ConfigError(f"{path}.{key}", f"malformed list {s!r} "
                              "(expected e.g. '0-3,6')")
    return s.replace(" ", "")


def cpuset_bits(s: str) -> bytes:
    """'0-2,5' -> little-endian bitmask bytes (systemd's AllowedCPUs format)."""
    mask = 0
    for part in s.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        for i in range(int(lo), int(hi or lo) + 1):
            mask |= 1 << i
    n = max(1, (mask.bit_length() + 7) // 8)
    return mask.to_bytes(n, "little")


def device_numbers(e: dict, path: str) -> tuple[int, int]:
    """major/minor of a blockIO device entry (both required)."""
    ma = get_int(e, "major", path)
    mi = get_int(e, "minor", path)
    if ma is None or mi is None:
        raise ConfigError(path, "major and minor are required")
    return ma, mi


def throttle_entries(bio: dict, key: str, path: str) -> list[tuple[int, int, int]]:
    out = []
    for i, e in enumerate(get_list(bio, key, path)):
        p = f"{path}.{key}[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(p, "must be an object")
        ma, mi = device_numbers(e, p)
        rate = get_int(e, "rate", p)
        if rate is None:
            raise ConfigError(p + ".rate", "is required")
        out.append((ma, mi, rate))
    return out


def weight_entries(bio: dict, path: str) -> list[tuple[int, int, int | None, int | None]]:
    out = []
    for i, e in enumerate(get_list(bio, "weightDevice", path)):
        p = f"{path}.weightDevice[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(p, "must be an object")
        ma, mi = device_numbers(e, p)
        w = get_weight(e, "weight", p, zero=True)
        lw = get_weight(e, "leafWeight", p, zero=True)
        out.append((ma, mi, w, lw))
    return out


_SIZES = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


def hugepage_entries(res: dict, path: str) -> list[tuple[str, int, str]]:
    """[(pageSize as in file names e.g. '2MB', limit, json path)]."""
    out = []
    for i, e in enumerate(get_list(res, "hugepageLimits", path)):
        p = f"{path}.hugepageLimits[{i}]"
        if not isinstance(e, dict):
            raise ConfigError(p, "must be an object")
        size = get_str(e, "pageSize", p)
        if not size or size[-2:] not in _SIZES or not size[:-2].isdigit():
            raise ConfigError(p + ".pageSize", f"malformed page size {size!r} (e.g. '2MB')")
        limit = get_int(e, "limit", p, unlimited=True)
        if limit is None:
            raise ConfigError(p + ".limit", "is required")
        out.append((size, limit, p))
    return out


def rdma_entries(res: dict, path: str) -> list[tuple[str, str]]:
    """[(device, 'hca_handle=N hca_object=M')]."""
    v = res.get("rdma")
    if v is None:
        return []
    if not isinstance(v, dict):
        raise ConfigError(f"{path}.rdma", "must be an object")
    out = []
    for dev, lim in v.items():
        p = f"{path}.rdma.{dev}"
        if not isinstance(lim, dict) or not dev or " " in dev:
            raise ConfigError(p, "must be an object keyed by a device name")
        parts = []
        for k, name in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object")):
            n = get_int(lim, k, p)
            if n is not None:
                parts.append(f"{name}={n}")
        if parts:
            out.append((dev, " ".join(parts)))
    return out


class Memory:
    """linux.resources.memory, validated once for the v1 and v2 writers."""

    __slots__ = ("p", "limit", "reservation", "swap", "kernel", "kernel_tcp", "swappiness",
                 "disable_oom_killer", "use_hierarchy", "check_before_update")

    def __init__(self, mem: dict, p: str) -> None:
        self.p = p
        # 0 is "not set", as in runc (spec generators write zeros for what
        # they leave out; a limit of 0 bytes would also leave the init
        # nothing to start with)
        self.limit = get_int(mem, "limit", p, unlimited=True) or None
        self.reservation = get_int(mem, "reservation", p, unlimited=True) or None
        self.swap = get_int(mem, "swap", p, unlimited=True) or None
        self.kernel = get_int(mem, "kernel", p, unlimited=True) or None
        self.kernel_tcp = get_int(mem, "kernelTCP", p, unlimited=True) or None
        self.swappiness = get_int(mem, "swappiness", p, maximum=100)
        self.disable_oom_killer = get_bool(mem, "disableOOMKiller", p)
        self.use_hierarchy = get_bool(mem, "useHierarchy", p)
        self.check_before_update = get_bool(mem, "checkBeforeUpdate", p)
        if self.swap not in (None, -1) and self.limit not in (None, -1) \
                and self.swap < self.limit:
            raise ConfigError(p + ".swap", f"memory+swap limit {self.swap} must be >= "
                              f"memory limit {self.limit}")

    def check_usage(self, usage: int) -> None:
        """checkBeforeUpdate: refuse a limit below what is already used."""
        if self.check_before_update and self.limit not in (None, -1) and usage > self.limit:
            raise ConfigError(self.p + ".limit", f"{self.limit} is below the current usage "
                              f"{usage} (checkBeforeUpdate)")


def memory(res: dict, path: str) -> Memory | None:
    mem = section(res, "memory", path)
    return Memory(mem, path + ".memory") if mem else None
