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
gpus=$("$bin/cuda-exercise" devices | grep -c '^device ')

section "driver: what the fake driver refuses, the real one must refuse too"
check "$bin/cuda-exercise" refusals
check "$bin/cuda-exercise" capture-rules
for what in device vmm-device vmm-host; do
  "$bin/cuda-exercise" cpu-touch "$what"
  code=$?
  [ "$code" -eq 139 ] || { echo "FAILED: the CPU touching $what memory exited $code, expected a segmentation fault (139)"; failed=1; }
done
if [ "$gpus" -ge 2 ]; then
  check "$bin/cuda-exercise" --door procaddress contexts
  check "$bin/cuda-exercise" kernel-without-access
fi

if [ -f "$bin/libvvram.so" ]; then
  exact=$(mktemp --suffix=.toml)
  printf '[[device]]\nindex = 0\nlocal_budget = "8GiB"\ndonors = [{ tier = "host", capacity = "16GiB" }]\n' > "$exact"
  section "shim: cuda-exercise under libvvram.so"
  for scenario in spread h2d app-vmm capture alloc-latency; do
    check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$exact" "$bin/cuda-exercise" "$scenario"
  done
  if [ "$gpus" -ge 2 ]; then
    for scenario in pools free-elsewhere; do
      check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$exact" "$bin/cuda-exercise" "$scenario"
    done
  fi
  streaming=$(mktemp --suffix=.toml)
  printf '[[device]]\nindex = 0\nlocal_budget = "8GiB"\ndonors = [{ tier = "host", capacity = "16GiB" }]\n[[rule]]\nphase = "load"\ntiers = ["host"]\n[streaming]\nenabled = true\nlocal_cache = "4KiB"\n' > "$streaming"
  section "engine: translated launches on the real driver (a 4 KiB cache: six weights cycle through it)"
  check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$streaming" "$bin/cuda-exercise" engine-steps 1000
  for scenario in engine-patch engine-miss; do
    check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$streaming" "$bin/cuda-exercise" "$scenario"
  done
  sed -i 's/4KiB/1MiB/' "$streaming"
  for scenario in engine-struct engine-extra engine-cooperative engine-graph engine-kernel engine-thread; do
    check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$streaming" "$bin/cuda-exercise" "$scenario"
  done
  working=$(mktemp --suffix=.toml)
  printf '[[device]]\nindex = 0\nlocal_budget = "64MiB"\ndonors = [{ tier = "host", capacity = "256MiB" }]\n[streaming]\nenabled = true\nlocal_cache = "8MiB"\n' > "$working"
  section "working set: load then sample, no phase (activations on the card, moves ordered on the real driver)"
  for mode in steady pressure pressure-new-stream capture; do
    check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$working" "$bin/cuda-exercise" working-set "$mode"
  done
  printf '[placement]\nreserve = "2MiB"\n' >> "$working"
  check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$working" "$bin/cuda-exercise" working-set steady
  policy=$(mktemp --suffix=.toml)
  printf '[[device]]\nindex = 0\nlocal_budget = "8GiB"\ndonors = [{ tier = "host", capacity = "32GiB" }]\n' > "$policy"
  section "shim: ComfyUI package preset through the node class"
  check env LD_PRELOAD="$bin/libvvram.so" python3 "$here/comfyui_preset.py"
  for conf in "" "expandable_segments:True" "backend:cudaMallocAsync"; do
    section "shim: PyTorch, PYTORCH_CUDA_ALLOC_CONF='$conf'"
    check env LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$policy" PYTORCH_CUDA_ALLOC_CONF="$conf" python3 "$here/torch_tiers.py"
  done
fi

exit $failed
