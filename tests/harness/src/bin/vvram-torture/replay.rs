//! Replays of crash classes seen in other CUDA interposers (HAMi-core, comfy-aimdo):
//! each prints `replay NAME: ok ...` when the shim behaves as the driver would.

use super::{Control, Env, MIB};
use std::ffi::{CStr, CString, c_void};
use vvram_cuda::*;

/// The file of the loaded object that holds `address`.
fn object_of(address: *mut c_void) -> String {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address.
    if address.is_null() || unsafe { libc::dladdr(address, &mut info) } == 0 || info.dli_fname.is_null() {
        return String::new();
    }
    // SAFETY: a NUL-terminated path from the loader.
    unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned()
}

fn lookup(handle: *mut c_void, name: &str) -> *mut c_void {
    let name = CString::new(name).unwrap_or_default();
    // SAFETY: a lookup of a NUL-terminated name.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

/// `dlsym` for names that merely start with a hooked name (HAMi-core matched prefixes
/// and recursed): the driver's own symbol or nothing, never a hook; a name outside
/// CUDA (`cudnnCreate`) is simply not found.
fn prefix() -> Result<(), String> {
    let env = Env::open()?;
    let handle = env.cuda.handle;
    let hooked = object_of(lookup(handle, "cuMemAlloc_v2"));
    if !hooked.contains("libvvram") {
        return Err(format!("cuMemAlloc_v2 resolves to {hooked}, not the hook"));
    }
    for name in ["cuMemAllocManaged", "cuMemAllocHost_v2", "cuMemcpyHtoDAsync_v2_ptsz_x", "cuMemAlloc_v2x", "cuMemFree_v2_", "cudnnCreate"] {
        let address = lookup(handle, name);
        let object = object_of(address);
        if object.contains("libvvram") {
            return Err(format!("dlsym({name}) answered with the shim's {object}"));
        }
        let driver_has_it = !(name.ends_with('x') || name.ends_with('_') || name.starts_with("cudnn"));
        if !driver_has_it && !address.is_null() {
            return Err(format!("dlsym({name}) found {object}; the driver has no such symbol"));
        }
    }
    if !lookup(libc::RTLD_DEFAULT, "cudnnCreate").is_null() {
        return Err("dlsym(RTLD_DEFAULT, cudnnCreate) found something".into());
    }
    let next = object_of(lookup(libc::RTLD_NEXT, "malloc"));
    if !next.contains("libc") {
        return Err(format!("dlsym(RTLD_NEXT, malloc) from the application resolved to `{next}`, not libc"));
    }
    println!("replay prefix: ok (exact names only; RTLD_NEXT from the application reaches libc)");
    Ok(())
}

/// Calls before `cuInit`, without a current context and with a NULL one: the driver's
/// errors, never a crash or an allocation that passes the policy by.
fn no_context() -> Result<(), String> {
    let cuda = vvram_harness::Cuda::load(vvram_harness::Door::Dlsym)?;
    let api = &cuda.api;
    let alloc = |p: &mut u64| api.cuMemAlloc_v2.map_or(result::NOT_FOUND, |f| unsafe { f(p, MIB as usize) });
    let mut p = 0;
    let before_init = alloc(&mut p);
    let (mut free, mut total) = (0usize, 0usize);
    let info_before_init = api.cuMemGetInfo_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut free, &mut total) });
    vvram_harness::cu!(cuda, cuInit(0)).map_err(|e| e.to_string())?;
    let no_context = alloc(&mut p);
    vvram_harness::cu!(cuda, cuCtxSetCurrent(std::ptr::null_mut())).map_err(|e| e.to_string())?;
    let null_context = alloc(&mut p);
    let null_info = api.cuMemGetInfo_v2.map_or(result::NOT_FOUND, |f| unsafe { f(std::ptr::null_mut(), std::ptr::null_mut()) });
    let free_zero = api.cuMemFree_v2.map_or(result::NOT_FOUND, |f| unsafe { f(0) });
    let codes = [before_init, info_before_init, no_context, null_context, null_info];
    if codes.contains(&result::SUCCESS) || codes.contains(&result::UNKNOWN) {
        return Err(format!(
            "without a usable context: alloc before cuInit {before_init}, info before cuInit {info_before_init}, alloc without context {no_context}, with NULL context {null_context}, cuMemGetInfo(NULL, NULL) {null_info}"
        ));
    }
    let control = Control::find()?;
    if control.stats()?["allocations"] != 0 {
        return Err("an allocation was counted without a context".into());
    }
    println!("replay no-context: ok (codes {before_init} {info_before_init} {no_context} {null_context} {null_info}; cuMemFree(0) {free_zero})");
    Ok(())
}

