"""Run by test_control_api.py under libvvram.so on the fake driver: drives the control
API with ctypes the way any caller would and prints one JSON line per step. The process
must survive every step: no control-API call may end it."""
import ctypes
import json
import sys

lib = ctypes.CDLL(None)
lib.vvram_set_policy_toml.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
lib.vvram_set_policy_named.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
lib.vvram_stats_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
lib.vvram_stats_json.restype = ctypes.c_size_t

TOO_BIG = '[[device]]\nindex = 0\nlocal_budget = "100GiB"\n'
FITS = '[[device]]\nindex = 0\nlocal_budget = "2GiB"\ndonors = [{ tier = "host", capacity = "1GiB" }]\n'


def stats():
    buffer = ctypes.create_string_buffer(1 << 16)
    lib.vvram_stats_json(buffer, len(buffer))
    return json.loads(buffer.value.decode())


def step(name, code=None, error=None):
    s = stats()
    print(json.dumps({"step": name, "code": code, "error": error, "policy": s["policy"], "active": s["active"], "policy_error": s.get("policy_error")}), flush=True)


def set_policy(text, name=None):
    error = ctypes.create_string_buffer(4096)
    if name is None:
        code = lib.vvram_set_policy_toml(text.encode(), error, len(error))
    else:
        code = lib.vvram_set_policy_named(name.encode(), text.encode(), error, len(error))
    return code, error.value.decode()


def init_cuda():
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    context = ctypes.c_void_p()
    assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0) == 0
    assert cuda.cuCtxSetCurrent(context) == 0


if sys.argv[1] == "start-policy-too-big":
    # VVRAM_POLICY does not fit; the application initialised CUDA but allocated nothing yet.
    init_cuda()
    step("stats")
    step("stats-again")
    step("named-fits", *set_policy(FITS, name="preset test-fits"))
elif sys.argv[1] == "set-before-cuda":
    # Nobody initialised CUDA: the control API checks against the machine all the same.
    step("too-big", *set_policy(TOO_BIG))
    step("named-too-big", *set_policy(TOO_BIG, name="preset too-big"))
    step("fits", *set_policy(FITS))
print(json.dumps({"step": "alive"}), flush=True)
