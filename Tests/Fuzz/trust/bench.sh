#!/bin/sh
# Release-mode timing of signature verification and digest lookup.
#   Tests/Fuzz/trust/bench.sh [ITERATIONS]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BENCH_BUILD:-$root/.build-bench-trust}
mkdir -p "$build"
cat > "$build/module.modulemap" <<MAP
module CCairnShim {
    header "$root/Sources/CCairnShim/include/cairn_shim.h"
    header "$root/Sources/CCairnShim/include/cairn_dirops.h"
    export *
}
MAP
clang -O2 -c "$root/Sources/CCairnShim/shim.c" -I "$root/Sources/CCairnShim/include" -o "$build/shim.o"
clang -O2 -c "$root/Sources/CCairnShim/dirops.c" -I "$root/Sources/CCairnShim/include" -o "$build/dirops.o"
swiftc -O -parse-as-library -module-name CairnSystem -emit-module -emit-module-path "$build/CairnSystem.swiftmodule" \
    -emit-library -static -o "$build/libCairnSystem.a" -Xcc -fmodule-map-file="$build/module.modulemap" \
    "$root"/Sources/CairnSystem/*.swift
swiftc -O -parse-as-library -module-name TrustBench -I "$build" -Xcc -fmodule-map-file="$build/module.modulemap" \
    -I "$root/Sources/CCrypto" "$root"/Sources/Trust/*.swift "$here/bench/Bench.swift" \
    "$build/libCairnSystem.a" "$build/shim.o" "$build/dirops.o" -lcrypto -o "$build/bench-trust"
exec "$build/bench-trust" "$@"
