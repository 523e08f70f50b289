#!/bin/sh
# Builds CCairnShim (C) and CairnSystem (Swift, AddressSanitizer) into
# BUILD as a separate module, as in the package, for the fuzz harnesses:
#   Tests/Fuzz/build-cairn-system.sh BUILD
# Leaves BUILD/module.modulemap, shim.o, dirops.o, CairnSystem.swiftmodule, libCairnSystem.a.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
mkdir -p "$build"
cat > "$build/module.modulemap" <<MAP
module CCairnShim {
    header "$root/Sources/CCairnShim/include/cairn_shim.h"
    header "$root/Sources/CCairnShim/include/cairn_dirops.h"
    export *
}
MAP
clang -O1 -fsanitize=address -c "$root/Sources/CCairnShim/shim.c" -I "$root/Sources/CCairnShim/include" -o "$build/shim.o"
clang -O1 -fsanitize=address -c "$root/Sources/CCairnShim/dirops.c" -I "$root/Sources/CCairnShim/include" -o "$build/dirops.o"
swiftc -O -sanitize=address -parse-as-library -module-name CairnSystem \
    -emit-module -emit-module-path "$build/CairnSystem.swiftmodule" \
    -emit-library -static -o "$build/libCairnSystem.a" \
    -Xcc -fmodule-map-file="$build/module.modulemap" \
    "$root"/Sources/CairnSystem/*.swift
