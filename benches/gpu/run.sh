#!/usr/bin/env bash
# GPU benchmarks (CI does not run them): allocation latency native vs under libvvram.so.
# Usage: bash benches/gpu/run.sh DIR_WITH_libvvram.so
set -euo pipefail
bin=${1:-target/release}
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
