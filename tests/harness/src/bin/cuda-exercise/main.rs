//! `cuda-exercise [--door dlsym|procaddress|procaddress-ptds] SCENARIO [ARGS]`: drives the
//! CUDA driver API directly, as an application does, and checks what comes back. The
//! same binary runs on the fake driver (tests) and on a real GPU (tests/gpu).
//!
//! Prints `ok: ...` lines on stdout and exits 0 when the scenario's checks hold; prints
//! the failure on stderr and exits 1 otherwise.

use std::ffi::{CString, c_int, c_uint, c_void};
use std::time::Instant;
use vvram_cuda::*;
use vvram_cuda::kernels as ptx;
use vvram_harness::{CallError, Cuda, Door, cu};

mod engine;
mod shim;
mod working_set;

const MIB: usize = 1 << 20;

struct Session {
    cuda: Cuda,
    functions: Vec<(String, CUfunction)>,
}

// SAFETY: driver entry points, modules and functions may be used from any thread.
unsafe impl Sync for Session {}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        Failure(e.to_string())
    }
}

/// A failed check.
struct Failure(String);

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure(s)
    }
}

type Checked<T = ()> = Result<T, Failure>;

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Checked {
    if condition { Ok(()) } else { Err(Failure(message())) }
}

impl Session {
    fn open(door: Door, device: c_int) -> Checked<Session> {
        let cuda = Cuda::load(door)?;
        cu!(cuda, cuInit(0))?;
        let mut context = std::ptr::null_mut();
        cu!(cuda, cuDevicePrimaryCtxRetain(&mut context, device))?;
        cu!(cuda, cuCtxSetCurrent(context))?;
        let mut module = std::ptr::null_mut();
        cu!(cuda, cuModuleLoadData(&mut module, ptx::MODULE.as_ptr() as *const c_void))?;
        let mut functions = Vec::new();
        for name in ["fill_f32", "scale_f32", "sum_f32", "copy", "struct_copy", "weight_sum", "packed_sum"] {
            let mut function = std::ptr::null_mut();
            let cname = CString::new(name).unwrap();
            cu!(cuda, cuModuleGetFunction(&mut function, module, cname.as_ptr()))?;
            functions.push((name.to_string(), function));
        }
        Ok(Session { cuda, functions })
    }

    fn function(&self, name: &str) -> CUfunction {
        self.functions.iter().find(|(n, _)| n == name).map(|(_, f)| *f).unwrap_or(std::ptr::null_mut())
    }

    /// Launches a kernel with `kernelParams`: each argument's bytes.
    fn launch(&self, name: &str, stream: CUstream, args: &mut [&mut [u8]], elements: usize) -> Checked {
        let mut pointers: Vec<*mut c_void> = args.iter_mut().map(|a| a.as_mut_ptr() as *mut c_void).collect();
        let blocks = elements.div_ceil(256).clamp(1, 1024) as c_uint;
        cu!(self.cuda, cuLaunchKernel(self.function(name), blocks, 1, 1, 256, 1, 1, 0, stream, pointers.as_mut_ptr(), std::ptr::null_mut()))?;
        Ok(())
    }

    fn fill(&self, stream: CUstream, p: u64, value: f32, n: usize) -> Checked {
        self.launch("fill_f32", stream, &mut [&mut p.to_ne_bytes(), &mut value.to_ne_bytes(), &mut (n as u64).to_ne_bytes()], n)
    }

    fn read_f32(&self, p: u64, n: usize) -> Checked<Vec<f32>> {
        let mut host = vec![0f32; n];
        cu!(self.cuda, cuMemcpyDtoH_v2(host.as_mut_ptr() as *mut c_void, p, n * 4))?;
        Ok(host)
    }

    fn write_f32(&self, p: u64, data: &[f32]) -> Checked {
        cu!(self.cuda, cuMemcpyHtoD_v2(p, data.as_ptr() as *const c_void, data.len() * 4))?;
        Ok(())
    }

    fn device_count(&self) -> Checked<c_int> {
        let mut count = 0;
        cu!(self.cuda, cuDeviceGetCount(&mut count))?;
        Ok(count)
    }
}

fn prop_for(location_type: c_uint, id: c_int) -> CUmemAllocationProp {
    CUmemAllocationProp::pinned(CUmemLocation { type_: location_type, id })
}

fn devices(s: &Session) -> Checked {
    let count = s.device_count()?;
    for d in 0..count {
        let mut name = [0 as std::ffi::c_char; 128];
        cu!(s.cuda, cuDeviceGetName(name.as_mut_ptr(), 128, d))?;
        let mut total = 0usize;
        cu!(s.cuda, cuDeviceTotalMem_v2(&mut total, d))?;
        let mut peers = Vec::new();
        for p in 0..count {
            let mut can = 0;
            if p != d {
                cu!(s.cuda, cuDeviceCanAccessPeer(&mut can, d, p))?;
            }
            peers.push(can.to_string());
        }
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy();
        println!("device {d}: {name}, {} MiB, peers [{}]", total / MIB, peers.join(" "));
    }
    println!("ok: devices {count}");
    Ok(())
}

