#!/bin/sh
# Release-mode timing of signature verification and digest lookup.
#   Tests/Fuzz/trust/bench.sh [ITERATIONS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BENCH_BUILD:-$root/.build-bench-trust}
"$root/Tests/Fuzz/build-cairn-system.sh" "$build" none
swiftc -O -parse-as-library -module-name TrustBench -I "$build" -Xcc -fmodule-map-file="$build/module.modulemap" \
    -I "$root/Sources/CCrypto" "$root"/Sources/Trust/*.swift "$here/bench/Bench.swift" \
    "$build/libCairnSystem.a" "$build/shim.o" "$build/dirops.o" -lcrypto -o "$build/bench-trust"
exec "$build/bench-trust" "$@"
