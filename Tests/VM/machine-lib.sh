# shellcheck shell=bash
# A real machine for VM tests, as a library of bash functions (source it):
# a Debian 12 system with systemd as PID 1, booted by OVMF -> systemd-boot
# (from a FAT ESP on a GPT disk) -> a dracut or initramfs-tools initramfs
# holding cairn-prepare-root -> systemd in the composefs root, where a test
# agent runs a script the host hands in through QEMU's fw_cfg and prints
# its output on the serial console.
#
# The flow (see machine-test.sh for a complete use):
#   machine_begin                          temp folder, cleanup trap, kernel
#   machine_tree VARIANT TREE VENDOR.pub   the OS tree to commit
#   cairn sysroot init --bootloader systemd-boot --esp ESP / trust add / commit
#   cairn deploy --esp ESP ... $(machine_kargs VARIANT)
#   machine_esp_loader ESP                 systemd-boot and loader.conf
#   machine_disk SYS ESP DISK              GPT: ESP + ext4 sysroot
#   machine_seal DISK                      fs-verity, once per new disk
#   machine_serve DOCROOT                  nginx on 127.0.0.1, the guest's 10.0.2.100:80
#   machine_boot DISK SCRIPT CONSOLE [TIMEOUT]
#   machine_agent_output CONSOLE           what the script printed
#   machine_agent_rc CONSOLE               its exit status
#
# machine_begin sets an EXIT trap (machine_cleanup): a caller with its own
# cleanup calls machine_cleanup from its trap.
#
# Needs: CAIRN_TOP (the checkout; default: two folders up from this file),
# root, debootstrap, qemu-system-x86 (10.0.2), ovmf, systemd-boot-efi,
# mtools, dosfstools, fdisk, e2fsprogs, nginx-light, socat, busybox-static.

machine_top=${CAIRN_TOP:-$(realpath "$(dirname "${BASH_SOURCE[0]}")/../..")}
machine_here=$machine_top/Tests/VM
machine_cache=${CAIRN_CACHE:-/var/tmp/cairn-cache}
# TCG on this 2-core host: -smp 2 reached multi-user in 36-54 s (mean 46 s
# over 5 boots), -smp 1 in 45-61 s (mean 51 s over 4); at multi-user the
# guest uses ~150 MB of 1024 (768 boots too; the margin is for upgrades
# run inside the VM).
machine_mem=${CAIRN_VM_MEM:-1024}
machine_smp=${CAIRN_VM_SMP:-2}
machine_ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
machine_ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
machine_sdboot=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
# The ESP: room for a dozen deployments with distinct kernels/initramfses
# (each boot folder: the 11 MB kernel + dracut's --no-hostonly 25 MB
# initramfs, or initramfs-tools' 18 MB; deployments with the same kernel and
# initramfs share one folder).
machine_esp_mb=${CAIRN_VM_ESP_MB:-512}
# Free space left in the sysroot for upgrades made inside the VM (the image
# file is sparse: unused space costs nothing on the host).
machine_root_free_mb=${CAIRN_VM_ROOT_FREE_MB:-2048}
# The static cairn-prepare-root the sealing boot runs (make prepare-root).
machine_prepare_root=${CAIRN_PREPARE_ROOT:-$machine_top/.build/initramfs/cairn-prepare-root}
machine_work=""
machine_pids=()
machine_nginx_pid=""
machine_http_port=""

# Creates the temp folder (removed at exit with everything started here)
# and fetches the kernel. Sets machine_work, machine_kroot, machine_kver.
machine_begin() {
    machine_work=$(mktemp -d /var/tmp/cairn-vm.XXXXXX)
    trap machine_cleanup EXIT
    read -r machine_kroot machine_kver < <("$machine_top/scripts/fetch-kernel.sh" backports)
}

# Stops what we started (by pid) and removes the temp folder (unless
# CAIRN_VM_KEEP is set). Nothing stays mounted: mounts happen only in
# private namespaces (unshare -m) that end with their command.
machine_cleanup() {
    local pid file
    for pid in "${machine_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # QEMU itself (the pids above are of the console readers), by the pid
    # it wrote, and only while that pid is still a QEMU.
    for file in "$machine_work"/qemu.*.pid; do
        [[ -s "$file" ]] || continue
        pid=$(cat "$file")
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == qemu-system-* ]] && kill "$pid" 2>/dev/null || true
    done
    if [[ -n "$machine_nginx_pid" ]]; then kill "$machine_nginx_pid" 2>/dev/null || true; fi
    [[ -n "$machine_work" && -d "$machine_work" ]] || return 0
    if [[ -n "${CAIRN_VM_KEEP:-}" ]]; then echo "kept $machine_work" >&2; return 0; fi
    chattr -R -f -i "$machine_work" 2>/dev/null || true
    rm -rf "$machine_work"
}

