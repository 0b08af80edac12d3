#!/usr/bin/env bash
# GPU benchmarks (CI does not run them): allocation latency native vs under libvvram.so;
# with --flux also the FLUX-shaped step (flux_bench.sh): resident, zero-copy, per-block
# offload, the engine and the unmodified ComfyUI-like load-then-sample under the engine
# (its `gpu-unmodified ... engine=<r> donor_hot_bytes=<n>` lines).
# Usage: bash benches/gpu/run.sh [DIR_WITH_libvvram.so] [--flux]
set -euo pipefail
bin=${1:-target/release}
flux=${2:-}
if [ -n "$flux" ] && [ "$flux" != --flux ]; then
    echo "usage: bash benches/gpu/run.sh [DIR_WITH_libvvram.so] [--flux]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
policy=$(mktemp --suffix=.toml)
cat > "$policy" <<'TOML'
[[device]]
index = 0
local_budget = "60GiB"
donors = [{ tier = "host", capacity = "32GiB" }]
TOML
native=$(python3 "$here/alloc_latency.py")
vvram=$(LD_PRELOAD="$bin/libvvram.so" VVRAM_POLICY="$policy" python3 "$here/alloc_latency.py")
echo "$native"
echo "$vvram"
python3 - "$native" "$vvram" <<'PY'
import json, sys
n, v = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for size in (k for k in n if k != "mode"):
    print(f"{size}: alloc {v[size]['alloc_us'] / n[size]['alloc_us']:.2f}x native, free {v[size]['free_us'] / n[size]['free_us']:.2f}x native")
PY
if [ "$flux" = --flux ]; then
    bash "$here/flux_bench.sh" "$bin"
fi
