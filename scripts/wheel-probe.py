"""Run by scripts/wheel-test under `vvram run --policy POLICY` on the fake driver: checks
that a Python process finds vvram's control API through ctypes.CDLL(None) and that the
policy it was started with is the one in force (vvram_stats_json, cuMemGetInfo_v2)."""
import ctypes
import json
import os
import sys
import tomllib

UNITS = {"GiB": 1 << 30, "MiB": 1 << 20}


def size(text):
    """A size of the policy used here: a number of GiB or MiB."""
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    sys.exit(f"wheel-probe: size {text!r}: expected NGiB or NMiB")


def expect(condition, what):
    if not condition:
        sys.exit(f"wheel-probe: FAILED: {what}")
    print(f"wheel-probe: ok: {what}")


def main():
    process = ctypes.CDLL(None)
    expect(hasattr(process, "vvram_version"), "vvram_version is found through ctypes.CDLL(None)")
    process.vvram_version.restype = ctypes.c_char_p
    print(f"wheel-probe: libvvram.so {process.vvram_version().decode()}")

    cuda = ctypes.CDLL("libcuda.so.1")
    context = ctypes.c_void_p()
    expect(cuda.cuInit(0) == 0, "cuInit on the fake driver")
    expect(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0) == 0, "cuDevicePrimaryCtxRetain")
    expect(cuda.cuCtxSetCurrent(context) == 0, "cuCtxSetCurrent")
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    expect(cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) == 0, "cuMemGetInfo_v2")

    process.vvram_stats_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    process.vvram_stats_json.restype = ctypes.c_size_t
    buffer = ctypes.create_string_buffer(1 << 16)
    length = process.vvram_stats_json(buffer, len(buffer))
    expect(0 < length < len(buffer), f"vvram_stats_json wrote {length} bytes")
    stats = json.loads(buffer.value)

    policy_path = os.environ["VVRAM_POLICY"]
    with open(policy_path, "rb") as file:
        device = tomllib.load(file)["device"][0]
    tiers = {tier["tier"]: tier["capacity"] for tier in stats["devices"][0]["tiers"]}
    wanted = {"local": size(device["local_budget"])}
    wanted.update({donor["tier"]: size(donor["capacity"]) for donor in device["donors"]})
    expect(stats["policy"] == policy_path and stats["active"], f"the policy in force is {policy_path}")
    expect(tiers == wanted, f"vvram_stats_json shows the policy's tiers {tiers}")
    expect(total.value == sum(wanted.values()), f"cuMemGetInfo_v2 reports the virtual card, {total.value} bytes")


main()