# The kernel arguments a deployment needs, as `cairn deploy` options: the
# serial console (the agent and the host read it), the physical root for the
# initramfs to mount at /sysroot (the ext4's label) read-write (/var and /etc
# live there; cairn-prepare-root makes /sysroot read-only itself), and an
# immediate reboot on panic, which -no-reboot turns into QEMU exiting.
# The same for dracut (root= by LABEL=, rw) and initramfs-tools.
# usage: machine_kargs [VARIANT]
machine_kargs() {
    echo --karg console=ttyS0 --karg root=LABEL=sysroot --karg rw --karg panic=-1
}

# The Debian packages of a tree: systemd as PID 1 with udev and networkd;
# the libraries a release cairn-full links (ldd .build/release/cairn-full:
# libostree-1-1 brings glib and gpgme, plus libarchive13, libssl3); curl and
# iproute2 for the agent's scripts; systemd-boot for Automatic Boot
# Assessment (systemd-bless-boot, its generator and service: the boot
# loader itself comes from the host, see machine_esp_loader; what else the
# package installs is disabled in machine_tree); the initramfs builder of
# the variant. Its postinst installs nothing under debootstrap: it runs
# `bootctl install` only when `bootctl --print-esp-path` finds an ESP,
# and the chroot has none mounted.
machine_packages() {
    local p=systemd,systemd-sysv,udev,kmod,dbus,systemd-boot,libostree-1-1,libarchive13,libgpgme11,libssl3,curl,iproute2,zstd,xz-utils
    case $1 in
        dracut) echo "$p,dracut" ;;
        initramfs-tools) echo "$p,initramfs-tools" ;;
        *) echo "machine: unknown variant $1 (dracut or initramfs-tools)" >&2; return 1 ;;
    esac
}

# The pristine debootstrap'd tree of a variant, cached (and never changed):
# prints its path. Marked ready only once complete; the mark holds the
# package list, so a changed list makes a new tree.
machine_base() {
    local variant=$1 base packages
    packages=$(machine_packages "$variant")
    base=$machine_cache/debian-systemd-$variant
    if [[ "$(cat "$base/.cairn-ready" 2>/dev/null)" != "$packages" ]]; then
        rm -rf "$base" "$base.tmp"
        mkdir -p "$machine_cache"
        debootstrap --variant=minbase --include="$packages" bookworm "$base.tmp" > "$machine_cache/debootstrap-$variant.log" 2>&1 ||
            { tail -n 20 "$machine_cache/debootstrap-$variant.log" >&2; return 1; }
        echo "$packages" > "$base.tmp/.cairn-ready"
        mv "$base.tmp" "$base"
    fi
    echo "$base"
}

# Runs a shell command in a chroot of TREE with /proc, /dev and /sys bound
# (in a private mount namespace, so nothing stays mounted).
machine_chroot() {
    local tree=$1 cmd=$2
    unshare -m /bin/sh -c "
        set -e
        mount --bind /proc '$tree/proc'; mount --bind /dev '$tree/dev'; mount --bind /sys '$tree/sys'
        chroot '$tree' /bin/sh -c '$cmd'
    "
}

