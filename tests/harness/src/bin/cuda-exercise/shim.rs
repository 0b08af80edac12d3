//! Scenarios that check libvvram.so from inside the process it is preloaded into: they
//! read the shim's own account of placement through `vvram_stats_json`.

use super::{Checked, Failure, Session, ensure};
use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use vvram_cuda::*;
use vvram_harness::cu;

const MIB: u64 = 1 << 20;

/// The control API, found in the process as the ComfyUI node finds it.
pub struct Control {
    stats_json: vvram_stats::StatsJsonFn,
    set_policy_toml: unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> c_int,
    set_phase: unsafe extern "C" fn(*const c_char) -> c_int,
    version: unsafe extern "C" fn() -> *const c_char,
}

fn symbol(name: &std::ffi::CStr) -> Checked<*mut c_void> {
    // SAFETY: a lookup in the global scope.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if address.is_null() {
        return Err(Failure(format!("{} not found: is libvvram.so preloaded?", name.to_string_lossy())));
    }
    Ok(address)
}

impl Control {
    pub fn find() -> Checked<Control> {
        // SAFETY: the control API's documented signatures (include/vvram.h).
        unsafe {
            Ok(Control {
                stats_json: std::mem::transmute::<*mut c_void, _>(symbol(c"vvram_stats_json")?),
                set_policy_toml: std::mem::transmute::<*mut c_void, _>(symbol(c"vvram_set_policy_toml")?),
                set_phase: std::mem::transmute::<*mut c_void, _>(symbol(c"vvram_set_phase")?),
                version: std::mem::transmute::<*mut c_void, _>(symbol(c"vvram_version")?),
            })
        }
    }

    pub fn stats(&self) -> Checked<serde_json::Value> {
        // SAFETY: found as the preloaded libvvram.so's vvram_stats_json.
        let json = unsafe { vvram_stats::control_api_json(self.stats_json) };
        serde_json::from_slice(&json).map_err(|e| Failure(format!("stats are not JSON: {e}")))
    }

    /// A field (`used` or `capacity`) of one tier of device 0.
    fn tier_field(&self, tier: &str, field: &str) -> Checked<u64> {
        let stats = self.stats()?;
        stats["devices"][0]["tiers"]
            .as_array()
            .and_then(|tiers| tiers.iter().find(|t| t["tier"] == tier))
            .and_then(|t| t[field].as_u64())
            .ok_or_else(|| Failure(format!("no tier {tier} in the stats: {stats}")))
    }

    fn tier_used(&self, tier: &str) -> Checked<u64> {
        self.tier_field(tier, "used")
    }

    fn capacity(&self, tier: &str) -> Checked<u64> {
        self.tier_field(tier, "capacity")
    }

    fn set_policy(&self, toml: &str) -> Result<(), String> {
        let text = CString::new(toml).unwrap_or_default();
        let mut error = vec![0u8; 1024];
        match unsafe { (self.set_policy_toml)(text.as_ptr(), error.as_mut_ptr() as *mut c_char, error.len()) } {
            0 => Ok(()),
            _ => Err(unsafe { std::ffi::CStr::from_ptr(error.as_ptr() as *const c_char) }.to_string_lossy().into_owned()),
        }
    }

    pub fn phase(&self, phase: Option<&str>) -> Checked {
        let text = phase.map(|p| CString::new(p).unwrap_or_default());
        let code = unsafe { (self.set_phase)(text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr())) };
        ensure(code == 0, || format!("vvram_set_phase({phase:?}) returned {code}"))
    }
}

fn mem_info(s: &Session) -> Checked<(u64, u64)> {
    let (mut free, mut total) = (0usize, 0usize);
    cu!(s.cuda, cuMemGetInfo_v2(&mut free, &mut total))?;
    Ok((free as u64, total as u64))
}

fn alloc(s: &Session, size: u64) -> Checked<u64> {
    let mut p = 0;
    cu!(s.cuda, cuMemAlloc_v2(&mut p, size as usize))?;
    Ok(p)
}

fn alloc_code(s: &Session, size: u64) -> CUresult {
    let mut p = 0;
    s.cuda.api.cuMemAlloc_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, size as usize) })
}

