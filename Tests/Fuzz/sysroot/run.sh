#!/bin/sh
# Builds the sysroot-records fuzzer (libFuzzer + AddressSanitizer) and runs it.
#   Tests/Fuzz/sysroot/run.sh [SECONDS] [extra libFuzzer flags...]
# Crashes land in Tests/Fuzz/sysroot/crashes/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD:-$root/.build-fuzz-sysroot}
mkdir -p "$build" "$here/crashes" "$build/corpus"

"$root/Tests/Fuzz/build-cairn-system.sh" "$build"
# The parsers and the harness in one executable module.
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name SysrootFuzz -package-name cairn \
    -I "$build" -Xcc -fmodule-map-file="$build/module.modulemap" \
    "$root/Sources/CairnSysroot/StateFile.swift" "$root/Sources/CairnSysroot/BootEntry.swift" "$here/FuzzSysroot.swift" \
    "$build/libCairnSystem.a" "$build/shim.o" "$build/dirops.o" \
    -o "$build/fuzz-sysroot"

# Seeds: records as cairn writes them, a repository config, boot entries.
printf '\000[staged]\nstateroot=os\ndeployment=%064d.0\nkernel-arguments=quiet console=ttyS0\ntime=1700000000\n' 0 > "$build/corpus/staged"
printf '\000[health]\npassed=false\n\n[check 0]\nname=\\sx\noutput=line\\nline\\t\\\\ \033[31m\n' > "$build/corpus/health"
printf '\000[core]\nrepo_version=1\nmode=bare\n# c\n\n[cairn]\ntrusted-ed25519-keys=AAAA;BBBB;\nk[de]=x\n' > "$build/corpus/config"
printf '\001title Debian\nversion 2\noptions root=LABEL=r ostree=/ostree/boot.0/os/abc/0 quiet\nlinux /ostree/os-abc/vmlinuz\n' > "$build/corpus/entry"

cd "$build"
exec ./fuzz-sysroot -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$here/crashes/" "$@" "$build/corpus"
