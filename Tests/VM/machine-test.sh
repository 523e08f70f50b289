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
# consoles; CAIRN_VM_KEEP=1 keeps the temp folder; CAIRN_VM_ONLY=self-healing
# runs only the last scenarios, CAIRN_VM_ONLY=oci only the OCI image's.
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
# CAIRN_VM_ONLY=self-healing runs only the self-healing scenarios (they
# start from v1 as installed), CAIRN_VM_ONLY=oci only the OCI-built
# system's (from v1 too, without the initramfs-tools system), to iterate
# on them faster.
only=${CAIRN_VM_ONLY:-}
case $only in ""|self-healing|oci) ;; *) echo "machine-test: CAIRN_VM_ONLY is self-healing or oci, not '$only'" >&2; exit 2 ;; esac

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
[[ $only == oci ]] || machine_tree initramfs-tools "$w/tree-itools" "$w/vendor.pub" itools
for t in tree tree-itools; do [[ ! -d $w/$t ]] || head -c 20000 /dev/zero | tr '\0' 'p' > "$w/$t/usr/share/cairn-probe"; done
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
[[ $only == oci ]] || vi=$(publish debian/itools itools "$w/tree-itools")

# ---- The OCI-built system: buildah builds it FROM scratch, in two layers ----
# Layer 1: v2's tree, copied into the scratch container's root (buildah
# mount; with the vfs driver a plain folder, so nothing is mounted), as a
# build FROM scratch fills it (owners, modes and xattrs kept: a
# Containerfile COPY would make every file root's). Layer 2: a
# Containerfile-style COPY of the os-release marker (CAIRN_TEST_VERSION=oci)
# and the version label. buildah's storage is the test's own (never the
# host's /var/lib/containers), removed once the image is pushed to an OCI
# archive. cairn commits the archive to debian/oci and signs it, as
# publish does a folder; there are no device nodes to leave out
# (machine_tree empties /dev), so no --skip-special: a special file in
# the tree would make the commit refuse, and this test fail, as the
# folder commits of the same tree would. (Not for CAIRN_VM_ONLY=self-healing.)
oci=$w/oci oci_label=oci-2
oci_build() {
    local b=(buildah --root "$oci/storage" --runroot "$oci/run" --storage-driver vfs) c m
    # One && chain: set -e does not apply in a function called before ||.
    mkdir -p "$oci" &&
    c=$("${b[@]}" from scratch) &&
    m=$("${b[@]}" mount "$c") &&
    cp -a "$w/tree/." "$m/" &&
    "${b[@]}" commit -q "$c" cairn-vm-base &&
    c=$("${b[@]}" from cairn-vm-base) &&
    echo "CAIRN_TEST_VERSION=oci" > "$oci/os-release.cairn" &&
    "${b[@]}" copy --chmod 0644 "$c" "$oci/os-release.cairn" /usr/lib/os-release.cairn &&
    "${b[@]}" config --label "org.opencontainers.image.version=$oci_label" "$c" &&
    "${b[@]}" commit -q "$c" cairn-vm-oci &&
    "${b[@]}" push -q --digestfile "$oci/digest" cairn-vm-oci "oci-archive:$oci/image.oci.tar" &&
    "${b[@]}" umount --all &&
    "${b[@]}" rm --all &&
    "${b[@]}" rmi --all
}
if [[ $only != self-healing ]]; then
start=$(date +%s.%N)
oci_build > "$oci.log" 2>&1 || { echo "machine-test: building the OCI image failed:" >&2; tail -n 20 "$oci.log" >&2; exit 1; }
oci_build_seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
oci_mounts=$(findmnt -rn -o TARGET | grep -c "^$oci/" || true)
rm -rf "$oci/storage" "$oci/run"
# What the archive holds, read with Python's tarfile: the manifest that
# index.json names, and its layers.
read -r oci_index_digest oci_layers < <(python3 - "$oci/image.oci.tar" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
m = json.load(t.extractfile("index.json"))["manifests"][0]["digest"]
print(m, len(json.load(t.extractfile("blobs/" + m.replace(":", "/")))["layers"]))
EOF
)
start=$(date +%s.%N)
vo=$("$cairn" commit --repo "$srv/repo" -b debian/oci --from-oci "oci-archive:$oci/image.oci.tar" --sign-key "$w/vendor.secret" 2> "$oci/commit.log" | tail -n 1) ||
    { echo "machine-test: cairn commit --from-oci failed:" >&2; cat "$oci/commit.log" >&2; exit 1; }
