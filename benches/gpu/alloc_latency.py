"""cuMemAlloc_v2/cuMemFree_v2 latency through the process's libcuda.so.1, as a ratio
between a run under libvvram.so and a native run (benches/gpu/run.sh runs both).
Prints one JSON line: {"mode": ..., "size": {"alloc_us": p50, "free_us": p50}, ...}."""
import ctypes
import json
import os
import statistics
import time

cuda = ctypes.CDLL("libcuda.so.1")
u64 = ctypes.c_uint64


def check(code, what):
    if code != 0:
        raise SystemExit(f"{what} failed: {code}")


check(cuda.cuInit(0), "cuInit")
ctx = ctypes.c_void_p()
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0), "retain")
check(cuda.cuCtxSetCurrent(ctx), "set current")
result = {"mode": "vvram" if "libvvram" in os.environ.get("LD_PRELOAD", "") else "native"}
for size in (2 << 20, 64 << 20, 1 << 30):
    allocs, frees = [], []
    for _ in range(200 if size < (1 << 30) else 20):
        p = u64()
        t0 = time.perf_counter()
        check(cuda.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(size)), "cuMemAlloc_v2")
        t1 = time.perf_counter()
        check(cuda.cuMemFree_v2(p), "cuMemFree_v2")
        t2 = time.perf_counter()
        allocs.append((t1 - t0) * 1e6)
        frees.append((t2 - t1) * 1e6)
    result[f"{size >> 20}MiB"] = {"alloc_us": round(statistics.median(allocs), 1), "free_us": round(statistics.median(frees), 1)}
print(json.dumps(result))