/// `cudaMallocAsync`'s path: allocations from the device's default pool, stream-ordered
/// frees, then `cuMemPoolTrimTo(pool, 0)`, twenty times: nothing stays placed.
fn pool_trim() -> Result<(), String> {
    let env = Env::open()?;
    let control = Control::find()?;
    type DefaultPool = unsafe extern "C" fn(*mut CUmemoryPool, CUdevice) -> CUresult;
    type PoolTrim = unsafe extern "C" fn(CUmemoryPool, usize) -> CUresult;
    let find = |name: &str| {
        let address = lookup(env.cuda.handle, name);
        if address.is_null() { Err(format!("the driver has no {name}")) } else { Ok(address) }
    };
    // SAFETY: the driver's signatures.
    let (default_pool, trim) = unsafe {
        (
            std::mem::transmute::<*mut c_void, DefaultPool>(find("cuDeviceGetDefaultMemPool")?),
            std::mem::transmute::<*mut c_void, PoolTrim>(find("cuMemPoolTrimTo")?),
        )
    };
    let mut pool: CUmemoryPool = std::ptr::null_mut();
    // SAFETY: a valid output pointer.
    let code = unsafe { default_pool(&mut pool, 0) };
    if code != result::SUCCESS {
        return Err(format!("cuDeviceGetDefaultMemPool failed with {code}"));
    }
    let api = &env.cuda.api;
    let mut stream = std::ptr::null_mut();
    vvram_harness::cu!(env.cuda, cuStreamCreate(&mut stream, 1)).map_err(|e| e.to_string())?;
    for round in 0..20u64 {
        let mut pointers = Vec::new();
        for i in 0..6u64 {
            let mut p = 0;
            let size = (i + 1) * MIB + round * 4096;
            let code = api.cuMemAllocFromPoolAsync.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, size as usize, pool, stream) });
            if code != result::SUCCESS {
                return Err(format!("cuMemAllocFromPoolAsync({size}) failed with {code}"));
            }
            pointers.push(p);
        }
        for p in pointers {
            let code = api.cuMemFreeAsync.map_or(result::NOT_FOUND, |f| unsafe { f(p, stream) });
            if code != result::SUCCESS {
                return Err(format!("cuMemFreeAsync failed with {code}"));
            }
        }
        vvram_harness::cu!(env.cuda, cuStreamSynchronize(stream)).map_err(|e| e.to_string())?;
        // SAFETY: our pool.
        let code = unsafe { trim(pool, 0) };
        if code != result::SUCCESS {
            return Err(format!("cuMemPoolTrimTo failed with {code}"));
        }
    }
    // The next allocation completes the stream-ordered frees.
    let p = env.alloc(MIB).map_err(|c| format!("allocation after trimming failed with {c}"))?;
    env.free(p);
    let placed = control.placed()?;
    if placed != 0 {
        return Err(format!("after trimming: {placed} bytes still placed"));
    }
    println!("replay pool-trim: ok (120 pool allocations, trimmed, nothing left)");
    Ok(())
}

/// Copies with a NULL source, past the end of an allocation, into freed memory and with
/// lengths near 2^64: the driver refuses them with an error; nothing may crash.
fn bad_copies() -> Result<(), String> {
    let env = Env::open()?;
    let api = &env.cuda.api;
    let p = env.alloc(4 * MIB).map_err(|c| format!("allocation failed with {c}"))?;
    let freed = env.alloc(4 * MIB).map_err(|c| format!("allocation failed with {c}"))?;
    env.free(freed);
    let host = [1u8; 64];
    let h2d = |dst: u64, src: *const c_void, len: usize| api.cuMemcpyHtoD_v2.map_or(result::NOT_FOUND, |f| unsafe { f(dst, src, len) });
    let h2d_async = |dst: u64, src: *const c_void, len: usize| {
        api.cuMemcpyHtoDAsync_v2.map_or(result::NOT_FOUND, |f| unsafe { f(dst, src, len, std::ptr::null_mut()) })
    };
    let mut back = vec![0u8; 64];
    let d2h = |dst: *mut c_void, src: u64, len: usize| api.cuMemcpyDtoH_v2.map_or(result::NOT_FOUND, |f| unsafe { f(dst, src, len) });
    let codes = [
        h2d(p, std::ptr::null(), 64),
        h2d_async(p, std::ptr::null(), 64),
        h2d(p + 4 * MIB - 32, host.as_ptr() as *const c_void, 64),
        h2d(p, host.as_ptr() as *const c_void, usize::MAX),
        h2d(p + 16, host.as_ptr() as *const c_void, usize::MAX - 8),
        h2d(freed, host.as_ptr() as *const c_void, 64),
        h2d_async(freed, host.as_ptr() as *const c_void, 64),
        d2h(back.as_mut_ptr() as *mut c_void, freed, 64),
        d2h(std::ptr::null_mut(), p, 64),
    ];
    vvram_harness::cu!(env.cuda, cuCtxSynchronize()).map_err(|e| e.to_string())?;
    if codes.iter().any(|c| *c == result::SUCCESS || *c == result::UNKNOWN) {
        return Err(format!("bad copies answered {codes:?}; expected errors"));
    }
    if h2d(p, host.as_ptr() as *const c_void, 64) != result::SUCCESS {
        return Err("a valid copy after the bad ones failed".into());
    }
    env.free(p);
    println!("replay bad-copies: ok (codes {codes:?})");
    Ok(())
}

