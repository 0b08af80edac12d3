"""On a real GPU under libvvram.so: a PyTorch script imports the ComfyUI package, applies a
preset through the node class, and allocates past the preset's local budget; the bytes
land where the preset says. Run by tests/gpu/run.sh with LD_PRELOAD set and no policy."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from comfyui import nodes, vvram_shim  # noqa: E402

GIB = 1 << 30

torch.cuda.init()
torch.empty(1, device="cuda")
assert vvram_shim.available(), "libvvram.so is not preloaded"
status = nodes.PolicyPreset().apply(family="FLUX", card="12 GB")["result"][1]
print(status)
stats = vvram_shim.stats()
tiers = {t["tier"]: t for t in stats["devices"][0]["tiers"]}
local, host = tiers["local"]["capacity"], tiers["host"]["capacity"]
free, total = torch.cuda.mem_get_info()
print(f"preset: local {local / GIB:.1f} GiB, host {host / GIB:.1f} GiB; torch sees {total / GIB:.1f} GiB")
assert total == local + host
blocks = [torch.ones(GIB // 2, dtype=torch.uint8, device="cuda") for _ in range(int((local + 4 * GIB) // (GIB // 2)))]
torch.cuda.synchronize()
tiers = {t["tier"]: t for t in vvram_shim.stats()["devices"][0]["tiers"]}
print(f"after {len(blocks) / 2:.1f} GiB: local {tiers['local']['used'] / GIB:.2f} GiB, host {tiers['host']['used'] / GIB:.2f} GiB")
assert tiers["local"]["used"] <= local and tiers["host"]["used"] >= 3 * GIB
assert all(int(b[-1]) == 1 for b in blocks)
print("PASS")
