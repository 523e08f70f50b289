#!/bin/sh
# Counted with the shell alone: what the initramfs holds is all there is.
overlay=0 erofs=0
while read -r _ _ fstype _; do
    case "$fstype" in overlay) overlay=$((overlay + 1)) ;; erofs) erofs=$((erofs + 1)) ;; esac
done < /proc/mounts
echo "CAIRN-REFUSED overlay-mounts=$overlay erofs-mounts=$erofs" > /dev/console