fn pattern(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 100_000) as f32).collect()
}

/// Three times the local budget lands on the tiers the policy says; data crosses the seam
/// intact; the virtual totals are reported; exhaustion is out-of-memory; nothing leaks.
pub fn spread(s: &Session) -> Checked {
    let control = Control::find()?;
    let local = control.capacity("local")?;
    let host = control.capacity("host")?;
    ensure(host >= 2 * local, || format!("the policy must donate twice the local budget to the host (local {local}, host {host})"))?;
    let (free, total) = mem_info(s)?;
    ensure(total == local + host && free == total, || format!("cuMemGetInfo says {free} free of {total}, expected {0} of {0}", local + host))?;

    let a = alloc(s, local * 3 / 4)?;
    let seam = alloc(s, local / 2)?;
    let c = alloc(s, local)?;
    let d = alloc(s, local * 3 / 4)?;
    let (local_used, host_used) = (control.tier_used("local")?, control.tier_used("host")?);
    ensure((local_used, host_used) == (local, 2 * local), || format!("placed {local_used} local and {host_used} host, expected {local} and {}", 2 * local))?;
    println!("ok: 3x the local budget placed: local {} MiB, host {} MiB", local_used / MIB, host_used / MIB);

    // Kernels write across the seam (the first quarter of `seam` is local, the rest host).
    let n = (local / 2 / 4) as usize;
    s.fill(std::ptr::null_mut(), seam, 2.5, n)?;
    s.launch("scale_f32", std::ptr::null_mut(), &mut [&mut seam.to_ne_bytes(), &mut 2f32.to_ne_bytes(), &mut (n as u64).to_ne_bytes()], n)?;
    let back = s.read_f32(seam, n)?;
    ensure(back.iter().all(|v| *v == 5.0), || "kernel results across the seam are wrong".into())?;
    let data = pattern(n, 7);
    s.write_f32(seam, &data)?;
    s.launch("copy", std::ptr::null_mut(), &mut [&mut a.to_ne_bytes(), &mut seam.to_ne_bytes(), &mut (n as u64 * 4).to_ne_bytes()], n * 4)?;
    ensure(s.read_f32(a, n)? == data && s.read_f32(seam, n)? == data, || "data written across the seam does not read back exactly".into())?;
    println!("ok: data across the local/host seam reads back exactly");

    let (free, total) = mem_info(s)?;
    ensure(free == total - 3 * local, || format!("cuMemGetInfo free {free} after placing {}, total {total}", 3 * local))?;
    let (mut base, mut size) = (0u64, 0usize);
    cu!(s.cuda, cuMemGetAddressRange_v2(&mut base, &mut size, seam + 1000))?;
    ensure((base, size as u64) == (seam, local / 2), || format!("address range of an interior pointer: {base:#x}+{size}"))?;
    let mut ordinal: c_int = -1;
    cu!(s.cuda, cuPointerGetAttribute(&mut ordinal as *mut c_int as *mut c_void, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, seam + local / 2 - 4))?;
    let mut start = 0u64;
    cu!(s.cuda, cuPointerGetAttribute(&mut start as *mut u64 as *mut c_void, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, seam + local / 2 - 4))?;
    ensure((ordinal, start) == (0, seam), || format!("pointer attributes: ordinal {ordinal}, range start {start:#x}"))?;
    println!("ok: cuMemGetInfo {} MiB free of {} MiB; address range and pointer attributes of a device allocation", free / MIB, total / MIB);

    let refused = alloc_code(s, local);
    ensure(refused == result::OUT_OF_MEMORY, || format!("allocating past every tier gave {refused}"))?;
    println!("ok: every tier full: CUDA_ERROR_OUT_OF_MEMORY");
    for p in [a, seam, c, d] {
        cu!(s.cuda, cuMemFree_v2(p))?;
    }
    let stats = control.stats()?;
    let (local_used, host_used) = (control.tier_used("local")?, control.tier_used("host")?);
    ensure(local_used == 0 && host_used == 0 && stats["devices"][0]["allocations"] == 0, || format!("after freeing everything: {stats}"))?;
    let (free, total) = mem_info(s)?;
    ensure(free == total, || format!("after freeing everything cuMemGetInfo says {free} free of {total}"))?;
    println!("ok: all freed, nothing placed, {} MiB free", free / MIB);
    println!("stats: {stats}");
    Ok(())
}

