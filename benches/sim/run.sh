#!/usr/bin/env bash
# benches/sim: the FLUX-shaped step on the fake driver's timing model (no GPU needed).
# Runs flux-sim in five variants — all local (C), zero-copy (vvram, streaming off), the
# hand-written per-block offload baseline, the migration engine (vvram, streaming on),
# and the unmodified application under the engine (weights first, no phase, activations
# when sampling starts, as ComfyUI does) — at budgets leaving 1/6, 1/2 and 5/6 of the
# weights on the host, and prints each step time, then one line per budget with each
# variant's ratio to max(C, W_host / B), and one with the unmodified variant's ratio and
# the bytes of extents used more than once per step that vvram left on a donor:
#   sim host=<fraction> engine=<r> baseline=<r> zero_copy=<r>
#   sim-unmodified host=<fraction> engine=<r> donor_hot_bytes=<n>
# Ratios use the mean of steps 2-8 (step 1 loads the cache and teaches the predictor).
# Every local budget holds the activations (8 MiB) besides the weights left local. The
# hand-placed variants allocate activations before weights and turn automatic placement
# off; the unmodified one runs on vvram's defaults with the engine's 1/6 cache.
# Moving the whole model takes 2.5x a step's compute, as FLUX.1-dev on an H100. Times
# are the fake driver's virtual clock (tests/fakecuda/src/timing.rs): exact, independent
# of the machine's load. The engine runs with a local cache of 1/6 of the model (the
# final lines) and of 1/12 (FLUX's 2 GiB default share, lines marked cache=1/12): the
# cache must hold what the link can move while the step computes on weights that are
# already local, or the link idles then. donor_hot_bytes is `?` when libvvram.so does
# not report it. Activation kernels take FAKECUDA_KERNEL_US (20 us) each, the GEMMs
# their share of the step.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet --locked -p vvram-sim -p vvram-shim -p fakecuda
target=target/debug
lib=$target/sim-fakecuda
mkdir -p "$lib"
ln -sf "$PWD/$target/libfakecuda.so" "$lib/libcuda.so.1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

read -r model_bytes step_ns activation_bytes < <("$target/flux-sim" info)
# B such that moving the whole model takes 2.5 steps of compute.
link_gbps=$(python3 -c "print($model_bytes / (2.5 * $step_ns))")
cache_bytes() { python3 -c "print(int($model_bytes / $1) // 4096 * 4096)"; }
export LD_LIBRARY_PATH="$PWD/$lib" FAKECUDA_DEVICES=1GiB FAKECUDA_LINK_GBPS="$link_gbps" FAKECUDA_KERNEL_US=20
unset LD_PRELOAD VVRAM_POLICY VVRAM_ALLOC
echo "model $((model_bytes >> 20)) MiB, activations $((activation_bytes >> 20)) MiB, compute per step $((step_ns / 1000000)) ms, link $link_gbps GB/s, zero-copy re-read ${FAKECUDA_ZERO_COPY_REREAD:-8}x"

# A policy: the local budget holds the weights left local, the activations, a chunk for
# small buffers and, with streaming, the cache. Hand-placed variants turn automatic
# placement off (their allocation order is the placement); the unmodified one leaves it
# to vvram's defaults.
policy() { # host_fraction streaming cache_bytes hand|auto
    python3 - "$1" "$2" "$model_bytes" "$3" "$activation_bytes" "$4" <<'PY'
import sys
fraction, streaming, model, cache, activations = float(sys.argv[1]), sys.argv[2] == "on", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
hand = sys.argv[6] == "hand"
chunk = 2 << 20
local = -(-int((1 - fraction) * model) // chunk) * chunk + chunk + activations + (cache if streaming else 0)
print(f'[[device]]\nindex = 0\nlocal_budget = {local}\ndonors = [{{ tier = "host", capacity = "512MiB" }}]')
if streaming:
    print(f'[streaming]\nenabled = true\nlocal_cache = {cache}')
if hand:
    print('[placement]\nautomatic = false')
PY
}

run() { # variant fraction [policy-file]: writes $work/VARIANT-FRACTION.txt, prints the steps
    local out="$work/$1-$2.txt"
    if [ $# -ge 3 ]; then
        LD_PRELOAD="$PWD/$target/libvvram.so" VVRAM_POLICY="$3" "$target/flux-sim" "$1" "$2" > "$out"
    else
        "$target/flux-sim" "$1" "$2" > "$out"
    fi
    echo "$1 host=$2: steps $(grep '^step' "$out" | awk '{printf "%s ", $3}')ms; $(grep -v '^step\|^checksum' "$out" | tr '\n' ' ')"
}

run local 0
for fraction in 0.1667 0.5 0.8333; do
    policy "$fraction" off 0 hand > "$work/zero-copy-$fraction.toml"
    run baseline "$fraction"
    run zero-copy "$fraction" "$work/zero-copy-$fraction.toml"
    for share in 12 6; do
        policy "$fraction" on "$(cache_bytes $share)" hand > "$work/engine$share-$fraction.toml"
        run "engine" "$fraction" "$work/engine$share-$fraction.toml"
        mv "$work/engine-$fraction.txt" "$work/engine$share-$fraction.txt"
    done
    policy "$fraction" on "$(cache_bytes 6)" auto > "$work/unmodified-$fraction.toml"
    run unmodified "$fraction" "$work/unmodified-$fraction.toml"
done
python3 - "$work" "$link_gbps" <<'PY'
import glob, os, sys
work, link = sys.argv[1], float(sys.argv[2]) * 1e9
def read(path):
    steps, info = [], {}
    for line in open(path):
        parts = line.split()
        if parts[0] == "step":
            steps.append(float(parts[2]) / 1000)
        else:
            info[parts[0]] = parts[1] if len(parts) > 1 else ""
    return steps, info
local_steps, local_info = read(os.path.join(work, "local-0.txt"))
compute = sum(local_steps[1:]) / len(local_steps[1:])
failed = False
def ratio(name, fraction):
    global failed
    steps, info = read(os.path.join(work, f"{name}-{fraction}.txt"))
    if info["checksum"] != local_info["checksum"]:
        print(f"sim: {name} at host={fraction}: outputs differ from the all-local run ({info['checksum']} vs {local_info['checksum']})")
        failed = True
    bound = max(compute, int(info["host_bytes"]) / link)
    return sum(steps[1:]) / len(steps[1:]) / bound
fractions = ["0.1667", "0.5", "0.8333"]
print(f"C = {compute * 1000:.1f} ms; bound = max(C, W_host / B), W_host = bytes vvram (or the baseline) placed on the host")
for fraction in fractions:
    print(f"sim cache=1/12 host={float(fraction):.3f} engine={ratio('engine12', fraction):.3f}")
for fraction in fractions:
    print(f"sim host={float(fraction):.3f} engine={ratio('engine6', fraction):.3f} baseline={ratio('baseline', fraction):.3f} zero_copy={ratio('zero-copy', fraction):.3f}")
for fraction in fractions:
    _, info = read(os.path.join(work, f"unmodified-{fraction}.txt"))
    print(f"sim-unmodified host={float(fraction):.3f} engine={ratio('unmodified', fraction):.3f} donor_hot_bytes={info['donor_hot_bytes']}")
sys.exit(1 if failed else 0)
PY
