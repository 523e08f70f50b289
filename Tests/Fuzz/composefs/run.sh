#!/bin/sh
# Builds the libFuzzer harness for the composefs reader / dump parser and runs it.
# Usage: Tests/Fuzz/composefs/run.sh image|dump [SECONDS]   (from the package root)
# Crashes are written to $WORK/crashes; copy them to Tests/ComposefsTests/Regressions/.
set -eu
TARGET=${1:-image}
SECS=${2:-60}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=${FUZZ_WORK:-/tmp/cfs-fuzz}
mkdir -p "$WORK/shim" "$WORK/corpus-$TARGET" "$WORK/crashes"
SAN="-sanitize=fuzzer,address"

# C shim as a module.
cp "$ROOT/Sources/CCairnShim/include/cairn_shim.h" "$WORK/shim/"
printf 'module CCairnShim {\n header "cairn_shim.h"\n export *\n}\n' > "$WORK/shim/module.modulemap"
clang -O1 -fsanitize=address -c "$ROOT/Sources/CCairnShim/shim.c" -I "$WORK/shim" -o "$WORK/shim.o"

swiftc $SAN -parse-as-library -O -wmo -module-name CairnSystem -emit-module -emit-module-path "$WORK/CairnSystem.swiftmodule" \
    -I "$WORK/shim" -c "$ROOT"/Sources/CairnSystem/*.swift -o "$WORK/CairnSystem.o"
swiftc $SAN -parse-as-library -O -wmo -module-name Composefs -emit-module -emit-module-path "$WORK/Composefs.swiftmodule" \
    -I "$WORK" -I "$WORK/shim" -I "$ROOT/Sources/CCrypto" -c "$ROOT"/Sources/Composefs/*.swift -o "$WORK/Composefs.o"
swiftc $SAN -parse-as-library -O -module-name ComposefsFuzz -I "$WORK" -I "$WORK/shim" -I "$ROOT/Sources/CCrypto" \
    "$ROOT/Tests/Fuzz/composefs/FuzzMain.swift" "$WORK/Composefs.o" "$WORK/CairnSystem.o" "$WORK/shim.o" -lcrypto \
    -o "$WORK/fuzz-composefs"

# Seed corpus from the shared vectors (never copied into the project).
V="$ROOT/../shared/vectors"
if [ "$TARGET" = dump ]; then
    cp "$V"/composefs/*.dump "$V"/composefs/should-fail/*.dump "$V"/random/*.dump "$WORK/corpus-dump/" 2>/dev/null || true
else
    cp "$V"/random/images/*.cfs "$WORK/corpus-image/" 2>/dev/null || true
fi
for f in "$ROOT"/Tests/ComposefsTests/Regressions/*; do [ -f "$f" ] && cp "$f" "$WORK/corpus-$TARGET/"; done 2>/dev/null || true

CFS_FUZZ_TARGET=$TARGET "$WORK/fuzz-composefs" -max_total_time="$SECS" -max_len=200000 -rss_limit_mb=2048 \
    -artifact_prefix="$WORK/crashes/$TARGET-" -print_final_stats=1 "$WORK/corpus-$TARGET"
