#!/usr/bin/env bash
# The main job on a small sample OS tree, each command shown before it runs,
# all in a temporary folder: a build server's repository (signed commits, a
# signed summary, a static delta) served by nginx on 127.0.0.1, and a
# machine's sysroot that trusts the vendor key, pulls v1 from the server,
# refuses an unsigned commit, upgrades to v1.1 over the network (showing the
# bytes fetched), rolls back, and (as root) mounts its image read-only. The
# kernel is Debian's cloud kernel, fetched once into /var/tmp/cairn-cache.
# usage: demo.sh PATH-TO-CAIRN
set -euo pipefail
cairn=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d /var/tmp/cairn-demo.XXXXXX)
mnt=""
cleanup() {
    if [[ -n "$mnt" ]] && mountpoint -q "$mnt"; then umount "$mnt"; fi
    "$here/serve_repo.py" stop "$work/nginx"
    rm -rf "$work"
}
trap cleanup EXIT

step() { local shown=("$@"); [[ "$1" == "$cairn" ]] && shown[0]=cairn; printf "\n\033[1m$ %s\033[0m\n" "${shown[*]}"; "$@"; }

read -r kroot kver < <("$here/fetch-kernel.sh")
build=$work/build
sysroot=$work/sysroot
echo "Working in $work (removed at the end); kernel $kver"

echo; echo "== The build server: an archive repository, signed commits, a signed summary"
step "$cairn" init --repo "$build" --mode archive
step "$cairn" keygen --output "$work/vendor"
"$here/make-sample-tree.sh" "$work/tree" 1.0 "$kroot" "$kver"
step "$cairn" commit --repo "$build" --branch sample/x86_64 --subject "Sample OS 1.0" --add-metadata-string version=1.0 \
    --sign-key "$work/vendor.secret" "$work/tree"
step "$cairn" log --repo "$build" sample/x86_64
step "$cairn" ls --repo "$build" sample/x86_64 /usr/etc
step "$cairn" summary --repo "$build" --update --sign-key "$work/vendor.secret"
url=$("$here/serve_repo.py" start "$build" "$work/nginx")
echo "(nginx serves $build at $url)"

echo; echo "== The machine: a sysroot that trusts the vendor key and pulls from the server"
step "$cairn" sysroot init "$sysroot" --stateroot sample
step "$cairn" trust add --sysroot "$sysroot" "$work/vendor.pub"
step "$cairn" remote add --sysroot "$sysroot" --sign-keys "$work/vendor.pub" origin "$url"
step "$cairn" pull --sysroot "$sysroot" origin:sample/x86_64
step "$cairn" deploy --sysroot "$sysroot" origin:sample/x86_64 --karg console=ttyS0
echo "demo-host" > "$(ls -d "$sysroot"/ostree/deploy/sample/deploy/*.0 | head -1)/etc/hostname"
echo "(edited /etc/hostname of the deployment, as a user would)"

echo; echo "== The server publishes an unsigned commit: the machine refuses it"
"$here/make-sample-tree.sh" "$work/tree" 1.1 "$kroot" "$kver"
step "$cairn" commit --repo "$build" --branch sample/unsigned --subject "Unsigned" "$work/tree"
step "$cairn" summary --repo "$build" --update --sign-key "$work/vendor.secret"
if step "$cairn" pull --sysroot "$sysroot" origin:sample/unsigned; then echo "an unsigned commit was pulled"; exit 1; fi
echo "(refused, as it must be: the remote's commits must be signed by the vendor key)"

echo; echo "== The server publishes 1.1 with a static delta; the machine upgrades"
step "$cairn" commit --repo "$build" --branch sample/x86_64 --subject "Sample OS 1.1" --add-metadata-string version=1.1 \
    --sign-key "$work/vendor.secret" "$work/tree"
step "$cairn" diff --repo "$build" sample/x86_64^ sample/x86_64
step "$cairn" static-delta generate --repo "$build" --from sample/x86_64^ --to sample/x86_64
step "$cairn" summary --repo "$build" --update --sign-key "$work/vendor.secret"
step "$cairn" upgrade --sysroot "$sysroot" --check
step "$cairn" upgrade --sysroot "$sysroot"
"$here/serve_repo.py" log "$work/nginx" | awk '{n++; b += $2} END {print "(the server sent " n " responses, " b " bytes in all)"}'
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
step "$cairn" fsck --sysroot "$sysroot"
