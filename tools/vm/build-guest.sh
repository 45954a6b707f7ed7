#!/bin/bash
# build-guest.sh - build the cgroup-v2 / systemd test guest used by run-in-guest.sh
# (adapted for ocirun from /work/shared/vmguest; the cache lives outside the repo)
#
# Produces, under $VMLAB (default: the directory of this script):
#   guest/vmlinux          uncompressed Debian kernel (boots via PVH, skips the slow
#                          in-guest xz decompression under TCG)
#   guest/vmlinuz          the same kernel, compressed (fallback, not used by default)
#   guest/initrd.cpio.gz   busybox-static initramfs: loads virtio_pci/virtio_blk/ext4,
#                          mounts /dev/vda and switch_roots to systemd
#   guest/rootfs.img       sparse raw ext4 image: Debian bookworm minbase + systemd,
#                          dbus, udev, python3, busybox-static, iproute2, kmod, procps
#                          (+ $EXTRA_PACKAGES) and a module subset of the same kernel
#
# Host packages: qemu-system-x86 qemu-utils debootstrap busybox-static cpio kmod e2fsprogs
# Only Debian's apt mirror is contacted. Nothing is mounted on the host (the ext4 image is
# filled with mkfs.ext4 -d, no loop mount), host cgroups are not touched.
#
# Env: EXTRA_PACKAGES="podman crun ..."  extra debs for the guest
#      MASK_UNITS="docker.service ..."  systemd units of those not to start at boot
#      MIRROR=<the apt mirror; default: the first URIs: line of the host's apt sources>  SUITE=bookworm  IMG_SIZE=4G
#      KEEP_ROOTFS=1   keep the unpacked rootfs dir (default: deleted after imaging)
set -euo pipefail
VMLAB=${VMLAB:-/var/cache/ocirun-vm}
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)}
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
SUITE=${SUITE:-bookworm}
IMG_SIZE=${IMG_SIZE:-4G}
EXTRA_PACKAGES=${EXTRA_PACKAGES:-python3-pytest}
G=$VMLAB/guest
W=$VMLAB/work
mkdir -p "$G" "$W"
log() { echo "[build-guest] $*" >&2; }

# ---- 0. host tools ------------------------------------------------------------------------
need=()
for p in qemu-system-x86:qemu-system-x86_64 qemu-utils:qemu-img debootstrap:debootstrap \
         busybox-static:busybox cpio:cpio kmod:depmod e2fsprogs:mkfs.ext4; do
  command -v "${p#*:}" >/dev/null || need+=("${p%%:*}")
done
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  log "installing host packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

