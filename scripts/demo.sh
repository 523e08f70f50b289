#!/usr/bin/env bash
# The main job on a small sample OS tree, each command shown before it runs.
# usage: demo.sh PATH-TO-CAIRN
set -euo pipefail
cairn=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d /var/tmp/cairn-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

step() { local shown=("$@"); [[ "$1" == "$cairn" ]] && shown[0]=cairn; printf "\n\033[1m$ %s\033[0m\n" "${shown[*]}"; "$@"; }

"$here/make-sample-tree.sh" "$work/tree" 1.0
export CAIRN_REPO=$work/repo
echo "Working in $work (removed at the end); CAIRN_REPO=$CAIRN_REPO"

step "$cairn" init --mode bare
step "$cairn" commit --branch sample/x86_64 --subject "Sample OS 1.0" --add-metadata-string version=1.0 "$work/tree"
step "$cairn" log sample/x86_64
step "$cairn" ls sample/x86_64 /usr/etc

"$here/make-sample-tree.sh" "$work/tree" 1.1
echo "cairn-demo-host" > "$work/tree/etc/hostname"
step "$cairn" commit --branch sample/x86_64 --subject "Sample OS 1.1" --add-metadata-string version=1.1 "$work/tree"
step "$cairn" diff sample/x86_64^ sample/x86_64
step "$cairn" cat sample/x86_64 /usr/lib/os-release
step "$cairn" show sample/x86_64
step "$cairn" image create --from-commit sample/x86_64 "$work/sample.cfs" --print-digest
echo "(the digest recorded in the commit: $("$cairn" show --json sample/x86_64 | grep '"composefsDigest"'))"
step "$cairn" image objects "$work/sample.cfs"
step "$cairn" fsck
