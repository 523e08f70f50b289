#!/usr/bin/env bash
# The real machine's life, in QEMU: a Debian 12 system with systemd, signed
# and deployed by cairn, booted by OVMF -> systemd-boot (entries and kernels
# that cairn wrote on the FAT ESP) -> a dracut (or initramfs-tools)
# initramfs -> cairn-prepare-root (signed, verity=require) -> systemd. Every
# upgrade, rollback and cleanup runs on the machine itself, against the
# host's nginx (reached only through QEMU's restricted user network); no
# part of the test plays the boot loader. One ok / not ok line per scenario.
#
# usage: machine-test.sh CAIRN CAIRN-PREPARE-ROOT [--full]
#   --full  five power cuts (make test-vm-full); else CAIRN_VM_POWER_CUTS or 2
# CAIRN_VM_SEED fixes the power cuts' moments; CAIRN_VM_WATCH=1 shows the
# consoles; CAIRN_VM_KEEP=1 keeps the temp folder.
set -euo pipefail
cairn=$(realpath "$1")
prep=$(realpath "$2")
full=${3:-}
here=$(dirname "$(realpath "$0")")
# shellcheck source=machine-lib.sh
source "$here/machine-lib.sh"
machine_prepare_root=$prep
machine_begin
w=$machine_work
state() { python3 "$here/machine_state.py" "$@"; }
cuts=${CAIRN_VM_POWER_CUTS:-$([[ $full == --full ]] && echo 5 || echo 2)}
seed=${CAIRN_VM_SEED:-$(( $(date +%s) % 100000 ))}
passed=0 failed=0 boot_n=0 console=""

