#!/bin/bash
# test-cgroupv2.sh [PYTEST ARGS...]
#   Run ocirun's cgroups tests in a throw-away QEMU guest with pure cgroup v2 and
#   systemd as PID 1 (this host is v1/hybrid without systemd). Builds the guest
#   image on first use under $VMLAB (default /var/cache/ocirun-vm, outside the repo),
#   shares the repo in read-write at the same path, runs pytest there with the
#   guest's python3 + python3-pytest, and exits with pytest's exit code.
# Env: VMLAB, REBUILD=1 (rebuild the image), VM_* knobs of run-in-guest.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export VMLAB=${VMLAB:-/var/cache/ocirun-vm}
if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$VMLAB/guest/rootfs.img" ]; then
  t0=$(date +%s)
  "$HERE/build-guest.sh"
  echo "[test-cgroupv2] guest image built in $(( $(date +%s) - t0 ))s" >&2
fi
ARGS=${*:-tests/cgroups}
exec "$HERE/run-in-guest.sh" "$REPO" \
  "export PYTHONDONTWRITEBYTECODE=1; echo \"[guest] \$(uname -r); \$(stat -fc %T /sys/fs/cgroup); PID1=\$(cat /proc/1/comm)\"; \
   systemctl is-system-running --wait >/dev/null 2>&1 || true; \
   python3 -m pytest -q -rs -p no:cacheprovider $ARGS"
