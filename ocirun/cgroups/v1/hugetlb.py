"""v1 hugetlb controller: hugetlb.<size>.limit_in_bytes (+ .rsvd. variant)."""
from __future__ import annotations

from ocirun import oslite as os

from ocirun.cgroups import fsutil, spec


def set(d: str, res: dict, path: str, mgr) -> None:
    for size, limit, p in spec.hugepage_entries(res, path):
        fsutil.write(d, f"hugetlb.{size}.limit_in_bytes", limit, p + ".limit")
        # reservations are limited too (as runc), so a mapping cannot reserve past it
        if os.path.exists(os.path.join(d, f"hugetlb.{size}.rsvd.limit_in_bytes")):
            fsutil.write(d, f"hugetlb.{size}.rsvd.limit_in_bytes", limit, p + ".limit")


def stats(d: str) -> dict:
    out = {}
    for name in sorted(os.listdir(d)):
        if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes") and ".rsvd." not in name:
            size = name.split(".")[1]
            out[size] = {"usage": fsutil.read_int(d, name),
                         "max": fsutil.read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
                         "failcnt": fsutil.read_int(d, f"hugetlb.{size}.failcnt")}
    return out