/// One virtual range of device, host and device chunks; kernels across the seams.
fn stitched(s: &Session) -> Checked {
    let mut granularity = 0usize;
    let device_prop = prop_for(CU_MEM_LOCATION_TYPE_DEVICE, 0);
    cu!(s.cuda, cuMemGetAllocationGranularity(&mut granularity, &device_prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM))?;
    let chunk = granularity;
    let size = 3 * chunk;
    let mut base = 0u64;
    cu!(s.cuda, cuMemAddressReserve(&mut base, size, 0, 0, 0))?;
    let places = [(CU_MEM_LOCATION_TYPE_DEVICE, 0), (CU_MEM_LOCATION_TYPE_HOST_NUMA, 0), (CU_MEM_LOCATION_TYPE_DEVICE, 0)];
    let mut handles = Vec::new();
    for (i, (kind, id)) in places.iter().enumerate() {
        let mut handle = 0;
        cu!(s.cuda, cuMemCreate(&mut handle, chunk, &prop_for(*kind, *id), 0))?;
        let at = base + (i * chunk) as u64;
        cu!(s.cuda, cuMemMap(at, chunk, 0, handle, 0))?;
        let mut access = vec![CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE }];
        if *kind == CU_MEM_LOCATION_TYPE_HOST_NUMA {
            access.push(CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE });
        }
        cu!(s.cuda, cuMemSetAccess(at, chunk, access.as_ptr(), access.len()))?;
        handles.push(handle);
    }
    let n = size / 4;
    s.fill(std::ptr::null_mut(), base, 1.5, n)?;
    s.launch("scale_f32", std::ptr::null_mut(), &mut [&mut base.to_ne_bytes(), &mut 2f32.to_ne_bytes(), &mut (n as u64).to_ne_bytes()], n)?;
    // A window straddling both seams.
    let window_start = base + (chunk - 4096) as u64;
    let window = chunk + 8192;
    let mut out = 0u64;
    cu!(s.cuda, cuMemAlloc_v2(&mut out, 4))?;
    cu!(s.cuda, cuMemsetD32_v2(out, 0, 1))?;
    s.launch("sum_f32", std::ptr::null_mut(), &mut [&mut window_start.to_ne_bytes(), &mut out.to_ne_bytes(), &mut ((window / 4) as u64).to_ne_bytes()], window / 4)?;
    let sum = s.read_f32(out, 1)?[0];
    ensure(sum == 3.0 * (window / 4) as f32, || format!("sum across the seams is {sum}, expected {}", 3.0 * (window / 4) as f32))?;
    let values = s.read_f32(base, n)?;
    let wrong = values.iter().position(|v| *v != 3.0);
    ensure(wrong.is_none(), || format!("element {wrong:?} of the stitched range is not 3.0"))?;
    // The CPU reads the host chunk through the same address.
    let host_view = unsafe { std::slice::from_raw_parts((base + chunk as u64) as *const f32, chunk / 4) };
    ensure(host_view.iter().all(|v| *v == 3.0), || "the CPU does not see the kernel's writes in the host chunk".into())?;
    cu!(s.cuda, cuMemFree_v2(out))?;
    cu!(s.cuda, cuCtxSynchronize())?;
    cu!(s.cuda, cuMemUnmap(base, size))
        .or_else(|_| (0..3).try_for_each(|i| cu!(s.cuda, cuMemUnmap(base + (i * chunk) as u64, chunk))))?;
    for handle in handles {
        cu!(s.cuda, cuMemRelease(handle))?;
    }
    cu!(s.cuda, cuMemAddressFree(base, size))?;
    println!("ok: stitched device|host|device range of {} MiB computes across seams", size / MIB);
    Ok(())
}

/// One physical allocation mapped at two addresses: writes through one show through the other.
fn alias(s: &Session) -> Checked {
    let chunk = 2 * MIB;
    let mut handle = 0;
    cu!(s.cuda, cuMemCreate(&mut handle, chunk, &prop_for(CU_MEM_LOCATION_TYPE_DEVICE, 0), 0))?;
    let mut views = [0u64; 2];
    for view in views.iter_mut() {
        cu!(s.cuda, cuMemAddressReserve(view, chunk, 0, 0, 0))?;
        cu!(s.cuda, cuMemMap(*view, chunk, 0, handle, 0))?;
        let access = CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        cu!(s.cuda, cuMemSetAccess(*view, chunk, &access, 1))?;
    }
    let data: Vec<f32> = (0..chunk / 4).map(|i| i as f32).collect();
    s.write_f32(views[0], &data)?;
    ensure(s.read_f32(views[1], data.len())? == data, || "the second mapping does not alias the first".into())?;
    // Releasing the handle keeps the memory while it is mapped.
    cu!(s.cuda, cuMemRelease(handle))?;
    ensure(s.read_f32(views[1], 4)? == data[..4], || "memory vanished while still mapped".into())?;
    for view in views {
        cu!(s.cuda, cuMemUnmap(view, chunk))?;
        cu!(s.cuda, cuMemAddressFree(view, chunk))?;
    }
    println!("ok: two mappings of one allocation alias");
    Ok(())
}

