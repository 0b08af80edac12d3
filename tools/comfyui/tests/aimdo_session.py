"""Run by test_aimdo.py under libvvram.so on the fake driver: loads the real comfy-aimdo
package's native library as ComfyUI does (`comfy_aimdo.control.init`) when asked, then
allocates through the driver, which is where vvram looks for it."""
import ctypes
import sys

if sys.argv[1] == "load-aimdo":
    import comfy_aimdo.control

    assert comfy_aimdo.control.init("cuda"), "comfy-aimdo's library did not load"
cuda = ctypes.CDLL("libcuda.so.1")
assert cuda.cuInit(0) == 0
context = ctypes.c_void_p()
assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), 0) == 0
assert cuda.cuCtxSetCurrent(context) == 0
pointer = ctypes.c_uint64()
for _ in range(3):
    assert cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(4 << 20)) == 0
print("allocated", flush=True)
