"""The ComfyUI package: imports anywhere, says how to start vvram when it is not loaded,
and, with the shim preloaded, each node changes the shim's policy."""
import json
import os
import pathlib
import subprocess
import sys

from conftest import PACKAGE

GIB = 1 << 30


def test_imports_without_comfyui_and_without_the_shim():
    import comfyui

    assert set(comfyui.NODE_CLASS_MAPPINGS) == {"VvramPolicyPreset", "VvramPolicyToml", "VvramAllocation", "VvramPhase", "VvramStats"}
    assert comfyui.NODE_DISPLAY_NAME_MAPPINGS["VvramPolicyPreset"] == "vvram Policy (preset)"
    from comfyui import nodes, vvram_shim

    assert not vvram_shim.available()
    passthrough, status = nodes.PolicyPreset().apply(family="FLUX", card="24 GB", passthrough="model.safetensors")
    assert passthrough == "model.safetensors"
    assert "vvram run --policy" in status and "--disable-dynamic-vram" in status
    for node, inputs in [(nodes.PolicyToml(), {"toml": "x = 1"}), (nodes.Allocation(), {"allocation": "cuda:0,2gb", "compute_device": 0}), (nodes.Phase(), {"phase": "load"})]:
        assert node.apply(passthrough=7, **inputs) == (7, vvram_shim.NOT_LOADED)
    shown = nodes.Stats().show(passthrough=None)
    assert shown["result"][1] == vvram_shim.NOT_LOADED
    assert shown["result"][2].shape[0] == 1 and shown["result"][2].shape[-1] == 3


def test_node_inputs_are_declared_the_v1_way():
    from comfyui import nodes

    preset = nodes.PolicyPreset.INPUT_TYPES()
    assert preset["required"]["family"][0] == ["FLUX", "Qwen-Image", "WAN 2.x", "HunyuanVideo", "SDXL"]
    assert preset["required"]["card"][0] == ["8 GB", "12 GB", "16 GB", "24 GB"]
    assert "passthrough" in preset["optional"]
    assert nodes.ANY == "MODEL" and not (nodes.ANY != "CLIP")
    assert nodes.PolicyToml.INPUT_TYPES()["required"]["toml"][1]["multiline"] is True


def test_every_preset_is_valid_policy(vvram_binary):
    presets = sorted(str(p) for p in (PACKAGE / "presets").glob("*.toml"))
    assert len(presets) == 20
    result = subprocess.run([str(vvram_binary), "check", *presets], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_each_node_changes_the_shim_policy(shim_environment):
    script = pathlib.Path(__file__).with_name("session_under_shim.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=shim_environment, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {s["step"]: s for s in map(json.loads, result.stdout.splitlines())}

    assert steps["loaded"]["available"] and steps["loaded"]["version"]
    preset = steps["preset"]
    assert preset["passthrough"] == "unet.safetensors" and preset["status"] == "vvram policy: SDXL on a 24 GB card"
    assert preset["tiers"]["local"]["capacity"] == 21 * GIB and preset["tiers"]["host"]["capacity"] == 4 * GIB

    assert steps["toml"]["tiers"]["local"]["capacity"] == 3 * GIB
    error = steps["invalid-toml"]["error"]
    assert error.startswith("<policy>:3:1:") and "did you mean `local_budget`" in error

    assert steps["phase-load"]["phase"] == "load"
    assert steps["phase-load"]["tiers"]["host"]["used"] == 64 << 20 and steps["phase-load"]["tiers"]["local"]["used"] == 0
    assert steps["phase-cleared"]["phase"] is None
    assert steps["phase-cleared"]["tiers"]["local"]["used"] == 32 << 20

    allocation = steps["allocation"]
    assert allocation["policy"] == "<alloc>"
    assert allocation["tiers"]["local"]["capacity"] == 2 * GIB and allocation["tiers"]["host"]["capacity"] == 1 * GIB

    stats = steps["stats"]
    assert stats["passthrough"] == "latent"
    assert "local" in stats["table"] and "host" in stats["table"]
    assert stats["chart_shape"][0] == 1 and stats["chart_shape"][-1] == 3


def test_the_current_node_api_is_used_where_comfyui_has_it():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).with_name("stub_comfy_api")), str(PACKAGE.parent)]))
    script = pathlib.Path(__file__).with_name("v3_session.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"VvramPolicyPreset", "VvramPolicyToml", "VvramAllocation", "VvramPhase", "VvramStats"}
    for node_id, node in report.items():
        assert node["outputs"] == node["args"] and node["first"] == "through", node_id
    assert report["VvramStats"]["ui"] and report["VvramStats"]["display"] == "vvram Stats"
