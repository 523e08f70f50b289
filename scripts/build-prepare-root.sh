#!/bin/sh
# Builds cairn-prepare-root as one static, stripped executable for the
# initramfs (Swift runtime, Glibc and libcrypto all linked in; no Foundation).
#   scripts/build-prepare-root.sh OUTPUT [SCRATCH]
# SCRATCH defaults to .build-static (SwiftPM build folder).
set -eu
out=${1:?usage: build-prepare-root.sh OUTPUT [SCRATCH]}
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=${2:-$root/.build-static}
cd "$root"
swift build -c release --scratch-path "$scratch" --product cairn-prepare-root \
    -Xswiftc -static-executable \
    -Xlinker --gc-sections \
    -Xlinker -Bstatic -Xlinker -lcrypto
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)/cairn-prepare-root
mkdir -p "$(dirname "$out")"
strip --strip-all -o "$out" "$bin"
echo "$out: $(stat -c %s "$out") bytes"