# One scenario's verdict: each check is "what got want"; all must hold.
verdict() {
    local name=$1 info=$2 bad=()
    shift 2
    while [[ $# -ge 3 ]]; do
        [[ "$2" == "$3" ]] || bad+=("$1: got '$2', want '$3'")
        shift 3
    done
    if [[ ${#bad[@]} -eq 0 ]]; then
        passed=$((passed + 1))
        echo "ok $name ($info)"
    else
        failed=$((failed + 1))
        echo "not ok $name ($info)"
        printf '  %s\n' "${bad[@]}"
        echo "  console: $console"
        grep -E 'CAIRN|cairn|prepare-root|emergency|Failed|panic' "$console" | tail -n 25 | sed 's/^/  | /'
    fi
}

# Boots DISK with the agent running the prelude and SCRIPT; console in $console.
boot() {
    local disk=$1 body=$2 limit=${3:-900}
    boot_n=$((boot_n + 1))
    console=$w/console.$boot_n
    cat "$w/prelude.sh" "$body" > "$w/script.$boot_n"
    machine_boot "$disk" "$w/script.$boot_n" "$console" "$limit" || true
    if [[ -n "${CAIRN_VM_WATCH:-}" ]]; then :; fi
}
times() { echo "boot $boot_n: multi-user after ${machine_multi_user_seconds} s, QEMU ran ${machine_boot_seconds} s"; }

# What every agent script can call: the machine's state as the host reads it.
cat > "$w/prelude.sh" <<'EOF'
set -u
fact() { echo "FACT $1 $2"; }
# A status block and, right after it, the ESP as it is then.
status() {
    echo STATUS-JSON-BEGIN
    cairn status --json
    echo STATUS-JSON-END
    local selected
    selected=$(cat /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f 2>/dev/null | tail -c +5 | tr -d "\0")
    echo "ESP $(cd /efi/loader/entries && ls cairn-*.conf 2>/dev/null | paste -sd, -) | $(ls /efi/cairn 2>/dev/null | paste -sd, -) | $selected"
}
facts() {
    fact multi-user "$(systemctl is-active multi-user.target)"
    fact root "$(findmnt -n -o FSTYPE /)"
    case "$(findmnt -n -o OPTIONS /)" in *verity=require*) fact verity require ;; *) fact verity none ;; esac
    fact version "$(sed -n 's/^CAIRN_TEST_VERSION=//p' /usr/lib/os-release.cairn)"
    if [ -d /sysroot/ostree/repo ] && [ ! -L /sysroot/ostree ]; then fact sysroot present; else fact sysroot missing; fi
    fact sysroot-fs "$(findmnt -n -o FSTYPE,OPTIONS --mountpoint /sysroot | tail -n 1 | awk '{ split($2, o, ","); print $1 "/" o[1] }')"
    fact composefs-mounts "$(grep -c ' - overlay composefs ' /proc/self/mountinfo)"
    fact var "$(findmnt -n -o SOURCE /var)"
    if touch /etc/.cairn-probe 2>/dev/null && rm /etc/.cairn-probe; then fact etc writable; else fact etc read-only; fi
    fact efi "$(findmnt -n -o FSTYPE /efi)"
    if [ "$(head -c 26 /run/ostree-booted 2>/dev/null | tr '\0' '@')" = "backing-root-device-inode@" ]; then fact ostree-booted record; else fact ostree-booted missing; fi
}
EOF

# ---- The vendor's side: keys, trees, the update server ----
"$cairn" keygen --output "$w/vendor" >/dev/null
"$cairn" keygen --output "$w/stranger" >/dev/null
srv=$w/srv
"$cairn" init --repo "$srv/repo" --mode archive >/dev/null
publish() {
    local branch=$1 version=$2 tree=$3 c
    c=$("$cairn" commit --repo "$srv/repo" -b "$branch" --add-metadata-string "version=$version" --sign-key "$w/vendor.secret" "$tree" 2>/dev/null | tail -n 1)
    "$cairn" summary --repo "$srv/repo" --update --sign-key "$w/vendor.secret" >/dev/null
    echo "$c"
}
echo "# building the OS trees (cached debootstrap under ${CAIRN_CACHE:-/var/tmp/cairn-cache})"
machine_tree dracut "$w/tree" "$w/vendor.pub" 1
machine_tree initramfs-tools "$w/tree-itools" "$w/vendor.pub" itools
for t in tree tree-itools; do head -c 20000 /dev/zero | tr '\0' 'p' > "$w/$t/usr/share/cairn-probe"; done
v1=$(publish debian/x 1 "$w/tree")

# ---- The machine as installed: v1 deployed from the server, signed ----
sys=$w/sysroot esp=$w/esp disk=$w/disk.img
mkdir -p "$esp"
"$cairn" sysroot init "$sys" --stateroot debian --bootloader systemd-boot --esp "$esp" >/dev/null
"$cairn" trust add --sysroot "$sys" "$w/vendor.pub" >/dev/null
"$cairn" remote add --sysroot "$sys" --sign-keys "$w/vendor.pub" origin "file://$srv/repo" >/dev/null
"$cairn" pull --sysroot "$sys" origin:debian/x >/dev/null
# shellcheck disable=SC2046
"$cairn" deploy --sysroot "$sys" --esp "$esp" origin:debian/x $(machine_kargs dracut) --karg rd.shell=0 --karg rd.emergency=reboot >/dev/null
# On the machine, updates come from the host's nginx as the guest sees it.
"$cairn" remote delete --sysroot "$sys" origin >/dev/null
"$cairn" remote add --sysroot "$sys" --sign-keys "$w/vendor.pub" origin http://10.0.2.100/repo >/dev/null
machine_esp_loader "$esp"
machine_disk "$sys" "$esp" "$disk"
machine_seal "$disk"

# The updates: v2, and the same system with an initramfs-tools initramfs.
echo "CAIRN_TEST_VERSION=2" > "$w/tree/usr/lib/os-release.cairn"
v2=$(publish debian/x 2 "$w/tree")
vi=$(publish debian/itools itools "$w/tree-itools")
machine_serve "$srv"

# ---- 1. sd-boot-v1, then the upgrade made inside v1 ----
cat > "$w/s1.sh" <<'EOF'
facts
status
echo edited-under-v1 > /etc/cairn-edit
echo written-under-v1 > /var/cairn-data
cairn upgrade 2>&1 | sed 's/^/upgrade: /'
status
for i in 1 2; do
    start=$(date +%s.%N)
    cairn deploy origin:debian/x 2>&1 | sed 's/^/deploy: /'
    fact deploy-seconds "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    status
done
EOF
boot "$disk" "$w/s1.sh"
c1=$console
verdict sd-boot-v1 "$(times)" \
    multi-user "$(state "$c1" fact multi-user)" active \
    root "$(state "$c1" fact root)/$(state "$c1" fact verity)" overlay/require \
    booted "$(state "$c1" booted)" "$v1.0" \
    default "$(state "$c1" default)" "$v1.0" \
    agree "$(state "$c1" agree)" yes \
    sysroot "$(state "$c1" fact sysroot)/$(state "$c1" fact sysroot-fs)" present/ext4/ro \
    "composefs roots" "$(state "$c1" fact composefs-mounts)" 1 \
    var "$(state "$c1" fact var)" "/dev/vda2[/ostree/deploy/debian/var]" \
    etc "$(state "$c1" fact etc)" writable \
    efi "$(state "$c1" fact efi)" vfat \
    ostree-booted "$(state "$c1" fact ostree-booted)" record
deploy_seconds=$(state "$c1" fact deploy-seconds)

# ---- 2. upgrade-in-vm: the new default boots, with /etc and /var ----
cat > "$w/s2.sh" <<'EOF'
facts
fact etc-edit "$(cat /etc/cairn-edit 2>&1)"
fact var-data "$(cat /var/cairn-data 2>&1)"
status
cairn rollback 2>&1 | sed 's/^/rollback: /'
status
EOF
boot "$disk" "$w/s2.sh"
c2=$console
verdict upgrade-in-vm "$(times); in-VM deploy ${deploy_seconds} s" \
    "after upgrade: booted" "$(state "$c1" booted 1)" "$v1.0" \
    "after upgrade: default" "$(state "$c1" default-version 1)" 2 \
    "after deploy 1: v1 kept as rollback" "$(state "$c1" rollback 2)/$(state "$c1" count 2)" "$v1.0/2" \
    "after deploy 2: v1 kept as rollback" "$(state "$c1" rollback 3)/$(state "$c1" count 3)" "$v1.0/2" \
    "after deploy 2: ESP agrees" "$(state "$c1" agree 3)" yes \
    "rebooted: booted" "$(state "$c2" booted-version)/$(state "$c2" fact version)" 2/2 \
    "rebooted: booted is default" "$(state "$c2" booted)" "$(state "$c2" default)" \
    "rebooted: rollback" "$(state "$c2" rollback)" "$v1.0" \
    "rebooted: ESP agrees" "$(state "$c2" agree)" yes \
    "/etc edit" "$(state "$c2" fact etc-edit)" edited-under-v1 \
    "/var data" "$(state "$c2" fact var-data)" written-under-v1 \
    verity "$(state "$c2" fact verity)" require

# ---- 3. rollback-in-vm; then the initramfs-tools system is deployed ----
cat > "$w/s3.sh" <<'EOF'
facts
status
cairn pull origin:debian/itools 2>&1 | sed 's/^/pull: /'
cairn deploy origin:debian/itools 2>&1 | sed 's/^/deploy: /'
status
EOF
boot "$disk" "$w/s3.sh"
c3=$console
verdict rollback-in-vm "$(times)" \
    "rollback: default" "$(state "$c2" default 1)" "$v1.0" \
    booted "$(state "$c3" booted)/$(state "$c3" fact version)" "$v1.0/1" \
    default "$(state "$c3" default)" "$v1.0" \
    agree "$(state "$c3" agree)" yes

# ---- 5. initramfs-tools: the same boot through initramfs-tools ----
cat > "$w/s4.sh" <<'EOF'
facts
status
cairn deploy origin:debian/x 2>&1 | sed 's/^/deploy: /'
status
EOF
boot "$disk" "$w/s4.sh"
c4=$console
verdict initramfs-tools "$(times)" \
    multi-user "$(state "$c4" fact multi-user)" active \
    booted "$(state "$c4" booted)/$(state "$c4" fact version)" "$vi.0/itools" \
    root "$(state "$c4" fact root)/$(state "$c4" fact verity)" overlay/require \
    sysroot "$(state "$c4" fact sysroot)" present \
    etc "$(state "$c4" fact etc)" writable \
    agree "$(state "$c4" agree)" yes

# ---- 4. cleanup-in-vm: back on v2, the initramfs-tools deployment retired ----
cat > "$w/s5.sh" <<'EOF'
facts
cairn deploy origin:debian/x 2>&1 | sed 's/^/deploy: /'
status
cairn cleanup 2>&1 | sed 's/^/cleanup: /'
status
EOF
boot "$disk" "$w/s5.sh"
c5=$console
# fsck of both filesystems, from the host, on copies of the partitions.
read -r esp_start esp_size root_start root_size < <(sfdisk -J "$disk" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"]
print(p[0]["start"], p[0]["size"], p[1]["start"], p[1]["size"])')
dd if="$disk" of="$w/esp-part.img" bs=512 skip="$esp_start" count="$esp_size" conv=sparse status=none
dd if="$disk" of="$w/root-part.img" bs=512 skip="$root_start" count="$root_size" conv=sparse status=none
fsck_esp=$(fsck.vfat -n "$w/esp-part.img" >/dev/null 2>&1 && echo clean || echo "not clean: $(fsck.vfat -n "$w/esp-part.img" 2>&1 | tail -n 3 | tr '\n' ' ')")
fsck_root=$(e2fsck -fn "$w/root-part.img" >/dev/null 2>&1 && echo clean || echo "not clean: $(e2fsck -fn "$w/root-part.img" 2>&1 | tail -n 3 | tr '\n' ' ')")
rm -f "$w/esp-part.img" "$w/root-part.img"
verdict cleanup-in-vm "$(times)" \
    "booted" "$(state "$c5" fact version)" 2 \
    "before cleanup: kernels" "$(state "$c5" kernels-live 0 | cut -c1-11)" "ESP kernels" \
    "after cleanup: kernels" "$(state "$c5" kernels-live 1)" yes \
    "after cleanup: entries" "$(state "$c5" agree 1)" yes \
    "fsck.vfat of the ESP" "$fsck_esp" clean \
    "e2fsck of the sysroot" "$fsck_root" clean

# ---- 7. power-cut: QEMU killed at a random moment of an in-VM deploy ----
# Each boot first reports where the previous cut left the machine, then
# deploys the other system (so a kernel is copied to the ESP too) and is
# killed once that deploy has run for a random part of its measured time.
cat > "$w/cut.sh" <<'EOF'
facts
status
case "$(sed -n 's/^CAIRN_TEST_VERSION=//p' /usr/lib/os-release.cairn)" in itools) ref=debian/x ;; *) ref=debian/itools ;; esac
fact target "$ref"
cairn pull "origin:$ref" > /dev/null 2>&1
echo CUT-NOW
cairn deploy "origin:$ref" 2>&1 | sed 's/^/deploy: /'
echo DEPLOY-DONE
sleep 600
EOF
printf 'facts\nstatus\n' > "$w/report.sh"
version_of() { case $1 in debian/itools) echo itools ;; *) echo 2 ;; esac; }
old=2 new=2 prev_delay=0
for run in $(seq 1 $((cuts + 1))); do
    if [[ $run -le $cuts ]]; then
        delay=$(python3 -c "import random, sys; print('%.2f' % random.Random(int(sys.argv[1])).uniform(0, float(sys.argv[2])))" "$((seed + run))" "$deploy_seconds")
        machine_cut_marker="CAIRN-AGENT| CUT-NOW" machine_cut_delay=$delay boot "$disk" "$w/cut.sh"
    else
        boot "$disk" "$w/report.sh"
    fi
    if [[ $run -gt 1 ]]; then
        verdict "power-cut $((run - 1))" "seed $((seed + run - 1)): killed ${prev_delay} s into a ${deploy_seconds} s deploy; next $(times)" \
            multi-user "$(state "$console" fact multi-user)" active \
            "booted the old ($old) or the new ($new)" "$(state "$console" fact version | sed -E "s/^($old|$new)$/old-or-new/")" old-or-new \
            agree "$(state "$console" agree)" yes
    fi
    old=$(state "$console" fact version)
    new=$(version_of "$(state "$console" fact target)")
    prev_delay=$delay
    [[ $run -gt $cuts ]] || grep -q '^CAIRN-AGENT| CUT-NOW' "$console" || echo "  (boot $boot_n did not reach its deploy)"
