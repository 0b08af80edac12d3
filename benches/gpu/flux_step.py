# A FLUX-shaped transformer step in PyTorch, with random bf16 weights: hidden 3072,
# 19 double-stream + 38 single-stream blocks (~11.8B parameters), 4096 image + 512 text
# tokens. Loaded, then run for 8 steps; steps 3-8 are timed. One variant per process
# (libvvram.so must be preloaded at start), driven by flux_bench.sh:
#
#   python3 flux_step.py resident|vvram|unmodified|baseline HOST_GB OUT.pt
#
# resident: every weight on the GPU. vvram: the same code; libvvram.so's policy decides
# where weights live (zero-copy or the migration engine); a 6 GB margin is allocated
# before the weights and freed after, so local-first placement leaves the activations
# room on the card (placement by hand). unmodified: what ComfyUI does, no margin and no
# phase: the weights (made on the GPU as in the other variants, then kept in host memory)
# load first as ComfyUI loads a state dict, one allocation and copy per weight with no
# kernel in between, the activations come when sampling starts, and libvvram.so alone
# decides where everything lives. baseline: the blocks past
# (total - HOST_GB) kept in pinned host memory and copied block by block into two GPU
# slots on a side stream, block i+1 while block i computes (DisTorch2 / ComfyUI low-VRAM).
# Prints a JSON line: step times, the output's path, bytes of weights, pinned H2D GB/s;
# under libvvram.so also donor_bytes (what vvram placed off the card, engine.donor_bytes)
# and donor_hot_bytes (bytes used more than once per step that live on a donor,
# working_set.donor_hot_bytes, null when this libvvram.so does not report it), read from
# vvram_stats_json after the last step.
import ctypes, json, sys, time
import torch
import torch.nn.functional as F

H, HEADS, IMG, TXT, MLP = 3072, 24, 4096, 512, 12288
DOUBLE, SINGLE, STEPS, TIMED_FROM = 19, 38, 8, 2
dev = "cuda"
variant, host_gb, out_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]

def double_shapes():
    stream = [("qkv", (3 * H, H)), ("proj", (H, H)), ("mlp_in", (MLP, H)), ("mlp_out", (H, MLP)), ("mod", (6 * H, H))]
    return [(f"img_{n}", s) for n, s in stream] + [(f"txt_{n}", s) for n, s in stream]

def single_shapes():
    return [("linear1", (3 * H + MLP, H)), ("linear2", (H, H + MLP)), ("mod", (3 * H, H))]

BLOCKS = [("double", double_shapes()) for _ in range(DOUBLE)] + [("single", single_shapes()) for _ in range(SINGLE)]

def make(block, name, shape):
    g = torch.Generator(device=dev).manual_seed(block * 100 + sum(map(ord, name)))
    w = torch.empty(shape, device=dev, dtype=torch.bfloat16)
    w.normal_(0, 0.02, generator=g)
    return w

