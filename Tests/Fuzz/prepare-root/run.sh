#!/bin/sh
# Builds the prepare-root parser fuzzer (libFuzzer + AddressSanitizer) and runs it.
#   Tests/Fuzz/prepare-root/run.sh [SECONDS] [extra libFuzzer flags...]
# Crashes land in Tests/Fuzz/prepare-root/crashes/; copy them (without the
# selector byte, named c-* for command lines, k-* for configurations) to
# Tests/PrepareRootTests/Regressions/ so that the test suite replays them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD:-$root/.build-fuzz-prepare-root}
mkdir -p "$build" "$here/crashes" "$build/corpus"
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name PrepareRootFuzz \
    "$root/Sources/PrepareRoot/KernelCommandLine.swift" "$root/Sources/PrepareRoot/Config.swift" \
    "$root/Sources/CairnSystem/Hex.swift" \
    "$here/FuzzPrepareRoot.swift" -o "$build/fuzz-prepare-root"
cp "$here"/corpus/* "$build/corpus/" 2>/dev/null || true
cd "$build"
exec ./fuzz-prepare-root -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$here/crashes/" "$@" "$build/corpus"