done
final=$console

# ---- 6. Tampering, each on a copy of the disk: the default deployment ----
read -r root_start < <(sfdisk -J "$disk" | python3 -c 'import json, sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["start"])')
part_offset=$((root_start * 512))
dpath=$(state "$final" field 0 path)                   # /sysroot/ostree/deploy/...
dpath=${dpath#/sysroot}
dcommit=$(state "$final" field 0 checksum)
"$cairn" image create --repo "$srv/repo" --from-commit "$dcommit" "$w/default.cfs" >/dev/null
probe=/ostree/repo/objects/$("$cairn" image dump "$w/default.cfs" | awk '$1 == "/usr/share/cairn-probe" {print $9}')
copy=$w/tamper.img
fresh_copy() { cp --sparse=always "$disk" "$copy"; cp "$disk.vars" "$copy.vars"; }
flip() {  # flips the byte at OFFSET of the file PATH on the copy's sysroot
    local block
    block=$(debugfs -R "bmap $1 $(( $2 / 4096 ))" "$copy?offset=$part_offset" 2>/dev/null)
    python3 -c "import sys; f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1)[0]; f.seek(int(sys.argv[2])); f.write(bytes([b ^ 0xff]))" \
        "$copy" "$(( part_offset + block * 4096 + $2 % 4096 ))"
}
# A refused boot: the one line of cairn-prepare-root naming the reason, the
# initramfs's report that nothing is mounted (a test hook on dracut's
# emergency path), no multi-user, and QEMU gone (rd.emergency=reboot).
refused() {
    local name=$1 reason=$2
    verdict "$name" "$(times)" \
        "refusal lines" "$(grep -c 'cairn-prepare-root: refusing to boot' "$console")" 1 \
        "its reason" "$(grep -cE "cairn-prepare-root: refusing to boot: .*($reason)" "$console")" 1 \
        "mounts left" "$(grep -o 'CAIRN-REFUSED overlay-mounts=[0-9]* erofs-mounts=[0-9]*' "$console" | tail -n 1)" "CAIRN-REFUSED overlay-mounts=0 erofs-mounts=0" \
        multi-user "$(grep -c '^CAIRN-MULTI-USER' "$console")" 0
}

cat > "$w/probe.sh" <<'EOF'
facts
if err=$(cat /usr/share/cairn-probe 2>&1 >/dev/null); then fact probe ok; else case "$err" in *"Input/output error"*) fact probe EIO ;; *) fact probe "$err" ;; esac; fi
if cat /usr/lib/os-release /usr/bin/cairn /usr/lib/systemd/systemd > /dev/null; then fact others ok; else fact others error; fi
EOF
fresh_copy
flip "$probe" 100
boot "$copy" "$w/probe.sh"
verdict "tamper-object" "$(times)" \
    multi-user "$(state "$console" fact multi-user)" active \
    "the altered file" "$(state "$console" fact probe)" EIO \
    "other files" "$(state "$console" fact others)" ok

