"""One PyTorch process on the fake driver, with or without libvvram.so: runs every check
of the PyTorch tests in order and prints one JSON object per check on stdout
(`{"check": name, ...measurements}`), then `{"check": "done"}`. The tests
(test_pytorch.py) start it with the environment of each allocator mode and assert on
what it measured; an exception ends it with a traceback on stderr.

Environment: BUDGET (bytes of the local budget under the shim, or of the fake card
alone), HOST_DONOR (bytes donated by the host under the shim; 0 without it)."""
import ctypes
import json
import os

import torch

MIB = 1 << 20


def report(check, **values):
    print(json.dumps({"check": check, **values}), flush=True)


def stats():
    """vvram's statistics (vvram_stats_json), or None without libvvram.so."""
    lib = ctypes.CDLL(None)
    try:
        fn = lib.vvram_stats_json
    except AttributeError:
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    size = 1 << 16
    while True:
        buf = ctypes.create_string_buffer(size)
        needed = fn(buf, size)
        if needed <= size:
            return json.loads(buf.value.decode())
        size = needed * 2


def placed():
    """Bytes vvram placed on each tier of device 0, and its live allocation count."""
    s = stats()
    if s is None:
        return None
    device = s["devices"][0]
    return {
        "tiers": {t["tier"]: t["used"] for t in device["tiers"]},
        "capacity": {t["tier"]: t["capacity"] for t in device["tiers"]},
        "live": device["allocations"],
        "errors": s["errors"],
        "out_of_memory": s["out_of_memory"],
    }


_random = []


def pattern(nbytes, seed):
    """Random-looking bytes that differ per seed, as a CPU uint8 tensor: one 64 MiB random
    block made once (generating random bytes costs about a second per 64 MiB), rotated by
    an amount that depends on the seed."""
    if not _random:
        _random.append(torch.randint(0, 256, (64 * MIB,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    block = _random[0]
    pieces = -(-nbytes // block.numel())
    return torch.cat([block.roll(seed * 4099 + piece * 17 + 1) for piece in range(pieces)])[:nbytes]


def main():
    budget = int(os.environ["BUDGET"])
    host_donor = int(os.environ["HOST_DONOR"])
    capacity = budget + host_donor

    free, total = torch.cuda.mem_get_info()
    s = stats()
    report("mem_get_info", free=free, total=total, reported_total=s["devices"][0]["reported_total"] if s else None)

    # Fill 4x the local budget under the shim (all of the virtual card but a margin
    # without it) with distinct data, copied in from the CPU and read back.
    target = 4 * budget if host_donor else budget - 128 * MIB
    block = 64 * MIB
    sources = [pattern(block, seed) for seed in range(target // block)]
    tensors = [torch.empty(block, dtype=torch.uint8, device="cuda") for _ in sources]
    for t, src in zip(tensors, sources):
        t.copy_(src)
    del t, src
    torch.cuda.synchronize()
    during = placed()
    exact = all(torch.equal(t.cpu(), src) for t, src in zip(tensors, sources))
    report("fill", bytes=target, exact=exact, placed=during)

    # A tensor allocated once the budget is nearly full straddles tiers under the shim.
    del tensors, sources
    torch.cuda.empty_cache()
    # 64 MiB left local: room for whole 20 MiB expandable-segment handles too.
    first = torch.empty(budget - 64 * MIB if host_donor else budget // 2, dtype=torch.uint8, device="cuda")
    first.copy_(pattern(first.numel(), 100))
    before = placed()
    src = pattern(96 * MIB, 101)
    straddling = src.cuda()
    torch.cuda.synchronize()
    after = placed()
    report("straddle", exact=torch.equal(straddling.cpu(), src), before=before, after=after)
    del first, straddling

    # torch.zeros on memory that held data: cuMemsetD8Async.
    dirty = torch.empty(32 * MIB, dtype=torch.uint8, device="cuda")
    dirty.copy_(pattern(dirty.numel(), 7))
    del dirty
    zeros = torch.zeros(8 * MIB, dtype=torch.float32, device="cuda")
    report("zeros", all_zero=not zeros.cpu().any().item())
    del zeros

    # Free and re-allocate through PyTorch's cache, then give everything back.
    sizes = [1 * MIB, 3 * MIB, 20 * MIB, 130 * MIB, 5 * MIB + 7]
    ok = True
    for round_ in range(12):
        size = sizes[round_ % len(sizes)]
        src = pattern(size, 200 + round_)
        t = src.cuda()
        ok = ok and torch.equal(t.cpu(), src)
        del t
        if round_ % 4 == 3:
            torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    report("loop", exact=ok, placed=placed(), reserved=torch.cuda.memory_reserved())

    # Past every tier: with all but 256 MiB of the (virtual) card held, 512 MiB more
    # raises PyTorch's OutOfMemoryError, and the process goes on.
    held = [torch.empty(64 * MIB, dtype=torch.uint8, device="cuda") for _ in range((capacity - 256 * MIB) // (64 * MIB))]
    raised = None
    try:
        torch.empty(512 * MIB, dtype=torch.uint8, device="cuda")
    except torch.cuda.OutOfMemoryError as error:
        raised = str(error).splitlines()[0]
    del held
    torch.cuda.empty_cache()
    src = pattern(16 * MIB, 300)
    after_oom = torch.equal(src.cuda().cpu(), src)
    report("out_of_memory", raised=raised, works_after=after_oom, placed=placed())

    # A kernel the fake cannot run fails with an error, never silently.
    try:
        torch.ones(16, device="cuda")
        kernel_error = None
    except Exception as error:  # noqa: BLE001 - the type is PyTorch's choice; the text is checked
        kernel_error = str(error).splitlines()[0]
    report("kernel", error=kernel_error)
    report("done")


if __name__ == "__main__":
    main()