# ---- 1. kernel ----------------------------------------------------------------------------
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
KVER=${KPKG#linux-image-}
log "kernel package $KPKG ($KVER)"
KROOT=$W/kernel-$KVER
if [ ! -f "$KROOT/boot/vmlinuz-$KVER" ]; then
  (cd "$W" && rm -f "$KPKG"_*.deb && apt-get download "$KPKG" 2>/dev/null)
  rm -rf "$KROOT"; dpkg-deb -x "$W/$KPKG"_*.deb "$KROOT"
  depmod -b "$KROOT" "$KVER"
fi
cp "$KROOT/boot/vmlinuz-$KVER" "$G/vmlinuz"
# vmlinux: decompress the xz payload of the bzImage (Debian kernels are CONFIG_KERNEL_XZ and
# CONFIG_PVH=y, so QEMU can boot the ELF directly through its PVH entry point).
python3 - "$G/vmlinuz" "$G/vmlinux" <<'EOF'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
assert i > 0, "no xz payload found"
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
EOF
echo "$KVER" > "$G/kernel-version"

# resolve module names -> ordered list of .ko paths (dependencies first) using modules.dep
modlist() {
  python3 - "$KROOT/lib/modules/$KVER" "$@" <<'EOF'
import sys, os
base = sys.argv[1]; want = sys.argv[2:]
dep = {}
for line in open(os.path.join(base, 'modules.dep')):
    k, v = line.split(':', 1)
    dep[k] = v.split()
byname = {os.path.basename(k)[:-3].replace('-', '_'): k for k in dep}
out = []
def visit(p):
    if p in out: return
    # modules.dep lists all (transitive) deps; visit them in reverse so the deepest load first
    for d in reversed(dep[p]): visit(d)
    out.append(p)
for n in want: visit(byname[n.replace('-', '_')])
print('\n'.join(out))
EOF
}

# ---- 2. initramfs -------------------------------------------------------------------------
IR=$W/initrd
rm -rf "$IR"; mkdir -p "$IR"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$IR/bin/busybox"
: > "$IR/modules.order"
for ko in $(modlist virtio_pci virtio_blk crc32c_generic ext4); do
  cp "$KROOT/lib/modules/$KVER/$ko" "$IR/lib/modules/"
  basename "$ko" >> "$IR/modules.order"
done
cat > "$IR/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m || echo "initrd: insmod $m failed"; done
root=/dev/vda; rootflags=rw; init=/sbin/init
for a in $(cat /proc/cmdline); do case $a in root=*) root=${a#root=};; init=*) init=${a#init=};; esac; done
i=0; while [ ! -b $root ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
if ! mount -t ext4 -o $rootflags $root /newroot; then
  echo "initrd: cannot mount $root, dropping to shell"; exec sh
fi
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot $init
EOF
chmod +x "$IR/init"
(cd "$IR" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$G/initrd.cpio.gz"
log "initramfs: $(du -h "$G/initrd.cpio.gz" | cut -f1)"

# ---- 3. root filesystem -------------------------------------------------------------------
RF=$W/rootfs
if [ ! -x "$RF/usr/bin/python3" ]; then
  rm -rf "$RF"
  inc=systemd,systemd-sysv,udev,dbus,python3,busybox-static,iproute2,kmod,procps
  log "debootstrap $SUITE minbase (+$inc)"
  debootstrap --variant=minbase --include="$inc" "$SUITE" "$RF" "$MIRROR" >&2
fi
if [ -n "$EXTRA_PACKAGES" ]; then
  # not via debootstrap --include: its resolver cannot satisfy virtual packages
  # (e.g. podman -> containers-common -> container-network-stack)
  log "apt-get install in the rootfs: $EXTRA_PACKAGES"
  cp /etc/resolv.conf "$RF/etc/resolv.conf" 2>/dev/null || true
  chroot "$RF" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$RF" apt-get install -y -q --no-install-recommends $EXTRA_PACKAGES >&2
fi
if [ -n "${MASK_UNITS:-}" ]; then
  # services the extra packages enable that the tests start privately
  # themselves (e.g. docker.io's dockerd and containerd)
  log "systemctl mask in the rootfs: $MASK_UNITS"
  systemctl --root="$RF" mask $MASK_UNITS >&2
fi

# kernel modules (subset: fs, net, crypto, lib, arch, virtio/block/char/md, net devices)
MD=$RF/usr/lib/modules/$KVER
rm -rf "$MD"; mkdir -p "$MD/kernel/drivers/net"
KM=$KROOT/lib/modules/$KVER
cp -a "$KM"/modules.order "$KM"/modules.builtin* "$MD/"
for d in fs net crypto lib arch block mm virt; do [ -d "$KM/kernel/$d" ] && cp -a "$KM/kernel/$d" "$MD/kernel/"; done
for d in virtio block char md; do cp -a "$KM/kernel/drivers/$d" "$MD/kernel/drivers/"; done
cp -a "$KM"/kernel/drivers/net/*.ko "$MD/kernel/drivers/net/"
for d in ipvlan vxlan wireguard bonding team; do [ -d "$KM/kernel/drivers/net/$d" ] && cp -a "$KM/kernel/drivers/net/$d" "$MD/kernel/drivers/net/"; done
depmod -b "$RF" "$KVER"

# guest configuration
echo vmlab > "$RF/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvmlab\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$RF/etc/hosts"
# root is mounted rw by the initramfs; no fstab entries -> no fsck / remount units needed
echo '# root is mounted by the vmlab initramfs' > "$RF/etc/fstab"
[ -s "$RF/etc/machine-id" ] || python3 -c 'import uuid;print(uuid.uuid4().hex)' > "$RF/etc/machine-id"
chroot "$RF" passwd -d root >/dev/null          # debugging: root login without password
ln -sf /lib/systemd/system/multi-user.target "$RF/etc/systemd/system/default.target"
# units that only cost boot time in a throw-away test VM
for u in getty.target serial-getty@.service getty@.service systemd-timesyncd.service \
         apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer dpkg-db-backup.timer systemd-pstore.service; do
  ln -sf /dev/null "$RF/etc/systemd/system/$u"
done
mkdir -p "$RF/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' > "$RF/etc/systemd/journald.conf.d/vmlab.conf"

cat > "$RF/usr/local/sbin/vmlab-run" <<'EOF'
#!/bin/bash
# Runs inside the guest (vmlab-run.service). Mounts the control share (tag vmlabctl) at
# /run/vmlab, the user's share (tag host0) at $VMLAB_GUEST_DIR, runs /run/vmlab/cmd.sh as
# root, stores stdout/stderr/exit code in the control share and powers the VM off.
CTL=/run/vmlab
O="trans=virtio,version=9p2000.L,msize=524288"
mkdir -p $CTL
if ! mount -t 9p -o $O vmlabctl $CTL; then
  echo "vmlab-run: no control share; not running anything" > /dev/console; exit 0
fi
echo "$(cut -d' ' -f1 /proc/uptime)" > $CTL/guest-uptime-start
. $CTL/env
if [ -n "${VMLAB_GUEST_DIR:-}" ]; then
  mkdir -p "$VMLAB_GUEST_DIR"
  mount -t 9p -o $O,cache=${VMLAB_9P_CACHE:-none} host0 "$VMLAB_GUEST_DIR" || echo "vmlab-run: mounting host0 failed" >> $CTL/stderr
  cd "$VMLAB_GUEST_DIR"
fi
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
/bin/bash $CTL/cmd.sh >> $CTL/stdout 2>> $CTL/stderr < /dev/null
echo $? > $CTL/rc.tmp; mv $CTL/rc.tmp $CTL/rc
echo "$(cut -d' ' -f1 /proc/uptime)" > $CTL/guest-uptime-end
sync
# the root disk is a throw-away snapshot and 9p writes are synchronous: power off at once
[ "${VMLAB_NO_POWEROFF:-0}" = 1 ] || systemctl poweroff --force --force
EOF
chmod +x "$RF/usr/local/sbin/vmlab-run"
cat > "$RF/etc/systemd/system/vmlab-run.service" <<'EOF'
[Unit]
Description=vmlab: run the command handed in by the host
After=multi-user.target dbus.service
Wants=dbus.service

[Service]
# Type=exec: the boot transaction completes once the command has started, so the command
# itself may use `systemctl is-system-running --wait`, systemd-analyze, etc.
Type=exec
ExecStart=/usr/local/sbin/vmlab-run
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$RF/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vmlab-run.service "$RF/etc/systemd/system/multi-user.target.wants/vmlab-run.service"

# busybox-less minimal init for the non-systemd mode (VM_INIT=simple): /sbin/vmlab-init
cat > "$RF/usr/local/sbin/vmlab-init" <<'EOF'
#!/bin/bash
# PID 1 without systemd: mount the basics + cgroup2, run vmlab-run, power off.
mount -t proc proc /proc; mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null; mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
VMLAB_NO_POWEROFF=1 /usr/local/sbin/vmlab-run
sync; echo o > /proc/sysrq-trigger; sleep 10
EOF
chmod +x "$RF/usr/local/sbin/vmlab-init"
chroot "$RF" apt-get clean
rm -rf "$RF"/var/lib/apt/lists/*_Packages "$RF"/var/cache/apt/*.bin

# ---- 4. image -----------------------------------------------------------------------------
rm -f "$G/rootfs.img"
truncate -s "$IMG_SIZE" "$G/rootfs.img"
mkfs.ext4 -q -F -L vmlabroot -E root_owner=0:0 -d "$RF" "$G/rootfs.img"
log "rootfs.img: apparent $IMG_SIZE, on disk $(du -h "$G/rootfs.img" | cut -f1)"
if [ "${KEEP_ROOTFS:-0}" != 1 ]; then rm -rf "$RF" "$KROOT" "$W"/*.deb "$IR"; fi
log "done: $(du -sh "$G" | cut -f1) in $G"
