//! Scenarios for the migration engine (under libvvram.so with `[streaming]` on and a rule
//! that sends allocations made in phase `load` to the host): launches that read host-tier
//! weights get staged copies, results stay exact, and the engine's statistics say so.
//!
//! Proof of translation: a weight is staged by one launch, then its host memory is
//! overwritten with the CPU behind vvram's back (the probe's trick: the original changed,
//! the copy intact); a launch that still sees the old values read the staged copy.

use super::shim::Control;
use super::{Checked, Failure, Session, ensure};
use std::ffi::{CString, c_uint, c_void};
use vvram_cuda::kernels as ptx;
use vvram_cuda::*;
use vvram_harness::cu;

fn stream(s: &Session) -> Checked<CUstream> {
    let mut stream = std::ptr::null_mut();
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    Ok(stream)
}

fn alloc(s: &Session, bytes: usize) -> Checked<u64> {
    let mut p = 0;
    cu!(s.cuda, cuMemAlloc_v2(&mut p, bytes))?;
    Ok(p)
}

/// `n` floats of `value` on the host tier (allocated in phase `load`).
fn weight(s: &Session, control: &Control, n: usize, value: f32) -> Checked<u64> {
    control.phase(Some("load"))?;
    let w = alloc(s, n * 4)?;
    control.phase(None)?;
    s.write_f32(w, &vec![value; n])?;
    Ok(w)
}

fn sum(s: &Session, stream: CUstream, input: u64, out: u64, n: usize) -> Checked {
    s.launch("sum_f32", stream, &mut [&mut input.to_ne_bytes(), &mut out.to_ne_bytes(), &mut (n as u64).to_ne_bytes()], n)
}

fn synchronize(s: &Session) -> Checked {
    cu!(s.cuda, cuCtxSynchronize())?;
    Ok(())
}

/// Overwrites host-tier memory with the CPU, bypassing every hook.
fn scribble(address: u64, n: usize, value: f32) {
    // SAFETY: host-tier memory of `n` floats, which vvram makes CPU-accessible.
    unsafe { std::slice::from_raw_parts_mut(address as *mut f32, n).fill(value) };
}

fn engine_stat(control: &Control, field: &str) -> Checked<u64> {
    let stats = control.stats()?;
    stats["engine"][field].as_u64().ok_or_else(|| Failure(format!("no engine.{field} in the stats: {stats}")))
}

fn print_engine_stats(control: &Control) -> Checked {
    println!("stats: {}", control.stats()?);
    Ok(())
}

/// STEPS repetitions of one launch per weight, on a non-blocking stream, without a CPU wait
/// between steps; six weights cycle through a cache that holds four. Every result is exact.
pub fn steps(s: &Session, steps: usize) -> Checked {
    let control = Control::find()?;
    const N: usize = 256;
    const WEIGHTS: usize = 6;
    let weights: Vec<u64> = (0..WEIGHTS).map(|i| weight(s, &control, N, (i + 1) as f32)).collect::<Checked<_>>()?;
    let out = alloc(s, WEIGHTS * 4)?;
    s.write_f32(out, &[0.0; WEIGHTS])?;
    let stream = stream(s)?;
    for _ in 0..steps {
        for (i, &w) in weights.iter().enumerate() {
            sum(s, stream, w, out + i as u64 * 4, N)?;
        }
    }
    synchronize(s)?;
    let got = s.read_f32(out, WEIGHTS)?;
    let expected: Vec<f32> = (0..WEIGHTS).map(|i| (steps * N * (i + 1)) as f32).collect();
    ensure(got == expected, || format!("sums after {steps} steps: {got:?}, expected {expected:?}"))?;
    println!("ok: {steps} steps of {WEIGHTS} launches on streamed weights give exact sums");
    let (donor, translated, missed) = (engine_stat(&control, "donor_launches")?, engine_stat(&control, "translated_launches")?, engine_stat(&control, "missed_launches")?);
    ensure(donor == (steps * WEIGHTS) as u64 && translated == donor && missed == 0, || format!("launches: donor {donor}, translated {translated}, missed {missed}"))?;
    let stats = control.stats()?;
    ensure(stats["engine"]["locked"] == true && stats["engine"]["period"] == WEIGHTS as u64, || format!("the predictor did not lock on: {stats}"))?;
    println!("ok: every launch translated, the predictor locked on a period of {WEIGHTS}");
    print_engine_stats(&control)
}