oci_commit_seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
"$cairn" summary --repo "$srv/repo" --update --sign-key "$w/vendor.secret" >/dev/null
# The image's tree against v2's, committed from the same folder: the
# marker, and /var/log/journal, whose POSIX ACLs (system.posix_acl_*, from
# systemd's tmpfiles) buildah's layer tar does not carry (the container's
# root has them; Debian's buildah 1.28 writes no xattr records for them).
oci_diff=$("$cairn" diff --repo "$srv/repo" "$v2" "$vo" | tr -s ' ' | paste -sd,)
echo "# OCI image: buildah build and push ${oci_build_seconds} s ($(du -m "$oci/image.oci.tar" | cut -f1) MB archive, $oci_layers layers), cairn commit --from-oci ${oci_commit_seconds} s"
fi
machine_serve "$srv"

# A power-cut boot's script: report, then after CUT-NOW run COMMAND on the
# other system's ref (then AFTER, a shell line).
cut_script() {
    cat <<EOF
facts
status
case "\$(sed -n 's/^CAIRN_TEST_VERSION=//p' /usr/lib/os-release.cairn)" in itools) ref=debian/x ;; *) ref=debian/itools ;; esac
fact target "\$ref"
cairn pull "origin:\$ref" > /dev/null 2>&1
echo CUT-NOW
$1 "origin:\$ref" 2>&1 | sed 's/^/run: /'
echo RUN-DONE
$2
EOF
}
# A seeded random moment in [0, MAX) seconds.
cut_delay() { python3 -c "import random, sys; print('%.2f' % random.Random(int(sys.argv[1])).uniform(0, float(sys.argv[2])))" "$1" "$2"; }
printf 'facts\nstatus\n' > "$w/report.sh"
deploy_seconds=10
if [[ -z $only ]]; then

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

fi  # CAIRN_VM_ONLY
if [[ $only != self-healing ]]; then

# ---- 5. initramfs-tools: the same boot through initramfs-tools; then the OCI-built system is deployed ----
# (CAIRN_VM_ONLY=oci: from v1 as installed.)
cat > "$w/s4.sh" <<'EOF'
facts
status
start=$(date +%s.%N)
cairn pull origin:debian/oci 2>&1 | sed 's/^/oci-pull: /'
mid=$(date +%s.%N)
cairn deploy origin:debian/oci 2>&1 | sed 's/^/oci-deploy: /'
fact oci-pull-seconds "$(awk -v a="$start" -v b="$mid" 'BEGIN { printf "%.1f", b - a }')"
fact oci-deploy-seconds "$(awk -v a="$mid" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
status
EOF
boot "$disk" "$w/s4.sh"
c4=$console
[[ $only == oci ]] || verdict initramfs-tools "$(times)" \
    multi-user "$(state "$c4" fact multi-user)" active \
    booted "$(state "$c4" booted)/$(state "$c4" fact version)" "$vi.0/itools" \
    root "$(state "$c4" fact root)/$(state "$c4" fact verity)" overlay/require \
    sysroot "$(state "$c4" fact sysroot)" present \
    etc "$(state "$c4" fact etc)" writable \
    agree "$(state "$c4" agree)" yes

