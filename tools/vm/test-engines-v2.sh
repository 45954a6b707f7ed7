#!/bin/bash
# test-engines-v2.sh [PYTEST ARGS...]
#   Run the engine tests of podman and Docker (tests/engines/test_podman.py,
#   test_docker.py) in the QEMU guest: pure cgroup v2, systemd as PID 1, and each
#   engine's systemd cgroup driver (their default on such hosts: podman's
#   cgroup_manager "systemd", every container a transient scope under
#   machine.slice; dockerd's native.cgroupdriver=systemd, a scope under the
#   ocirun-test-docker.slice it is given). This host (cgroup v1, no systemd) runs
#   the same tests with the cgroupfs drivers in `make test`.
#   The guest image has the engines in it, so it is not the cgroup tests' image: it
#   lives under $VMLAB (default /var/cache/ocirun-vm-podman), built on first use and
#   again when its package list changes (~5 min).
# Default: ocirun only (-k ocirun; under TCG an engine call takes seconds). Pass
# pytest args to choose, e.g. `tools/vm/test-engines-v2.sh -k "runc and kill"`.
# Env: VMLAB, REBUILD=1, VM_* knobs of run-in-guest.sh (VM_TIMEOUT default 3600 here).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export VMLAB=${VMLAB:-/var/cache/ocirun-vm-podman}
export VM_TIMEOUT=${VM_TIMEOUT:-3600}
PACKAGES="python3-pytest podman conmon runc golang-github-containers-common uidmap docker.io apparmor"
if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$VMLAB/guest/rootfs.img" ] || \
   [ "$(cat "$VMLAB/guest/packages" 2>/dev/null)" != "$PACKAGES" ]; then
  t0=$(date +%s)
  EXTRA_PACKAGES="$PACKAGES" MASK_UNITS="docker.service docker.socket containerd.service" \
    REBUILD=1 "$HERE/build-guest.sh"
  echo "$PACKAGES" > "$VMLAB/guest/packages"
  echo "[test-engines-v2] guest image built in $(( $(date +%s) - t0 ))s" >&2
fi
if [ $# -eq 0 ]; then set -- -k ocirun; fi
ARGS=$(printf "%q " "$@")  # (quoted again: they go through the guest's bash)
/usr/bin/python3 -IS -c 'import sys; sys.path.insert(0, sys.argv[1]); from ocirun import bundle; bundle.build()' "$REPO" >/dev/null
"$HERE/run-in-guest.sh" "$REPO" \
  "export PYTHONDONTWRITEBYTECODE=1 OCIRUN_PODMAN_CGROUP_MANAGER=systemd OCIRUN_DOCKER_CGROUP_DRIVER=systemd OCIRUN_ENGINE_TIMEOUT_SCALE=5 OCIRUN_ENGINE_BIN=$REPO/bin/ocirun; \
   echo \"[guest] \$(uname -r); \$(stat -fc %T /sys/fs/cgroup); PID1=\$(cat /proc/1/comm); \$(podman --version); \$(dockerd --version)\"; \
   systemctl is-system-running --wait >/dev/null 2>&1 || true; \
   python3 -m pytest -q -rfEs -p no:cacheprovider --durations=8 -m engines tests/engines/test_podman.py tests/engines/test_docker.py $ARGS"
