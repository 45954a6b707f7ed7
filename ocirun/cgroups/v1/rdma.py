"""rdma controller (the same rdma.max format on v1 and v2)."""
from __future__ import annotations

from ocirun.cgroups import fsutil, spec


def set(d: str, res: dict, path: str, mgr) -> None:
    for dev, line in spec.rdma_entries(res, path):
        fsutil.write(d, "rdma.max", f"{dev} {line}", f"{path}.rdma.{dev}")