/// A kernel writes a reserved but unmapped range: a GPU faults (700), the fake dies of SIGSEGV.
fn unmapped(s: &Session) -> Checked {
    let mut base = 0u64;
    cu!(s.cuda, cuMemAddressReserve(&mut base, 2 * MIB, 0, 0, 0))?;
    s.fill(std::ptr::null_mut(), base, 1.0, 1024)?;
    let code = s.cuda.api.cuCtxSynchronize.map_or(result::NOT_FOUND, |f| unsafe { f() });
    ensure(code == result::ILLEGAL_ADDRESS, || format!("writing an unmapped range gave {code}, expected a fault"))?;
    println!("ok: unmapped access faulted with CUDA_ERROR_ILLEGAL_ADDRESS");
    Ok(())
}

/// Stream and event order under a kernel delay.
fn order(s: &Session) -> Checked {
    let n = 1 << 16;
    let (mut a, mut b) = (std::ptr::null_mut(), std::ptr::null_mut());
    cu!(s.cuda, cuStreamCreate(&mut a, CU_STREAM_NON_BLOCKING))?;
    cu!(s.cuda, cuStreamCreate(&mut b, CU_STREAM_NON_BLOCKING))?;
    let (mut src, mut dst) = (0u64, 0u64);
    cu!(s.cuda, cuMemAlloc_v2(&mut src, n * 4))?;
    cu!(s.cuda, cuMemAlloc_v2(&mut dst, n * 4))?;
    let (mut start, mut done) = (std::ptr::null_mut(), std::ptr::null_mut());
    cu!(s.cuda, cuEventCreate(&mut start, 0))?;
    cu!(s.cuda, cuEventCreate(&mut done, 0))?;
    let mut results = Vec::new();
    for round in 0..20 {
        let value = round as f32;
        cu!(s.cuda, cuEventRecord(start, a))?;
        s.fill(a, src, value + 100.0, n)?;
        s.fill(a, src, value, n)?;
        cu!(s.cuda, cuEventRecord(done, a))?;
        cu!(s.cuda, cuStreamWaitEvent(b, done, 0))?;
        s.launch("copy", b, &mut [&mut dst.to_ne_bytes(), &mut src.to_ne_bytes(), &mut ((n * 4) as u64).to_ne_bytes()], n * 4)?;
        cu!(s.cuda, cuStreamSynchronize(b))?;
        results.push(s.read_f32(dst, n)?.iter().all(|v| *v == value));
    }
    ensure(results.iter().all(|ok| *ok), || format!("stream b did not wait for stream a: {results:?}"))?;
    let mut ms = 0f32;
    cu!(s.cuda, cuEventElapsedTime(&mut ms, start, done))?;
    let query = s.cuda.api.cuEventQuery.map_or(result::NOT_FOUND, |f| unsafe { f(done) });
    ensure(query == result::SUCCESS, || format!("event query after sync gave {query}"))?;
    for p in [src, dst] {
        cu!(s.cuda, cuMemFree_v2(p))?;
    }
    cu!(s.cuda, cuStreamDestroy_v2(a))?;
    cu!(s.cuda, cuStreamDestroy_v2(b))?;
    println!("ok: 20 rounds ordered by events; last two kernels took {ms:.3} ms");
    Ok(())
}

/// Allocates in 64 MiB steps until out of memory; frees everything; memory comes back.
fn oom(s: &Session) -> Checked {
    let (mut free0, mut total) = (0usize, 0usize);
    cu!(s.cuda, cuMemGetInfo_v2(&mut free0, &mut total))?;
    let step = 64 * MIB;
    let mut pointers = Vec::new();
    let code = loop {
        let mut p = 0u64;
        let code = s.cuda.api.cuMemAlloc_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, step) });
        if code != result::SUCCESS {
            break code;
        }
        pointers.push(p);
    };
    ensure(code == result::OUT_OF_MEMORY, || format!("allocation ended with {code}, expected CUDA_ERROR_OUT_OF_MEMORY"))?;
    let got = pointers.len() * step;
    ensure(got + step > free0, || format!("only {} MiB of {} MiB free could be allocated", got / MIB, free0 / MIB))?;
    let mut free1 = 0usize;
    cu!(s.cuda, cuMemGetInfo_v2(&mut free1, &mut total))?;
    for p in &pointers {
        cu!(s.cuda, cuMemFree_v2(*p))?;
    }
    let mut free2 = 0usize;
    cu!(s.cuda, cuMemGetInfo_v2(&mut free2, &mut total))?;
    ensure(free2 == free0, || format!("free memory {} MiB after freeing, {} MiB before", free2 / MIB, free0 / MIB))?;
    println!("ok: out of memory after {} MiB of {} MiB free (then {} MiB free); all returned", got / MIB, free0 / MIB, free1 / MIB);
    Ok(())
}

