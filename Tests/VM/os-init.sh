#!/bin/sh
# /usr/sbin/init of the VM test's OS: check, from inside, what the boot set
# up; print one marker line; power off.
export PATH=/usr/bin:/usr/sbin
bb=/usr/bin/busybox
$bb mount -t devtmpfs dev /dev
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
version=$($bb sed -n 's/^VERSION_ID=//p' /usr/lib/os-release)
ostree=$($bb tr ' ' '\n' < /proc/cmdline | $bb sed -n 's/^ostree=//p')
deployment=$($bb basename "$($bb readlink "/sysroot$ostree")")
commit=${deployment%.*}
if [ -d /sysroot/ostree/repo ]; then sysroot=present; else sysroot=missing; fi
rootline=$($bb awk '$2 == "/" { print $3 " " $4 }' /proc/mounts | $bb tail -n 1)
rootfs=${rootline%% *}
case "$rootline" in *verity=require*) verity=require ;; *) verity=none ;; esac
if echo probe > /etc/.cairn-probe 2>/dev/null && $bb rm /etc/.cairn-probe; then etc=writable; else etc=readonly; fi
counter=$(($($bb cat /var/cairn-counter 2>/dev/null || echo 0) + 1))
echo "$counter" > /var/cairn-counter
if [ "$version" = 1.0 ] && [ ! -e /etc/cairn-edit ]; then echo "edited-under-v1" > /etc/cairn-edit; fi
etcedit=$($bb cat /etc/cairn-edit 2>/dev/null || echo none)
if err=$($bb cat /usr/share/cairn-probe 2>&1 >/dev/null); then
    probe=ok
else
    case "$err" in
        *"Input/output error"*|*"I/O error"*) probe=EIO ;;
        *) probe="error:$(echo "$err" | $bb head -c 60 | $bb tr ' ' '_')" ;;
    esac
fi
if $bb cat /usr/lib/os-release /usr/bin/busybox /usr/share/doc/cairn-sample/README > /dev/null; then others=ok; else others=error; fi
# /run/ostree-booted, an a{sv}: its first entry, backing-root-device-inode,
# holds (tt) in bytes 32-47 (after the key, its NUL and padding to 8), which
# must be the device and inode of the deployment directory (not of /, an overlay).
if [ ! -f /run/ostree-booted ]; then
    booted=none
elif [ "$sysroot" != present ]; then
    booted=unknown
elif [ "$($bb head -c 26 /run/ostree-booted | $bb tr '\0' '@')" != "backing-root-device-inode@" ]; then
    booted=malformed
else
    set -- $($bb od -A n -t u8 -j 32 -N 16 /run/ostree-booted)
    if [ "$1 $2" = "$($bb stat -c '%d %i' "/sysroot/ostree/deploy/os/deploy/$deployment")" ]; then booted=deployment; else booted="other:$1:$2"; fi
fi
$bb sync
# Remount everything read-only (sysrq u) so the disk is clean when we power off.
echo s > /proc/sysrq-trigger
echo u > /proc/sysrq-trigger
echo "CAIRN-MARKER version=$version commit=$commit rootfs=$rootfs verity=$verity etc=$etc counter=$counter etcedit=$etcedit probe=$probe others=$others sysroot=$sysroot booted=$booted"
$bb poweroff -f