fresh_copy
flip "$dpath/.ostree.cfs" 2000
boot "$copy" "$w/report.sh" 600
refused "tamper-image" "digest|Input/output error"

fresh_copy
flags=$(debugfs -R "stat $dpath/.ostree.cfs" "$copy?offset=$part_offset" 2>/dev/null | sed -n 's/.*Flags: \(0x[0-9a-f]*\).*/\1/p')
debugfs -w -R "set_inode_field $dpath/.ostree.cfs flags $(printf '0x%x' $(( flags & ~0x100000 )))" "$copy?offset=$part_offset" >/dev/null 2>&1
boot "$copy" "$w/report.sh" 600
refused "tamper-no-verity" "has no fs-verity"

fresh_copy
"$cairn" init --repo "$w/other" --mode archive >/dev/null
mkdir -p "$w/other/objects/${dcommit:0:2}"
cp "$srv/repo/objects/${dcommit:0:2}/${dcommit:2}.commit" "$w/other/objects/${dcommit:0:2}/"
"$cairn" sign --repo "$w/other" "$dcommit" --key "$w/stranger.secret" >/dev/null
printf 'cd /ostree/repo/objects/%s\nrm %s.commitmeta\nwrite %s %s.commitmeta\n' "${dcommit:0:2}" "${dcommit:2}" \
    "$w/other/objects/${dcommit:0:2}/${dcommit:2}.commitmeta" "${dcommit:2}" > "$w/debugfs.cmds"
debugfs -w -f "$w/debugfs.cmds" "$copy?offset=$part_offset" >/dev/null 2>&1
boot "$copy" "$w/report.sh" 600
refused "tamper-untrusted-key" "signature"
rm -f "$copy" "$copy.vars"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
