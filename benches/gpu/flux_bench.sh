#!/usr/bin/env bash
# The FLUX-shaped step on a GPU (flux_step.py): all resident (C), zero-copy (vvram,
# streaming off), the hand-written per-block offload baseline and the migration engine
# (vvram, streaming on), with 4, 12 and 20 GB of the ~23.6 GB of weights on the host,
# under PyTorch's native allocator and backend:cudaMallocAsync (ComfyUI's default).
# Prints, per allocator and budget, each variant's step time (mean of steps 3-8), its
# ratio to max(C, W_host / B) (B: pinned H2D bandwidth measured in the same run) and the
# largest absolute difference of its output from the resident run's.
# Usage: bash benches/gpu/flux_bench.sh DIR_WITH_libvvram.so   (needs ~30 GB of GPU memory, 64 GB of RAM)
set -euo pipefail
bin=$(cd "${1:-target/release}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
policy() { # host_gb streaming
    python3 - "$1" "$2" <<'PY'
import sys
host, streaming = float(sys.argv[1]), sys.argv[2] == "on"
weights, margin, cache = 23.6, 6.5, 2.0
local = weights - host + margin + (cache if streaming else 0)
print(f'[[device]]\nindex = 0\nlocal_budget = "{local:.2f}GB"\ndonors = [{{ tier = "host", capacity = "{host + 4:.0f}GB" }}]')
if streaming:
    print(f'[streaming]\nenabled = true\nlocal_cache = "{cache}GB"')
PY
}
for alloc in native cudaMallocAsync; do
    if [ "$alloc" = native ]; then unset PYTORCH_CUDA_ALLOC_CONF; else export PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync; fi
    python3 "$here/flux_step.py" resident 0 "$work/resident.pt" > "$work/$alloc-resident.json"
    for host in 4 12 20; do
        python3 "$here/flux_step.py" baseline "$host" "$work/baseline-$host.pt" > "$work/$alloc-baseline-$host.json"
        policy "$host" off > "$work/zero.toml"
        LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$work/zero.toml" python3 "$here/flux_step.py" vvram "$host" "$work/zero_copy-$host.pt" > "$work/$alloc-zero_copy-$host.json"
        policy "$host" on > "$work/engine.toml"
        LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$work/engine.toml" python3 "$here/flux_step.py" vvram "$host" "$work/engine-$host.pt" > "$work/$alloc-engine-$host.json"
    done
    python3 - "$work" "$alloc" <<'PY'
import json, sys, torch
work, alloc = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(f"{work}/{alloc}-{name}.json"))
mean = lambda r: sum(r["steps"][r["timed_from"]:]) / len(r["steps"][r["timed_from"]:])
resident = load("resident")
c, b = mean(resident), resident["h2d_gbps"] * 1e9
ref = torch.load(f"{work}/resident.pt")
print(f"{alloc}: resident step {c * 1000:.1f} ms, pinned H2D {resident['h2d_gbps']:.1f} GB/s")
for host in (4, 12, 20):
    bound = max(c, host * 1e9 / b)
    cells = []
    for variant in ("engine", "baseline", "zero_copy"):
        r = load(f"{variant}-{host}")
        diff = (torch.load(f"{work}/{variant}-{host}.pt") - ref).abs().max().item()
        cells.append(f"{variant} {mean(r) * 1000:.1f} ms = {mean(r) / bound:.3f}x (max|diff| {diff:.3g})")
    print(f"gpu {alloc} host={host}GB bound {bound * 1000:.1f} ms: " + "; ".join(cells))
PY
done