/// Eight threads allocate and free concurrently.
pub fn threads(s: &Session) -> Checked {
    let control = Control::find()?;
    let mut context = std::ptr::null_mut();
    cu!(s.cuda, cuCtxGetCurrent(&mut context))?;
    let context = context as usize;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                scope.spawn(move || -> Result<(), String> {
                    cu!(s.cuda, cuCtxSetCurrent(context as CUcontext)).map_err(|e| e.to_string())?;
                    let sizes = [4096, 100_000, 3 * MIB, 9 * MIB + 123];
                    let mut live = Vec::new();
                    for i in 0..150u64 {
                        let size = sizes[((i + t) % 4) as usize];
                        let p = alloc(s, size).map_err(|Failure(m)| m)?;
                        cu!(s.cuda, cuMemsetD32_v2(p, (t * 1000 + i) as u32, (size / 4) as usize)).map_err(|e| e.to_string())?;
                        live.push((p, size, (t * 1000 + i) as u32));
                        if live.len() > 3 {
                            let (p, size, value) = live.remove(0);
                            let last = s.read_f32(p + (size / 4 - 1) * 4, 1).map_err(|Failure(m)| m)?;
                            if last[0].to_bits() != value {
                                return Err(format!("thread {t}: allocation {p:#x} lost its contents"));
                            }
                            cu!(s.cuda, cuMemFree_v2(p)).map_err(|e| e.to_string())?;
                        }
                    }
                    for (p, _, _) in live {
                        cu!(s.cuda, cuMemFree_v2(p)).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().unwrap_or(Err("panicked".into())).err()).collect()
    });
    ensure(failures.is_empty(), || failures.join("; "))?;
    let stats = control.stats()?;
    ensure(stats["devices"][0]["allocations"] == 0 && stats["errors"] == 0 && stats["allocations"] == 1200, || format!("after 8 threads: {stats}"))?;
    println!("ok: 8 threads x 150 allocations, contents intact, nothing left");
    Ok(())
}

/// Host-to-device copies into host-tier memory: the CPU writes them, in stream order.
pub fn h2d(s: &Session) -> Checked {
    let control = Control::find()?;
    let local = control.capacity("local")?;
    let filler = alloc(s, local - 8 * MIB)?;
    let straddling = alloc(s, 40 * MIB)?;
    let n = (40 * MIB / 4) as usize;
    let data = pattern(n, 3);
    s.write_f32(straddling, &data)?;
    ensure(s.read_f32(straddling, n)? == data, || "synchronous copy across the seam reads back wrong".into())?;
    let fast = control.stats()?["fast_h2d_bytes"].as_u64().unwrap_or(0);
    ensure(fast == 32 * MIB, || format!("{fast} bytes went through the CPU path, expected the 32 MiB host part"))?;

    // Asynchronous: ordered after a slow kernel already queued on the stream.
    let mut stream = std::ptr::null_mut();
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    s.fill(stream, straddling, -1.0, n)?;
    let data2 = pattern(n, 11);
    cu!(s.cuda, cuMemcpyHtoDAsync_v2(straddling, data2.as_ptr() as *const c_void, n * 4, stream))?;
    cu!(s.cuda, cuStreamSynchronize(stream))?;
    ensure(s.read_f32(straddling, n)? == data2, || "the asynchronous copy did not follow the stream's earlier kernel".into())?;
    let fast = control.stats()?["fast_h2d_bytes"].as_u64().unwrap_or(0);
    ensure(fast == 64 * MIB, || format!("{fast} bytes through the CPU path after two copies"))?;
    // Unified-address copies: from host memory the CPU path, from device memory the driver.
    let data3 = pattern(n, 13);
    cu!(s.cuda, cuMemcpy(straddling, data3.as_ptr() as u64, n * 4))?;
    ensure(s.read_f32(straddling, n)? == data3, || "cuMemcpy from host memory reads back wrong".into())?;
    cu!(s.cuda, cuMemcpyAsync(filler, straddling, n * 4, stream))?;
    cu!(s.cuda, cuStreamSynchronize(stream))?;
    ensure(s.read_f32(filler, n)? == data3, || "cuMemcpyAsync between device allocations reads back wrong".into())?;
    let fast = control.stats()?["fast_h2d_bytes"].as_u64().unwrap_or(0);
    ensure(fast == 96 * MIB, || format!("{fast} bytes through the CPU path after the unified copies, expected 96 MiB"))?;
    cu!(s.cuda, cuStreamDestroy_v2(stream))?;
    for p in [filler, straddling] {
        cu!(s.cuda, cuMemFree_v2(p))?;
    }
    println!("ok: host-to-device copies into host-tier memory by the CPU, in stream order ({} MiB)", fast / MIB);
    Ok(())
}