/// Weights patched in place between two sampling runs (what a LoRA does: a kernel through
/// the translated pointer, a copy into it, a memset) give the same results as without
/// vvram, and a read of the weights sees the patches.
pub fn patch(s: &Session) -> Checked {
    let control = Control::find()?;
    const N: usize = 256;
    const WEIGHTS: usize = 6;
    let weights: Vec<u64> = (0..WEIGHTS).map(|i| weight(s, &control, N, (i + 1) as f32)).collect::<Checked<_>>()?;
    let out = alloc(s, WEIGHTS * 4)?;
    let stream = stream(s)?;
    let sample = |expected: &[f32]| -> Checked {
        s.write_f32(out, &[0.0; WEIGHTS])?;
        for _ in 0..3 {
            for (i, &w) in weights.iter().enumerate() {
                sum(s, stream, w, out + i as u64 * 4, N)?;
            }
        }
        synchronize(s)?;
        let got = s.read_f32(out, WEIGHTS)?;
        let want: Vec<f32> = expected.iter().map(|v| v * 3.0 * N as f32).collect();
        ensure(got == want, || format!("sampling gave {got:?}, expected {want:?}"))
    };
    let mut values: Vec<f32> = (1..=WEIGHTS).map(|v| v as f32).collect();
    sample(&values)?;
    for (i, &w) in weights.iter().enumerate() {
        match i % 3 {
            0 => {
                s.launch("scale_f32", stream, &mut [&mut w.to_ne_bytes(), &mut 2f32.to_ne_bytes(), &mut (N as u64).to_ne_bytes()], N)?;
                values[i] *= 2.0;
            }
            1 => {
                synchronize(s)?;
                s.write_f32(w, &vec![10.0; N])?;
                values[i] = 10.0;
            }
            _ => {
                cu!(s.cuda, cuMemsetD32Async(w, 0.5f32.to_bits() as c_uint, N, stream))?;
                values[i] = 0.5;
            }
        }
    }
    sample(&values)?;
    for (i, &w) in weights.iter().enumerate() {
        let back = s.read_f32(w, N)?;
        ensure(back.iter().all(|v| *v == values[i]), || format!("weight {i} reads back {} (expected {})", back[0], values[i]))?;
    }
    println!("ok: weights patched in place between two sampling runs read and compute as patched");
    print_engine_stats(&control)
}

/// A weight larger than the local cache is read where it lies, counted, and correct.
pub fn miss(s: &Session) -> Checked {
    let control = Control::find()?;
    let w = weight(s, &control, 1024, 0.0)?;
    let cache = engine_stat(&control, "cache_bytes")? as usize;
    let n = cache / 4 + 1024;
    let w_big = weight(s, &control, n, 1.0)?;
    cu!(s.cuda, cuMemFree_v2(w))?;
    let w = w_big;
    let out = alloc(s, 4)?;
    s.write_f32(out, &[0.0])?;
    sum(s, std::ptr::null_mut(), w, out, n)?;
    synchronize(s)?;
    let got = s.read_f32(out, 1)?[0];
    ensure(got == n as f32, || format!("a missed launch summed {got}, expected {n}"))?;
    let missed = engine_stat(&control, "missed_launches")?;
    ensure(missed == 1, || format!("missed launches: {missed}"))?;
    println!("ok: a weight larger than the cache is read in place, correctly, and counted");
    print_engine_stats(&control)
}