/// Parameters passed as kernelParams, as a packed `extra` buffer, through cuLaunchKernelEx,
/// and as a struct with embedded pointers; parameter layouts for functions and CUkernels.
fn params(s: &Session) -> Checked {
    let n = 4096usize;
    let (mut a, mut b) = (0u64, 0u64);
    cu!(s.cuda, cuMemAlloc_v2(&mut a, n * 4))?;
    cu!(s.cuda, cuMemAlloc_v2(&mut b, n * 4))?;
    s.fill(std::ptr::null_mut(), a, 7.0, n)?;
    // Packed buffer, the way cuBLAS launches.
    let mut packed = [0u8; 24];
    packed[0..8].copy_from_slice(&a.to_ne_bytes());
    packed[8..12].copy_from_slice(&3f32.to_ne_bytes());
    packed[16..24].copy_from_slice(&(n as u64).to_ne_bytes());
    let mut size = packed.len();
    let mut extra = [
        CU_LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
        packed.as_mut_ptr() as *mut c_void,
        CU_LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
        &mut size as *mut usize as *mut c_void,
        CU_LAUNCH_PARAM_END as *mut c_void,
    ];
    cu!(s.cuda, cuLaunchKernel(s.function("scale_f32"), 16, 1, 1, 256, 1, 1, 0, std::ptr::null_mut(), std::ptr::null_mut(), extra.as_mut_ptr()))?;
    // The struct kernel through cuLaunchKernelEx.
    let mut args = [0u8; 24];
    args[0..8].copy_from_slice(&a.to_ne_bytes());
    args[8..16].copy_from_slice(&b.to_ne_bytes());
    args[16..24].copy_from_slice(&(n as u64).to_ne_bytes());
    let mut params = [args.as_mut_ptr() as *mut c_void];
    let config = CUlaunchConfig { gridDimX: 16, gridDimY: 1, gridDimZ: 1, blockDimX: 256, blockDimY: 1, blockDimZ: 1, sharedMemBytes: 0, hStream: std::ptr::null_mut(), attrs: std::ptr::null_mut(), numAttrs: 0 };
    cu!(s.cuda, cuLaunchKernelEx(&config, s.function("struct_copy"), params.as_mut_ptr(), std::ptr::null_mut()))?;
    ensure(s.read_f32(b, n)?.iter().all(|v| *v == 21.0), || "extra-buffer or struct launch computed the wrong values".into())?;

    let (mut offset, mut size) = (0usize, 0usize);
    cu!(s.cuda, cuFuncGetParamInfo(s.function("fill_f32"), 1, &mut offset, &mut size))?;
    ensure((offset, size) == (8, 4), || format!("fill_f32 parameter 1 at {offset}+{size}, expected 8+4"))?;
    let mut library = std::ptr::null_mut();
    cu!(s.cuda, cuLibraryLoadData(&mut library, ptx::MODULE.as_ptr() as *const c_void, std::ptr::null_mut(), std::ptr::null_mut(), 0, std::ptr::null_mut(), std::ptr::null_mut(), 0))?;
    let mut kernel = std::ptr::null_mut();
    cu!(s.cuda, cuLibraryGetKernel(&mut kernel, library, c"struct_copy".as_ptr()))?;
    let refused = s.cuda.api.cuFuncGetParamInfo.map_or(0, |f| unsafe { f(kernel, 0, &mut offset, &mut size) });
    ensure(refused == result::INVALID_HANDLE, || format!("cuFuncGetParamInfo on a CUkernel gave {refused}, expected 400"))?;
    let by_dlsym = unsafe { libc::dlsym(s.cuda.handle, c"cuKernelGetParamInfo".as_ptr()) };
    ensure(by_dlsym.is_null(), || "cuKernelGetParamInfo should not be exported".into())?;
    let get = s.cuda.api.cuGetProcAddress_v2.ok_or_else(|| "no cuGetProcAddress_v2".to_string())?;
    let mut address = std::ptr::null_mut();
    let mut status = 0;
    vvram_harness::check(unsafe { get(c"cuKernelGetParamInfo".as_ptr(), &mut address, 12040, 0, &mut status) }, "cuGetProcAddress_v2(cuKernelGetParamInfo)")?;
    let info: vvram_cuda::pfn::cuKernelGetParamInfo = unsafe { std::mem::transmute(address) };
    vvram_harness::check(unsafe { info(kernel, 0, &mut offset, &mut size) }, "cuKernelGetParamInfo")?;
    ensure((offset, size) == (0, 24), || format!("struct_copy parameter 0 at {offset}+{size}, expected 0+24"))?;
    // A CUkernel launches through cuLaunchKernel like a function.
    let mut params = [args.as_mut_ptr() as *mut c_void];
    cu!(s.cuda, cuMemsetD32_v2(b, 0, n))?;
    cu!(s.cuda, cuLaunchKernel(kernel, 16, 1, 1, 256, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()))?;
    ensure(s.read_f32(b, n)?.iter().all(|v| *v == 21.0), || "CUkernel launch computed the wrong values".into())?;
    for p in [a, b] {
        cu!(s.cuda, cuMemFree_v2(p))?;
    }
    println!("ok: kernelParams, extra buffer, cuLaunchKernelEx, struct parameter, param info");
    Ok(())
}