# ---- oci-image: the OCI-built system boots; then v2 is deployed again ----
# ---- 4. cleanup-in-vm: back on v2, the initramfs-tools deployment retired ----
{ echo "oci=$vo"; cat <<'EOF'
facts
fact oci-manifest "$(cairn show --json "$oci" | sed -n 's/.*"cairn\.oci\.manifest-digest" *: *"\([^"]*\)".*/\1/p')"
status
cairn deploy origin:debian/x 2>&1 | sed 's/^/deploy: /'
status
cairn cleanup 2>&1 | sed 's/^/cleanup: /'
status
EOF
} > "$w/s5.sh"
boot "$disk" "$w/s5.sh"
c5=$console
verdict oci-image "$(times); host: buildah ${oci_build_seconds} s, commit ${oci_commit_seconds} s; in VM: pull $(state "$c4" fact oci-pull-seconds) s ($(machine_agent_output "$c4" | sed -n 's/^oci-pull: Fetched \([0-9]*\) objects.*/\1/p' | tail -n 1) objects), deploy $(state "$c4" fact oci-deploy-seconds) s" \
    "image layers" "$oci_layers" 2 \
    "buildah mounts left" "$oci_mounts" 0 \
    "index.json's manifest" "$oci_index_digest" "$(cat "$oci/digest")" \
    "tree against v2's" "$oci_diff" "M /usr/lib/os-release.cairn,M /var/log/journal" \
    "after deploy: default" "$(state "$c4" default -1)" "$vo.0" \
    "after deploy: ESP agrees" "$(state "$c4" agree -1)" yes \
    multi-user "$(state "$c5" fact multi-user)" active \
    booted "$(state "$c5" booted 0)/$(state "$c5" fact version)" "$vo.0/oci" \
    "version (the image's label)" "$(state "$c5" booted-version 0)" "$oci_label" \
    "signature" "$(state "$c5" get deployments.0.verification 0)" verified \
    root "$(state "$c5" fact root)/$(state "$c5" fact verity)" overlay/require \
    "composefs roots" "$(state "$c5" fact composefs-mounts)" 1 \
    "manifest digest in the commit" "$(state "$c5" fact oci-manifest)" "$(cat "$oci/digest")" \
    agree "$(state "$c5" agree 0)" yes
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
[[ $only == oci ]] || verdict cleanup-in-vm "$(times)" \
    "deployed" "$(state "$c5" default-version 1)" 2 \
    "before cleanup: kernels" "$(state "$c5" kernels-live 1 | cut -c1-11)" "ESP kernels" \
    "after cleanup: kernels" "$(state "$c5" kernels-live 2)" yes \
    "after cleanup: entries" "$(state "$c5" agree 2)" yes \
    "fsck.vfat of the ESP" "$fsck_esp" clean \
    "e2fsck of the sysroot" "$fsck_root" clean

fi  # CAIRN_VM_ONLY
if [[ -z $only ]]; then

# ---- 7. power-cut: QEMU killed at a random moment of an in-VM deploy ----
# Each boot first reports where the previous cut left the machine, then
# deploys the other system (so a kernel is copied to the ESP too) and is
# killed once that deploy has run for a random part of its measured time.
# The deploy has run its course before the agent's poweroff.
cut_script "cairn deploy" "sleep 600" > "$w/cut.sh"
version_of() { case $1 in debian/itools) echo itools ;; *) echo 2 ;; esac; }
old=2 new=2 prev_delay=0
for run in $(seq 1 $((cuts + 1))); do
    if [[ $run -le $cuts ]]; then
        delay=$(cut_delay "$((seed + run))" "$deploy_seconds")
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

# A refused boot of a fresh copy that TAMPER (a function) alters. A guest
# that never got as far as cairn-prepare-root (one TCG hang in early boot
# ran into the 600 s limit with nothing on the console after the kernel's
# command line) is booted once more, on a new copy, and the retry printed.
refused_boot() {
    local name=$1 reason=$2 tamper=$3 try
    for try in 1 2; do
        fresh_copy
        "$tamper"
        boot "$copy" "$w/report.sh" 600
        grep -q 'cairn-prepare-root' "$console" && break
        [[ $try -eq 2 ]] || echo "machine: boot $boot_n never reached cairn-prepare-root (QEMU ran ${machine_boot_seconds} s), likely an emulation hang: booting a new copy again" >&2
    done
    refused "$name" "$reason"
}
tamper_image() { flip "$dpath/.ostree.cfs" 2000; }
tamper_no_verity() {
    local flags
    flags=$(debugfs -R "stat $dpath/.ostree.cfs" "$copy?offset=$part_offset" 2>/dev/null | sed -n 's/.*Flags: \(0x[0-9a-f]*\).*/\1/p')
    debugfs -w -R "set_inode_field $dpath/.ostree.cfs flags $(printf '0x%x' $(( flags & ~0x100000 )))" "$copy?offset=$part_offset" >/dev/null 2>&1
}
# The commit signed by a key the machine does not trust, put in place of its signature.
"$cairn" init --repo "$w/other" --mode archive >/dev/null
mkdir -p "$w/other/objects/${dcommit:0:2}"
cp "$srv/repo/objects/${dcommit:0:2}/${dcommit:2}.commit" "$w/other/objects/${dcommit:0:2}/"
"$cairn" sign --repo "$w/other" "$dcommit" --key "$w/stranger.secret" >/dev/null
printf 'cd /ostree/repo/objects/%s\nrm %s.commitmeta\nwrite %s %s.commitmeta\n' "${dcommit:0:2}" "${dcommit:2}" \
    "$w/other/objects/${dcommit:0:2}/${dcommit:2}.commitmeta" "${dcommit:2}" > "$w/debugfs.cmds"
