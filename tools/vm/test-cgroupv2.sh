#!/bin/bash
# test-cgroupv2.sh [PYTEST ARGS...]
#   Run ocirun's cgroups tests (tests/cgroups: the library; tests/test_cgroup_container.py:
#   real containers with the cgroupfs and the systemd driver, pause/update/events ...;
#   tests/test_vfork.py: a run's init entering its cgroup2 by CLONE_INTO_CGROUP;
#   tests/test_devices.py: device nodes and rules under the eBPF device filter;
#   tests/test_notify.py: NOTIFY_SOCKET, with a real Type=notify systemd unit;
#   tests/test_exec.py: exec'd processes in the container's cgroup2, vforked or not)
#   in a throw-away QEMU guest with pure cgroup v2 and
#   systemd as PID 1 (this host is v1/hybrid without systemd). Builds the guest
#   image on first use under $VMLAB (default /var/cache/ocirun-vm, outside the repo),
#   shares the repo in read-write at the same path, runs pytest there with the
#   guest's python3 + python3-pytest, and exits with pytest's exit code.
# Env: VM_TIMEOUT (default 2400 s), OCIRUN_CG_CYCLES (create/delete cycles in the guest, default 20: 100 take ~280 s
#      under TCG), VMLAB, REBUILD=1 (rebuild the image), VM_* knobs of run-in-guest.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export VMLAB=${VMLAB:-/var/cache/ocirun-vm}
# the tests take ~8 min under TCG on an idle host; a busy one can double that
export VM_TIMEOUT=${VM_TIMEOUT:-2400}
if [ "${REBUILD:-0}" = 1 ] || [ ! -f "$VMLAB/guest/rootfs.img" ]; then
  t0=$(date +%s)
  "$HERE/build-guest.sh"
  echo "[test-cgroupv2] guest image built in $(( $(date +%s) - t0 ))s" >&2
fi
# the container tests need busybox-static in the guest (the bundle fixture copies
# /bin/busybox) and ps(1) for `ocirun ps`: both are in build-guest.sh's package list
if [ $# -eq 0 ]; then
  set -- tests/cgroups tests/test_cgroup_container.py tests/test_vfork.py tests/test_devices.py \
    tests/test_notify.py tests/test_exec.py
fi
ARGS=$(printf "%q " "$@")  # (quoted again: they go through the guest's bash)
# test helpers the guest cannot compile (it has no gcc): built here, in the
# shared repo, removed on the way out
HELPERS="$REPO/.vm-helpers"
rm -rf "$HELPERS"; mkdir -p "$HELPERS"
trap 'rm -rf "$HELPERS"' EXIT
gcc -static -Os -o "$HELPERS/sdn" "$REPO/tests/helpers/sdn.c"
# the launcher's bytecode bundle (ocirun/bundle.py), built here: a rebuild in
# the guest runs under TCG (seconds) and would land in the middle of a test
/usr/bin/python3 -IS -c 'import sys; sys.path.insert(0, sys.argv[1]); from ocirun import bundle; bundle.build()' "$REPO" >/dev/null
"$HERE/run-in-guest.sh" "$REPO" \
  "export PYTHONDONTWRITEBYTECODE=1 OCIRUN_TEST_HELPERS=$HELPERS OCIRUN_CG_CYCLES=${OCIRUN_CG_CYCLES:-20}; echo \"[guest] \$(uname -r); \$(stat -fc %T /sys/fs/cgroup); PID1=\$(cat /proc/1/comm)\"; \
   systemctl is-system-running --wait >/dev/null 2>&1 || true; \
   test -x /bin/busybox && busybox --list | grep -qx mkfifo || { echo '[guest] busybox-static missing: REBUILD=1' >&2; exit 2; }; \
   python3 -m pytest -q -rfEs -p no:cacheprovider --durations=8 $ARGS"
