#!/bin/sh
# /init of the VM test's initramfs: load the modules, mount the sysroot disk
# at /sysroot, then either seal it (first boot: cairn.seal on the command
# line) or hand it to cairn-prepare-root and switch into the deployment.
# cairn.disk=DEV names the sysroot's block device (default /dev/vda, the
# whole disk of boot-test.sh; /dev/vda2 on machine-lib.sh's GPT disk).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /run && mount -t tmpfs -o mode=0755 run /run
for m in /lib/modules/*.ko; do insmod "$m" || echo "CAIRN-INITRAMFS: insmod $m failed"; done
disk=/dev/vda
for arg in $(cat /proc/cmdline); do
    case "$arg" in cairn.disk=*) disk=${arg#cairn.disk=} ;; esac
done
i=0
while [ ! -b "$disk" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 "$disk" /sysroot; then
    echo "CAIRN-INITRAMFS: cannot mount $disk"
    poweroff -f
fi
if grep -q 'cairn.seal' /proc/cmdline; then
    if /usr/lib/cairn/cairn-prepare-root seal /sysroot; then echo "CAIRN-SEALED"; else echo "CAIRN-SEAL-FAILED"; fi
    umount /sysroot
    sync
    poweroff -f
fi
if /usr/lib/cairn/cairn-prepare-root /sysroot; then
    # /run (with ostree-booted) goes along, as initramfs-tools and systemd do.
    mount -o move /run /sysroot/run || echo "CAIRN-INITRAMFS: cannot move /run"
    exec switch_root /sysroot /usr/sbin/init
fi
echo "CAIRN-REFUSED overlay-mounts=$(grep -c ' overlay ' /proc/mounts) erofs-mounts=$(grep -c ' erofs ' /proc/mounts)"
umount /sysroot
sync
poweroff -f