/// The application's own virtual memory calls (PyTorch's expandable segments): its
/// `cuMemCreate` is placed by the rules, and kernels see one range across tiers.
pub fn app_vmm(s: &Session) -> Checked {
    let control = Control::find()?;
    let local = control.capacity("local")?;
    let host = control.capacity("host")?;
    let mut out = 0u64;
    cu!(s.cuda, cuMemAlloc_v2(&mut out, 4))?;
    let slab = control.tier_used("local")?;
    let piece = 16 * MIB;
    let local_pieces = (local - slab) / piece;
    let count = (local_pieces + host / piece) as usize;
    let mut base = 0u64;
    cu!(s.cuda, cuMemAddressReserve(&mut base, (piece as usize) * count, 0, 0, 0))?;
    let prop = CUmemAllocationProp::pinned(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 });
    let mut handles = Vec::new();
    for i in 0..count {
        let mut handle = 0;
        cu!(s.cuda, cuMemCreate(&mut handle, piece as usize, &prop, 0))?;
        let at = base + i as u64 * piece;
        cu!(s.cuda, cuMemMap(at, piece as usize, 0, handle, 0))?;
        let access = CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        cu!(s.cuda, cuMemSetAccess(at, piece as usize, &access, 1))?;
        handles.push(handle);
    }
    let (local_used, host_used) = (control.tier_used("local")?, control.tier_used("host")?);
    ensure((local_used, host_used) == (slab + local_pieces * piece, host), || format!("application memory placed {local_used} local, {host_used} host"))?;
    let refused = s.cuda.api.cuMemCreate.map_or(0, |f| unsafe { f(&mut 0, piece as usize, &prop, 0) });
    ensure(refused == result::OUT_OF_MEMORY, || format!("creating past every tier gave {refused}"))?;
    let n = (piece as usize * count) / 4;
    s.fill(std::ptr::null_mut(), base, 0.5, n)?;
    cu!(s.cuda, cuMemsetD32_v2(out, 0, 1))?;
    s.launch("sum_f32", std::ptr::null_mut(), &mut [&mut base.to_ne_bytes(), &mut out.to_ne_bytes(), &mut (n as u64).to_ne_bytes()], n)?;
    let sum = s.read_f32(out, 1)?[0];
    ensure(sum == 0.5 * n as f32, || format!("sum over the application's range is {sum}, expected {}", 0.5 * n as f32))?;
    cu!(s.cuda, cuMemFree_v2(out))?;
    for (i, handle) in handles.into_iter().enumerate() {
        cu!(s.cuda, cuMemUnmap(base + i as u64 * piece, piece as usize))?;
        cu!(s.cuda, cuMemRelease(handle))?;
    }
    cu!(s.cuda, cuMemAddressFree(base, (piece as usize) * count))?;
    let (local_used, host_used) = (control.tier_used("local")?, control.tier_used("host")?);
    ensure(local_used == 0 && host_used == 0, || format!("after release: {local_used} local, {host_used} host"))?;
    println!("ok: application cuMemCreate placed {} MiB local, {} MiB host; kernels read across", local_pieces * piece / MIB, host / MIB);
    redirected_memory_stays_device_memory(s, &control, piece)
}