/// Stages a weight with one launch, overwrites the original behind vvram's back, then
/// checks that `launch` (reading the weight into `out`) still sees the staged values.
fn reads_the_copy(s: &Session, what: &str, launch: impl Fn(u64, u64, usize) -> Checked) -> Checked {
    let control = Control::find()?;
    const N: usize = 512;
    let w = weight(s, &control, N, 1.0)?;
    let out = alloc(s, N * 4)?;
    let translated = engine_stat(&control, "translated_launches")?;
    sum(s, std::ptr::null_mut(), w, out, N)?;
    synchronize(s)?;
    scribble(w, N, 7.0);
    s.write_f32(out, &vec![0.0; N])?;
    launch(w, out, N)?;
    synchronize(s)?;
    let got = s.read_f32(out, N)?;
    // Copies read 1.0 per element, sums 1.0 per element and pointer (`packed_sum` has five),
    // `tmap_sum` sums one box of half the weight.
    let sums = [N as f32, 5.0 * N as f32, (N / 2) as f32];
    ensure(got.iter().all(|v| *v == 1.0) || sums.contains(&got[0]), || format!("{what}: read {} (the original's values are 7)", got[0]))?;
    let now = engine_stat(&control, "translated_launches")?;
    ensure(now == translated + 2, || format!("{what}: {} launches translated, expected 2", now - translated))?;
    println!("ok: {what}: translated to the staged copy");
    print_engine_stats(&control)
}

/// A struct parameter with an embedded pointer is translated.
pub fn struct_param(s: &Session) -> Checked {
    reads_the_copy(s, "struct parameter", |w, out, n| {
        let mut args: Vec<u8> = [w, out, n as u64].iter().flat_map(|v| v.to_ne_bytes()).collect();
        s.launch("struct_copy", std::ptr::null_mut(), &mut [&mut args], n)
    })
}

/// A 1720-byte packed `extra` buffer (how cuBLAS launches its GEMMs) with the weight's
/// address at five offsets is translated at all five (`packed_sum` reads through each).
pub fn extra_buffer(s: &Session) -> Checked {
    let function = s.function("packed_sum");
    reads_the_copy(s, "1720-byte extra buffer, five offsets", |w, out, n| {
        let mut buffer = vec![0u8; 1720];
        for offset in [0, 200, 512, 1000, 1712] {
            buffer[offset..offset + 8].copy_from_slice(&w.to_ne_bytes());
        }
        buffer[8..16].copy_from_slice(&(n as u64).to_ne_bytes());
        buffer[16..24].copy_from_slice(&out.to_ne_bytes());
        let mut size = buffer.len();
        let mut extra = [
            CU_LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
            buffer.as_mut_ptr() as *mut c_void,
            CU_LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
            &mut size as *mut usize as *mut c_void,
            CU_LAUNCH_PARAM_END as *mut c_void,
        ];
        cu!(s.cuda, cuLaunchKernel(function, 2, 1, 1, 256, 1, 1, 0, std::ptr::null_mut(), std::ptr::null_mut(), extra.as_mut_ptr()))?;
        Ok(())
    })
}

/// `cuTensorMapEncodeTiled` with one argument changed from a valid rank-1 `f32` map of
/// `n` elements (box 256) at `address`.
fn encode(s: &Session, map: &mut CUtensorMap, address: u64, n: u64, change: impl FnOnce(&mut u32, &mut u64, &mut [u64; 1], &mut [u32; 1])) -> CUresult {
    let (mut rank, mut address, mut dims, mut boxes) = (1u32, address, [n], [256u32]);
    change(&mut rank, &mut address, &mut dims, &mut boxes);
    let (strides, element_strides) = ([0u64; 1], [1u32; 1]);
    // SAFETY: valid arrays of the rank's length.
    unsafe {
        match s.cuda.api.cuTensorMapEncodeTiled {
            Some(f) => f(
                map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, rank, address as *mut c_void, dims.as_ptr(), strides.as_ptr(), boxes.as_ptr(), element_strides.as_ptr(),
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            ),
            None => result::NOT_FOUND,
        }
    }
}

