"""vvram detects ComfyUI's Dynamic VRAM in the process: the real comfy-aimdo package's
library, loaded the way ComfyUI loads it, under libvvram.so."""
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).with_name("aimdo_session.py")


def run(env, mode, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[[device]]\nindex = 0\nlocal_budget = "2GiB"\n')
    result = subprocess.run([sys.executable, str(SCRIPT), mode], capture_output=True, text=True, env=dict(env, VVRAM_POLICY=str(policy)), timeout=60)
    assert result.returncode == 0 and "allocated" in result.stdout, result.stdout + result.stderr
    return result.stderr


def test_the_real_comfy_aimdo_is_detected_once_and_the_fix_named(shim_environment, tmp_path):
    pytest.importorskip("comfy_aimdo.control", reason="comfy-aimdo is not installed (.ci/run installs it)")
    stderr = run(shim_environment, "load-aimdo", tmp_path)
    assert stderr.count("comfy-aimdo") == 1, stderr
    assert "--disable-dynamic-vram" in stderr


def test_without_comfy_aimdo_nothing_is_said(shim_environment, tmp_path):
    # The fake driver is loaded from this test's tmp_path, whose name contains "aimdo":
    # a directory name is not comfy-aimdo.
    assert "aimdo" in str(shim_environment["LD_LIBRARY_PATH"])
    assert "comfy-aimdo" not in run(shim_environment, "plain", tmp_path)
