#!/usr/bin/env bash
# Builds a small initramfs (gzip'd newc cpio): busybox with its applets, an
# /init, and any extra files.
# usage: mkinitramfs.sh OUT [--init FILE] [--file SRC:DEST]... [--kmod KROOT:KVER:MODULE]...
#   --init FILE     the /init script (default: mount /proc, /sys, /dev; start a shell)
#   --file SRC:DEST copy SRC to DEST inside the image
#   --kmod R:V:M    copy kernel module M (e.g. kernel/fs/erofs/erofs.ko.xz) of version V
#                   from the unpacked kernel package at R to /lib/modules/V/M
set -euo pipefail
out=$1; shift
init=""
files=()
kmods=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --init) init=$2; shift 2 ;;
        --file) files+=("$2"); shift 2 ;;
        --kmod) kmods+=("$2"); shift 2 ;;
        *) echo "mkinitramfs: unknown option $1" >&2; exit 2 ;;
    esac
done
busybox=$(command -v busybox || true)
[[ -x /bin/busybox ]] && busybox=/bin/busybox
[[ -n "$busybox" ]] || { echo "mkinitramfs: busybox is not installed (package busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,sbin,dev,proc,sys,run,tmp,sysroot,etc,lib/modules}
cp "$busybox" "$work/bin/busybox"
for applet in $("$busybox" --list); do
    [[ -e "$work/bin/$applet" ]] || ln -s busybox "$work/bin/$applet"
done
if [[ -n "$init" ]]; then
    cp "$init" "$work/init"
else
    cat > "$work/init" <<'EOI'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "cairn initramfs: busybox shell"
exec /bin/sh
EOI
fi
chmod 0755 "$work/init"
for f in "${files[@]}"; do
    src=${f%%:*} dest=${f#*:}
    mkdir -p "$work/$(dirname "$dest")"
    cp -a "$src" "$work/$dest"
done
for k in "${kmods[@]}"; do
    IFS=: read -r root ver mod <<< "$k"
    mkdir -p "$work/lib/modules/$ver/$(dirname "$mod")"
    cp "$root/lib/modules/$ver/$mod" "$work/lib/modules/$ver/$mod"
done
(cd "$work" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$out.tmp"
mv "$out.tmp" "$out"
