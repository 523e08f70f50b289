#!/bin/sh
# Builds the Trust fuzzer (libFuzzer + AddressSanitizer) and runs it.
#   Tests/Fuzz/trust/run.sh [SECONDS] [extra libFuzzer flags...]
# Crashes land in Tests/Fuzz/trust/crashes/; copy them to
# Tests/TrustTests/Regressions/ (prefix "reject-" when both the commit and
# the a{sv} readers must refuse the payload) so the test suite replays them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD:-$root/.build-fuzz-trust}
mkdir -p "$build" "$here/crashes" "$build/corpus"

"$root/Tests/Fuzz/build-cairn-system.sh" "$build"
# The Trust sources and the harness in one executable module.
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name TrustFuzz \
    -I "$build" -Xcc -fmodule-map-file="$build/module.modulemap" \
    -I "$root/Sources/CCrypto" \
    "$root"/Sources/Trust/*.swift "$here/FuzzTrust.swift" \
    "$build/libCairnSystem.a" "$build/shim.o" "$build/dirops.o" -lcrypto \
    -o "$build/fuzz-trust"

# Seeds: the committed corpus, plus fresh ostree objects when the CLI exists.
cp "$here"/corpus/* "$build/corpus/" 2>/dev/null || true
if command -v ostree >/dev/null; then
    t=$(mktemp -d)
    mkdir -p "$t/tree/d" && echo a > "$t/tree/f" && echo b > "$t/tree/d/g"
    ostree init --repo="$t/R" --mode=bare-user
    ostree commit --repo="$t/R" -b x -s subject -m body --add-metadata-string=version=1 \
        --add-metadata='ostree.composefs.digest.v0=@ay [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32]' \
        --add-detached-metadata-string=k=v "$t/tree" >/dev/null
    ostree commit --repo="$t/R" -b x -s second "$t/tree" >/dev/null
    for f in "$t"/R/objects/*/*.commit; do { printf '\000'; cat "$f"; } > "$build/corpus/commit-$(basename "$f")"; done
    for f in "$t"/R/objects/*/*.commitmeta; do { printf '\001'; cat "$f"; } > "$build/corpus/meta-$(basename "$f")"; done
    ostree static-delta generate --repo="$t/R" --empty --to=x >/dev/null 2>&1
    ostree summary --repo="$t/R" -u -m ostree.summary.expires='uint64 12345' && { printf '\006'; cat "$t/R/summary"; } > "$build/corpus/summary-ostree"
    rm -rf "$t"
fi

cd "$build"
exec ./fuzz-trust -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$here/crashes/" "$@" "$build/corpus"