tamper_untrusted_key() { debugfs -w -f "$w/debugfs.cmds" "$copy?offset=$part_offset" >/dev/null 2>&1; }

refused_boot "tamper-image" "digest|Input/output error" tamper_image
refused_boot "tamper-no-verity" "has no fs-verity" tamper_no_verity
refused_boot "tamper-untrusted-key" "signature" tamper_untrusted_key
rm -f "$copy" "$copy.vars"

fi  # CAIRN_VM_ONLY
if [[ $only != oci ]]; then

# ---- Self-healing updates: boot counting, health checks, staging ----
# Each update is published on debian/x (the origin `cairn upgrade` follows);
# the tree's CAIRN_TEST_VERSION tells the versions apart on the machine.
set_version() { echo "CAIRN_TEST_VERSION=$1" > "$w/tree/usr/lib/os-release.cairn"; }
# What the agent saw of the boot's assessment (its CAIRN-ASSESSED line).
assessed() { sed -n "s/^CAIRN-ASSESSED .*$2=\([^ ]*\).*/\1/p" "$1" | tail -n 1; }
took() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
set_version 3
v3=$(publish debian/x 3 "$w/tree")
cat > "$w/h1.sh" <<'EOF'
facts
status
cairn switch origin:debian/x 2>&1 | sed 's/^/switch: /'
status
EOF
boot "$disk" "$w/h1.sh"
h1=$console

# ---- bless: v3 boots once, passes its checks, loses its counter; then v4 is staged ----
set_version 4
v4=$(publish debian/x 4 "$w/tree")
cat > "$w/h2.sh" <<'EOF'
facts
status
start=$(date +%s.%N)
cairn upgrade --stage 2>&1 | sed 's/^/upgrade: /'
fact stage-seconds "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
status
echo edited-after-staging > /etc/cairn-late-edit
EOF
boot "$disk" "$w/h2.sh"
h2=$console
# From the finalization's first line to QEMU's exit: the window for cuts during it.
finalize_window=$(awk -v a="$(cat "$h2.finalize" 2>/dev/null || echo "$machine_boot_end")" -v b="$machine_boot_end" 'BEGIN { printf "%.1f", b - a }')
verdict bless "$(times)" \
    "deployed with" "$(state "$h1" counter 0 -1)" 3-0 \
    booted "$(state "$h2" booted 0)/$(state "$h2" fact version)" "$v3.0/3" \
    "systemd-boot counted it" "$(assessed "$h2" count-path | grep -c "$v3.0+2-1.conf")" 1 \
    "health check" "$(assessed "$h2" health)" active \
    "systemd-bless-boot" "$(assessed "$h2" bless)" active \
    "its entry now" "$(state "$h2" counter 0 0)" blessed \
    agree "$(state "$h2" agree 0)" yes

# ---- stage-finalize: the /etc edit made after staging is in v4 ----
set_version 5
v5=$(publish debian/x 5 "$w/tree")
cat > "$w/h3.sh" <<'EOF'
facts
fact late-edit "$(cat /etc/cairn-late-edit 2>&1)"
status
cairn upgrade --stage 2>&1 | sed 's/^/upgrade: /'
# The test switch: this shutdown's finalization fails.
mkdir -p /run/systemd/system/cairn-finalize-staged.service.d
printf '[Service]\nEnvironment=CAIRN_TEST_FAIL_FINALIZE=1\n' > /run/systemd/system/cairn-finalize-staged.service.d/test-fail.conf
systemctl daemon-reload
status
EOF
boot "$disk" "$w/h3.sh"
h3=$console
stage_seconds=$(state "$h2" fact stage-seconds)
verdict stage-finalize "$(times); staging took ${stage_seconds} s, finalization to power-off ${finalize_window} s" \
    "before reboot: staged" "$(state "$h2" get staged.checksum -1)" "$v4" \
    "before reboot: default" "$(state "$h2" default -1)" "$v3.0" \
    "finalized at shutdown" "$(grep -c 'cairn: finalizing the staged deployment' "$h2")" 1 \
    booted "$(state "$h3" booted 0)/$(state "$h3" fact version)" "$v4.0/4" \
    "/etc edit made after staging" "$(state "$h3" fact late-edit)" edited-after-staging \
    "nothing staged now" "$(state "$h3" get staged 0)" null \
    agree "$(state "$h3" agree 0)" yes

