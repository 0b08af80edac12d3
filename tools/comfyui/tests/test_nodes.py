"""The ComfyUI package against a stand-in for ComfyUI (CI cannot install ComfyUI; the same
behaviours are checked in a live ComfyUI by tests/comfyui-live/run.sh): imports anywhere,
says how to start vvram when it is not loaded, re-runs its setting nodes on every prompt,
and, with the shim preloaded, each node changes the shim's policy."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import PACKAGE

GIB = 1 << 30
NODE_IDS = {"VvramPolicyPreset", "VvramPolicyToml", "VvramAllocation", "VvramPhase", "VvramStats"}


def test_without_the_shim_every_node_says_how_to_start_it_and_passes_through():
    import comfyui
    from comfyui import nodes, startup, vvram_shim

    assert set(comfyui.NODE_CLASS_MAPPINGS) == NODE_IDS and comfyui.WEB_DIRECTORY == "./web"
    assert comfyui.NODE_DISPLAY_NAME_MAPPINGS["VvramPolicyPreset"] == "vvram Policy (preset)"
    assert not vvram_shim.available()
    message = startup.not_loaded_message()
    assert "vvram is not loaded" in message and " run --alloc " in message and sys.executable in message
    shown = nodes.PolicyPreset().apply(family="FLUX", card="24 GB", passthrough="model.safetensors")
    assert shown["result"] == ("model.safetensors", message) and shown["ui"] == {"text": [message]}
    for node, inputs in [
        (nodes.PolicyToml(), {"toml": "x = 1"}),
        (nodes.Allocation(), {"compute_device": "cuda:0", "virtual_vram_gb": 2.0, "donor_device": "cpu"}),
        (nodes.Phase(), {"phase": "load"}),
    ]:
        assert node.apply(passthrough=7, **inputs)["result"] == (7, message)
    shown = nodes.Stats().show(passthrough=None)
    assert shown["result"][1] == message and shown["ui"]["text"] == [message]
    chart = shown["result"][2]
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and chart.shape[1] > 100, "an image that says so, not a blank strip"
    assert chart.min() < 0.2 and chart.max() > 0.8
    assert len(shown["ui"]["images"]) == 1 and shown["ui"]["images"][0]["type"] == "temp"


def write_comfyui(root, has_flag):
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    flag = 'parser.add_argument("--disable-dynamic-vram", action="store_true")\n' if has_flag else ""
    (root / "comfy" / "cli_args.py").write_text('parser.add_argument("--cpu", action="store_true")\n' + flag)


@pytest.mark.parametrize("has_flag", [True, False])
def test_the_start_command_is_for_the_installed_comfyui(tmp_path, has_flag):
    from comfyui import startup

    write_comfyui(tmp_path, has_flag)
    command = startup.start_command(argv=["--listen", "127.0.0.1", "--disable-dynamic-vram"], directory=str(tmp_path))
    expected = f"run --alloc 'cuda:0,0.85;cpu,0.5' -- {sys.executable} {tmp_path / 'main.py'} --listen 127.0.0.1"
    assert expected in command
    assert command.endswith(" --disable-dynamic-vram") == has_flag
    assert command.count("--disable-dynamic-vram") == int(has_flag)


def test_the_not_loaded_warning_is_logged_once_per_process(tmp_path):
    write_comfyui(tmp_path / "ComfyUI", has_flag=False)
    nodes_dir = tmp_path / "ComfyUI" / "custom_nodes"
    nodes_dir.mkdir()
    (nodes_dir / "comfyui-vvram").symlink_to(PACKAGE)
    script = (
        "import importlib.util, logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        f"spec = importlib.util.spec_from_file_location('prestartup', {str(nodes_dir / 'comfyui-vvram' / 'prestartup_script.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"sys.path.insert(0, {str(nodes_dir)!r})\n"
        "nodes = importlib.import_module('comfyui-vvram.nodes')\n"
        "for prompt in range(3):\n"
        "    nodes.Phase().apply(phase='load'); nodes.PolicyPreset().apply(family='SDXL', card='8 GB'); nodes.Stats().show()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("vvram is not loaded") == 1, result.stderr
    assert f"{tmp_path / 'ComfyUI' / 'main.py'}" in result.stderr and "--disable-dynamic-vram" not in result.stderr


def test_v1_nodes_declare_what_a_comfyui_user_expects():
    from comfyui import nodes

    for node_id, node in nodes.NODE_CLASS_MAPPINGS.items():
        types = node.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, declaration in types.get(group, {}).items():
                assert declaration[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert "passthrough" in types["optional"]
        assert len(node.DESCRIPTION) > 80 and nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] not in node.DESCRIPTION
        assert node.OUTPUT_NODE and len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES)
        changed = node.IS_CHANGED()
        assert math.isnan(changed) and changed != changed, f"{node_id} must run on every prompt"
    preset = nodes.PolicyPreset.INPUT_TYPES()["required"]
    assert preset["family"][0] == ["FLUX", "Qwen-Image", "WAN 2.x", "HunyuanVideo", "SDXL"]
    assert preset["card"][0] == ["this card (85%)", "8 GB", "12 GB", "16 GB", "24 GB"] and preset["card"][1]["default"] == "this card (85%)"
    allocation = nodes.Allocation.INPUT_TYPES()
    assert allocation["required"]["compute_device"][0] == ["cuda:0"]
    assert allocation["required"]["virtual_vram_gb"][0] == "FLOAT" and allocation["required"]["donor_device"][0] == ["cpu", "cuda:0"]
    assert "activations included" in nodes.Allocation.DESCRIPTION
    phase = nodes.Phase.INPUT_TYPES()
    assert phase["required"]["phase"][0] == ["load", "sampling", "none"] and phase["optional"]["custom_phase"][0] == "STRING"
    assert nodes.PolicyToml.INPUT_TYPES()["required"]["toml"][1]["multiline"] is True
    assert nodes.Stats.RETURN_NAMES == ("passthrough", "table", "chart")
    assert nodes.ANY == "MODEL" and not (nodes.ANY != "CLIP")


def test_every_preset_is_a_valid_policy(vvram_binary):
    presets = sorted(str(p) for p in (PACKAGE / "presets").glob("*.toml"))
    assert len(presets) == 25
    result = subprocess.run([str(vvram_binary), "check", *presets, "--devices", "0:24GiB", "--host", "64GiB"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "family, card, ram_gib, host, pin",
    [("FLUX", "12 GB", 64, 28, 4), ("FLUX", "12 GB", 16, 12, 4), ("Qwen-Image", "this card (85%)", 24, 18, 4), ("SDXL", "8 GB", 4, 3, 3)],
)
def test_presets_adapt_to_the_machine_ram_and_say_so(vvram_binary, tmp_path, family, card, ram_gib, host, pin):
    from comfyui.presets import Preset

    preset = Preset(family, card, ram=ram_gib * GIB)
    assert preset.host == host and f'capacity = "{host:g}GiB"' in preset.text and f'pin_ahead = "{pin}GiB"' in preset.text
    assert preset.name.startswith("preset ") and preset.name in preset.describe()
    if host < preset.need:
        assert f"asks for {preset.need:g} GiB" in preset.note and "3/4" in preset.note
    else:
        assert preset.note == "" and "all it needs" in preset.describe()
    policy = tmp_path / "adapted.toml"
    policy.write_text(preset.text)
    result = subprocess.run([str(vvram_binary), "check", str(policy), "--devices", f"0:{card.split()[0] if card[0].isdigit() else 24}GiB", "--host", f"{ram_gib}GiB"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_each_node_changes_the_shim_policy(shim_environment, tmp_path):
    script = pathlib.Path(__file__).with_name("session_under_shim.py")
    env = dict(shim_environment, TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {s["step"]: s for s in map(json.loads, result.stdout.splitlines())}

    assert steps["loaded"]["available"] and steps["loaded"]["version"]
    preset = steps["preset"]
    assert preset["passthrough"] == "unet.safetensors" and preset["policy"] == "preset sdxl-24gb"
    assert preset["status"].startswith("vvram policy: preset sdxl-24gb (SDXL on a 24 GB card), 4 GiB of host RAM")
    assert preset["tiers"]["local"]["capacity"] == 21 * GIB and preset["tiers"]["host"]["capacity"] == 4 * GIB
    auto = steps["preset-auto"]
    assert auto["policy"] == "preset flux-auto" and auto["tiers"]["local"]["capacity"] == int(0.85 * 24 * GIB)

    assert steps["toml"]["tiers"]["local"]["capacity"] == 3 * GIB and steps["toml"]["policy"] == "<policy>"
    assert steps["invalid-toml"]["error"].startswith("<policy>:3:1:") and "did you mean `local_budget`" in steps["invalid-toml"]["error"]
    assert steps["invalid-named"]["error"].startswith("mine:3:1:")
    assert steps["too-big"]["error"].startswith("big:3:16:") and "24 GiB" in steps["too-big"]["error"]
    assert steps["too-big"]["policy"] == "<policy>", "a refused policy does not replace the one in force"

    assert steps["phase-load"]["phase"] == "load"
    assert steps["phase-load"]["tiers"]["host"]["used"] == 64 << 20 and steps["phase-load"]["tiers"]["local"]["used"] == 0
    assert steps["phase-none"]["phase"] is None and steps["phase-none"]["tiers"]["local"]["used"] == 32 << 20
    assert steps["phase-custom"]["phase"] == "vae_decode" and steps["phase-custom"]["status"] == "vvram phase: vae_decode"
    assert "not a phase name" in steps["phase-invalid"]["error"]

    allocation = steps["allocation"]
    assert allocation["policy"] == "<alloc>" and allocation["status"] == "vvram allocation: cuda:0,*;cpu,1.5gb (compute device cuda:0)"
    assert allocation["tiers"]["local"]["capacity"] == 24 * GIB and allocation["tiers"]["host"]["capacity"] == 1.5 * GIB
    expert = steps["allocation-expert"]
    assert expert["tiers"]["local"]["capacity"] == 2 * GIB and expert["tiers"]["host"]["capacity"] == 1 * GIB
    assert "another device" in steps["allocation-same-donor"]["error"]

    stats = steps["stats"]
    assert stats["passthrough"] == "latent" and stats["ui_text"] == [stats["table"]]
    assert "policy <alloc>" in stats["table"] and "cuda:0 (this card)" in stats["table"] and "host RAM (pinned)" in stats["table"]
    assert stats["chart_shape"][0] == 1 and stats["chart_shape"][-1] == 3 and stats["chart_shape"][1] > 100
    assert len(stats["images"]) == 1 and stats["image_exists"]


def test_stats_under_a_policy_that_does_not_fit_fails_the_node_not_the_process(shim_environment, tmp_path):
    policy = tmp_path / "big.toml"
    policy.write_text('[[device]]\nindex = 0\nlocal_budget = "100GiB"\n')
    script = pathlib.Path(__file__).with_name("session_under_shim.py")
    env = dict(shim_environment, VVRAM_POLICY=str(policy), TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, str(script), "stats-under-a-policy-that-does-not-fit"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {s["step"]: s for s in map(json.loads, result.stdout.splitlines())}
    assert steps["stats"]["error"].startswith(f"policy {policy} does not fit this machine:") and "100 GiB" in steps["stats"]["error"]
    assert steps["after"]["policy"] == "after" and steps["after"]["tiers"]["local"]["capacity"] == 1 * GIB


def test_a_preset_that_does_not_fit_the_card_names_itself_in_the_error(shim_environment, tmp_path):
    script = pathlib.Path(__file__).with_name("session_under_shim.py")
    env = dict(shim_environment, FAKECUDA_DEVICES="8GiB", TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, str(script), "preset-larger-than-the-card"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error.startswith("preset flux-24gb:") and "8 GiB" in error, error


def test_the_current_node_api_is_used_where_comfyui_has_it():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).with_name("stub_comfy_api")), str(PACKAGE.parent)]))
    script = pathlib.Path(__file__).with_name("v3_session.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert set(report) == NODE_IDS
    from comfyui import nodes

    for node_id, node in report.items():
        assert node["display"] == nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] and node["description"] == nodes.NODE_CLASS_MAPPINGS[node_id].DESCRIPTION
        assert all(node["inputs"].values()), f"{node_id}: every input has a tooltip"
        assert node["output_node"] and node["not_idempotent"] and node["reruns"], node_id
        assert node["output_tooltips"] and node["args"] == len(node["outputs"]) and node["first"] == "through", node_id
    for node_id in NODE_IDS - {"VvramStats"}:
        assert report[node_id]["outputs"] == ["passthrough", "status"] and report[node_id]["ui"] == ["text"]
    assert report["VvramStats"]["outputs"] == ["passthrough", "table", "chart"] and report["VvramStats"]["ui"] == ["images", "text"]
    assert set(report["VvramAllocation"]["inputs"]) == {"compute_device", "virtual_vram_gb", "donor_device", "expert_allocation", "passthrough"}


def test_the_chart_is_labelled():
    from comfyui import report

    stats = {
        "version": "0.1.0", "policy": "preset flux-12gb", "phase": "sampling", "active": True, "policy_error": None,
        "devices": [{"device": 0, "reported_total": 38 * GIB, "allocations": 3, "tiers": [
            {"tier": "local", "used": 5 * GIB, "capacity": 10 * GIB},
            {"tier": "peer:1", "used": 0, "capacity": 4 * GIB},
            {"tier": "host", "used": 7 * GIB, "capacity": 28 * GIB},
        ]}],
        "allocations": 3, "frees": 0, "out_of_memory": 1, "fast_h2d_bytes": 0, "host_pool_bytes": 0, "errors": 0,
    }
    items, height = report.chart_layout(stats)
    texts = [i.text for i in items if isinstance(i, report.Text)]
    assert texts[0] == "vvram: where memory lives (policy preset flux-12gb)" and texts[1] == "phase sampling"
    assert "cuda:0: the application sees 38.00 GiB" in texts
    for label, amounts in [("cuda:0 (this card)", "5.00 GiB of 10.00 GiB (50%)"), ("cuda:1 (peer card)", "0 B of 4.00 GiB (0%)"), ("host RAM (pinned)", "7.00 GiB of 28.00 GiB (25%)")]:
        assert texts[texts.index(label) + 1] == amounts
    assert [round(i.fraction, 2) for i in items if isinstance(i, report.Bar)] == [0.5, 0.0, 0.25]
    assert "out of memory 1" in texts[-1] and all(t.isascii() for t in texts)
    image = report.render_chart(stats)
    assert image.shape == (height, report.WIDTH, 3)
    message = report.chart_layout(dict(stats, devices=[], policy_error="GPU 0 holds 24 GiB, but the policy gives out 100 GiB"))[0]
    assert any("100 GiB" in i.text for i in message if isinstance(i, report.Text))


@pytest.mark.parametrize("has_flag", [True, False])
def test_inside_comfyui_the_flag_is_asked_of_its_argument_parser(monkeypatch, has_flag):
    import argparse
    import types

    from comfyui import startup

    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true")
    if has_flag:
        parser.add_argument("--disable-dynamic-vram", action="store_true")
    monkeypatch.setitem(sys.modules, "comfy.cli_args", types.SimpleNamespace(parser=parser))
    assert startup.accepts_dynamic_vram_flag("/nonexistent") == has_flag
    assert startup.start_command(argv=["--cpu"], directory="/nonexistent").endswith("--cpu" + " --disable-dynamic-vram" * has_flag)
