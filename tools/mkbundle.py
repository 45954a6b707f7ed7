#!/usr/bin/python3
"""Build a small OCI bundle from the host's busybox-static.

Used by `make demo`, the test suite and the benchmark. The rootfs holds
/bin/busybox, a symlink per applet, and the directories a container needs.

    mkbundle.py DEST [--args 'sh -c ...'] [--tty] [--copy]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ocirun.specgen import default_spec  # noqa: E402

BUSYBOX = "/bin/busybox"
_applets: list[str] | None = None


def applets() -> list[str]:
    global _applets
    if _applets is None:
        out = subprocess.run([BUSYBOX, "--list-full"], check=True,
                             capture_output=True, text=True).stdout
        _applets = [a for a in out.split() if a]
    return _applets


def make_rootfs(rootfs: str, link_busybox: bool = True) -> None:
    """Create a busybox rootfs at `rootfs` (hard-links the binary when it can)."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
              "tmp", "root", "var", "run", "mnt"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    target = os.path.join(rootfs, "bin/busybox")
    if not os.path.exists(target):
        try:
            if not link_busybox:
                raise OSError
            os.link(BUSYBOX, target)
        except OSError:
            shutil.copy2(BUSYBOX, target)
    for a in applets():
        p = os.path.join(rootfs, a)
        if a == "bin/busybox" or os.path.lexists(p):
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink("/bin/busybox", p)
    with open(os.path.join(rootfs, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n"
                "daemon:x:1:1:daemon:/:/bin/false\n"
                "nobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc/group"), "w") as f:
        f.write("root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n")


def make_bundle(dest: str, args: list[str] | None = None, tty: bool = False,
                link_busybox: bool = True) -> dict:
    """Create DEST/rootfs and DEST/config.json; return the config."""
    os.makedirs(dest, exist_ok=True)
    make_rootfs(os.path.join(dest, "rootfs"), link_busybox)
    spec = default_spec()
    spec["process"]["terminal"] = tty
    if args:
        spec["process"]["args"] = args
    with open(os.path.join(dest, "config.json"), "w") as f:
        json.dump(spec, f, indent=2)
    return spec


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    args = None
    if "--args" in argv:
        args = ["sh", "-c", argv[argv.index("--args") + 1]]
    make_bundle(argv[0], args, tty="--tty" in argv, link_busybox="--copy" not in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
