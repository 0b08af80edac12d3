"""Run by test_nodes.py in a Python started with libvvram.so preloaded on the fake driver:
initialises CUDA as PyTorch would, drives each node, and prints one JSON line per step
with the shim's stats."""
import ctypes
import json
import sys

import comfyui.nodes as nodes
from comfyui import vvram_shim


def init_cuda():
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    context = ctypes.c_void_p()
    assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0) == 0
    assert cuda.cuCtxSetCurrent(context) == 0
    return cuda


def report(step, **extra):
    stats = vvram_shim.stats()
    tiers = {t["tier"]: t for t in stats["devices"][0]["tiers"]} if stats["devices"] else {}
    print(json.dumps({"step": step, "policy": stats["policy"], "phase": stats["phase"], "tiers": tiers, **extra}), flush=True)


def main():
    cuda = init_cuda()
    print(json.dumps({"step": "loaded", "available": vvram_shim.available(), "version": vvram_shim.version()}), flush=True)

    passthrough, status = nodes.PolicyPreset().apply(family="SDXL", card="24 GB", passthrough="unet.safetensors")
    report("preset", passthrough=passthrough, status=status)

    nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budget = "3GiB"\ndonors = [{ tier = "host", capacity = "5GiB" }]\n[[rule]]\nphase = "load"\ntiers = ["host", "local"]\n')
    report("toml")

    try:
        nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budgt = "3GiB"\n')
        report("invalid-toml", error=None)
    except vvram_shim.PolicyError as e:
        report("invalid-toml", error=str(e))

    nodes.Phase().apply(phase="load")
    pointer = ctypes.c_uint64()
    assert cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(64 << 20)) == 0
    report("phase-load")
    nodes.Phase().apply(phase="")
    assert cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(32 << 20)) == 0
    report("phase-cleared")

    nodes.Allocation().apply(allocation="cuda:0,2gb;cpu,1gb", compute_device=0)
    report("allocation")

    shown = nodes.Stats().show("latent")
    passthrough, table, chart = shown["result"]
    report("stats", passthrough=passthrough, table=table, chart_shape=list(chart.shape))


if __name__ == "__main__":
    sys.exit(main())
