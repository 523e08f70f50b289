#!/usr/bin/env bash
# Prints the folder of a Debian cloud kernel unpacked into the cache
# (vmlinuz, the modules tree and the kernel version), downloading it once
# with `apt-get download`. Nothing is installed on the host.
# usage: fetch-kernel.sh [SUITE]     SUITE: default (the machine's) or backports
set -euo pipefail
suite=${1:-default}
cache=${CAIRN_CACHE:-/var/tmp/cairn-cache}/kernel-$suite
if [[ -f "$cache/ready" ]]; then cat "$cache/ready"; exit 0; fi
mkdir -p "$cache"
cd "$cache"
release=()
if [[ "$suite" == backports ]]; then
    # Derived from the machine's own Debian entry, so no host name is written here.
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    src=/etc/apt/sources.list.d/cairn-backports.sources
    if [[ ! -f $src ]]; then
        awk -v c="$codename" 'BEGIN{RS="";ORS="\n\n"} $0 ~ "Suites: "c"( |$)" && $0 !~ "security" {
            sub("Suites:[^\n]*", "Suites: "c"-backports"); print; exit }' /etc/apt/sources.list.d/debian.sources > "$src"
        apt-get update -qq >/dev/null
    fi
    release=(-t "$codename-backports")
fi
meta=linux-image-cloud-amd64
pkg=$(apt-cache "${release[@]}" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n "$pkg" ]] || { apt-get update -qq >/dev/null; pkg=$(apt-cache "${release[@]}" depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
[[ -n "$pkg" ]] || { echo "fetch-kernel: cannot find the package behind $meta" >&2; exit 1; }
rm -f ./*.deb
apt-get download "${release[@]}" "$pkg" >/dev/null 2>&1 || apt-get download "$pkg" >/dev/null
rm -rf root && dpkg -x ./*.deb root
kver=$(ls root/lib/modules | head -1)
[[ -f "root/boot/vmlinuz-$kver" ]] || { echo "fetch-kernel: no vmlinuz in $pkg" >&2; exit 1; }
echo "$cache/root $kver" > ready
cat ready
