#!/bin/bash
# The VM tests' agent (installed as /usr/libexec/cairn-test-agent, run by
# cairn-test-agent.service on the serial console). Prints:
#   CAIRN-MULTI-USER uptime=S state=S   when multi-user.target is active
#   CAIRN-ASSESSED health=S bless=S count-path=P
#                                       once the boot's assessment is done
#   CAIRN-AGENT-BEGIN
#   CAIRN-AGENT| <line>                 each line the script printed (stdout and stderr)
#   CAIRN-AGENT-END rc=N
#   CAIRN-AGENT-POWEROFF | CAIRN-AGENT-REBOOT
# The prefix keeps the script's lines apart from the kernel's and systemd's
# messages on the same console. A script asks for a reboot (instead of the
# poweroff) by creating /run/cairn-agent/reboot.
#
# The assessment (systemd-boot's Automatic Boot Assessment): after
# multi-user.target, the agent waits (at most 180 s in all) until
# cairn-health-check.service, if that unit exists, is active or failed,
# and, if systemd-boot booted a counted entry (it then sets the EFI
# variable LoaderBootCountPath), until systemd-bless-boot.service is active
# or failed. health= and bless= are those units' ActiveState then (none:
# no such unit; bless= is "inactive" on a boot without a counter, where
# the generator does not pull it in); count-path= is LoaderBootCountPath
# (the entry's path on the ESP as systemd-boot renamed it before booting
# it, e.g. \loader\entries\NAME+0-1.conf for NAME+1.conf; systemd-boot 252's
# LoaderEntrySelected keeps the name it found, NAME+1.conf), or none.
# Without a health unit boot-complete.target is reached right after
# sysinit.target, so bless= is already active at multi-user. A failed
# health check with FailureAction=reboot reboots the guest, as a rule
# before the agent prints anything (Type=idle starts it late).
set -u
script=/sys/firmware/qemu_fw_cfg/by_name/opt/cairn/script/raw
# qemu_fw_cfg is a module in Debian's cloud kernel.
modprobe -q qemu_fw_cfg 2>/dev/null || true
for _ in $(seq 100); do [ -e "$script" ] && break; sleep 0.1; done
for _ in $(seq 1200); do systemctl -q is-active multi-user.target && break; sleep 0.1; done
echo "CAIRN-MULTI-USER uptime=$(cut -d' ' -f1 /proc/uptime) state=$(systemctl is-system-running 2>/dev/null)"
count_var=/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
# A unit's ActiveState, or none when systemd knows no such unit.
unit_state() {
    case "$(systemctl show -P LoadState "$1" 2>/dev/null)" in
        ""|not-found) echo none ;;
        *) systemctl show -P ActiveState "$1" 2>/dev/null ;;
    esac
}
# Done: not waited for (absent), or active or failed.
assessed() {
    case "$(unit_state "$1")" in none|active|failed) return 0 ;; *) return 1 ;; esac
}
until_s=$((SECONDS + 180))
while [ "$SECONDS" -lt "$until_s" ]; do
    if assessed cairn-health-check.service && { [ ! -e "$count_var" ] || assessed systemd-bless-boot.service; }; then break; fi
    sleep 0.5
done
count_path=none
# An EFI variable's file: 4 bytes of attributes, then the value (UTF-16LE,
# NUL-ended). Read through a pipe: efivarfs files cannot seek (tail -c +5
# on the file itself fails with "Illegal seek").
[ -e "$count_var" ] && count_path=$(cat "$count_var" | tail -c +5 | iconv -f UTF-16LE -t UTF-8 2>/dev/null | tr -d '\0')
echo "CAIRN-ASSESSED health=$(unit_state cairn-health-check.service) bless=$(unit_state systemd-bless-boot.service) count-path=${count_path:-none}"
if [ ! -e "$script" ]; then
    echo "CAIRN-AGENT-NONE (no script in fw_cfg opt/cairn/script)"
    exit 0
fi
mkdir -p /run/cairn-agent
cat "$script" > /run/cairn-agent/script
echo "CAIRN-AGENT-BEGIN"
(cd / && bash /run/cairn-agent/script < /dev/null 2>&1) | sed -u 's/^/CAIRN-AGENT| /'
rc=${PIPESTATUS[0]}
echo "CAIRN-AGENT-END rc=$rc"
sync
if [ -e /run/cairn-agent/reboot ]; then
    echo "CAIRN-AGENT-REBOOT"
    systemctl --no-block reboot
else
    echo "CAIRN-AGENT-POWEROFF"
    systemctl --no-block poweroff
fi