/// Contexts are separate: `cuCtxSynchronize` waits for the current context's work only;
/// the CUDA 13 variants from `cuGetProcAddress` take a context. Needs two devices and a
/// kernel slower than the calls between (FAKECUDA_KERNEL_US on the fake driver).
fn contexts(s: &Session) -> Checked {
    ensure(s.device_count()? >= 2, || "the contexts scenario needs two devices".into())?;
    let (mut here, mut there) = (std::ptr::null_mut(), std::ptr::null_mut());
    cu!(s.cuda, cuCtxGetCurrent(&mut here))?;
    cu!(s.cuda, cuDevicePrimaryCtxRetain(&mut there, 1))?;
    cu!(s.cuda, cuCtxSetCurrent(there))?;
    let (mut stream, mut buffer) = (std::ptr::null_mut(), 0u64);
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    cu!(s.cuda, cuMemAlloc_v2(&mut buffer, 4 * MIB))?;
    s.fill(stream, buffer, 1.0, MIB)?;
    cu!(s.cuda, cuCtxSetCurrent(here))?;
    cu!(s.cuda, cuCtxSynchronize())?;
    let busy = s.cuda.api.cuStreamQuery.map_or(result::NOT_FOUND, |f| unsafe { f(stream) });
    ensure(busy == result::NOT_READY, || format!("cuCtxSynchronize in device 0's context waited for device 1's stream (query {busy})"))?;
    let get = s.cuda.api.cuGetProcAddress_v2.ok_or_else(|| "no cuGetProcAddress_v2".to_string())?;
    let (mut old, mut new, mut status) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
    vvram_harness::check(unsafe { get(c"cuCtxSynchronize".as_ptr(), &mut old, 12000, 0, &mut status) }, "cuGetProcAddress_v2(cuCtxSynchronize, 12000)")?;
    vvram_harness::check(unsafe { get(c"cuCtxSynchronize".as_ptr(), &mut new, 13000, 0, &mut status) }, "cuGetProcAddress_v2(cuCtxSynchronize, 13000)")?;
    ensure(old != new, || "cuCtxSynchronize at 12000 and 13000 are the same entry point".into())?;
    let exported = unsafe { libc::dlsym(s.cuda.handle, c"cuCtxSynchronize_v2".as_ptr()) };
    ensure(new == exported, || "cuCtxSynchronize at 13000 is not cuCtxSynchronize_v2".into())?;
    // SAFETY: the CUDA 13 signature, CUresult cuCtxSynchronize_v2(CUcontext).
    let synchronize: unsafe extern "C" fn(CUcontext) -> CUresult = unsafe { std::mem::transmute(new) };
    vvram_harness::check(unsafe { synchronize(there) }, "cuCtxSynchronize_v2(device 1)")?;
    let idle = s.cuda.api.cuStreamQuery.map_or(result::NOT_FOUND, |f| unsafe { f(stream) });
    ensure(idle == result::SUCCESS, || format!("after cuCtxSynchronize_v2 of device 1 its stream is not idle ({idle})"))?;
    let mut get_device = std::ptr::null_mut();
    vvram_harness::check(unsafe { get(c"cuCtxGetDevice".as_ptr(), &mut get_device, 13000, 0, &mut status) }, "cuGetProcAddress_v2(cuCtxGetDevice, 13000)")?;
    // SAFETY: the CUDA 13 signature, CUresult cuCtxGetDevice_v2(CUdevice *, CUcontext).
    let get_device: unsafe extern "C" fn(*mut CUdevice, CUcontext) -> CUresult = unsafe { std::mem::transmute(get_device) };
    let mut device = -1;
    vvram_harness::check(unsafe { get_device(&mut device, there) }, "cuCtxGetDevice_v2")?;
    ensure(device == 1, || format!("cuCtxGetDevice_v2 of device 1's context gave {device}"))?;
    cu!(s.cuda, cuCtxSetCurrent(there))?;
    cu!(s.cuda, cuMemFree_v2(buffer))?;
    cu!(s.cuda, cuStreamDestroy_v2(stream))?;
    cu!(s.cuda, cuCtxSetCurrent(here))?;
    println!("ok: cuCtxSynchronize waits for its own context only; CUDA 13 variants take a context");
    Ok(())
}

/// A raw call's result code, for checks that expect an error.
macro_rules! code {
    ($s:expr, $name:ident ( $($arg:expr),* $(,)? )) => {
        $s.cuda.api.$name.map_or(result::NOT_FOUND, |f| unsafe { f($($arg),*) })
    };
}

fn expect(what: &str, code: CUresult, wanted: CUresult) -> Checked {
    ensure(code == wanted, || format!("{what} gave {code}, the driver gives {wanted}"))
}

fn access(type_: c_uint, id: c_int) -> CUmemAccessDesc {
    CUmemAccessDesc { location: CUmemLocation { type_, id }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE }
}

/// A granularity-sized mapping of memory at a location, reserved and mapped (no access yet).
fn mapped(s: &Session, type_: c_uint, id: c_int) -> Checked<(u64, usize, u64)> {
    let prop = prop_for(type_, id);
    let mut granularity = 0usize;
    cu!(s.cuda, cuMemGetAllocationGranularity(&mut granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM))?;
    let (mut handle, mut base) = (0, 0u64);
    cu!(s.cuda, cuMemCreate(&mut handle, granularity, &prop, 0))?;
    cu!(s.cuda, cuMemAddressReserve(&mut base, granularity, 0, 0, 0))?;
    cu!(s.cuda, cuMemMap(base, granularity, 0, handle, 0))?;
    Ok((base, granularity, handle))
}

