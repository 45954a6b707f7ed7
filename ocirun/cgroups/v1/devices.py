"""v1 devices controller: the rules as devices.allow / devices.deny writes."""
from __future__ import annotations

from ocirun.cgroups import devices, fsutil


def set(d: str, res: dict, path: str, mgr) -> None:
    if res.get("devices") is None:
        return
    rules = devices.parse_rules(res["devices"], path + ".devices")
    fsutil.write_each(d, [("devices.allow" if r.allow else "devices.deny", r.v1_line(),
                           f"{path}.devices[{i}]") for i, r in enumerate(rules)])
