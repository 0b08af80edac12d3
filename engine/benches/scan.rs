//! Scanning launch parameters against the extent table: a 1720-byte packed buffer
//! (cuBLAS's GEMM launch) with the weight at five offsets, and one with no vvram word,
//! against a table of 1000 extents (a FLUX-sized model). Target: ≤ 1 µs per buffer.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vvram_engine::{Entry, ExtentTable};

const BASE: u64 = 0x7f00_0000_0000;

fn table() -> ExtentTable {
    let table = ExtentTable::new(1 << 16);
    let mut extents: Vec<Entry> =
        (0..1000).map(|i| Entry { base: BASE + i * (64 << 20), len: 48 << 20, slot: i as u32, donor: true, moving: false }).collect();
    table.replace(&mut extents).unwrap();
    table
}

fn buffer(weight: Option<u64>) -> Vec<u8> {
    // Sizes, strides and flags as small integers; device pointers of other buffers just
    // outside the extents; the weight at five offsets.
    let mut words: Vec<u64> = (0..215).map(|i| if i % 3 == 0 { BASE - 4096 * (i + 1) } else { i * 17 }).collect();
    if let Some(weight) = weight {
        for i in [3, 40, 64, 125, 214] {
            words[i] = weight;
        }
    }
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

fn scan(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("scan 1720-byte extra buffer");
    for (name, bytes) in [("no vvram word", buffer(None)), ("weight at five offsets", buffer(Some(BASE + 500 * (64 << 20) + 4096)))] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = 0usize;
                table.scan(black_box(&bytes), |_, _| hits += 1);
                black_box(hits)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