# ---- finalize-failure: v5's finalization fails; v4 boots and says why ----
set_version 6
mkdir -p "$w/tree/usr/lib/cairn/health.d"
printf '#!/bin/sh\necho "simulated failure: the service this update broke did not come up"\nexit 1\n' > "$w/tree/usr/lib/cairn/health.d/50-vm-test-broken"
chmod 755 "$w/tree/usr/lib/cairn/health.d/50-vm-test-broken"
v6=$(publish debian/x 6 "$w/tree")
rm "$w/tree/usr/lib/cairn/health.d/50-vm-test-broken"
cat > "$w/h4.sh" <<'EOF'
facts
status
cairn upgrade 2>&1 | sed 's/^/upgrade: /'
status
EOF
boot "$disk" "$w/h4.sh"
h4=$console
verdict finalize-failure "$(times)" \
    "before reboot: staged" "$(state "$h3" get staged.checksum -1)" "$v5" \
    "finalization failed at shutdown" "$(grep -c 'failed on purpose' "$h3")" 1 \
    booted "$(state "$h4" booted 0)/$(state "$h4" fact version)" "$v4.0/4" \
    default "$(state "$h4" default 0)" "$v4.0" \
    "status reports" "$(state "$h4" get finalizeFailure.deployment 0)" "$v5.0" \
    "with the error" "$(state "$h4" get finalizeFailure.error 0 | grep -c CAIRN_TEST_FAIL_FINALIZE)" 1 \
    "from the boot before" "$(state "$h4" get finalizeFailure.earlierBoot 0)" true \
    agree "$(state "$h4" agree 0)" yes

# ---- health-rollback: v6 fails its health check three times; systemd-boot boots v4 ----
# Each try reboots by itself (FailureAction=reboot; -no-reboot makes that QEMU's exit).
cat > "$w/h8.sh" <<'EOF'
facts
status
fact journal-fallback "$(journalctl -b -o cat MESSAGE_ID=6c3f1b2e9a4d4f0b8e21c7d5a9f04b13 | grep -c 'failed 3 boot')"
cairn status 2>&1 | sed 's/^/human: /'
cairn upgrade 2>&1 | sed 's/^/upgrade: /'
# The update's image, broken on disk as a hostile disk would: replaced by an altered copy.
d=/sysroot/ostree/deploy/debian/deploy/$(cairn status --json | sed -n 's/.*"checksum" : "\([0-9a-f]*\)".*/\1/p' | head -n 1).0
unshare -m sh -c "mount -o remount,bind,rw /sysroot && cp '$d/.ostree.cfs' '$d/.cfs.tmp' && printf x | dd of='$d/.cfs.tmp' bs=1 seek=3000 conv=notrunc status=none && mv '$d/.cfs.tmp' '$d/.ostree.cfs' && sync"
fact broken "$d"
status
EOF
set_version 7
v7=$(publish debian/x 7 "$w/tree")
tries=() start_fallback=$(date +%s.%N)
for t in 1 2 3; do
    boot "$disk" "$w/report.sh" 600
    tries+=("$console")
done
boot "$disk" "$w/h8.sh"
h8=$console
fallback_health=$(took "$start_fallback" "$(cat "$h8.multi-user" 2>/dev/null || date +%s.%N)")
verdict health-rollback "three tries and the fallback boot: ${fallback_health} s to multi-user in v4" \
    "tries: the check failed" "$(for c in "${tries[@]}"; do grep -c 'FAILED 50-vm-test-broken (exit status 1)' "$c"; done | paste -sd,)" 1,1,1 \
    "tries: left after each" "$(for c in "${tries[@]}"; do grep -o 'on probation, [0-9]* tries left' "$c" | head -n 1 | tr -dc 0-9; echo; done | paste -sd,)" 2,1,0 \
    booted "$(state "$h8" booted 0)/$(state "$h8" fact version)" "$v4.0/4" \
    default "$(state "$h8" default 0)" "$v4.0" \
    "fallback: failed" "$(state "$h8" get fallback.failed.deployment 0)" "$v6.0" \
    "fallback: boots" "$(state "$h8" get fallback.boots 0)" 3 \
    "fallback: the check's output" "$(state "$h8" get fallback.checks 0 | grep -c 'simulated failure: the service this update broke')" 1 \
    "failed entry kept, spent" "$(state "$h8" counter 1 0)" 0-3 \
    "journal entry" "$(state "$h8" fact journal-fallback)" 1 \
    agree "$(state "$h8" agree 0)" yes

