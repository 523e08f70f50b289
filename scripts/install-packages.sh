#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing.
# Used by the Makefile so that `make demo` and `make test` work on a fresh
# Debian 12 machine.
set -euo pipefail
missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
fi
# Debian's nginx package starts a system-wide nginx on port 80 of every
# address, and enables it at boot. The tests run their own nginx, on
# 127.0.0.1 only: when nginx comes with this installation, its system service
# is masked first (a link to /dev/null, which the package's scripts respect),
# so that it never starts.
nginx_status=$(dpkg-query -W -f='${Status}' nginx 2>/dev/null || true)
if [[ " ${missing[*]} " == *" nginx-light "* && "$nginx_status" != "install ok installed" && ! -e /etc/systemd/system/nginx.service ]]; then
    mkdir -p /etc/systemd/system
    ln -s /dev/null /etc/systemd/system/nginx.service
    echo "masked nginx.service: the tests start nginx themselves, on 127.0.0.1" >&2
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