/// The callback's view of what to free and what `cuMemFree` answered.
static CALLBACK_FREE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CALLBACK_POINTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// `u32::MAX` until the callback ran.
static CALLBACK_CODE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

unsafe extern "C" fn free_in_callback(_data: *mut c_void) {
    use std::sync::atomic::Ordering;
    // SAFETY: the address of cuMemFree_v2 stored before the callback was queued.
    let free: unsafe extern "C" fn(CUdeviceptr) -> CUresult = unsafe { std::mem::transmute(CALLBACK_FREE.load(Ordering::Acquire)) };
    CALLBACK_CODE.store(unsafe { free(CALLBACK_POINTER.load(Ordering::Acquire)) }, Ordering::Release);
}

/// `cuMemFree` inside a stream callback (`cuLaunchHostFunc`): CUDA calls there are not
/// permitted, and `cuMemFree`'s synchronisation would wait for the callback itself. The
/// call must come back with an error, not hang, and the memory stay the application's.
fn callback_free() -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let env = Env::open()?;
    let control = Control::find()?;
    type HostFunc = unsafe extern "C" fn(CUstream, Option<unsafe extern "C" fn(*mut c_void)>, *mut c_void) -> CUresult;
    let launch = lookup(env.cuda.handle, "cuLaunchHostFunc");
    if launch.is_null() {
        return Err("the driver has no cuLaunchHostFunc".into());
    }
    // SAFETY: the driver's signature.
    let launch: HostFunc = unsafe { std::mem::transmute(launch) };
    let free = env.cuda.api.cuMemFree_v2.ok_or("no cuMemFree_v2")?;
    CALLBACK_FREE.store(free as usize, Ordering::Release);
    let p = env.alloc(8 * MIB).map_err(|c| format!("allocation failed with {c}"))?;
    CALLBACK_POINTER.store(p, Ordering::Release);
    let mut stream = std::ptr::null_mut();
    vvram_harness::cu!(env.cuda, cuStreamCreate(&mut stream, 1)).map_err(|e| e.to_string())?;
    // SAFETY: a plain function and no argument.
    let code = unsafe { launch(stream, Some(free_in_callback), std::ptr::null_mut()) };
    if code != result::SUCCESS {
        return Err(format!("cuLaunchHostFunc failed with {code}"));
    }
    vvram_harness::cu!(env.cuda, cuStreamSynchronize(stream)).map_err(|e| e.to_string())?;
    let inside = CALLBACK_CODE.load(Ordering::Acquire);
    if inside == result::SUCCESS || inside == u32::MAX {
        return Err(format!("cuMemFree inside a stream callback answered {inside}"));
    }
    if env.free(p) != result::SUCCESS || control.placed()? != 0 {
        return Err("the allocation could not be freed after the callback".into());
    }
    println!("replay callback-free: ok (cuMemFree in a callback: {inside}; freed afterwards)");
    Ok(())
}

/// Entry points found through `cuGetProcAddress` (libcudart's door) on a driver that
/// answers with another address than its exported symbol (run with
/// `FAKECUDA_PROC_INTERNAL=1`): allocations must still reach vvram.
fn procaddress_internal() -> Result<(), String> {
    let cuda = vvram_harness::Cuda::load(vvram_harness::Door::ProcAddress)?;
    vvram_harness::cu!(cuda, cuInit(0)).map_err(|e| e.to_string())?;
    let mut context = std::ptr::null_mut();
    vvram_harness::cu!(cuda, cuDevicePrimaryCtxRetain(&mut context, 0)).map_err(|e| e.to_string())?;
    vvram_harness::cu!(cuda, cuCtxSetCurrent(context)).map_err(|e| e.to_string())?;
    let control = Control::find()?;
    let mut pointers = Vec::new();
    for size in [4096u64, 3 * MIB, 9 * MIB] {
        let mut p = 0;
        vvram_harness::cu!(cuda, cuMemAlloc_v2(&mut p, size as usize)).map_err(|e| e.to_string())?;
        pointers.push(p);
    }
    let placed = control.stats()?["allocations"].as_u64().unwrap_or(0);
    for p in pointers {
        vvram_harness::cu!(cuda, cuMemFree_v2(p)).map_err(|e| e.to_string())?;
    }
    if placed != 3 || control.placed()? != 0 {
        return Err(format!("through cuGetProcAddress {placed} of 3 allocations reached vvram"));
    }
    println!("replay procaddress-internal: ok (3 of 3 allocations placed by vvram)");
    Ok(())
}

/// Runs one replay by name.
pub fn replay(name: &str) -> Result<(), String> {
    match name {
        "prefix" => prefix(),
        "no-context" => no_context(),
        "pool-trim" => pool_trim(),
        "bad-copies" => bad_copies(),
        "callback-free" => callback_free(),
        "procaddress-internal" => procaddress_internal(),
        other => Err(format!("unknown replay `{other}`: prefix, no-context, pool-trim, bad-copies, callback-free, procaddress-internal")),
    }
}
