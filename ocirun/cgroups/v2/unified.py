"""linux.resources.unified: raw v2 key -> value writes, checked first."""
from __future__ import annotations

from ocirun.cgroups import fsutil
from ocirun.errors import ConfigError


def check(res: dict, path: str, controllers: set[str] | None) -> list[tuple[str, str]]:
    u = res.get("unified")
    if u is None:
        return []
    if not isinstance(u, dict):
        raise ConfigError(path + ".unified", "must be an object")
    out = []
    for k, v in u.items():
        p = f"{path}.unified.{k}"
        if not isinstance(v, str):
            raise ConfigError(p, "must be a string")
        ctl, dot, rest = k.partition(".")
        if not dot or not ctl or not rest or "/" in k or "\0" in k or k.startswith("."):
            raise ConfigError(p, f"invalid cgroup v2 file name {k!r}")
        if controllers is not None and ctl != "cgroup" and ctl not in controllers:
            raise ConfigError(p, f"controller {ctl!r} is not available in this cgroup")
        out.append((k, v))
    return out


def set(d: str, res: dict, path: str, mgr, controllers: set[str] | None = None) -> None:
    for k, v in check(res, path, controllers):
        fsutil.write(d, k, v, f"{path}.unified.{k}")