# ---- broken-kernel-rollback: v7's initramfs refuses its image three times ----
tries=() start_fallback=$(date +%s.%N)
for t in 1 2 3; do
    boot "$disk" "$w/report.sh" 600
    tries+=("$console")
done
cat > "$w/h12.sh" <<'EOF'
facts
status
cairn status 2>&1 | sed 's/^/human: /'
EOF
boot "$disk" "$w/h12.sh"
h12=$console
fallback_refused=$(took "$start_fallback" "$(cat "$h12.multi-user" 2>/dev/null || date +%s.%N)")
verdict broken-kernel-rollback "three refused boots and the fallback: ${fallback_refused} s to multi-user in v4" \
    "tries refused" "$(for c in "${tries[@]}"; do grep -c 'cairn-prepare-root: refusing to boot' "$c"; done | paste -sd,)" 1,1,1 \
    "tries reached multi-user" "$(for c in "${tries[@]}"; do grep -c '^CAIRN-MULTI-USER' "$c"; done | paste -sd,)" 0,0,0 \
    booted "$(state "$h12" booted 0)/$(state "$h12" fact version)" "$v4.0/4" \
    "fallback: failed" "$(state "$h12" get fallback.failed.deployment 0)" "$v7.0" \
    "fallback: boots" "$(state "$h12" get fallback.boots 0)" 3 \
    "fallback: no health check ran" "$(state "$h12" get fallback.reachedHealthChecks 0)" false \
    "status says" "$(machine_agent_output "$h12" | grep -c '^human: Automatic rollback: debian '"$v7"'.0 (version 7) failed 3 boot(s)')" 1 \
    agree "$(state "$h12" agree 0)" yes

# ---- power-cut-staged: QEMU killed while staging, or while finalizing at shutdown ----
# Odd runs cut a random moment of `switch --stage` (window: the measured
# in-VM deploy, the same work after the pull; the staging measured in
# stage-finalize includes its pull, and cuts within it came after
# power-off); even runs a random moment between the shutdown's finalization's
# first line and power-off (window: as measured in stage-finalize).
stage_cuts=${CAIRN_VM_STAGE_CUTS:-$([[ $full == --full ]] && echo 10 || echo 3)}
# No sleep: the shutdown that follows finalizes.
cut_script "cairn switch --stage" "" > "$w/stagecut.sh"
version_of_ref() { case $1 in debian/itools) echo itools ;; *) echo 7 ;; esac; }
old=4 new=4 how=""
for run in $(seq 1 $((stage_cuts + 1))); do
    if [[ $run -le $stage_cuts ]]; then
        if (( run % 2 )); then
            delay=$(cut_delay "$((seed + 100 + run))" "$deploy_seconds")
            marker="CAIRN-AGENT| CUT-NOW" this="staging"
        else
            delay=$(cut_delay "$((seed + 100 + run))" "$finalize_window")
            marker="cairn: finalizing the staged deployment" this="finalizing at shutdown"
        fi
        machine_cut_marker=$marker machine_cut_delay=$delay boot "$disk" "$w/stagecut.sh"
    else
        boot "$disk" "$w/report.sh"
    fi
    if [[ $run -gt 1 ]]; then
        b=$(state "$console" booted 0)
        staged=$(state "$console" get staged.stale 0)
        verdict "power-cut-staged $((run - 1))" "seed $((seed + 100 + run - 1)): killed ${prev_delay} s into $how; next $(times)" \
            multi-user "$(state "$console" fact multi-user)" active \
            "booted the old ($old) or the new ($new)" "$(state "$console" fact version | sed -E "s/^($old|$new)$/old-or-new/")" old-or-new \
            "staged: none, or stale (never finalized)" "$(echo "$staged" | sed -E 's/^(none|true)$/none-or-stale/')" none-or-stale \
            agree "$(state "$console" agree)" yes
    fi
    old=$(state "$console" fact version)
    new=$(version_of_ref "$(state "$console" fact target)")
    prev_delay=$delay how=$this
    [[ ! -e $console.uncut ]] || how="$how (QEMU had exited before the cut)"
    [[ $run -gt $stage_cuts ]] || grep -q 'CUT-NOW' "$console" || echo "  (boot $boot_n did not reach its staging)"
done
echo "# fallback under TCG: after a failing health check ${fallback_health} s, after a refused initramfs ${fallback_refused} s (three tries, then multi-user in the previous deployment)"

fi  # CAIRN_VM_ONLY

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
