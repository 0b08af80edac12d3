"""PyTorch under libvvram.so on a real GPU: allocations past the local budget land on the
host tier, torch sees the virtual card, and results on tensors spanning tiers equal the
CPU reference. Run by tests/gpu/run.sh with LD_PRELOAD, VVRAM_POLICY (8 GiB local,
32 GiB host) and each PYTORCH_CUDA_ALLOC_CONF it tests."""
import ctypes
import json
import os
import sys

import torch
import torch.nn.functional as F

GIB = 1 << 30


def stats():
    lib = ctypes.CDLL(None)
    fn = lib.vvram_stats_json
    fn.restype = ctypes.c_size_t
    size = 1 << 16
    while True:
        buf = ctypes.create_string_buffer(size)
        needed = fn(buf, size)
        if needed <= size:
            return json.loads(buf.value.decode())
        size = needed * 2


def tier(s, name):
    return next(t for t in s["devices"][0]["tiers"] if t["tier"] == name)


def main():
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "native")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    free, total = torch.cuda.mem_get_info()
    s = stats()
    expect_total = s["devices"][0]["reported_total"]
    print(f"[{conf}] mem_get_info: free {free / GIB:.2f} GiB, total {total / GIB:.2f} GiB (policy says {expect_total / GIB:.2f})")
    assert total == expect_total, "torch does not see the virtual card"

    blocks = [torch.full((GIB // 4,), float(i), device="cuda") for i in range(24)]
    torch.cuda.synchronize()
    s = stats()
    local, host = tier(s, "local"), tier(s, "host")
    print(f"[{conf}] 24 GiB allocated: local {local['used'] / GIB:.2f} GiB of {local['capacity'] / GIB:.2f}, host {host['used'] / GIB:.2f} GiB")
    assert local["used"] <= local["capacity"] and host["used"] >= 15 * GIB, s
    assert all(b[-1].item() == float(i) for i, b in enumerate(blocks)), "block contents changed"

    # These land on the host tier (the card's budget is full): kernels read across the link.
    torch.manual_seed(0)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    got = (a.cuda() @ b.cuda()).cpu()
    print(f"[{conf}] matmul max error vs CPU: {(got - a @ b).abs().max().item():.3e}")
    assert torch.allclose(got, a @ b, rtol=1e-4, atol=1e-3)

    x, w = torch.randn(8, 64, 64, 64), torch.randn(128, 64, 3, 3)
    got = F.conv2d(x.cuda(), w.cuda(), padding=1).cpu()
    ref = F.conv2d(x, w, padding=1)
    print(f"[{conf}] conv2d max error vs CPU: {(got - ref).abs().max().item():.3e}")
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-3)

    q, k, v = (torch.randn(4, 16, 1024, 64) for _ in range(3))
    got = F.scaled_dot_product_attention(q.cuda().half(), k.cuda().half(), v.cuda().half()).float().cpu()
    ref = F.scaled_dot_product_attention(q, k, v)
    print(f"[{conf}] sdpa (fp16) max error vs CPU fp32: {(got - ref).abs().max().item():.3e}")
    assert torch.allclose(got, ref, rtol=2e-2, atol=2e-2)

    del blocks
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    s = stats()
    print(f"[{conf}] after empty_cache: local {tier(s, 'local')['used'] / GIB:.2f} GiB, host {tier(s, 'host')['used'] / GIB:.2f} GiB; fast H2D {s['fast_h2d_bytes'] / GIB:.2f} GiB; errors {s['errors']}")
    assert s["errors"] == 0, s
    print(f"[{conf}] PASS")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}")
        sys.exit(1)