# The OS tree to commit, in OUTDIR (replaced): a copy of the cached base
# with the cloud kernel where ostree wants it, cairn installed, the vendor
# key the initramfs trusts, the initramfs built inside the tree, the test
# agent, networking, and the shape an ostree/cairn deployment needs.
# usage: machine_tree VARIANT OUTDIR VENDOR.pub [VERSION]
machine_tree() {
    local variant=$1 out=$2 pub=$3 version=${4:-1} base kver=$machine_kver log
    base=$(machine_base "$variant")
    log=$machine_work/tree-$variant.log
    rm -rf "$out"
    cp -a "$base" "$out"
    rm -f "$out/.cairn-ready"
    # bookworm is usr-merged: /lib -> usr/lib, so modules land in /usr/lib/modules.
    [[ "$(readlink "$out/lib")" == usr/lib ]] || { echo "machine: $out/lib is not a link to usr/lib" >&2; return 1; }

    # The kernel, the Debian-for-ostree way: vmlinuz beside its modules.
    mkdir -p "$out/usr/lib/modules"
    cp -a "$machine_kroot/lib/modules/$kver" "$out/usr/lib/modules/"
    cp "$machine_kroot/boot/vmlinuz-$kver" "$out/usr/lib/modules/$kver/vmlinuz"
    cp "$machine_kroot/boot/config-$kver" "$out/usr/lib/modules/$kver/config"

    # cairn, cairn-prepare-root and the initramfs integrations, as a user installs them.
    make -C "$machine_top" --no-print-directory install DESTDIR="$out" PREFIX=/usr >> "$log" 2>&1 ||
        { tail -n 30 "$log" >&2; return 1; }
    install -D -m 0644 "$pub" "$out/etc/ostree/initramfs-root-binding.key"

    # The shape of a deployment: the physical root appears at /sysroot,
    # /ostree points into it, the ESP is mounted at /efi.
    mkdir -p "$out/sysroot" "$out/efi"
    ln -sfn sysroot/ostree "$out/ostree"
    # / is a read-only composefs: /tmp must be a tmpfs. The ESP by its GPT
    # name (not fsck'ed: no dosfstools in the tree). /boot: the sysroot's, where
    # cairn (and libostree) on the running system find ostree's boot entries,
    # as upstream's ostree-system-generator binds it (boot.mount).
    cat > "$out/etc/fstab" <<'EOF'
# cairn test machine: no / entry (the initramfs mounts the deployment).
PARTLABEL=esp  /efi  vfat   umask=0077  0 0
tmpfs          /tmp  tmpfs  mode=1777,nosuid,nodev  0 0
/sysroot/boot  /boot none   bind  0 0
EOF
    echo cairn-vm > "$out/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 cairn-vm\n' > "$out/etc/hosts"
    # Empty: systemd generates one at boot and commits it (/etc is writable).
    : > "$out/etc/machine-id"
    rm -f "$out/var/lib/dbus/machine-id"
    cat > "$out/usr/lib/os-release.cairn" <<EOF
CAIRN_TEST_VERSION=$version
EOF
    # No prompts on the console at first boot, and no logins: the agent is
    # the only user. (The gpt-auto generator mounts nothing: /efi is in
    # fstab and root= is given.)
    ln -sfn /dev/null "$out/etc/systemd/system/systemd-firstboot.service"
    ln -sfn /dev/null "$out/etc/systemd/system/serial-getty@.service"
    ln -sfn /dev/null "$out/etc/systemd/system/getty@.service"
    # Of the systemd-boot package only systemd-bless-boot may act: the ESP
    # is cairn's (and the host's systemd-boot is the boot loader). Masked:
    # systemd-boot-update.service (bootctl update would rewrite
    # EFI/BOOT/BOOTX64.EFI with the tree's copy) and
    # systemd-boot-system-token.service (bootctl random-seed writes
    # loader/random-seed on the ESP and an EFI variable; on by default,
    # though its ConditionVirtualization=no keeps it off in QEMU). Removed:
    # the kernel and initramfs hooks that run kernel-install, which would
    # add its own entries and kernels to the ESP.
    ln -sfn /dev/null "$out/etc/systemd/system/systemd-boot-update.service"
    ln -sfn /dev/null "$out/etc/systemd/system/systemd-boot-system-token.service"
    rm -f "$out/etc/kernel/postinst.d/zz-systemd-boot" "$out/etc/kernel/postrm.d/zz-systemd-boot" \
        "$out/etc/initramfs/post-update.d/systemd-boot"

    # Networking: DHCP from QEMU's user network (it serves DHCP even with
    # restrict=on). network-online waits for one link, at most 90 s: 20 s
    # was too short when the host ran three TCG guests at once (DHCP came
    # later, wait-online failed, the system was "degraded").
    mkdir -p "$out/etc/systemd/network" "$out/etc/systemd/system/systemd-networkd-wait-online.service.d"
    cat > "$out/etc/systemd/network/50-cairn-vm.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
    cat > "$out/etc/systemd/system/systemd-networkd-wait-online.service.d/cairn.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any --timeout=90
EOF

    # The test agent.
    install -D -m 0755 "$machine_here/machine-agent.sh" "$out/usr/libexec/cairn-test-agent"
    install -D -m 0644 "$machine_here/cairn-test-agent.service" "$out/usr/lib/systemd/system/cairn-test-agent.service"

    # The initramfs, built inside the tree for the tree's kernel.
    local build
    case $variant in
        dracut)
            # With the test's reporter of what a refused boot left mounted.
            install -D -m 0755 "$machine_here/dracut-cairn-vm-test/module-setup.sh" "$out/usr/lib/dracut/modules.d/99cairn-vm-test/module-setup.sh"
            install -D -m 0755 "$machine_here/dracut-cairn-vm-test/report-mounts.sh" "$out/usr/lib/dracut/modules.d/99cairn-vm-test/report-mounts.sh"
            build="dracut --no-hostonly --add cairn --add cairn-vm-test --force /usr/lib/modules/$kver/initramfs.img $kver" ;;
        initramfs-tools) build="mkinitramfs -o /usr/lib/modules/$kver/initramfs.img $kver" ;;
    esac
    # mkinitramfs reads the kernel's configuration from /boot (as Debian's
    # kernel package puts it); a deployment's /boot stays empty afterwards.
    cp "$machine_kroot/boot/config-$kver" "$out/boot/config-$kver"
    machine_chroot "$out" "depmod $kver && systemctl enable systemd-networkd.service cairn-test-agent.service && $build" >> "$log" 2>&1 ||
        { tail -n 30 "$log" >&2; return 1; }
    rm -f "$out/boot/config-$kver"
    [[ -s "$out/usr/lib/modules/$kver/initramfs.img" ]] || { echo "machine: no initramfs built (see $log)" >&2; return 1; }

    # What a commit must not carry: device nodes, runtime state, caches.
    find "$out/dev" "$out/run" "$out/tmp" "$out/proc" "$out/sys" -mindepth 1 -delete
    rm -rf "$out/var/cache/apt/"*.bin "$out/var/log/"*.log
}