/// What the driver refuses, the fake refuses: location types, ids, flags and handle types
/// in cuMemCreate; host access to device memory and peer access without a peer link in
/// cuMemSetAccess; what pointer queries say of host-located VMM memory.
fn refusals(s: &Session) -> Checked {
    let mut handle = 0;
    let mut granularity = 0usize;
    let host_numa = prop_for(CU_MEM_LOCATION_TYPE_HOST_NUMA, 0);
    expect("cuMemCreate(HOST_NUMA_CURRENT)", code!(s, cuMemCreate(&mut handle, 2 * MIB, &prop_for(CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT, 0), 0)), result::INVALID_VALUE)?;
    expect("cuMemCreate(HOST_NUMA node 7)", code!(s, cuMemCreate(&mut handle, 2 * MIB, &prop_for(CU_MEM_LOCATION_TYPE_HOST_NUMA, 7), 0)), result::INVALID_VALUE)?;
    expect("cuMemCreate(device -1)", code!(s, cuMemCreate(&mut handle, 2 * MIB, &prop_for(CU_MEM_LOCATION_TYPE_DEVICE, -1), 0)), result::INVALID_DEVICE)?;
    expect("cuMemCreate(flags 1)", code!(s, cuMemCreate(&mut handle, 2 * MIB, &host_numa, 1)), result::INVALID_VALUE)?;
    let mut win32 = host_numa;
    win32.requestedHandleTypes = 0x2;
    expect("cuMemCreate(WIN32 handle on Linux)", code!(s, cuMemCreate(&mut handle, 2 * MIB, &win32, 0)), result::INVALID_VALUE)?;
    let mut shared_host = prop_for(CU_MEM_LOCATION_TYPE_HOST, 0);
    shared_host.requestedHandleTypes = 0x1;
    expect("cuMemCreate(HOST with a POSIX fd handle)", code!(s, cuMemCreate(&mut handle, 2 * MIB, &shared_host, 0)), result::INVALID_VALUE)?;
    expect("cuMemGetAllocationGranularity(HOST_NUMA_CURRENT)", code!(s, cuMemGetAllocationGranularity(&mut granularity, &prop_for(CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT, 0), 0)), result::INVALID_VALUE)?;

    let (device_base, size, device_handle) = mapped(s, CU_MEM_LOCATION_TYPE_DEVICE, 0)?;
    let cpu = [access(CU_MEM_LOCATION_TYPE_HOST_NUMA, 0)];
    expect("host access to device memory", code!(s, cuMemSetAccess(device_base, size, cpu.as_ptr(), 1)), result::INVALID_VALUE)?;
    expect("access for device -1", code!(s, cuMemSetAccess(device_base, size, &access(CU_MEM_LOCATION_TYPE_DEVICE, -1), 1)), result::INVALID_DEVICE)?;
    expect("access for HOST_NUMA_CURRENT", code!(s, cuMemSetAccess(device_base, size, &access(CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT, 0), 1)), result::INVALID_VALUE)?;
    if s.device_count()? >= 2 {
        let mut can = 0;
        cu!(s.cuda, cuDeviceCanAccessPeer(&mut can, 1, 0))?;
        let peer = code!(s, cuMemSetAccess(device_base, size, &access(CU_MEM_LOCATION_TYPE_DEVICE, 1), 1));
        expect("peer access from device 1", peer, if can == 1 { result::SUCCESS } else { result::INVALID_DEVICE })?;
    }
    let (host_base, _, host_handle) = mapped(s, CU_MEM_LOCATION_TYPE_HOST_NUMA, 0)?;
    let mut kind: c_uint = 0;
    cu!(s.cuda, cuPointerGetAttribute(&mut kind as *mut c_uint as *mut c_void, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, host_base))?;
    expect("MEMORY_TYPE of host-located VMM memory", kind, CU_MEMORYTYPE_HOST)?;
    cu!(s.cuda, cuPointerGetAttribute(&mut kind as *mut c_uint as *mut c_void, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, device_base))?;
    expect("MEMORY_TYPE of device-located VMM memory", kind, CU_MEMORYTYPE_DEVICE)?;
    cu!(s.cuda, cuMemSetAccess(host_base, size, cpu.as_ptr(), 1))?;
    for (base, handle) in [(device_base, device_handle), (host_base, host_handle)] {
        cu!(s.cuda, cuMemUnmap(base, size))?;
        cu!(s.cuda, cuMemRelease(handle))?;
        cu!(s.cuda, cuMemAddressFree(base, size))?;
    }
    println!("ok: cuMemCreate and cuMemSetAccess refuse what the driver refuses; host VMM memory is HOST");
    Ok(())
}

/// The CPU touches memory it may not: `device` (cuMemAlloc), `vmm-device` (a device-located
/// mapping with device access), `vmm-host` (a host-located mapping before host access).
/// On a GPU each is a segmentation fault; so on the fake driver.
fn cpu_touch(s: &Session, what: &str) -> Checked {
    let address = match what {
        "device" => {
            let mut p = 0u64;
            cu!(s.cuda, cuMemAlloc_v2(&mut p, MIB))?;
            p
        }
        "vmm-device" | "vmm-host" => {
            let type_ = if what == "vmm-device" { CU_MEM_LOCATION_TYPE_DEVICE } else { CU_MEM_LOCATION_TYPE_HOST_NUMA };
            let (base, size, _) = mapped(s, type_, 0)?;
            cu!(s.cuda, cuMemSetAccess(base, size, &access(CU_MEM_LOCATION_TYPE_DEVICE, 0), 1))?;
            base
        }
        other => return Err(Failure(format!("cpu-touch `{other}`: expected device, vmm-device or vmm-host"))),
    };
    println!("touching {what} memory at {address:#x} with the CPU");
    // SAFETY: none: the point is that this faults.
    let value = unsafe { (address as *const u32).read_volatile() };
    Err(Failure(format!("the CPU read {value} from {what} memory without a fault")))
}

