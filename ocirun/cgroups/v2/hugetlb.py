"""v2 hugetlb controller: hugetlb.<size>.max and .rsvd.max."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil, spec


def set(d: str, res: dict, path: str, mgr) -> None:
    for size, limit, p in spec.hugepage_entries(res, path):
        v = "max" if limit == -1 else limit
        fsutil.write(d, f"hugetlb.{size}.max", v, p + ".limit")
        if os.path.exists(os.path.join(d, f"hugetlb.{size}.rsvd.max")):
            fsutil.write(d, f"hugetlb.{size}.rsvd.max", v, p + ".limit")


def stats(d: str) -> dict:
    out = {}
    for name in sorted(os.listdir(d)):
        if name.startswith("hugetlb.") and name.endswith(".current") and ".rsvd." not in name:
            size = name.split(".")[1]
            out[size] = {"usage": fsutil.read_int(d, name), "max": 0,
                         "failcnt": fsutil.read_kv(d, f"hugetlb.{size}.events").get("max", 0)}
    return out
