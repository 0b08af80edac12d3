"""Run by test_nodes.py in a Python started with libvvram.so preloaded on the fake driver:
initialises CUDA as PyTorch would, drives each node, and prints one JSON line per step
with the shim's stats."""
import ctypes
import json
import os
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


def status(shown):
    assert shown["ui"] == {"text": [shown["result"][1]]}, shown
    return shown["result"]


def failure(action):
    try:
        action()
    except (vvram_shim.PolicyError, ValueError) as e:
        return str(e)
    return None


def main():
    if sys.argv[1:] == ["stats-under-a-policy-that-does-not-fit"]:
        init_cuda()
        print(json.dumps({"step": "stats", "error": failure(lambda: nodes.Stats().show())}), flush=True)
        passthrough, text = status(nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budget = "1GiB"\n', name="after"))
        report("after", status=text)
        return
    if sys.argv[1:] == ["preset-larger-than-the-card"]:
        init_cuda()
        print(json.dumps({"step": "preset", "error": failure(lambda: nodes.PolicyPreset().apply(family="FLUX", card="24 GB"))}), flush=True)
        return
    cuda = init_cuda()
    print(json.dumps({"step": "loaded", "available": vvram_shim.available(), "version": vvram_shim.version()}), flush=True)

    passthrough, text = status(nodes.PolicyPreset().apply(family="SDXL", card="24 GB", passthrough="unet.safetensors"))
    report("preset", passthrough=passthrough, status=text)
    passthrough, text = status(nodes.PolicyPreset().apply(family="FLUX", card="this card (85%)"))
    report("preset-auto", status=text)

    status(nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budget = "3GiB"\ndonors = [{ tier = "host", capacity = "5GiB" }]\n[[rule]]\nphase = "load"\ntiers = ["host", "local"]\n'))
    report("toml")
    report("invalid-toml", error=failure(lambda: nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budgt = "3GiB"\n')))
    report("invalid-named", error=failure(lambda: nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budgt = "3GiB"\n', name="mine")))
    report("too-big", error=failure(lambda: nodes.PolicyToml().apply(toml='[[device]]\nindex = 0\nlocal_budget = "100GiB"\n', name="big")))

    status(nodes.Phase().apply(phase="load"))
    pointer = ctypes.c_uint64()
    assert cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(64 << 20)) == 0
    report("phase-load")
    status(nodes.Phase().apply(phase="none"))
    assert cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(32 << 20)) == 0
    report("phase-none")
    passthrough, text = status(nodes.Phase().apply(phase="load", custom_phase="vae_decode"))
    report("phase-custom", status=text)
    report("phase-invalid", error=failure(lambda: nodes.Phase().apply(phase="load", custom_phase="not a name")))

    passthrough, text = status(nodes.Allocation().apply(compute_device="cuda:0", virtual_vram_gb=1.5, donor_device="cpu"))
    report("allocation", status=text)
    passthrough, text = status(nodes.Allocation().apply(compute_device="cuda:0", virtual_vram_gb=1.5, donor_device="cpu", expert_allocation="cuda:0,2gb;cpu,1gb"))
    report("allocation-expert", status=text)
    report("allocation-same-donor", error=failure(lambda: nodes.Allocation().apply(compute_device="cuda:0", virtual_vram_gb=1.0, donor_device="cuda:0")))

    shown = nodes.Stats().show("latent")
    passthrough, table, chart = shown["result"]
    images = shown["ui"]["images"]
    report("stats", passthrough=passthrough, table=table, ui_text=shown["ui"]["text"], chart_shape=list(chart.shape), images=images, image_exists=all(os.path.exists(os.path.join(os.environ["TMPDIR"], i["filename"])) for i in images))


if __name__ == "__main__":
    sys.exit(main())
