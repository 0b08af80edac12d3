"""The real libcudart (13.x, from NVIDIA's wheels) on the fake driver, alone and under
libvvram.so with a budget smaller than what it allocates: cudart_exercise.c, compiled
here against each libcudart: the pinned nvidia-cuda-runtime wheel that
scripts/torch-env installs into the torch environment, and the one torch depends on."""
import json
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_CARD, HOST_DONOR, LOCAL_BUDGET, MIB, clean_env, under_shim

#: The pinned runtime (tests/cudart/requirements.txt), installed by scripts/torch-env
#: into <environment>/cudart.
PINNED = next(line.split("==")[1].strip() for line in Path(__file__).with_name("requirements.txt").read_text().splitlines() if "==" in line)
SOURCE = Path(__file__).with_name("cudart_exercise.c")
BUFFERS, BUFFER_BYTES = 8, 64 * MIB


def runtime_dirs():
    pinned = Path(sys.prefix) / "cudart" / "nvidia" / "cu13" / "lib"
    torch_runtime = next(
        (Path(p) / "nvidia" / "cu13" / "lib" for p in site.getsitepackages() if (Path(p) / "nvidia" / "cu13" / "lib" / "libcudart.so.13").exists()),
        Path(sys.prefix) / "site-packages" / "nvidia" / "cu13" / "lib",
    )
    return {PINNED: pinned, "torch": torch_runtime}


@pytest.fixture(scope="module", params=list(runtime_dirs()), ids=lambda v: f"cudart-{v}")
def exercise(request, tmp_path_factory):
    """cudart-exercise linked against one libcudart."""
    lib = runtime_dirs()[request.param]
    if not (lib / "libcudart.so.13").is_file():
        pytest.fail(f"{lib}/libcudart.so.13 is missing: run `bash scripts/torch-env` and use .venv-torch/bin/python", pytrace=False)
    binary = tmp_path_factory.mktemp("cudart") / "cudart-exercise"
    subprocess.run(
        ["cc", "-O1", "-Wall", "-Werror", "-o", str(binary), str(SOURCE), f"-L{lib}", "-l:libcudart.so.13", f"-Wl,-rpath,{lib}", "-ldl"],
        check=True,
    )
    return binary


def run(binary, env, total):
    out = subprocess.run([str(binary), str(total), str(BUFFERS), str(BUFFER_BYTES)], env=env, capture_output=True, text=True, timeout=300)
    return out, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"


def test_on_the_fake_driver(exercise, fake_lib_dir):
    out, text = run(exercise, clean_env(fake_lib_dir), FAKE_CARD)
    assert out.returncode == 0, text
    assert "ok: cudaMallocAsync" in out.stdout, text


def test_under_libvvram_past_the_local_budget(exercise, fake_lib_dir, shim_library, shim_policy):
    assert BUFFERS * BUFFER_BYTES > LOCAL_BUDGET
    env = under_shim(clean_env(fake_lib_dir), shim_library, shim_policy)
    out, text = run(exercise, env, LOCAL_BUDGET + HOST_DONOR)
    assert out.returncode == 0, text
    stats = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("stats: "))[len("stats: "):])
    device = stats["devices"][0]
    tiers = {t["tier"]: t["used"] for t in device["tiers"]}
    assert 0 < tiers["local"] <= LOCAL_BUDGET, stats
    assert tiers["host"] >= BUFFERS * BUFFER_BYTES - LOCAL_BUDGET, stats
    assert device["allocations"] == BUFFERS, stats
    assert stats["errors"] == 0, stats
    assert "ok: cudaMallocAsync" in out.stdout, text


def test_libcudart_verifies_the_integrity_check(exercise, fake_lib_dir):
    # The check "succeeds" without writing its answer: libcudart must notice.
    env = {**clean_env(fake_lib_dir), "FAKECUDA_FAIL": "cuGetExportTable.integrity_check:always=0"}
    out, text = run(exercise, env, FAKE_CARD)
    assert out.returncode == 1, text
    assert "error 103" in out.stderr, text
