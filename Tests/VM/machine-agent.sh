#!/bin/bash
# The VM tests' agent (installed as /usr/libexec/cairn-test-agent, run by
# cairn-test-agent.service on the serial console). Prints:
#   CAIRN-MULTI-USER uptime=S state=S   when multi-user.target is active
#   CAIRN-AGENT-BEGIN
#   CAIRN-AGENT| <line>                 each line the script printed (stdout and stderr)
#   CAIRN-AGENT-END rc=N
#   CAIRN-AGENT-POWEROFF | CAIRN-AGENT-REBOOT
# The prefix keeps the script's lines apart from the kernel's and systemd's
# messages on the same console. A script asks for a reboot (instead of the
# poweroff) by creating /run/cairn-agent/reboot.
set -u
script=/sys/firmware/qemu_fw_cfg/by_name/opt/cairn/script/raw
# qemu_fw_cfg is a module in Debian's cloud kernel.
modprobe -q qemu_fw_cfg 2>/dev/null || true
for _ in $(seq 100); do [ -e "$script" ] && break; sleep 0.1; done
for _ in $(seq 1200); do systemctl -q is-active multi-user.target && break; sleep 0.1; done
echo "CAIRN-MULTI-USER uptime=$(cut -d' ' -f1 /proc/uptime) state=$(systemctl is-system-running 2>/dev/null)"
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