/// The application's device memory that vvram placed on the host: pointer queries call
/// it device memory, copies from it never go through the CPU (which may not touch it),
/// and neither it nor vvram's own memory hands out handles it should not.
fn redirected_memory_stays_device_memory(s: &Session, control: &Control, piece: u64) -> Checked {
    let local_left = control.capacity("local")? - control.tier_used("local")?;
    let filler = alloc(s, local_left)?;
    let on_host = alloc(s, piece)?;
    ensure(control.tier_used("host")? == piece, || "the second buffer did not land on the host tier".into())?;
    let prop = CUmemAllocationProp::pinned(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 });
    let (mut handle, mut base) = (0, 0u64);
    cu!(s.cuda, cuMemCreate(&mut handle, piece as usize, &prop, 0))?;
    ensure(control.tier_used("host")? == 2 * piece, || "the application's memory did not land on the host tier".into())?;
    cu!(s.cuda, cuMemAddressReserve(&mut base, piece as usize, 0, 0, 0))?;
    cu!(s.cuda, cuMemMap(base, piece as usize, 0, handle, 0))?;
    let access = CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
    cu!(s.cuda, cuMemSetAccess(base, piece as usize, &access, 1))?;
    let mut kind: c_uint = 0;
    cu!(s.cuda, cuPointerGetAttribute(&mut kind as *mut c_uint as *mut c_void, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, base))?;
    ensure(kind == CU_MEMORYTYPE_DEVICE, || format!("the application's device memory placed on the host has memory type {kind}"))?;
    let n = piece as usize / 4;
    s.fill(std::ptr::null_mut(), base, 2.5, n)?;
    cu!(s.cuda, cuMemcpy(on_host, base, piece as usize))?;
    ensure(s.read_f32(on_host, n)?.iter().all(|v| *v == 2.5), || "a copy from the application's host-placed memory lost data".into())?;
    let mut retained = 0;
    let code = s.cuda.api.cuMemRetainAllocationHandle.map_or(0, |f| unsafe { f(&mut retained, on_host as *mut c_void) });
    ensure(code == result::INVALID_VALUE, || format!("cuMemRetainAllocationHandle on vvram memory gave {code} (handle {retained})"))?;
    cu!(s.cuda, cuMemRetainAllocationHandle(&mut retained, base as *mut c_void))?;
    ensure(retained == handle, || "cuMemRetainAllocationHandle on the application's memory gave another handle".into())?;
    cu!(s.cuda, cuMemRelease(retained))?;
    let mut ipc = [0u8; 64];
    let code = s.cuda.api.cuIpcGetMemHandle.map_or(0, |f| unsafe { f(&mut ipc, on_host) });
    ensure(code == result::INVALID_VALUE, || format!("cuIpcGetMemHandle on vvram memory gave {code}"))?;
    let mut capable: c_int = -1;
    cu!(s.cuda, cuPointerGetAttribute(&mut capable as *mut c_int as *mut c_void, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, on_host))?;
    ensure(capable == 0, || format!("vvram memory says IS_LEGACY_CUDA_IPC_CAPABLE = {capable}"))?;
    cu!(s.cuda, cuMemUnmap(base, piece as usize))?;
    cu!(s.cuda, cuMemRelease(handle))?;
    cu!(s.cuda, cuMemAddressFree(base, piece as usize))?;
    cu!(s.cuda, cuMemFree_v2(on_host))?;
    cu!(s.cuda, cuMemFree_v2(filler))?;
    println!("ok: the application's host-placed device memory is device memory to queries and copies; no handles to share");
    Ok(())
}