/// A tensor-map descriptor whose global address is a staged weight is re-encoded for the
/// copy (`tmap_sum` reads through the descriptor only; the fake's encoding keeps no plain
/// pointer, so rewriting words could not move it). Bad encoder arguments are refused
/// with `CUDA_ERROR_INVALID_VALUE`, as by the driver.
pub fn tensor_map(s: &Session) -> Checked {
    let mut module = std::ptr::null_mut();
    cu!(s.cuda, cuModuleLoadData(&mut module, ptx::TENSOR_MAP_MODULE.as_ptr() as *const c_void))?;
    let mut function = std::ptr::null_mut();
    let name = CString::new("tmap_sum").unwrap_or_default();
    cu!(s.cuda, cuModuleGetFunction(&mut function, module, name.as_ptr()))?;
    let mut map = CUtensorMap { opaque: [0; CU_TENSOR_MAP_NUM_QWORDS] };
    let buffer = alloc(s, 1024)?;
    let refusals: [(&str, CUresult); 5] = [
        ("rank 0", encode(s, &mut map, buffer, 256, |rank, _, _, _| *rank = 0)),
        ("rank 6", encode(s, &mut map, buffer, 256, |rank, _, _, _| *rank = 6)),
        ("address not 16-byte aligned", encode(s, &mut map, buffer + 4, 256, |_, _, _, _| ())),
        ("box of 257", encode(s, &mut map, buffer, 256, |_, _, _, boxes| boxes[0] = 257)),
        ("NULL address", encode(s, &mut map, 0, 256, |_, _, _, _| ())),
    ];
    for (what, code) in refusals {
        ensure(code == result::INVALID_VALUE, || format!("cuTensorMapEncodeTiled with {what} returned {code}, expected CUDA_ERROR_INVALID_VALUE"))?;
    }
    let null = unsafe {
        s.cuda.api.cuTensorMapEncodeTiled.map(|f| f(&mut map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 1, buffer as *mut c_void, std::ptr::null(), std::ptr::null(), std::ptr::null(), std::ptr::null(), 0, 0, 0, 0))
    };
    ensure(null == Some(result::INVALID_VALUE), || format!("cuTensorMapEncodeTiled with NULL arrays returned {null:?}"))?;
    println!("ok: cuTensorMapEncodeTiled refuses bad arguments with CUDA_ERROR_INVALID_VALUE");
    reads_the_copy(s, "tensor-map descriptor", |w, out, n| {
        let mut map = CUtensorMap { opaque: [0; CU_TENSOR_MAP_NUM_QWORDS] };
        cu!(s.cuda, cuTensorMapEncodeTiled(&mut map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 1, w as *mut c_void, [n as u64].as_ptr(), [0u64].as_ptr(), [256u32].as_ptr(), [1u32].as_ptr(), 0, 0, 0, 0))?;
        let (mut output, mut count) = (out, 256u32);
        let mut params = [&mut map as *mut CUtensorMap as *mut c_void, &mut output as *mut u64 as *mut c_void, &mut count as *mut u32 as *mut c_void];
        cu!(s.cuda, cuLaunchKernel(function, 1, 1, 1, 32, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()))?;
        Ok(())
    })
}

/// A `CUkernel` from a library (how libcudart launches) is translated: the shim asks
/// `cuKernelGetParamInfo` (through `cuGetProcAddress`) for its layout; after the library
/// is unloaded and loaded again, its kernels are still translated.
pub fn library_kernel(s: &Session) -> Checked {
    for round in ["CUkernel launch", "CUkernel launch after the library was reloaded"] {
        let mut library = std::ptr::null_mut();
        cu!(s.cuda, cuLibraryLoadData(&mut library, ptx::MODULE.as_ptr() as *const c_void, std::ptr::null_mut(), std::ptr::null_mut(), 0, std::ptr::null_mut(), std::ptr::null_mut(), 0))?;
        let mut kernel = std::ptr::null_mut();
        let name = CString::new("sum_f32").unwrap_or_default();
        cu!(s.cuda, cuLibraryGetKernel(&mut kernel, library, name.as_ptr()))?;
        reads_the_copy(s, round, |w, out, n| {
            let (mut input, mut output, mut count) = (w, out, n as u64);
            let mut params = [&mut input as *mut u64 as *mut c_void, &mut output as *mut u64 as *mut c_void, &mut count as *mut u64 as *mut c_void];
            cu!(s.cuda, cuLaunchKernel(kernel, 2, 1, 1, 256, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()))?;
            Ok(())
        })?;
        cu!(s.cuda, cuLibraryUnload(library))?;
    }
    Ok(())
}