# The boot loader on the ESP folder: systemd-boot at the removable-media
# fallback path (OVMF boots it with no NVRAM entry) and a loader.conf that
# boots the default (first in sort order) at once.
# usage: machine_esp_loader ESPDIR
machine_esp_loader() {
    local esp=$1
    install -D -m 0644 "$machine_sdboot" "$esp/EFI/BOOT/BOOTX64.EFI"
    mkdir -p "$esp/loader"
    printf 'timeout 0\nconsole-mode keep\neditor no\n' > "$esp/loader/loader.conf"
}

# The disk: GPT with partition 1 the ESP (FAT32, GPT name "esp", filled
# from ESPDIR with mtools: this host cannot mount FAT) and partition 2 the
# sysroot (ext4 with the verity feature, label "sysroot", GPT name "root",
# filled from SYS by mkfs.ext4 -d), each made as its own file and written
# in at its offset. Sparse throughout.
# usage: machine_disk SYS ESPDIR OUT.img
machine_disk() {
    local sys=$1 esp=$2 out=$3 root_mb esp_sectors root_sectors tmp
    tmp=$(mktemp -d "$machine_work/disk.XXXXXX")
    root_mb=$(( $(du -sm "$sys" | cut -f1) * 5 / 4 + machine_root_free_mb ))
    esp_sectors=$(( machine_esp_mb * 2048 ))
    root_sectors=$(( root_mb * 2048 ))

    mkfs.vfat -F 32 -n ESP -C "$tmp/esp.img" $(( machine_esp_mb * 1024 )) >/dev/null
    MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i "$tmp/esp.img" "$esp"/* ::/
    mkfs.ext4 -q -F -b 4096 -O verity -L sysroot -d "$sys" "$tmp/root.img" "${root_mb}M" >/dev/null

    rm -f "$out"
    # 1 MiB before (GPT, alignment) and after (the backup GPT).
    truncate -s $(( (2 + machine_esp_mb + root_mb) * 1024 * 1024 )) "$out"
    sfdisk -q "$out" <<EOF
label: gpt
start=2048, size=$esp_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$(( 2048 + esp_sectors )), size=$root_sectors, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
EOF
    dd if="$tmp/esp.img" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
    dd if="$tmp/root.img" of="$out" bs=1M seek=$(( 1 + machine_esp_mb )) conv=notrunc,sparse status=none
    rm -rf "$tmp"
    # Each disk has its own EFI variable store, which persists with it.
    cp "$machine_ovmf_vars" "$out.vars"
}

# The sealing initramfs (busybox, cairn-prepare-root, the block modules),
# made once per temp folder. Prints its path.
machine_seal_initramfs() {
    local initrd=$machine_work/seal-initramfs.img mods m n=1 files=()
    if [[ ! -s "$initrd" ]]; then
        mods=$machine_work/seal-modules
        mkdir -p "$mods"
        for m in drivers/block/virtio_blk lib/libcrc32c; do
            xz -dc "$machine_kroot/lib/modules/$machine_kver/kernel/$m.ko.xz" > "$mods/$n-$(basename "$m").ko"
            n=$((n + 1))
        done
        files=(--file "$machine_prepare_root:/usr/lib/cairn/cairn-prepare-root")
        for m in "$mods"/*.ko; do files+=(--file "$m:/lib/modules/$(basename "$m")"); done
        "$machine_top/initramfs/mkinitramfs.sh" "$initrd" --init "$machine_here/initramfs-init.sh" "${files[@]}"
    fi
    echo "$initrd"
}

# Seals a new disk: fs-verity on every repository object and composefs
# image (what `cairn post-copy` does on a running system), which signed
# mode requires and this host's kernel cannot do. Once per new disk, by a
# direct-kernel boot of the fetched kernel with the busybox initramfs of
# boot-test.sh (cairn.disk= names the sysroot partition). Not retried: no
# guest crash was seen with QEMU 10.0.2 here (see machine_boot); sealing is
# idempotent, so a caller may simply call it again.
# usage: machine_seal DISK
machine_seal() {
    local disk=$1 initrd out=$machine_work/seal-console start
    initrd=$(machine_seal_initramfs)
    start=$(date +%s.%N)
    timeout 300 qemu-system-x86_64 -machine q35 -accel tcg -m 512 -smp 1 \
        -nographic -no-reboot -nic none \
        -kernel "$machine_kroot/boot/vmlinuz-$machine_kver" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 loglevel=4 cairn.seal cairn.disk=/dev/vda2" \
        -drive file="$disk",format=raw,if=virtio < /dev/null 2>&1 | tr -d '\r' > "$out" || true
    if grep -q '^CAIRN-SEALED' "$out"; then
        printf 'machine: sealed %s in %.1f s\n' "$(basename "$disk")" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" >&2
        return 0
    fi
    echo "machine: the sealing boot did not end sealed; its console ended with:" >&2
    tail -n 15 "$out" | sed 's/^/  | /' >&2
    return 1
}

# Serves DOCROOT with nginx on a free port of 127.0.0.1 (the guest reaches
# it as http://10.0.2.100/). Sets machine_http_port; stopped at exit.
# usage: machine_serve DOCROOT
machine_serve() {
    local root=$1 dir=$machine_work/nginx port
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
           shuf -i 20000-60000 -n 1)
    cat > "$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
# Workers read the test's files in its 0700 temp folder.
user root root;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 64; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {
        listen 127.0.0.1:$port;
        root $root;
    }
}
EOF
    nginx -c "$dir/nginx.conf" -p "$dir" &
    machine_nginx_pid=$!
    local i
    for i in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { machine_http_port=$port; return 0; }
        sleep 0.1
    done
    echo "machine: nginx did not start:" >&2
    cat "$dir/error.log" >&2
    return 1
}

# Boots DISK through OVMF and systemd-boot, the agent running SCRIPT; the
# console (without CRs) goes to CONSOLE-OUT. QEMU exits when the guest
# powers off or reboots (-no-reboot: the host starts the next boot, with
# its own script, and it goes through OVMF and systemd-boot again) or
# panics (panic=-1), or after TIMEOUT seconds (default 600). Returns 0 when
# the agent finished (CAIRN-AGENT-END), 1 otherwise. Sets machine_boot_seconds
# (QEMU start to exit), machine_boot_end (its host time) and machine_multi_user_seconds (QEMU start to the
# agent's CAIRN-MULTI-USER line, host clock), and prints both.
# CAIRN_VM_WATCH=1 copies the console to stderr as it comes.
# Not retried here: with QEMU 10.0.2 no guest crashed in the 20 OVMF boots
# and 6 sealing boots measured while this was written (without icount).
# machine-test.sh boots its tampered copies once more when the guest never
# reached cairn-prepare-root: one such hang was seen on 2026-12-03.
# usage: machine_boot DISK SCRIPT CONSOLE-OUT [TIMEOUT]
machine_boot() {
    local disk=$1 script=$2 console=$3 limit=${4:-600} start net stamp pidfile
    pidfile=$(mktemp --suffix=.pid "$machine_work/qemu.XXXXXX")
    stamp=$console.multi-user
    rm -f "$stamp" "$console.cut" "$console.killed" "$console.uncut" "$console.finalize"
    : > "$console"
    net=user,model=virtio-net-pci,restrict=on
    # One socat per guest connection (cmd:), not a tcp: chardev: that is one
    # connection to nginx, opened when QEMU starts and shared by every guest
    # connection in turn; nginx closes it after 60 s without a request, so a
    # boot slower than that (seen at 79 s when the host was busy) found the
    # server gone (curl timed out), and parallel guest connections would mix
    # on one stream.
    if [[ -n "$machine_http_port" ]]; then net+=",guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$machine_http_port"; fi
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" qemu-system-x86_64 -machine q35 -accel tcg -m "$machine_mem" -smp "$machine_smp" \
        -display none -vga none -monitor none -serial stdio -no-reboot -pidfile "$pidfile" \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$machine_ovmf_code" \
        -drive if=pflash,format=raw,unit=1,file="$disk.vars" \
        -drive file="$disk",format=raw,if=virtio \
        -nic "$net" \
        -fw_cfg name=opt/cairn/script,file="$script" < /dev/null 2>&1 |
    while IFS= read -r line || [[ -n "$line" ]]; do
        line=${line%$'\r'}
        printf '%s\n' "$line" >> "$console"
        [[ -n "${CAIRN_VM_WATCH:-}" ]] && printf '%s\n' "$line" >&2
        if [[ $line == CAIRN-MULTI-USER* && ! -e $stamp ]]; then date +%s.%N > "$stamp"; fi
        # When a shutdown's finalization of a staged deployment began (its window for power cuts).
        if [[ $line == *"cairn: finalizing the staged deployment"* && ! -e $console.finalize ]]; then date +%s.%N > "$console.finalize"; fi
        # A power cut: QEMU killed machine_cut_delay seconds after the guest printed a line holding machine_cut_marker.
        if [[ -n "${machine_cut_marker:-}" && $line == *"$machine_cut_marker"* && ! -e $console.cut ]]; then
            : > "$console.cut"
            (sleep "$machine_cut_delay"
             kill -KILL "$(cat "$pidfile")" 2>/dev/null && : > "$console.killed" && echo "machine: power cut after $machine_cut_delay s" >&2) &
            disown
        fi
    done &
    machine_pids+=($!)
    wait $! || true
    machine_boot_end=$(date +%s.%N)
    # The marker came, but QEMU exited by itself before the cut was due: say so
    # ($console.uncut), and no cut may hit anything later.
    if [[ -e $console.cut && ! -e $console.killed ]]; then
        : > "$console.uncut"
        : > "$pidfile"
        echo "machine: no power cut: QEMU exited before ${machine_cut_delay:-?} s" >&2
    fi
    machine_boot_seconds=$(awk -v a="$start" -v b="$machine_boot_end" 'BEGIN { printf "%.1f", b - a }')
    machine_multi_user_seconds=none
    [[ -e $stamp ]] && machine_multi_user_seconds=$(awk -v a="$start" -v b="$(cat "$stamp")" 'BEGIN { printf "%.1f", b - a }')
    echo "machine: boot of $(basename "$disk"): multi-user after $machine_multi_user_seconds s, QEMU ran $machine_boot_seconds s" >&2
    grep -q '^CAIRN-AGENT-END rc=' "$console"
}

# What the agent's script printed (its lines, without the agent's prefix).
# usage: machine_agent_output CONSOLE
machine_agent_output() {
    sed -n 's/^CAIRN-AGENT| //p' "$1"
}

# The script's exit status, as the agent reported it (empty if it did not).
# usage: machine_agent_rc CONSOLE
machine_agent_rc() {
    sed -n 's/^CAIRN-AGENT-END rc=//p' "$1" | tail -n 1
}
