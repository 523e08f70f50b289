#!/bin/sh
# Builds cairn-prepare-root as one static, stripped executable for the
# initramfs (Swift runtime, Glibc and libcrypto all linked in; no Foundation).
#   scripts/build-prepare-root.sh OUTPUT [SCRATCH]
# SCRATCH defaults to .build-static (SwiftPM build folder).
set -eu
out=${1:?usage: build-prepare-root.sh OUTPUT [SCRATCH]}
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=${2:-$root/.build-static}
"$root/scripts/build-static.sh" cairn-prepare-root "$out" "$scratch" > /dev/null
# The initramfs program must lack the test builds' switch (CAIRN_TEST_KNOBS,
# debug configuration only): neither its name nor its warnings may be in it.
if strings -a "$out" | grep -q -e CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE -e 'TEST BUILD'; then
    echo "$out has the test switch CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE compiled in; refusing it" >&2
    rm -f "$out"
    exit 1
fi
echo "$out: $(stat -c %s "$out") bytes"
