//! Allocation and free through the memory manager's decisions, on the in-memory driver:
//! the cost vvram adds to each cudaMalloc/cudaFree before the driver's own work.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vvram_allocator::{MemoryDriver, MemoryManager, Request};
use vvram_policy::size::GIB;
use vvram_policy::{Machine, parse_policy, resolve};

fn manager() -> MemoryManager<MemoryDriver> {
    let policy = parse_policy(
        "bench.toml",
        "[[device]]\nindex = 0\nlocal_budget = \"20GiB\"\ndonors = [{ tier = \"host\", capacity = \"40GiB\" }]\n[[rule]]\nmax_size = \"8MiB\"\ntiers = [\"local\"]\n[[rule]]\ntiers = [\"local\", \"host\"]\n",
    )
    .expect("bench policy");
    let plan = resolve(&policy, &Machine { devices: vec![24 * GIB], host: 64 * GIB, ..Machine::default() }).expect("bench plan");
    MemoryManager::new(MemoryDriver::new(), plan)
}

fn alloc_free(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate+free");
    for (name, size) in [("small 64 KiB (slab)", 64 << 10), ("2 MiB (one chunk)", 2 << 20), ("20 MiB (10 chunks)", 20 << 20)] {
        let mut m = manager();
        // Keep some allocations alive so lookups walk real maps.
        let keep: Vec<u64> = (0..256).map(|_| m.allocate(Request { device: 0, size: 4 << 20, phase: None, tag: None }).unwrap()).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                let p = m.allocate(Request { device: 0, size: black_box(size), phase: None, tag: None }).unwrap();
                m.free(p).unwrap();
            })
        });
        black_box(keep);
    }
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let mut m = manager();
    let live: Vec<u64> = (0..4096).map(|_| m.allocate(Request { device: 0, size: 3 << 20, phase: None, tag: None }).unwrap()).collect();
    c.bench_function("find interior pointer (4096 live)", |b| b.iter(|| m.find(black_box(live[2048] + 12345))));
    c.bench_function("find foreign pointer (pass-through)", |b| b.iter(|| m.find(black_box(0x1234_5678))));
}

criterion_group!(benches, alloc_free, lookups);
criterion_main!(benches);