/// Stream capture with the driver's rules: what breaks a capture, what a captured event
/// refuses, and captured work running only when (and each time) the graph is launched.
fn capture_rules(s: &Session) -> Checked {
    let (mut stream, mut blocking) = (std::ptr::null_mut(), std::ptr::null_mut());
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    cu!(s.cuda, cuStreamCreate(&mut blocking, 0))?;
    let mut graph = std::ptr::null_mut();
    let end = |on: CUstream, graph: &mut CUgraph| code!(s, cuStreamEndCapture(on, graph));
    cu!(s.cuda, cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL))?;
    let mut status = 0;
    cu!(s.cuda, cuStreamIsCapturing(stream, &mut status))?;
    expect("cuStreamIsCapturing of a capturing stream", status, CU_STREAM_CAPTURE_STATUS_ACTIVE)?;
    expect("cuStreamSynchronize of a capturing stream", code!(s, cuStreamSynchronize(stream)), result::STREAM_CAPTURE_UNSUPPORTED)?;
    expect("ending a capture a synchronisation broke", end(stream, &mut graph), result::STREAM_CAPTURE_INVALIDATED)?;
    cu!(s.cuda, cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL))?;
    expect("cuCtxSynchronize during a global capture", code!(s, cuCtxSynchronize()), result::STREAM_CAPTURE_UNSUPPORTED)?;
    expect("ending a capture cuCtxSynchronize broke", end(stream, &mut graph), result::STREAM_CAPTURE_INVALIDATED)?;
    cu!(s.cuda, cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_RELAXED))?;
    cu!(s.cuda, cuCtxSynchronize())?;
    expect("ending a relaxed capture", end(stream, &mut graph), result::SUCCESS)?;
    cu!(s.cuda, cuGraphDestroy(graph))?;
    let mut event = std::ptr::null_mut();
    cu!(s.cuda, cuEventCreate(&mut event, 0))?;
    cu!(s.cuda, cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL))?;
    cu!(s.cuda, cuEventRecord(event, stream))?;
    expect("cuEventQuery of an event recorded in a capture", code!(s, cuEventQuery(event)), result::CAPTURED_EVENT)?;
    expect("ending a capture with an event", end(stream, &mut graph), result::SUCCESS)?;
    cu!(s.cuda, cuGraphDestroy(graph))?;
    let n = MIB;
    let mut p = 0u64;
    cu!(s.cuda, cuMemAlloc_v2(&mut p, n * 4))?;
    cu!(s.cuda, cuStreamBeginCapture_v2(blocking, CU_STREAM_CAPTURE_MODE_GLOBAL))?;
    let data = vec![1f32; n];
    expect("a synchronous copy while a blocking stream captures", code!(s, cuMemcpyHtoD_v2(p, data.as_ptr() as *const c_void, n * 4)), result::STREAM_CAPTURE_IMPLICIT)?;
    expect("ending the blocking stream's capture", end(blocking, &mut graph), result::STREAM_CAPTURE_INVALIDATED)?;
    cu!(s.cuda, cuMemsetD32_v2(p, 0, n))?;
    cu!(s.cuda, cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL))?;
    s.fill(stream, p, 3.0, n)?;
    expect("ending a capture of a kernel", end(stream, &mut graph), result::SUCCESS)?;
    ensure(s.read_f32(p, n)?.iter().all(|v| *v == 0.0), || "captured work ran before the graph was launched".into())?;
    let mut executable = std::ptr::null_mut();
    cu!(s.cuda, cuGraphInstantiateWithFlags(&mut executable, graph, 0))?;
    for launch in 0..2 {
        cu!(s.cuda, cuGraphLaunch(executable, stream))?;
        cu!(s.cuda, cuStreamSynchronize(stream))?;
        ensure(s.read_f32(p, n)?.iter().all(|v| *v == 3.0), || format!("graph launch {launch} did not run the captured kernel"))?;
        cu!(s.cuda, cuMemsetD32_v2(p, 0, n))?;
    }
    cu!(s.cuda, cuGraphExecDestroy(executable))?;
    cu!(s.cuda, cuGraphDestroy(graph))?;
    cu!(s.cuda, cuMemFree_v2(p))?;
    println!("ok: stream capture follows the driver's rules and graphs replay the captured work");
    Ok(())
}

/// A kernel on GPU 1 writes GPU 0's memory that only GPU 0 was given access to: a GPU
/// faults (700), the fake dies of SIGSEGV.
fn kernel_without_access(s: &Session) -> Checked {
    ensure(s.device_count()? >= 2, || "kernel-without-access needs two devices".into())?;
    let (base, size, _) = mapped(s, CU_MEM_LOCATION_TYPE_DEVICE, 0)?;
    cu!(s.cuda, cuMemSetAccess(base, size, &access(CU_MEM_LOCATION_TYPE_DEVICE, 0), 1))?;
    let mut there = std::ptr::null_mut();
    cu!(s.cuda, cuDevicePrimaryCtxRetain(&mut there, 1))?;
    cu!(s.cuda, cuCtxSetCurrent(there))?;
    println!("a kernel on device 1 writes memory only device 0 may access");
    s.fill(std::ptr::null_mut(), base, 1.0, size / 4)?;
    let code = code!(s, cuCtxSynchronize());
    ensure(code == result::ILLEGAL_ADDRESS, || format!("the kernel ran without access (synchronize gave {code})"))?;
    println!("ok: the kernel without access faulted with CUDA_ERROR_ILLEGAL_ADDRESS");
    Ok(())
}

