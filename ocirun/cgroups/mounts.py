"""The plan for the container's /sys/fs/cgroup (data; the runtime does the syscalls).

Each entry is one of
    ("tmpfs", target, options, data)
    ("cgroup2", target, options)                fresh cgroup2 mount (needs a cgroupns)
    ("cgroup", target, options, data)           fresh v1 mount, data = 'cpu,cpuacct' / 'none,name=systemd'
    ("bind", source, target, options)           bind the host cgroup dir (no cgroupns)
    ("mkdir", target)
    ("symlink", link_value, target)             e.g. ("symlink", "cpu,cpuacct", "/sys/fs/cgroup/cpu")
    ("remount", target, options)                make the tmpfs read-only at the end
targets are absolute paths inside the container rootfs; options are mount
flag names (nosuid nodev noexec ro relatime).
"""
from __future__ import annotations

import os

from ocirun.cgroups.layout import Layout

ROOT = "/sys/fs/cgroup"


def plan(layout: Layout, mgr, cgroupns: bool, readonly: bool = True) -> list[tuple]:
    opts = ("nosuid", "nodev", "noexec", "relatime") + (("ro",) if readonly else ())
    fs = getattr(mgr, "fs", mgr)  # systemd manager -> its cgroupfs dirs
    if layout.mode == "v2":
        if cgroupns:
            return [("cgroup2", ROOT, opts)]
        return [("bind", fs.dir, ROOT, opts)]
    out: list[tuple] = [("tmpfs", ROOT, ("nosuid", "nodev", "noexec"), "mode=755")]
    for h in layout.hierarchies:
        name = os.path.basename(h.mountpoint)
        target = f"{ROOT}/{name}"
        out.append(("mkdir", target))
        if cgroupns:
            data = ",".join(h.controllers) if h.controllers else f"none,name={h.name}"
            if h.controllers and h.name:
                data += f",name={h.name}"
            out.append(("cgroup", target, opts, data))
        else:
            out.append(("bind", fs.paths[h.key], target, opts))
        if len(h.controllers) > 1:  # cpu,cpuacct -> cpu and cpuacct symlinks
            for c in h.controllers:
                if c != name:
                    out.append(("symlink", name, f"{ROOT}/{c}"))
    if layout.unified and "" in getattr(fs, "paths", {}):
        target = f"{ROOT}/{os.path.basename(layout.unified)}"
        out.append(("mkdir", target))
        out.append(("cgroup2", target, opts) if cgroupns else ("bind", fs.paths[""], target, opts))
    if readonly:
        out.append(("remount", ROOT, ("nosuid", "nodev", "noexec", "ro")))
    return out
