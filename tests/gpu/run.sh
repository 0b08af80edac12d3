#!/usr/bin/env bash
# Real-GPU checks, run on a machine with an NVIDIA GPU (CI does not run them).
#
# Build here first:  cargo build --release -p vvram-harness -p vvram-shim -p vvram
# then copy target/release/{cuda-exercise,libvvram.so,vvram} and tests/gpu/ to the GPU
# machine and run:   bash tests/gpu/run.sh DIR_WITH_BINARIES
#
# Each section prints its output; the script exits non-zero if any check failed.
set -uo pipefail
bin=${1:-target/release}
here=$(cd "$(dirname "$0")" && pwd)
failed=0
section() { echo; echo "=== $*"; }
check() { "$@" || { echo "FAILED: $*"; failed=1; }; }

section "driver: the cuda-exercise program on the real driver"
for door in dlsym procaddress procaddress-ptds; do
  check "$bin/cuda-exercise" --door "$door" all
done
check "$bin/cuda-exercise" unmapped

if [ -f "$bin/libvvram.so" ]; then
  for script in "$here"/*.py; do
    section "shim: $(basename "$script")"
    check env VVRAM_LIB="$bin/libvvram.so" python3 "$script"
  done
fi

exit $failed
