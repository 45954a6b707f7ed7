"""v1 net_cls / net_prio controllers (linux.resources.network)."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec
from ocirun.errors import ConfigError


def parse(res: dict, path: str) -> tuple[int | None, list[tuple[str, int]]]:
    net = spec.section(res, "network", path)
    p = path + ".network"
    cid = spec.get_int(net, "classID", p, maximum=0xFFFFFFFF)
    prios = []
    for i, e in enumerate(spec.get_list(net, "priorities", p)):
        q = f"{p}.priorities[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise ConfigError(q, "must be an object with a name")
        prios.append((e["name"], spec.get_int(e, "priority", q) or 0))
    return cid, prios


def set_cls(d: str, res: dict, path: str, mgr) -> None:
    cid, _ = parse(res, path)
    if cid is not None:
        fsutil.write(d, "net_cls.classid", cid, path + ".network.classID")


def set_prio(d: str, res: dict, path: str, mgr) -> None:
    _, prios = parse(res, path)
    for i, (name, prio) in enumerate(prios):
        fsutil.write(d, "net_prio.ifpriomap", f"{name} {prio}",
                     f"{path}.network.priorities[{i}]")
