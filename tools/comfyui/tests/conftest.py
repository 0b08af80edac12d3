"""Paths to what `cargo build` made, for the tests that run the package under the shim."""
import os
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent.parent
BUILD = pathlib.Path(os.environ.get("VVRAM_BUILD_DIR", REPO / "target" / "debug"))

# The package is imported as `comfyui`, the name of its folder, as ComfyUI imports custom nodes.
sys.path.insert(0, str(PACKAGE.parent))


def built(name):
    path = BUILD / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build` first (scripts/test does)")
    return path


@pytest.fixture
def vvram_binary():
    return built("vvram")


@pytest.fixture
def shim_environment(tmp_path):
    """Environment for a Python child with libvvram.so preloaded on the fake driver."""
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    (driver_dir / "libcuda.so.1").symlink_to(built("libfakecuda.so"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VVRAM_", "FAKECUDA_"))}
    env.update(
        LD_PRELOAD=str(built("libvvram.so")),
        LD_LIBRARY_PATH=str(driver_dir),
        FAKECUDA_DEVICES="24GiB",
        PYTHONPATH=str(PACKAGE.parent),
    )
    return env
