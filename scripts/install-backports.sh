#!/usr/bin/env bash
# Installs the named Debian packages from bookworm-backports, with what they
# need from there, unless a backports version is installed already. For
# QEMU: Debian 12's QEMU 7.2 crashed the VM test's guest kernel early in
# about one boot in ten under TCG (two fresh-clone runs on 2026-12-02: 7 and
# 2 retries), 10.0.2 from backports in none of the boots measured (see
# BENCHMARKS.md). Where bookworm-backports is not configured, it is added
# with the archive URI the machine already uses for bookworm.
set -euo pipefail
missing=()
for pkg in "$@"; do
    version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
    [[ "$version" == *"~bpo12"* ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "install as root from bookworm-backports: apt-get install -t bookworm-backports ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null  # apt-cache policy knows only the sources it has lists of
policy=$(apt-cache policy)
if ! grep -q ' bookworm-backports/main' <<<"$policy"; then
    uri=$(awk '$3 == "bookworm/main" && $4 == "amd64" {print $2; exit}' <<<"$policy")
    [[ -n "$uri" ]] || { echo "no Debian archive URI in /etc/apt to add bookworm-backports from" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
        > /etc/apt/sources.list.d/cairn-bookworm-backports.sources
    echo "added bookworm-backports ($uri) to /etc/apt/sources.list.d/cairn-bookworm-backports.sources" >&2
    apt-get update -qq >/dev/null
fi
echo "installing from bookworm-backports: ${missing[*]}" >&2
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing[@]}" >/dev/null
