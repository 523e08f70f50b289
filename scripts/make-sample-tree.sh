#!/usr/bin/env bash
# Writes a small OS tree into DIR: busybox, os-release naming VERSION,
# default configuration in /etc, the usual usr-merged top-level links.
# With KERNEL_ROOT and KERNEL_VERSION (an unpacked Debian kernel package, see
# fetch-kernel.sh), the tree gets /usr/lib/modules/<version>/vmlinuz and a
# busybox initramfs.img, which deployments need.
# usage: make-sample-tree.sh DIR VERSION [KERNEL_ROOT KERNEL_VERSION]
set -euo pipefail
dir=$1 version=$2 kroot=${3:-} kver=${4:-}
busybox=$(command -v busybox || true)
[[ -n "$busybox" && -x /bin/busybox ]] && busybox=/bin/busybox
[[ -n "$busybox" ]] || { echo "make-sample-tree: busybox is not installed (package busybox-static)" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir"/usr/{bin,sbin,lib,share/doc/cairn-sample} "$dir"/etc "$dir"/var "$dir"/{proc,sys,dev,run,tmp,sysroot}
chmod 1777 "$dir/tmp"
cp "$busybox" "$dir/usr/bin/busybox"
for applet in sh ls cat echo mount umount grep sed mkdir rm poweroff; do
    ln -s busybox "$dir/usr/bin/$applet"
done
ln -s usr/bin "$dir/bin"
ln -s usr/sbin "$dir/sbin"
ln -s usr/lib "$dir/lib"
cat > "$dir/usr/lib/os-release" <<EOR
NAME="cairn sample"
ID=cairn-sample
VERSION_ID=$version
PRETTY_NAME="cairn sample $version"
EOR
ln -s ../usr/lib/os-release "$dir/etc/os-release"
echo cairn-sample > "$dir/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$dir/etc/passwd"
printf 'root:x:0:\n' > "$dir/etc/group"
printf 'root:*:19000:0:99999:7:::\n' > "$dir/etc/shadow"
chmod 0640 "$dir/etc/shadow"
echo "Sample OS tree for the cairn demo, version $version." > "$dir/usr/share/doc/cairn-sample/README"
if [[ -n "$kroot" ]]; then
    mkdir -p "$dir/usr/lib/modules/$kver"
    cp "$kroot/boot/vmlinuz-$kver" "$dir/usr/lib/modules/$kver/vmlinuz"
    "$(dirname "$(realpath "$0")")/../initramfs/mkinitramfs.sh" "$dir/usr/lib/modules/$kver/initramfs.img"
fi
