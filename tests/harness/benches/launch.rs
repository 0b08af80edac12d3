//! The launch hook's cost with the migration engine running: `cuLaunchKernel` straight
//! from the (fake) driver against the same launch through libvvram.so, for a kernel whose
//! parameters hold no vvram pointer (target: at most 150 ns more), one that reads an
//! activation vvram placed on the card (found in the table, its use counted and the launch
//! announced in flight to the working set's mover: the common case under automatic
//! placement), and, for reference, a launch that reads a host-tier weight (scanned,
//! translated, staged).

use criterion::{Criterion, criterion_group, criterion_main};
use std::ffi::c_void;
use std::hint::black_box;
use vvram_cuda::{CUfunction, CUresult, kernels, pfn};
use vvram_harness::fake::{build_dir, fake_driver_dir, open_local, shim_library};

const POLICY: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n\
[[rule]]\nphase = \"load\"\ntiers = [\"host\"]\n[streaming]\nenabled = true\nlocal_cache = \"8MiB\"\n";

fn launches(c: &mut Criterion) {
    let fake_path = fake_driver_dir().join("libcuda.so.1");
    let policy = build_dir().join("bench-launch.toml");
    std::fs::write(&policy, POLICY).unwrap();
    // SAFETY: set before any thread of ours reads the environment.
    unsafe {
        std::env::set_var("VVRAM_REAL_LIBCUDA", &fake_path);
        std::env::set_var("VVRAM_POLICY", &policy);
    }
    let driver = open_local(&fake_path);
    let shim = open_local(&shim_library());
    let mut context = std::ptr::null_mut();
    let (mut module, mut function): (*mut c_void, CUfunction) = (std::ptr::null_mut(), std::ptr::null_mut());
    let (mut plain, mut weight, mut activation) = (0u64, 0u64, 0u64);
    unsafe {
        assert_eq!(driver.symbol::<pfn::cuInit>("cuInit")(0), 0);
        assert_eq!(driver.symbol::<pfn::cuDevicePrimaryCtxRetain>("cuDevicePrimaryCtxRetain")(&mut context, 0), 0);
        assert_eq!(driver.symbol::<pfn::cuCtxSetCurrent>("cuCtxSetCurrent")(context), 0);
        assert_eq!(driver.symbol::<pfn::cuModuleLoadData>("cuModuleLoadData")(&mut module, kernels::MODULE.as_ptr() as *const c_void), 0);
        assert_eq!(driver.symbol::<pfn::cuModuleGetFunction>("cuModuleGetFunction")(&mut function, module, c"sum_f32".as_ptr()), 0);
        assert_eq!(driver.symbol::<pfn::cuMemAlloc_v2>("cuMemAlloc_v2")(&mut plain, 1 << 20), 0);
        let set_phase: unsafe extern "C" fn(*const std::ffi::c_char) -> i32 = shim.symbol("vvram_set_phase");
        assert_eq!(set_phase(c"load".as_ptr()), 0);
        assert_eq!(shim.symbol::<pfn::cuMemAlloc_v2>("cuMemAlloc_v2")(&mut weight, 1 << 20), 0);
        assert_eq!(set_phase(std::ptr::null()), 0);
        assert_eq!(shim.symbol::<pfn::cuMemAlloc_v2>("cuMemAlloc_v2")(&mut activation, 2 << 20), 0);
    }
    let real: pfn::cuLaunchKernel = driver.symbol("cuLaunchKernel");
    let hooked: pfn::cuLaunchKernel = shim.symbol("cuLaunchKernel");
    let synchronize: pfn::cuCtxSynchronize = driver.symbol("cuCtxSynchronize");
    let launch = |f: pfn::cuLaunchKernel, input: u64| -> CUresult {
        let (mut input, mut out, mut n) = (input, plain, 0u64);
        let mut params = [&mut input as *mut u64 as *mut c_void, &mut out as *mut u64 as *mut c_void, &mut n as *mut u64 as *mut c_void];
        unsafe { f(function, 1, 1, 1, 32, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()) }
    };
    assert_eq!(launch(hooked, weight), 0);
    let mut group = c.benchmark_group("cuLaunchKernel, no vvram pointer");
    group.bench_function("driver", |b| b.iter(|| black_box(launch(real, plain + 4096))));
    unsafe { synchronize() };
    group.bench_function("through the hook, engine running", |b| b.iter(|| black_box(launch(hooked, plain + 4096))));
    unsafe { synchronize() };
    group.finish();
    let mut group = c.benchmark_group("cuLaunchKernel, activation on the card");
    group.bench_function("through the hook, use counted", |b| b.iter(|| black_box(launch(hooked, activation))));
    unsafe { synchronize() };
    group.finish();
    let mut group = c.benchmark_group("cuLaunchKernel, host-tier weight");
    group.bench_function("through the hook, translated", |b| b.iter(|| black_box(launch(hooked, weight))));
    unsafe { synchronize() };
    group.finish();
}

criterion_group!(benches, launches);
criterion_main!(benches);
