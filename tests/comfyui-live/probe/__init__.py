"""A stand-in model loader for the live ComfyUI test: allocates 64 MiB through the CUDA
driver (libvvram.so on the fake driver) as a loader placing weights would, and reports
the phase in force and the tier the bytes landed on, read from vvram's statistics."""
import ctypes
import json

MIB = 1 << 20
_held = []


class AnyType(str):
    """ComfyUI's wildcard socket type."""

    def __ne__(self, other):
        return False


ANY = AnyType("*")


def _stats():
    lib = ctypes.CDLL(None)
    lib.vvram_stats_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.vvram_stats_json.restype = ctypes.c_size_t
    buffer = ctypes.create_string_buffer(1 << 16)
    lib.vvram_stats_json(buffer, len(buffer))
    return json.loads(buffer.value.decode())


def _used(stats):
    return {t["tier"]: t["used"] for d in stats["devices"] for t in d["tiers"]}


class LiveLoader:
    """Loads 64 MiB of "weights" on cuda:0 and says where they went."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"passthrough": (ANY, {"tooltip": "Anything, returned unchanged."})}}

    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("passthrough",)
    FUNCTION = "load"
    CATEGORY = "vvram/testing"
    OUTPUT_NODE = True

    def load(self, passthrough=None):
        cuda = ctypes.CDLL("libcuda.so.1")
        context = ctypes.c_void_p()
        if cuda.cuInit(0) != 0 or cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0) != 0 or cuda.cuCtxSetCurrent(context) != 0:
            raise RuntimeError("no CUDA context on device 0")
        while _held:
            cuda.cuMemFree_v2(ctypes.c_uint64(_held.pop()))
        before = _used(_stats())
        pointer = ctypes.c_uint64()
        code = cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(64 * MIB))
        if code != 0:
            raise RuntimeError(f"cuMemAlloc_v2 failed with {code}")
        _held.append(pointer.value)
        stats = _stats()
        grown = {tier: (used - before.get(tier, 0)) // MIB for tier, used in _used(stats).items() if used != before.get(tier, 0)}
        report = {"phase": stats["phase"], "policy": stats["policy"], "grown_mib": grown}
        return {"ui": {"text": [json.dumps(report)]}, "result": (passthrough,)}


NODE_CLASS_MAPPINGS = {"VvramLiveLoader": LiveLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"VvramLiveLoader": "vvram live-test loader"}
