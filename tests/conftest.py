"""Shared by the tests that run real NVIDIA libraries on the fake driver (tests/cudart:
the real libcudart; tests/pytorch: PyTorch): where the built libraries are (target/debug,
or where VVRAM_TARGET says), a directory that makes the fakes libcuda.so.1 and
libnvidia-ml.so.1, and the policy used under libvvram.so. A missing piece fails the
tests with what to do; it never skips them."""
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
GIB = 1 << 30

#: The fake card alone, and the policy under libvvram.so: 256 MiB local, a 1 GiB host donor.
FAKE_CARD = GIB
LOCAL_BUDGET = 256 * MIB
HOST_DONOR = GIB
POLICY = f"""
[[device]]
index = 0
local_budget = "{LOCAL_BUDGET // MIB}MiB"
donors = [{{ tier = "host", capacity = "{HOST_DONOR // MIB}MiB" }}]
"""


def target_dir():
    return Path(os.environ.get("VVRAM_TARGET", REPO / "target" / "debug")).resolve()


def require_library(name):
    path = target_dir() / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `cargo build --workspace` first (or set VVRAM_TARGET)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def torch_available():
    if importlib.util.find_spec("torch") is None:
        pytest.fail("torch is not installed in this Python: run `bash scripts/torch-env` and use .venv-torch/bin/python", pytrace=False)


@pytest.fixture(scope="session")
def fake_lib_dir(tmp_path_factory):
    """A directory for LD_LIBRARY_PATH where libcuda.so.1 and libnvidia-ml.so.1 are the fakes."""
    directory = tmp_path_factory.mktemp("fake-driver")
    (directory / "libcuda.so.1").symlink_to(require_library("libfakecuda.so"))
    (directory / "libnvidia-ml.so.1").symlink_to(require_library("libfakenvml.so"))
    return directory


@pytest.fixture(scope="session")
def shim_library():
    return require_library("libvvram.so")


@pytest.fixture(scope="session")
def shim_policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(POLICY)
    return path


def clean_env(fake_lib_dir):
    """The environment of a child process on the fake card alone (1 GiB, 4 GiB of host)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VVRAM_", "FAKECUDA_", "PYTORCH_CUDA_ALLOC_CONF", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES"))}
    env.update(LD_LIBRARY_PATH=str(fake_lib_dir), FAKECUDA_DEVICES=f"{FAKE_CARD // MIB}MiB", FAKECUDA_HOST="4GiB")
    return env


def under_shim(env, shim_library, shim_policy):
    """`env` with libvvram.so preloaded and the policy set."""
    return {**env, "LD_PRELOAD": str(shim_library), "VVRAM_POLICY": str(shim_policy)}
