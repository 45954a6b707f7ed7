"""v2 devices: no control files; an eBPF program attached to the cgroup."""
from __future__ import annotations

from ocirun.cgroups import devices
from ocirun.errors import ConfigError


def set(d: str, res: dict, path: str, mgr) -> None:
    if res.get("devices") is None:
        return
    rules = devices.parse_rules(res["devices"], path + ".devices")
    from ocirun.cgroups import fsutil
    if fsutil.DRY_RUN:
        return
    try:
        devices.attach_v2(d, rules)
    except OSError as e:
        raise ConfigError(path + ".devices", f"attaching the device filter to {d}: {e}") from None
