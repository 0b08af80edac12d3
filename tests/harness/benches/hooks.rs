//! The pass-through cost of a hooked driver call: `cuMemGetInfo_v2` straight from the
//! (fake) driver against the same call through libvvram.so's hook with no policy, and
//! `cuMemGetAddressRange_v2` for a pointer vvram does not own (a lookup, then the driver).

use criterion::{Criterion, criterion_group, criterion_main};

use std::hint::black_box;
use vvram_cuda::{CUresult, pfn};
use vvram_harness::fake::{fake_driver_dir, open_local, shim_library};

fn pass_through(c: &mut Criterion) {
    let fake_path = fake_driver_dir().join("libcuda.so.1");
    // SAFETY: set before any thread of ours reads the environment.
    unsafe { std::env::set_var("VVRAM_REAL_LIBCUDA", &fake_path) };
    let driver = open_local(&fake_path);
    let shim = open_local(&shim_library());
    let init: pfn::cuInit = driver.symbol("cuInit");
    let retain: pfn::cuDevicePrimaryCtxRetain = driver.symbol("cuDevicePrimaryCtxRetain");
    let set_current: pfn::cuCtxSetCurrent = driver.symbol("cuCtxSetCurrent");
    let mut context = std::ptr::null_mut();
    unsafe {
        assert_eq!(init(0), 0);
        assert_eq!(retain(&mut context, 0), 0);
        assert_eq!(set_current(context), 0);
    }
    let real_info: pfn::cuMemGetInfo_v2 = driver.symbol("cuMemGetInfo_v2");
    let hooked_info: pfn::cuMemGetInfo_v2 = shim.symbol("cuMemGetInfo_v2");
    let real_range: pfn::cuMemGetAddressRange_v2 = driver.symbol("cuMemGetAddressRange_v2");
    let hooked_range: pfn::cuMemGetAddressRange_v2 = shim.symbol("cuMemGetAddressRange_v2");
    let call_info = |f: pfn::cuMemGetInfo_v2| -> CUresult {
        let (mut free, mut total) = (0usize, 0usize);
        unsafe { f(&mut free, &mut total) }
    };
    assert_eq!(call_info(hooked_info), 0);
    let mut group = c.benchmark_group("cuMemGetInfo_v2");
    group.bench_function("driver", |b| b.iter(|| black_box(call_info(real_info))));
    group.bench_function("through the hook", |b| b.iter(|| black_box(call_info(hooked_info))));
    group.finish();
    let range = |f: pfn::cuMemGetAddressRange_v2| -> CUresult {
        let (mut base, mut size) = (0u64, 0usize);
        unsafe { f(&mut base, &mut size, black_box(0x1000)) }
    };
    let mut group = c.benchmark_group("cuMemGetAddressRange_v2 (not vvram's)");
    group.bench_function("driver", |b| b.iter(|| black_box(range(real_range))));
    group.bench_function("through the hook", |b| b.iter(|| black_box(range(hooked_range))));
    group.finish();
}

criterion_group!(benches, pass_through);
criterion_main!(benches);