/// A cooperative launch is translated.
pub fn cooperative(s: &Session) -> Checked {
    reads_the_copy(s, "cooperative launch", |w, out, n| {
        let (mut input, mut output, mut count) = (w, out, n as u64);
        let mut params = [&mut input as *mut u64 as *mut c_void, &mut output as *mut u64 as *mut c_void, &mut count as *mut u64 as *mut c_void];
        cu!(s.cuda, cuLaunchCooperativeKernel(s.function("sum_f32"), 2, 1, 1, 256, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr()))?;
        Ok(())
    })
}

/// A graph launch is not translated but stays correct: a kernel writes a weight through
/// the translated pointer, a captured graph then reads the weight (it sees the write,
/// written back first) and scales it, and a launch after the graph sees what the graph
/// wrote; the captured launches and the graph launch are counted.
pub fn graph(s: &Session) -> Checked {
    let control = Control::find()?;
    const N: usize = 256;
    let w = weight(s, &control, N, 1.0)?;
    let out = alloc(s, 4)?;
    s.write_f32(out, &[0.0])?;
    let scale = |stream: CUstream, factor: f32| s.launch("scale_f32", stream, &mut [&mut w.to_ne_bytes(), &mut factor.to_ne_bytes(), &mut (N as u64).to_ne_bytes()], N);
    scale(std::ptr::null_mut(), 3.0)?;
    synchronize(s)?;
    let captured = stream(s)?;
    cu!(s.cuda, cuStreamBeginCapture_v2(captured, CU_STREAM_CAPTURE_MODE_RELAXED))?;
    sum(s, captured, w, out, N)?;
    scale(captured, 2.0)?;
    let mut graph = std::ptr::null_mut();
    cu!(s.cuda, cuStreamEndCapture(captured, &mut graph))?;
    let mut exec = std::ptr::null_mut();
    cu!(s.cuda, cuGraphInstantiateWithFlags(&mut exec, graph, 0))?;
    cu!(s.cuda, cuGraphLaunch(exec, captured))?;
    cu!(s.cuda, cuStreamSynchronize(captured))?;
    let got = s.read_f32(out, 1)?[0];
    ensure(got == 3.0 * N as f32, || format!("the graph summed {got}, expected {} (the kernel's write through the staged copy)", 3 * N))?;
    s.write_f32(out, &[0.0])?;
    sum(s, std::ptr::null_mut(), w, out, N)?;
    synchronize(s)?;
    let got = s.read_f32(out, 1)?[0];
    ensure(got == 6.0 * N as f32, || format!("after the graph a launch summed {got}, expected {} (the graph's write)", 6 * N))?;
    cu!(s.cuda, cuGraphExecDestroy(exec))?;
    cu!(s.cuda, cuGraphDestroy(graph))?;
    let graphs = engine_stat(&control, "graph_launches")?;
    ensure(graphs == 1, || format!("graph launches counted: {graphs}"))?;
    println!("ok: a graph launch reads what translated kernels wrote, later launches see what it wrote, and it is counted");
    print_engine_stats(&control)
}

/// A launch from a second thread, on another stream, is translated.
pub fn second_thread(s: &Session) -> Checked {
    reads_the_copy(s, "launch from a second thread on its own stream", |w, out, n| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Checked {
                    let mut context = std::ptr::null_mut();
                    cu!(s.cuda, cuDevicePrimaryCtxRetain(&mut context, 0))?;
                    cu!(s.cuda, cuCtxSetCurrent(context))?;
                    let other = stream(s)?;
                    sum(s, other, w, out, n)?;
                    cu!(s.cuda, cuStreamSynchronize(other))?;
                    Ok(())
                })
                .join()
                .map_err(|_| Failure("the second thread panicked".into()))?
        })
    })
}
