#!/usr/bin/env bash
# The main job on a small sample OS tree, each command shown before it runs:
# a sysroot in a temporary folder that trusts one vendor key, two signed
# commits of the sample tree (with a Debian cloud kernel, fetched once into
# /var/tmp/cairn-cache), an unsigned commit that deploy refuses, two
# deployments, status, rollback, and (as root) the default deployment's
# image mounted read-only.
# usage: demo.sh PATH-TO-CAIRN
set -euo pipefail
cairn=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d /var/tmp/cairn-demo.XXXXXX)
mnt=""
cleanup() {
    if [[ -n "$mnt" ]] && mountpoint -q "$mnt"; then umount "$mnt"; fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { local shown=("$@"); [[ "$1" == "$cairn" ]] && shown[0]=cairn; printf "\n\033[1m$ %s\033[0m\n" "${shown[*]}"; "$@"; }

read -r kroot kver < <("$here/fetch-kernel.sh")
sysroot=$work/sysroot
export CAIRN_REPO=$sysroot/ostree/repo
echo "Working in $work (removed at the end); kernel $kver; CAIRN_REPO=$CAIRN_REPO"

step "$cairn" sysroot init "$sysroot" --stateroot sample
step "$cairn" keygen --output "$work/vendor"
step "$cairn" trust add --sysroot "$sysroot" "$work/vendor.pub"
"$here/make-sample-tree.sh" "$work/tree" 1.0 "$kroot" "$kver"
step "$cairn" commit --branch sample/x86_64 --subject "Sample OS 1.0" --add-metadata-string version=1.0 \
    --sign-key "$work/vendor.secret" "$work/tree"
step "$cairn" log sample/x86_64
step "$cairn" ls sample/x86_64 /usr/etc

step "$cairn" deploy --sysroot "$sysroot" sample/x86_64 --karg console=ttyS0
echo "demo-host" > "$(ls -d "$sysroot"/ostree/deploy/sample/deploy/*.0 | head -1)/etc/hostname"
echo "(edited /etc/hostname of the deployment, as a user would)"

"$here/make-sample-tree.sh" "$work/tree" 1.1 "$kroot" "$kver"
step "$cairn" commit --branch sample/unsigned --subject "Unsigned" "$work/tree"
if step "$cairn" deploy --sysroot "$sysroot" sample/unsigned; then echo "an unsigned commit was deployed"; exit 1; fi
echo "(refused, as it must be: the sysroot trusts only the vendor key)"
step "$cairn" commit --branch sample/x86_64 --subject "Sample OS 1.1" --add-metadata-string version=1.1 \
    --sign-key "$work/vendor.secret" "$work/tree"
step "$cairn" diff sample/x86_64^ sample/x86_64
step "$cairn" deploy --sysroot "$sysroot" sample/x86_64
step "$cairn" status --sysroot "$sysroot"
step cat "$sysroot"/boot/loader/entries/ostree-2-sample.conf
step "$cairn" rollback --sysroot "$sysroot"
step "$cairn" status --sysroot "$sysroot"

image=$(ls -d "$sysroot"/ostree/deploy/sample/deploy/*.0 | head -1)/.ostree.cfs
default=$("$cairn" status --sysroot "$sysroot" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["path"])')
step "$cairn" image digest "$default/.ostree.cfs"
if [[ $(id -u) -eq 0 ]]; then
    mnt=$work/mnt
    mkdir -p "$mnt"
    step "$cairn" image mount --basedir "$sysroot/ostree/repo/objects" "$default/.ostree.cfs" "$mnt"
    step ls -l "$mnt" "$mnt/usr/lib"
    step cat "$mnt/usr/lib/os-release"
    step umount "$mnt"
else
    echo "(not root: skipping the read-only mount of $image)"
fi
step "$cairn" fsck
