#!/bin/bash
# run-in-guest.sh DIR CMD...
#   Boot the vmlab guest (Debian bookworm, systemd as PID 1, pure cgroup v2), share host
#   directory DIR into it (virtio-9p, read-write, mounted at the same absolute path unless
#   VM_GUEST_DIR says otherwise), run CMD there as root with bash (cwd = DIR), stream its
#   stdout/stderr to ours, power off, and exit with CMD's exit code.
#
# Env knobs:
#   VM_ACCEL=tcg|kvm     default tcg. NOTE: on this Firecracker host /dev/kvm is kvm_pvm
#                        (no VMX/SVM); a stock kernel under it crawls (>5 min, never boots).
#   VM_CPUS=2 VM_MEM=2048 (MiB)  VM_TIMEOUT=900 (s)
#   VM_INIT=systemd|simple   simple = bash script as PID 1 (no systemd), ~2x faster boot
#   VM_GUEST_DIR=/path   where DIR appears in the guest (default: same path as on host)
#   VM_9P_CACHE=none|loose|mmap  9p cache mode for DIR (default none: coherent w/ host)
#   VM_NET=none|user     user = QEMU slirp NAT (guest reaches what the host reaches)
#   VM_VERBOSE=1         show the guest console (kernel + systemd) on stderr
#   VM_KEEP_CTL=1        keep the control dir (console.log etc.) and print its path
#   VMLAB=DIR            where guest/ (vmlinux, initrd.cpio.gz, rootfs.img) lives
# Exit code: CMD's exit code; 124 = VM timeout; 125 = the VM died without a result.
set -uo pipefail
VMLAB=${VMLAB:-/var/cache/ocirun-vm}
G=$VMLAB/guest
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR CMD [ARGS...]   (CMD is run by bash inside the guest, cwd=DIR)" >&2; exit 2
fi
DIR=$(cd "$1" && pwd) || { echo "run-in-guest: no such dir: $1" >&2; exit 2; }
shift
CMD="$*"
for f in vmlinux initrd.cpio.gz rootfs.img; do
  [ -f "$G/$f" ] || { echo "run-in-guest: missing $G/$f - run $VMLAB/build-guest.sh" >&2; exit 2; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "run-in-guest: apt-get install qemu-system-x86" >&2; exit 2; }

ACCEL=${VM_ACCEL:-tcg}
CPUS=${VM_CPUS:-2}
MEM=${VM_MEM:-2048}
TMO=${VM_TIMEOUT:-900}
GDIR=${VM_GUEST_DIR:-$DIR}
CTL=$(mktemp -d "${TMPDIR:-/tmp}/vmlab-run.XXXXXX")
: > "$CTL/stdout"; : > "$CTL/stderr"
printf '%s\n' "$CMD" > "$CTL/cmd.sh"
{
  printf 'VMLAB_GUEST_DIR=%q\n' "$GDIR"
  printf 'VMLAB_9P_CACHE=%q\n' "${VM_9P_CACHE:-none}"
} > "$CTL/env"

case $ACCEL in
  kvm) ACC=(-accel kvm -cpu host,-arch-capabilities) ;;   # arch-capabilities MSR is refused by kvm_pvm
  *)   ACC=(-accel tcg,thread=multi,tb-size=256 -cpu "${VM_CPU:-max}") ;;
esac
APPEND="console=ttyS0 root=/dev/vda quiet loglevel=3 panic=-1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all systemd.show_status=false random.trust_cpu=on"
[ "${VM_INIT:-systemd}" = simple ] && APPEND="$APPEND init=/usr/local/sbin/vmlab-init"
NET=(-nic none); [ "${VM_NET:-none}" = user ] && NET=(-nic user,model=virtio-net-pci)

T0=$(date +%s%N)
timeout --kill-after=10 "$TMO" qemu-system-x86_64 -nodefaults -no-user-config -M q35 "${ACC[@]}" \
  -smp "$CPUS" -m "$MEM" -display none -monitor none -no-reboot \
  -serial "file:$CTL/console.log" \
  -kernel "$G/vmlinux" -initrd "$G/initrd.cpio.gz" -append "$APPEND" \
  -drive "file=$G/rootfs.img,if=virtio,format=raw,snapshot=on,cache=unsafe" \
  -virtfs "local,path=$CTL,mount_tag=vmlabctl,security_model=passthrough,id=vmlabctl" \
  -virtfs "local,path=${DIR//,/,,},mount_tag=host0,security_model=passthrough,id=host0" \
  -device virtio-rng-pci "${NET[@]}" \
  > "$CTL/qemu.log" 2>&1 &
QPID=$!
# if we are interrupted, take the VM down with us (QPID is `timeout`, it forwards the signal)
trap 'kill -TERM $QPID 2>/dev/null; wait $QPID 2>/dev/null; rm -rf "$CTL"; exit 130' INT TERM HUP
# stream the command's output while the guest runs
tail -n +1 -s 0.2 -f --pid=$QPID "$CTL/stdout" &
T1=$!
tail -n +1 -s 0.2 -f --pid=$QPID "$CTL/stderr" >&2 &
T2=$!
[ "${VM_VERBOSE:-0}" = 1 ] && { tail -n +1 -s 0.2 -F --pid=$QPID "$CTL/console.log" >&2 2>/dev/null & }
wait $QPID; QRC=$?
wait $T1 $T2 2>/dev/null
T2E=$(date +%s%N); MS=$(( (T2E - T0) / 1000000 ))

if [ -f "$CTL/rc" ]; then
  RC=$(cat "$CTL/rc")
else
  if [ $QRC = 124 ] || [ $QRC = 137 ]; then RC=124; echo "run-in-guest: VM timed out after ${TMO}s" >&2
  else RC=125; echo "run-in-guest: VM exited (qemu rc=$QRC) without a result" >&2; fi
  echo "---- qemu:" >&2; tail -5 "$CTL/qemu.log" >&2
  echo "---- guest console (tail):" >&2; tail -30 "$CTL/console.log" >&2
fi
GS=$(cat "$CTL/guest-uptime-start" 2>/dev/null || echo '?')
GE=$(cat "$CTL/guest-uptime-end" 2>/dev/null || echo '?')
printf '[run-in-guest] exit code %s; wall %d.%ds (guest uptime at cmd start %ss, at cmd end %ss)\n' \
  "$RC" $((MS / 1000)) $((MS % 1000 / 100)) "$GS" "$GE" >&2
if [ "${VM_KEEP_CTL:-0}" = 1 ]; then echo "[run-in-guest] control dir: $CTL" >&2; else rm -rf "$CTL"; fi
exit "$RC"
