#!/bin/bash
# Test only (the VM test's machine): a dracut module that, when the boot
# fails in the initramfs (dracut's emergency path with rd.shell=0), prints
# how many overlay and EROFS mounts are left, so the test can see that a
# refusal left no half-mounted root. Added with `dracut --add cairn-vm-test`.
check() { return 255; }
depends() { return 0; }
install() {
    inst_hook shutdown-emergency 10 "$moddir/report-mounts.sh"
}
