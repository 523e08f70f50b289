#!/usr/bin/env bash
# Smoke test of the real machine (machine-lib.sh): a Debian 12 tree with
# systemd, committed signed and deployed by cairn, booted by OVMF ->
# systemd-boot -> the initramfs (dracut, then initramfs-tools) ->
# cairn-prepare-root -> systemd's multi-user.target, where the agent runs a
# script that reports what the boot set up. One ok / not ok line per check.
#
# usage: machine-smoke.sh CAIRN CAIRN-PREPARE-ROOT [VARIANT...]
#   CAIRN               a debug build of cairn (swift build --product cairn)
#   CAIRN-PREPARE-ROOT  the static one (make prepare-root); `make install`
#                       puts its own build into the tree, this one seals
#   VARIANT             dracut and/or initramfs-tools (default: both)
# CAIRN_VM_WATCH=1 shows the consoles; CAIRN_VM_KEEP=1 keeps the temp folder.
set -euo pipefail
cairn=$(realpath "$1")
prep=$(realpath "$2")
shift 2
variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(dracut initramfs-tools)
here=$(dirname "$(realpath "$0")")
# shellcheck source=machine-lib.sh
source "$here/machine-lib.sh"
machine_prepare_root=$prep
machine_begin
w=$machine_work
passed=0 failed=0

"$cairn" keygen --output "$w/vendor" >/dev/null
mkdir -p "$w/www"
echo "hello from the host" > "$w/www/hello.txt"
machine_serve "$w/www"

# What the agent reports, one "key: value" line each, plus the mount table
# and the boot's journal about /sysroot for when a check fails.
cat > "$w/report.sh" <<'EOF'
echo "cmdline: $(cat /proc/cmdline)"
echo "root: $(findmnt -n -o FSTYPE,OPTIONS /)"
# Not through /sysroot/ostree: the tree's /ostree -> sysroot/ostree link
# would find the repository through a copy of the root mounted on /sysroot.
if [ -d /sysroot/ostree/repo ] && [ ! -L /sysroot/ostree ]; then echo "sysroot: present"; else echo "sysroot: missing"; fi
echo "sysroot-mount: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS --mountpoint /sysroot | tail -n 1)"
echo "composefs-mounts: $(grep -c ' - overlay composefs ' /proc/self/mountinfo)"
echo "var: $(findmnt -n -o SOURCE /var)"
if touch /etc/.cairn-probe 2>/dev/null && rm /etc/.cairn-probe; then echo "etc: writable"; else echo "etc: read-only"; fi
echo "efi: $(findmnt -n -o FSTYPE /efi)"
echo "multi-user: $(systemctl is-active multi-user.target)"
echo "system: $(systemctl is-system-running)"
echo "failed-units: $(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
echo "version: $(sed -n 's/^CAIRN_TEST_VERSION=//p' /usr/lib/os-release.cairn)"
echo "machine-id: $(cat /etc/machine-id)"
od -c /run/ostree-booted | head -n 3 | sed 's/^/ostree-booted: /'
/usr/bin/cairn status 2>&1 | sed 's/^/cairn-status: /'
echo "cairn-status-rc: ${PIPESTATUS[0]}"
for n in 1 2; do echo "http$n: $(curl -s -m 10 http://10.0.2.100/hello.txt || echo "failed rc=$?")"; done
# An EFI variable: 4 bytes of attributes, then UTF-16.
echo "loader-entry: $(cat /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f 2>/dev/null | tail -c +5 | tr -d '\0')"
echo "memory: $(awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { printf "%d MB used, %d MB available of %d MB", (t - a) / 1024, a / 1024, t / 1024 }' /proc/meminfo)"
ls /efi/loader/entries 2>&1 | sed 's/^/esp-entries: /'
command -v bootctl >/dev/null && bootctl status 2>&1 | head -n 30 | sed 's/^/bootctl: /'
systemd-analyze time 2>&1 | sed 's/^/analyze: /'
sed 's/^/mountinfo: /' /proc/self/mountinfo
journalctl -b --no-pager -o short-monotonic 2>/dev/null | grep -i -E 'sysroot|prepare-root|switch.root' | head -n 60 | sed 's/^/journal: /'
EOF

check() {
    local name=$1 ok=$2
    if [[ $ok == yes ]]; then passed=$((passed + 1)); echo "ok $name"; else failed=$((failed + 1)); echo "not ok $name"; fi
}
field() { sed -n "s/^$1: //p" "$w/report" | head -n 1; }
has() { if grep -qE -- "$2" <<< "$(field "$1")"; then echo yes; else echo no; fi; }

