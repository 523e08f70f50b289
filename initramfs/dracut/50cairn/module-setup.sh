#!/bin/bash
# dracut module: cairn-prepare-root, which verifies the deployment's
# signature and mounts its composefs image as the root, in place of
# ostree-prepare-root. Install to /usr/lib/dracut/modules.d/50cairn/.

# The program and its configuration, as `make install` places them.
cairn_prepare_root=/usr/lib/cairn/cairn-prepare-root

check() {
    [[ -x $cairn_prepare_root ]] || return 1
    # Only when asked for, or when the system is an ostree/cairn deployment.
    [[ $hostonly ]] && [[ ! -e /run/ostree-booted ]] && return 255
    return 0
}

depends() {
    echo systemd
    return 0
}

installkernel() {
    instmods erofs overlay loop
}

install() {
    inst_binary "$cairn_prepare_root"
    local conf=/usr/lib/ostree/prepare-root.conf
    [[ -e $conf ]] || conf=/usr/share/cairn/prepare-root.conf
    [[ -e $conf ]] && inst_simple "$conf" /usr/lib/ostree/prepare-root.conf
    [[ -e /etc/ostree/prepare-root.conf ]] && inst_simple /etc/ostree/prepare-root.conf
    # The trusted keys: keypath of the configuration, else the default.
    local keypath
    keypath=$(sed -n 's/^[[:space:]]*keypath[[:space:]]*=[[:space:]]*//p' /etc/ostree/prepare-root.conf "$conf" 2>/dev/null | head -n 1)
    keypath=${keypath:-/etc/ostree/initramfs-root-binding.key}
    [[ -e $keypath ]] && inst_simple "$keypath"
    inst_simple "$moddir/cairn-prepare-root.service" "$systemdsystemunitdir/cairn-prepare-root.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target cairn-prepare-root.service
}