/// The control API: policies replaced at run time (invalid ones refused with their
/// line:column), phases steering the rules, stream-ordered frees.
pub fn control(s: &Session) -> Checked {
    let control = Control::find()?;
    let version = unsafe { std::ffi::CStr::from_ptr((control.version)()) }.to_string_lossy().into_owned();
    ensure(!version.is_empty(), || "empty version".into())?;
    let refused = control.set_policy("[[device]]\nindex = 0\nlocal_budgt = \"8GiB\"\n");
    ensure(matches!(&refused, Err(m) if m.starts_with("<policy>:3:1:") && m.contains("local_budget")), || format!("invalid policy answer: {refused:?}"))?;
    control
        .set_policy("[[device]]\nindex = 0\nlocal_budget = \"32MiB\"\ndonors = [{ tier = \"host\", capacity = \"64MiB\" }]\n[[rule]]\nphase = \"load\"\ntiers = [\"host\", \"local\"]\n")
        .map_err(Failure)?;
    ensure(mem_info(s)?.1 == 96 * MIB, || "the new policy's virtual size is not reported".into())?;
    control.phase(Some("load"))?;
    let weights = alloc(s, 8 * MIB)?;
    control.phase(None)?;
    let activations = alloc(s, 8 * MIB)?;
    let (local_used, host_used) = (control.tier_used("local")?, control.tier_used("host")?);
    ensure((local_used, host_used) == (8 * MIB, 8 * MIB), || format!("phase rules placed {local_used} local, {host_used} host"))?;
    let stats = control.stats()?;
    ensure(stats["policy"] == "<policy>" && stats["phase"].is_null(), || format!("stats: {stats}"))?;

    // A stream-ordered free returns memory only after the stream passes it.
    let mut stream = std::ptr::null_mut();
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    s.fill(stream, weights, 1.0, (2 * MIB) as usize)?;
    cu!(s.cuda, cuMemFreeAsync(weights, stream))?;
    let pending = control.tier_used("host")?;
    cu!(s.cuda, cuStreamSynchronize(stream))?;
    let other = alloc(s, 4 * MIB)?;
    let after = control.tier_used("host")?;
    ensure(pending == 8 * MIB && after == 0, || format!("host bytes while the free is pending {pending}, after {after}"))?;
    for p in [activations, other] {
        cu!(s.cuda, cuMemFree_v2(p))?;
    }
    cu!(s.cuda, cuStreamDestroy_v2(stream))?;
    println!("ok: control API {version}: invalid policy refused with line:column, phase rules, stream-ordered free");
    Ok(())
}

/// `cuMemFree` of vvram memory from another GPU's context while a kernel on the owning
/// GPU still writes it: the free waits for that kernel (FAKECUDA_KERNEL_US makes it slow),
/// as the memory is never unmapped under running work.
pub fn free_elsewhere(s: &Session) -> Checked {
    ensure(s.device_count()? >= 2, || "free-elsewhere needs two devices".into())?;
    let n = 4 * MIB as usize;
    let buffer = alloc(s, 4 * n as u64)?;
    let mut stream = std::ptr::null_mut();
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    s.fill(stream, buffer, 1.0, n)?;
    let (mut here, mut there) = (std::ptr::null_mut(), std::ptr::null_mut());
    cu!(s.cuda, cuCtxGetCurrent(&mut here))?;
    cu!(s.cuda, cuDevicePrimaryCtxRetain(&mut there, 1))?;
    cu!(s.cuda, cuCtxSetCurrent(there))?;
    cu!(s.cuda, cuMemFree_v2(buffer))?;
    cu!(s.cuda, cuCtxSetCurrent(here))?;
    let query = s.cuda.api.cuStreamQuery.map_or(result::NOT_FOUND, |f| unsafe { f(stream) });
    ensure(query == result::SUCCESS, || format!("cuMemFree returned while the kernel using the memory still ran ({query})"))?;
    cu!(s.cuda, cuStreamDestroy_v2(stream))?;
    println!("ok: cuMemFree from another GPU's context waited for the kernel using the memory");
    Ok(())
}