smoke() {
    local variant=$1 sys=$w/$1/sysroot esp=$w/$1/esp disk=$w/$1/disk.img v1 v2 entry
    mkdir -p "$w/$variant"
    echo "# $variant: tree"
    machine_tree "$variant" "$w/$variant/tree" "$w/vendor.pub" 1
    "$cairn" sysroot init "$sys" --stateroot debian >/dev/null
    "$cairn" trust add --sysroot "$sys" "$w/vendor.pub" >/dev/null
    # Two deployments: systemd-boot must pick the newer (sort order alone, no default set).
    v1=$("$cairn" commit --repo "$sys/ostree/repo" -b debian/x --add-metadata-string version=1 --sign-key "$w/vendor.secret" "$w/$variant/tree" 2>/dev/null | tail -n 1)
    # shellcheck disable=SC2046
    "$cairn" deploy --sysroot "$sys" debian/x $(machine_kargs "$variant") >/dev/null
    echo "CAIRN_TEST_VERSION=2" > "$w/$variant/tree/usr/lib/os-release.cairn"
    v2=$("$cairn" commit --repo "$sys/ostree/repo" -b debian/x --add-metadata-string version=2 --sign-key "$w/vendor.secret" "$w/$variant/tree" 2>/dev/null | tail -n 1)
    "$cairn" deploy --sysroot "$sys" debian/x >/dev/null
    stand_in_esp_from_boot "$sys" "$esp"
    machine_esp_loader "$esp"
    echo "# $variant: ESP $(du -sm "$esp" | cut -f1) MB (initramfs $(( $(stat -c %s "$w/$variant/tree/usr/lib/modules/$machine_kver/initramfs.img") / 1048576 )) MB), sysroot $(du -sm "$sys" | cut -f1) MB"
    machine_disk "$sys" "$esp" "$disk"
    machine_seal "$disk"
    entry=$(basename "$(grep -l "ostree=.*" "$esp"/loader/entries/*.conf | xargs grep -l '^version' | head -n 1)")

    echo "# $variant: boot"
    machine_boot "$disk" "$w/report.sh" "$w/$variant/console" 900 || true
    machine_agent_output "$w/$variant/console" > "$w/report"
    cp "$w/report" "$w/$variant/report"
    check "$variant: agent ran the script (rc=$(machine_agent_rc "$w/$variant/console"))" \
        "$([[ $(machine_agent_rc "$w/$variant/console") == 0 ]] && echo yes || echo no)"
    check "$variant: multi-user.target active ($machine_multi_user_seconds s from QEMU start)" "$(has multi-user '^active$')"
    check "$variant: system running ($(field system); failed: $(field failed-units))" "$(has system '^running$')"
    check "$variant: cmdline has ostree= and console=ttyS0" "$(has cmdline 'ostree=/ostree/boot.*console=ttyS0|console=ttyS0.*ostree=/ostree/boot')"
    check "$variant: / is the composefs overlay with verity=require" "$(has root '^overlay .*verity=require')"
    check "$variant: the newest deployment booted (version $(field version), $v2)" "$(has version '^2$')"
    check "$variant: /sysroot shows the physical root ($(field sysroot-mount))" "$(has sysroot '^present$')"
    check "$variant: one composefs root in the mount table, no copy of it on /sysroot" "$(has composefs-mounts '^1$')"
    check "$variant: /sysroot is read-only" "$(has sysroot-mount ' ext4 +ro(,|$)')"
    check "$variant: /var is the stateroot's var ($(field var))" "$(has var '\[/ostree/deploy/debian/var\]$')"
    check "$variant: /etc is writable" "$(has etc '^writable$')"
    check "$variant: /efi is the ESP (vfat)" "$(has efi '^vfat$')"
    check "$variant: /run/ostree-booted is an a{sv} record" "$(grep -q 'b   a   c   k   i   n   g' <<< "$(sed -n 's/^ostree-booted: //p' "$w/report")" && echo yes || echo no)"
    check "$variant: cairn status on the machine" "$(has cairn-status-rc '^0$')"
    check "$variant: curl reaches the host's nginx ($(field http1))" "$(has http1 '^hello from the host$')"
    check "$variant: a second connection reaches it too ($(field http2))" "$(has http2 '^hello from the host$')"
    check "$variant: systemd-boot selected an entry ($(field loader-entry))" "$(has loader-entry '\.conf$')"
    # The entry of the newest deployment has the highest version.
    local newest
    newest=$(for f in "$esp"/loader/entries/*.conf; do echo "$(sed -n 's/^version //p' "$f") $(basename "$f")"; done | sort -V | tail -n 1 | cut -d' ' -f2)
    check "$variant: it is the newest deployment's entry ($newest)" "$([[ $(field loader-entry) == "$newest" ]] && echo yes || echo no)"
    grep '^cairn-status: ' "$w/report" | sed 's/^/  | /'

    # A reboot the script asks for ends this QEMU (-no-reboot); the next boot,
    # with its own script, goes through OVMF and systemd-boot again on the same
    # disk, which kept what the last boot wrote.
    local id1 out2 out3
    id1=$(field machine-id)
    printf '%s\n' 'n=$(( $(cat /var/cairn-smoke-counter 2>/dev/null || echo 0) + 1 ))' 'echo "$n" > /var/cairn-smoke-counter' \
        'echo "counter: $n"' 'touch /run/cairn-agent/reboot' > "$w/reboot.sh"
    printf '%s\n' 'echo "counter: $(cat /var/cairn-smoke-counter)"' 'echo "machine-id: $(cat /etc/machine-id)"' > "$w/after.sh"
    machine_boot "$disk" "$w/reboot.sh" "$w/$variant/console.reboot" 900 || true
    out2=$(machine_agent_output "$w/$variant/console.reboot")
    check "$variant: a reboot the script asks for ends QEMU (${machine_boot_seconds} s)" \
        "$(grep -q '^CAIRN-AGENT-REBOOT' "$w/$variant/console.reboot" && [[ $out2 == "counter: 1" ]] && echo yes || echo no)"
    machine_boot "$disk" "$w/after.sh" "$w/$variant/console.after" 900 || true
    out3=$(machine_agent_output "$w/$variant/console.after")
    check "$variant: the next boot runs its own script and sees the last boot's /var write" "$(grep -qx 'counter: 1' <<< "$out3" && echo yes || echo no)"
    check "$variant: the machine-id systemd made at first boot persisted ($id1)" "$([[ -n $id1 ]] && grep -qx "machine-id: $id1" <<< "$out3" && echo yes || echo no)"
    grep -E '^(analyze|memory): ' "$w/report" | sed 's/^/  | /'
    : "$v1" "$entry"
}

for variant in "${variants[@]}"; do smoke "$variant"; done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
