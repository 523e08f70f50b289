#!/bin/sh
# Builds CCairnShim (C) and CairnSystem (Swift) into BUILD as a separate
# module, as in the package, for the fuzz harnesses (with AddressSanitizer)
# and the release-mode benches (SANITIZER none):
#   Tests/Fuzz/build-cairn-system.sh BUILD [address|none]
# Leaves BUILD/module.modulemap, shim.o, dirops.o, CairnSystem.swiftmodule, libCairnSystem.a.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
case ${2:-address} in
    address) cflags="-O1 -fsanitize=address"; swiftflags="-O -sanitize=address" ;;
    none) cflags="-O2"; swiftflags="-O" ;;
    *) echo "build-cairn-system.sh: sanitizer address or none, not $2" >&2; exit 2 ;;
esac
mkdir -p "$build"
cat > "$build/module.modulemap" <<MAP
module CCairnShim {
    header "$root/Sources/CCairnShim/include/cairn_shim.h"
    header "$root/Sources/CCairnShim/include/cairn_dirops.h"
    export *
}
MAP
clang $cflags -c "$root/Sources/CCairnShim/shim.c" -I "$root/Sources/CCairnShim/include" -o "$build/shim.o"
clang $cflags -c "$root/Sources/CCairnShim/dirops.c" -I "$root/Sources/CCairnShim/include" -o "$build/dirops.o"
swiftc $swiftflags -parse-as-library -module-name CairnSystem \
    -emit-module -emit-module-path "$build/CairnSystem.swiftmodule" \
    -emit-library -static -o "$build/libCairnSystem.a" \
    -Xcc -fmodule-map-file="$build/module.modulemap" \
    "$root"/Sources/CairnSystem/*.swift
