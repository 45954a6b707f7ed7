#!/bin/bash
# cold-list-v2.sh
#   Mark hot, in ocirun/bundle_cold.txt, the listed functions that a `run` calls
#   on a pure cgroup v2 host with systemd (tools/cold_list.py --mark-hot, in the
#   QEMU guest of test-cgroupv2.sh; with the cgroupfs and the systemd driver).
#   The list is made on this v1/hybrid host
#   (tools/cold_list.py); run this after regenerating it, so that a v2 run
#   does not load part of its code late.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export VMLAB=${VMLAB:-/var/cache/ocirun-vm}
[ -f "$VMLAB/guest/rootfs.img" ] || "$HERE/build-guest.sh"
"$HERE/run-in-guest.sh" "$REPO" "export PYTHONDONTWRITEBYTECODE=1; python3 tools/cold_list.py --mark-hot && python3 tools/cold_list.py --mark-hot --systemd-cgroup"
