#!/usr/bin/env bash
# The FLUX-shaped step on a GPU (flux_step.py): all resident (C), zero-copy (vvram,
# streaming off), the hand-written per-block offload baseline, the migration engine
# (vvram, streaming on) and the unmodified application under the engine (weights loaded
# first with no phase, activations when sampling starts, as ComfyUI does; no rules, the
# engine's budget, automatic placement as vvram's defaults have it), with 4, 12 and 20 GB
# of the ~23.6 GB of weights on the host, under PyTorch's native allocator and
# backend:cudaMallocAsync (ComfyUI's default). The hand-placed vvram variants (zero-copy,
# engine) turn automatic placement off. Prints, per allocator and budget, each variant's
# step time (mean of steps 3-8), its ratio to max(C, W_host / B) (B: pinned H2D bandwidth
# measured in the same run; W_host: HOST_GB, or for the unmodified variant the bytes vvram
# placed on donors) and the largest absolute difference of its output from the resident
# run's, then one line per allocator and budget:
#   gpu-unmodified <allocator> host=<GB> engine=<r> donor_hot_bytes=<n>
# (n: bytes used more than once per step on a donor after the last step; ? when
# libvvram.so does not report it).
# Usage: bash benches/gpu/flux_bench.sh DIR_WITH_libvvram.so   (needs ~30 GB of GPU memory, 64 GB of RAM)
set -euo pipefail
bin=$(cd "${1:-target/release}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
policy() { # host_gb streaming hand|auto
    python3 - "$1" "$2" "$3" <<'PY'
import sys
host, streaming, hand = float(sys.argv[1]), sys.argv[2] == "on", sys.argv[3] == "hand"
weights, margin, cache = 23.6, 6.5, 2.0
local = weights - host + margin + (cache if streaming else 0)
print(f'[[device]]\nindex = 0\nlocal_budget = "{local:.2f}GB"\ndonors = [{{ tier = "host", capacity = "{host + 4:.0f}GB" }}]')
if streaming:
    print(f'[streaming]\nenabled = true\nlocal_cache = "{cache}GB"')
if hand:
    print('[placement]\nautomatic = false')
PY
}
for alloc in native cudaMallocAsync; do
    if [ "$alloc" = native ]; then unset PYTORCH_CUDA_ALLOC_CONF; else export PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync; fi
    python3 "$here/flux_step.py" resident 0 "$work/resident.pt" > "$work/$alloc-resident.json"
    for host in 4 12 20; do
        python3 "$here/flux_step.py" baseline "$host" "$work/baseline-$host.pt" > "$work/$alloc-baseline-$host.json"
        policy "$host" off hand > "$work/zero.toml"
        LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$work/zero.toml" python3 "$here/flux_step.py" vvram "$host" "$work/zero_copy-$host.pt" > "$work/$alloc-zero_copy-$host.json"
        policy "$host" on hand > "$work/engine.toml"
        LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$work/engine.toml" python3 "$here/flux_step.py" vvram "$host" "$work/engine-$host.pt" > "$work/$alloc-engine-$host.json"
        policy "$host" on auto > "$work/unmodified.toml"
        LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$work/unmodified.toml" python3 "$here/flux_step.py" unmodified "$host" "$work/unmodified-$host.pt" > "$work/$alloc-unmodified-$host.json"
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
    r = load(f"unmodified-{host}")
    own = max(c, r["donor_bytes"] / b)
    diff = (torch.load(f"{work}/unmodified-{host}.pt") - ref).abs().max().item()
    cells.append(f"unmodified {mean(r) * 1000:.1f} ms = {mean(r) / own:.3f}x of its bound {own * 1000:.1f} ms (W_host {r['donor_bytes'] / 1e9:.2f} GB; max|diff| {diff:.3g})")
    print(f"gpu {alloc} host={host}GB bound {bound * 1000:.1f} ms: " + "; ".join(cells))
for host in (4, 12, 20):
    r = load(f"unmodified-{host}")
    hot = "?" if r["donor_hot_bytes"] is None else r["donor_hot_bytes"]
    print(f"gpu-unmodified {alloc} host={host} engine={mean(r) / max(c, r['donor_bytes'] / b):.3f} donor_hot_bytes={hot}")
PY
done
