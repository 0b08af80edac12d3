"""PyTorch's three CUDA allocators on the fake driver, alone and under libvvram.so with
256 MiB local and a 1 GiB host donor: what torch sees, where the bytes land, that data
round-trips byte for byte (also across tiers), the cache's free/re-allocate cycle, and
out-of-memory past every tier. Each (allocator, shim) pair is one torch process
(scenario.py); each check below reads what it measured."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_CARD, HOST_DONOR, LOCAL_BUDGET, clean_env, under_shim

MODES = {
    "native": None,
    "expandable": "expandable_segments:True",
    "async": "backend:cudaMallocAsync",
}
CONFIGS = [(mode, shim) for mode in MODES for shim in (False, True)]
IDS = [f"{mode}-{'vvram' if shim else 'fake'}" for mode, shim in CONFIGS]

_runs = {}


def run_scenario(mode, shim, fake_lib_dir, shim_library, shim_policy):
    key = (mode, shim)
    if key in _runs:
        return _runs[key]
    env = clean_env(fake_lib_dir)
    if MODES[mode]:
        env["PYTORCH_CUDA_ALLOC_CONF"] = MODES[mode]
    if shim:
        env = under_shim(env, shim_library, shim_policy)
        env.update(BUDGET=str(LOCAL_BUDGET), HOST_DONOR=str(HOST_DONOR))
    else:
        env.update(BUDGET=str(FAKE_CARD), HOST_DONOR="0")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("scenario.py"))], env=env, capture_output=True, text=True, timeout=600
    )
    checks = {}
    for line in out.stdout.splitlines():
        record = json.loads(line)
        checks[record.pop("check")] = record
    _runs[key] = (out, checks)
    return _runs[key]


@pytest.fixture(params=CONFIGS, ids=IDS)
def run(request, torch_available, fake_lib_dir, shim_library, shim_policy):
    mode, shim = request.param
    out, checks = run_scenario(mode, shim, fake_lib_dir, shim_library, shim_policy)

    def check(name):
        assert "done" in checks and out.returncode == 0, f"scenario failed (exit {out.returncode}):\n{out.stderr[-4000:]}"
        return checks[name]

    check.shim = shim
    check.stderr = out.stderr
    return check


def test_mem_get_info_is_the_virtual_card(run):
    info = run("mem_get_info")
    if run.shim:
        assert info["total"] == info["reported_total"] == LOCAL_BUDGET + HOST_DONOR
    else:
        assert info["total"] == FAKE_CARD
    assert 0 < info["free"] <= info["total"]


def test_allocations_land_on_the_tiers_and_read_back(run):
    fill = run("fill")
    assert fill["exact"], "data copied in did not read back byte for byte"
    if run.shim:
        assert fill["bytes"] == 4 * LOCAL_BUDGET
        placed = fill["placed"]
        local, host = placed["tiers"]["local"], placed["tiers"]["host"]
        assert 0 < local <= placed["capacity"]["local"], placed
        assert host >= fill["bytes"] - placed["capacity"]["local"], placed
        assert placed["live"] > 0, f"vvram reports no live allocations while {fill['bytes']} bytes are placed: {placed}"
        assert placed["errors"] == 0, placed


def test_a_tensor_across_tiers_round_trips(run):
    straddle = run("straddle")
    assert straddle["exact"]
    if run.shim:
        before, after = straddle["before"]["tiers"], straddle["after"]["tiers"]
        assert after["local"] > before["local"] and after["host"] > before["host"], straddle


def test_zeros(run):
    assert run("zeros")["all_zero"]


def test_free_and_reallocate_through_the_cache(run):
    loop = run("loop")
    assert loop["exact"]
    assert loop["reserved"] == 0
    if run.shim:
        assert sum(loop["placed"]["tiers"].values()) == 0, f"bytes still placed after empty_cache: {loop['placed']}"
        assert loop["placed"]["live"] == 0, loop["placed"]


def test_out_of_memory_past_every_tier(run):
    oom = run("out_of_memory")
    assert oom["raised"] is not None, "allocating past every tier did not raise OutOfMemoryError"
    assert oom["works_after"], "the process did not recover after empty_cache()"
    if run.shim:
        assert oom["placed"]["out_of_memory"] >= 1, oom["placed"]
        assert oom["placed"]["errors"] == 0, oom["placed"]


def test_a_kernel_the_fake_cannot_run_fails_clearly(run):
    error = run("kernel")["error"]
    assert error is not None and "no kernel image" in error, error
    assert "cannot be loaded: the fake driver runs no SASS" in run.stderr