/// Small allocations while the background thread pins the host pool: prints the slowest
/// one (the first, which builds the memory manager, is not counted).
pub fn alloc_latency(s: &Session) -> Checked {
    let first = alloc(s, 256 << 10)?;
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..40 {
        let started = std::time::Instant::now();
        let p = alloc(s, 256 << 10)?;
        cu!(s.cuda, cuMemFree_v2(p))?;
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cu!(s.cuda, cuMemFree_v2(first))?;
    println!("slowest allocation while pinning: {:.1} ms", slowest.as_secs_f64() * 1000.0);
    Ok(())
}

/// Stream-ordered allocations from memory pools: the device's default pool is placed by
/// vvram like `cuMemAllocAsync`; another pool (here device 1's, which keeps its own
/// properties) passes through to the driver.
pub fn pools(s: &Session) -> Checked {
    let control = Control::find()?;
    let (mut own, mut other) = (std::ptr::null_mut(), std::ptr::null_mut());
    cu!(s.cuda, cuDeviceGetDefaultMemPool(&mut own, 0))?;
    cu!(s.cuda, cuDeviceGetDefaultMemPool(&mut other, 1))?;
    let before = control.tier_used("local")?;
    let (mut placed, mut passed) = (0u64, 0u64);
    cu!(s.cuda, cuMemAllocFromPoolAsync(&mut placed, 4 * MIB as usize, own, std::ptr::null_mut()))?;
    ensure(control.tier_used("local")? == before + 4 * MIB, || "an allocation from the default pool was not placed by vvram".into())?;
    cu!(s.cuda, cuMemAllocFromPoolAsync(&mut passed, 4 * MIB as usize, other, std::ptr::null_mut()))?;
    ensure(control.tier_used("local")? == before + 4 * MIB, || "an allocation from another pool was placed by vvram".into())?;
    let mut ordinal: c_int = -1;
    cu!(s.cuda, cuPointerGetAttribute(&mut ordinal as *mut c_int as *mut c_void, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, passed))?;
    ensure(ordinal == 1, || format!("memory from device 1's pool is on device {ordinal}"))?;
    cu!(s.cuda, cuMemFreeAsync(placed, std::ptr::null_mut()))?;
    cu!(s.cuda, cuMemFreeAsync(passed, std::ptr::null_mut()))?;
    cu!(s.cuda, cuCtxSynchronize())?;
    println!("ok: the default pool is placed by vvram; another pool passes through with its properties");
    Ok(())
}

/// Stream capture under vvram: a host-to-device copy into host-tier memory, a
/// `cuMemFree` and a `cuMemFreeAsync` during a capture neither break it nor run outside
/// the graph; the copy happens when the graph is launched.
pub fn capture(s: &Session) -> Checked {
    let control = Control::find()?;
    let piece = 4 * MIB;
    let filler = alloc(s, control.capacity("local")? - control.tier_used("local")?)?;
    let dst = alloc(s, piece)?;
    let gone = alloc(s, piece)?;
    let kept = alloc(s, piece)?;
    ensure(control.tier_used("host")? == 3 * piece, || "the capture's buffers are not on the host tier".into())?;
    let data = pattern(piece as usize / 4, 7);
    cu!(s.cuda, cuMemsetD32_v2(dst, 0, piece as usize / 4))?;
    let mut stream = std::ptr::null_mut();
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    cu!(s.cuda, cuStreamBeginCapture_v2(stream, CU_STREAM_CAPTURE_MODE_GLOBAL))?;
    cu!(s.cuda, cuMemcpyHtoDAsync_v2(dst, data.as_ptr() as *const c_void, piece as usize, stream))?;
    cu!(s.cuda, cuMemFree_v2(gone))?;
    cu!(s.cuda, cuMemFreeAsync(kept, stream))?;
    let mut graph = std::ptr::null_mut();
    cu!(s.cuda, cuStreamEndCapture(stream, &mut graph))?;
    ensure(s.read_f32(dst, 4)?.iter().all(|v| *v == 0.0), || "the captured copy ran before the graph was launched".into())?;
    let mut executable = std::ptr::null_mut();
    cu!(s.cuda, cuGraphInstantiateWithFlags(&mut executable, graph, 0))?;
    cu!(s.cuda, cuGraphLaunch(executable, stream))?;
    cu!(s.cuda, cuStreamSynchronize(stream))?;
    ensure(s.read_f32(dst, data.len())? == data, || "the graph did not copy the data".into())?;
    cu!(s.cuda, cuGraphExecDestroy(executable))?;
    cu!(s.cuda, cuGraphDestroy(graph))?;
    cu!(s.cuda, cuMemFree_v2(dst))?;
    cu!(s.cuda, cuMemFree_v2(filler))?;
    let host = control.tier_used("host")?;
    ensure(host == piece, || format!("after the capture {host} bytes stay on the host tier, expected the graph's {piece}"))?;
    cu!(s.cuda, cuStreamDestroy_v2(stream))?;
    println!("ok: a capture under vvram records the copy, defers the frees and is not broken");
    Ok(())
}
