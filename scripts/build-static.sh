#!/bin/sh
# Builds one product as a static, stripped executable: the Swift runtime,
# Glibc and libcrypto linked in, no Foundation (cairn-prepare-root for the
# initramfs, the cairn front end, which then loads no shared library).
#   scripts/build-static.sh PRODUCT OUTPUT [SCRATCH]
# SCRATCH defaults to .build-static (SwiftPM build folder).
set -eu
product=${1:?usage: build-static.sh PRODUCT OUTPUT [SCRATCH]}
out=${2:?usage: build-static.sh PRODUCT OUTPUT [SCRATCH]}
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=${3:-$root/.build-static}
cd "$root"
swift build -c release --scratch-path "$scratch" --product "$product" \
    -Xswiftc -static-executable \
    -Xlinker --gc-sections \
    -Xlinker -Bstatic -Xlinker -lcrypto
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)/$product
mkdir -p "$(dirname "$out")"
strip --strip-all -o "$out" "$bin"
echo "$out: $(stat -c %s "$out") bytes"