/// Host-located `cuMemCreate` costs what pinning costs (FAKECUDA_PIN_GBPS on the fake).
fn pin_cost(s: &Session) -> Checked {
    let size = 64 * MIB;
    let started = Instant::now();
    let mut handle = 0;
    cu!(s.cuda, cuMemCreate(&mut handle, size, &prop_for(CU_MEM_LOCATION_TYPE_HOST_NUMA, 0), 0))?;
    let took = started.elapsed();
    cu!(s.cuda, cuMemRelease(handle))?;
    println!("pinned {} MiB in {:.1} ms", size / MIB, took.as_secs_f64() * 1000.0);
    Ok(())
}

/// Calls cuMemCreate N times and prints each result (for fault injection tests).
fn create_calls(s: &Session, count: usize) -> Checked {
    let mut codes = Vec::new();
    for _ in 0..count {
        let mut handle = 0;
        let code = s.cuda.api.cuMemCreate.map_or(result::NOT_FOUND, |f| unsafe { f(&mut handle, 2 * MIB, &prop_for(CU_MEM_LOCATION_TYPE_DEVICE, 0), 0) });
        if code == result::SUCCESS {
            cu!(s.cuda, cuMemRelease(handle))?;
        }
        codes.push(code.to_string());
    }
    println!("cuMemCreate results: {}", codes.join(" "));
    Ok(())
}

fn run(args: &[String]) -> Checked {
    let mut args = args.to_vec();
    let mut door = Door::Dlsym;
    if let Some(i) = args.iter().position(|a| a == "--door") {
        door = args.get(i + 1).ok_or_else(|| "--door needs a value".to_string())?.parse()?;
        args.drain(i..i + 2);
    }
    let scenario = args.first().cloned().unwrap_or_default();
    let started = Instant::now();
    let s = Session::open(door, 0)?;
    match scenario.as_str() {
        "devices" => devices(&s)?,
        "stitched" => stitched(&s)?,
        "alias" => alias(&s)?,
        "unmapped" => unmapped(&s)?,
        "order" => order(&s)?,
        "oom" => oom(&s)?,
        "params" => params(&s)?,
        "contexts" => contexts(&s)?,
        "refusals" => refusals(&s)?,
        "cpu-touch" => cpu_touch(&s, args.get(1).map_or("", String::as_str))?,
        "pin-cost" => pin_cost(&s)?,
        "capture-rules" => capture_rules(&s)?,
        "kernel-without-access" => kernel_without_access(&s)?,
        "spread" => shim::spread(&s)?,
        "threads" => shim::threads(&s)?,
        "h2d" => shim::h2d(&s)?,
        "app-vmm" => shim::app_vmm(&s)?,
        "control" => shim::control(&s)?,
        "free-elsewhere" => shim::free_elsewhere(&s)?,
        "alloc-latency" => shim::alloc_latency(&s)?,
        "pools" => shim::pools(&s)?,
        "capture" => shim::capture(&s)?,
        "engine-steps" => engine::steps(&s, args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100))?,
        "engine-patch" => engine::patch(&s)?,
        "engine-miss" => engine::miss(&s)?,
        "engine-struct" => engine::struct_param(&s)?,
        "engine-kernel" => engine::library_kernel(&s)?,
        "engine-extra" => engine::extra_buffer(&s)?,
        "engine-cooperative" => engine::cooperative(&s)?,
        "engine-graph" => engine::graph(&s)?,
        "engine-thread" => engine::second_thread(&s)?,
        "engine-tmap" => engine::tensor_map(&s)?,
        "working-set" => working_set::run(&s, args.get(1).map_or("steady", String::as_str))?,
        "create-calls" => create_calls(&s, args.get(1).and_then(|n| n.parse().ok()).unwrap_or(4))?,
        "all" => {
            devices(&s)?;
            stitched(&s)?;
            alias(&s)?;
            order(&s)?;
            params(&s)?;
            oom(&s)?;
        }
        other => return Err(Failure(format!("unknown scenario `{other}`: devices, stitched, alias, unmapped, order, oom, params, contexts, refusals, cpu-touch device|vmm-device|vmm-host, pin-cost, capture-rules, kernel-without-access, create-calls N, all; under libvvram.so: spread, threads, h2d, app-vmm, control, free-elsewhere, alloc-latency, pools, capture; with [streaming]: engine-steps N, engine-patch, engine-miss, engine-struct, engine-extra, engine-cooperative, engine-graph, engine-kernel, engine-thread, engine-tmap, working-set steady|pressure|fixed"))),
    }
    eprintln!("cuda-exercise {scenario}: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(Failure(message)) = run(&args) {
        eprintln!("cuda-exercise: {message}");
        std::process::exit(1);
    }
}