def attention(q, k, v):
    b = lambda t: t.view(1, -1, HEADS, H // HEADS).transpose(1, 2)
    return F.scaled_dot_product_attention(b(q), b(k), b(v)).transpose(1, 2).reshape(-1, H)

def double_block(w, img, txt, vec):
    mi, mt = F.linear(vec, w["img_mod"]).chunk(6, -1), F.linear(vec, w["txt_mod"]).chunk(6, -1)
    qi, ki, vi = F.linear(F.layer_norm(img, (H,)) * (1 + mi[1]) + mi[0], w["img_qkv"]).chunk(3, -1)
    qt, kt, vt = F.linear(F.layer_norm(txt, (H,)) * (1 + mt[1]) + mt[0], w["txt_qkv"]).chunk(3, -1)
    a = attention(torch.cat([qt, qi]), torch.cat([kt, ki]), torch.cat([vt, vi]))
    at, ai = a[:TXT], a[TXT:]
    img = img + mi[2] * F.linear(ai, w["img_proj"])
    txt = txt + mt[2] * F.linear(at, w["txt_proj"])
    img = img + mi[5] * F.linear(F.gelu(F.linear(F.layer_norm(img, (H,)) * (1 + mi[4]) + mi[3], w["img_mlp_in"]), approximate="tanh"), w["img_mlp_out"])
    txt = txt + mt[5] * F.linear(F.gelu(F.linear(F.layer_norm(txt, (H,)) * (1 + mt[4]) + mt[3], w["txt_mlp_in"]), approximate="tanh"), w["txt_mlp_out"])
    return img, txt

def single_block(w, x, vec):
    m = F.linear(vec, w["mod"]).chunk(3, -1)
    h = F.linear(F.layer_norm(x, (H,)) * (1 + m[1]) + m[0], w["linear1"])
    q, k, v, mlp = torch.split(h, [H, H, H, MLP], -1)
    return x + m[2] * F.linear(torch.cat([attention(q, k, v), F.gelu(mlp, approximate="tanh")], -1), w["linear2"])

def pinned_bandwidth():
    host = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
    gpu = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    gpu.copy_(host, non_blocking=True); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(4):
        gpu.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    bw = 4 * (1 << 30) / (time.perf_counter() - t) / 1e9
    del host, gpu
    return bw

def vvram_stats():
    """libvvram.so's statistics (vvram_stats_json), or None when it is not preloaded."""
    process = ctypes.CDLL(None)
    if not hasattr(process, "vvram_stats_json"):
        return None
    process.vvram_stats_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    process.vvram_stats_json.restype = ctypes.c_size_t
    size = 1 << 16
    while True:
        buffer = ctypes.create_string_buffer(size)
        needed = process.vvram_stats_json(buffer, size)
        if needed <= size:
            return json.loads(buffer.value)
        size = needed * 2

def main():
    under_vvram = variant in ("vvram", "unmodified")
    bandwidth = None if under_vvram else pinned_bandwidth()
    # Room for activations while weights load (vvram fills its local budget in order).
    margin = torch.empty(6 << 30, dtype=torch.uint8, device=dev) if variant == "vvram" else None
    weights, total = [], 0
    for i, (_, shapes) in enumerate(BLOCKS):
        weights.append({n: make(i, n, s) for n, s in shapes})
        total += sum(w.numel() * 2 for w in weights[-1].values())
        if variant == "unmodified":
            weights[-1] = {n: w.cpu() for n, w in weights[-1].items()}
    del margin
    torch.cuda.empty_cache()
    if variant == "unmodified":
        # ComfyUI loads a state dict from host memory: one allocation and one copy per
        # weight, no kernel in between (the same values as the other variants').
        weights = [{n: w.to(dev) for n, w in block.items()} for block in weights]
        torch.cuda.synchronize()
    offloaded = set()
    if variant == "baseline":
        keep, acc = total - host_gb * 1e9, 0
        for i, block in enumerate(weights):
            acc += sum(w.numel() * 2 for w in block.values())
            if acc > keep:
                weights[i] = {n: w.cpu().pin_memory() for n, w in block.items()}
                offloaded.add(i)
        torch.cuda.empty_cache()
        largest = max(sum(w.numel() for w in b.values()) for b in weights)
        slots = [torch.empty(largest, dtype=torch.bfloat16, device=dev) for _ in range(2)]
        copy_stream = torch.cuda.Stream()
        copied = [torch.cuda.Event(), torch.cuda.Event()]
        computed = [torch.cuda.Event(), torch.cuda.Event()]
        computed[0].record(); computed[1].record()

    def stage(i):
        slot = i % 2
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(computed[slot])
            views, offset = {}, 0
            for n, w in weights[i].items():
                view = slots[slot][offset:offset + w.numel()].view(w.shape)
                view.copy_(w, non_blocking=True)
                views[n], offset = view, offset + w.numel()
            copied[slot].record(copy_stream)
        return views

    g = torch.Generator(device=dev).manual_seed(0)
    img0 = torch.randn(IMG, H, device=dev, dtype=torch.bfloat16, generator=g)
    txt0 = torch.randn(TXT, H, device=dev, dtype=torch.bfloat16, generator=g)
    vec = torch.randn(1, H, device=dev, dtype=torch.bfloat16, generator=g)
    times = []
    for step in range(STEPS):
        torch.cuda.synchronize()
        t = time.perf_counter()
        img, txt = img0, txt0
        staged = {0: stage(0)} if 0 in offloaded else {}
        x = None
        for i, (kind, _) in enumerate(BLOCKS):
            if i + 1 in offloaded:
                staged[i + 1] = stage(i + 1)
            if i in offloaded:
                torch.cuda.current_stream().wait_event(copied[i % 2])
            w = staged.pop(i) if i in offloaded else weights[i]
            if kind == "double":
                img, txt = double_block(w, img, txt, vec)
            else:
                x = torch.cat([txt, img]) if x is None else x
                x = single_block(w, x, vec)
            if i in offloaded:
                computed[i % 2].record()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    stats = vvram_stats() if under_vvram else None
    if under_vvram and stats is None:
        sys.exit(f"flux_step.py {variant}: libvvram.so is not preloaded (no vvram_stats_json)")
    torch.save(x.float().cpu(), out_path)
    report = {"variant": variant, "host_gb": host_gb, "steps": times, "timed_from": TIMED_FROM,
              "weight_bytes": total, "h2d_gbps": bandwidth, "allocator": torch.cuda.get_allocator_backend()}
    if stats is not None:
        report["donor_bytes"] = stats["engine"]["donor_bytes"]
        report["donor_hot_bytes"] = stats.get("working_set", {}).get("donor_hot_bytes")
    print(json.dumps(report))

main()
