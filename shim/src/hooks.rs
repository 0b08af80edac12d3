//! The hooked driver entry points. Each has the driver's exact name and C signature; each
//! either asks the memory manager or passes the call through to the real driver. No hook
//! unwinds into C: a panic becomes `CUDA_ERROR_UNKNOWN` and an error event.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use crate::copy::cpu_copy;
pub use crate::coherence::{
    cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds, cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz, cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds,
    cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz, cuMemsetD8_v2, cuMemsetD8Async, cuMemsetD32_v2, cuMemsetD32Async,
};
use crate::coherence::{around, before_cpu_write};
pub use crate::launch::{
    cuGraphLaunch, cuGraphLaunch_ptsz, cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, cuLaunchKernel, cuLaunchKernel_ptsz,
    cuLaunchKernelEx, cuLaunchKernelEx_ptsz, cuLibraryUnload, cuModuleUnload,
};
pub use crate::tensor_map::{cuTensorMapEncodeIm2col, cuTensorMapEncodeTiled};
use crate::ops::mem_location;
use crate::real_call;
use crate::runtime::{HOOK_ERRORS, check_for_aimdo, state};
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use vvram_allocator::{AllocationInfo, Request};
use vvram_cuda::*;

/// Runs a hook's body; a panic never crosses the FFI boundary: it is counted, logged and
/// answered with `CUDA_ERROR_UNKNOWN`. Every hook of the shim goes through it.
pub(crate) fn guard(hook: &'static str, body: impl FnOnce() -> CUresult) -> CUresult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(_) => {
            HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
            tracing::error!(hook, "panic caught in a hook; returning CUDA_ERROR_UNKNOWN");
            result::UNKNOWN
        }
    }
}

fn current_device() -> Result<u32, CUresult> {
    let mut device: CUdevice = 0;
    match real_call!(cuCtxGetDevice(&mut device)) {
        result::SUCCESS => Ok(device as u32),
        code => Err(code),
    }
}

/// A stream handle as the per-thread entry points mean it: stream 0 is the calling
/// thread's default stream.
fn per_thread_stream(stream: CUstream) -> CUstream {
    if stream.is_null() { CU_STREAM_PER_THREAD as CUstream } else { stream }
}

/// Places an allocation with the manager, or `None` to pass it through (no policy, or
/// none for the current device). With a policy in force it never fails open: when the
/// current device or the machine cannot be read, the driver's error is the answer.
fn place(size: usize) -> Option<Result<u64, CUresult>> {
    check_for_aimdo();
    let device = match current_device() {
        Ok(device) => device,
        Err(code) => return state().policy.is_some().then_some(Err(code)),
    };
    let mut state = state();
    let (phase, tag) = (state.phase.clone(), state.tag.clone());
    let Some(manager) = state.manager() else { return state.machine_error().map(Err) };
    if !manager.manages(device) {
        return None;
    }
    crate::staging::sync(manager, device);
    let request = Request { device, size: size as u64, phase: phase.as_deref(), tag: tag.as_deref() };
    crate::working_set::note_kernels(manager, device);
    crate::working_set::make_room(manager, request);
    let placed = manager.allocate(request);
    crate::staging::sync(manager, device);
    if let Err(code) = placed {
        if code == result::OUT_OF_MEMORY {
            tracing::info!(device, size, "every tier is full: CUDA_ERROR_OUT_OF_MEMORY");
        } else {
            HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device, size, code, "placing an allocation failed");
        }
    }
    Some(placed)
}

unsafe fn write<T>(pointer: *mut T, value: T) -> CUresult {
    if pointer.is_null() {
        return result::INVALID_VALUE;
    }
    // SAFETY: a non-null output pointer from the application.
    unsafe { pointer.write(value) };
    result::SUCCESS
}

unsafe fn allocate(dptr: *mut CUdeviceptr, size: usize, pass_through: impl FnOnce() -> CUresult) -> CUresult {
    if dptr.is_null() || size == 0 {
        return pass_through();
    }
    match place(size) {
        Some(Ok(address)) => unsafe { write(dptr, address) },
        Some(Err(code)) => code,
        None => pass_through(),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, size: usize) -> CUresult {
    guard("cuMemAlloc_v2", || unsafe { allocate(dptr, size, || real_call!(cuMemAlloc_v2(dptr, size))) })
}

/// Row pitch for `cuMemAllocPitch`: rows aligned to 512 bytes, as current GPUs use.
const PITCH_ALIGN: usize = 512;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, element_size: c_uint) -> CUresult {
    guard("cuMemAllocPitch_v2", || {
        let pass = || real_call!(cuMemAllocPitch_v2(dptr, pitch, width, height, element_size));
        if pitch.is_null() || width == 0 || height == 0 || ![4, 8, 16].contains(&element_size) {
            return pass();
        }
        let Some((row, size)) = width.checked_next_multiple_of(PITCH_ALIGN).and_then(|row| Some((row, row.checked_mul(height)?))) else {
            return result::INVALID_VALUE;
        };
        match place(size) {
            Some(Ok(address)) => unsafe {
                pitch.write(row);
                write(dptr, address)
            },
            Some(Err(code)) => code,
            None => pass(),
        }
    })
}

fn owned(address: u64) -> bool {
    state().manager.as_ref().is_some_and(|m| m.owns(address))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    guard("cuMemFree_v2", || {
        if !owned(dptr) {
            return real_call!(cuMemFree_v2(dptr));
        }
        if CAPTURES.load(Ordering::Acquire) > 0 {
            // Synchronising now would break the capture: the memory goes at the next
            // cuMemFree of vvram memory once no stream captures.
            DEFERRED_FREES.lock().unwrap_or_else(|p| p.into_inner()).push(dptr);
            tracing::debug!(dptr, "cuMemFree during a stream capture: deferred");
            return result::SUCCESS;
        }
        // cuMemFree synchronises: queued work may still use the memory, in any context.
        if let Err(code) = crate::ops::synchronize_every_context() {
            return code;
        }
        let deferred = std::mem::take(&mut *DEFERRED_FREES.lock().unwrap_or_else(|p| p.into_inner()));
        for address in deferred {
            if let Some(Err(code)) = state().manager.as_mut().map(|m| m.free(address)) {
                HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(address, code, "a cuMemFree deferred past a stream capture failed");
            }
        }
        let device = find(dptr).map_or(0, |info| info.device);
        let freed = state().manager.as_mut().map(|m| {
            let freed = m.free(dptr);
            crate::staging::sync(m, device);
            freed
        });
        match freed {
            Some(Ok(())) => result::SUCCESS,
            Some(Err(code)) => code,
            None => result::INVALID_VALUE,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, size: usize, stream: CUstream) -> CUresult {
    guard("cuMemAllocAsync", || unsafe { allocate(dptr, size, || real_call!(cuMemAllocAsync(dptr, size, stream))) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, size: usize, stream: CUstream) -> CUresult {
    guard("cuMemAllocAsync_ptsz", || unsafe { allocate(dptr, size, || real_call!(cuMemAllocAsync_ptsz(dptr, size, stream))) })
}

/// Whether `pool` is the current device's default pool, whose memory is plain device
/// memory (no host or managed location, no IPC handle types) that vvram may place. Any
/// other pool was made by the application with properties of its own, which only the
/// driver keeps: its allocations pass through.
fn is_default_pool(pool: CUmemoryPool) -> bool {
    let Ok(device) = current_device() else { return false };
    let mut default = std::ptr::null_mut();
    real_call!(cuDeviceGetDefaultMemPool(&mut default, device as CUdevice)) == result::SUCCESS && default == pool
}

/// Allocations from the device's default pool are placed like `cuMemAllocAsync`; those
/// from the application's own pools pass through.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(dptr: *mut CUdeviceptr, size: usize, pool: CUmemoryPool, stream: CUstream) -> CUresult {
    guard("cuMemAllocFromPoolAsync", || {
        let pass = || real_call!(cuMemAllocFromPoolAsync(dptr, size, pool, stream));
        if !is_default_pool(pool) {
            return pass();
        }
        unsafe { allocate(dptr, size, pass) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync_ptsz(dptr: *mut CUdeviceptr, size: usize, pool: CUmemoryPool, stream: CUstream) -> CUresult {
    guard("cuMemAllocFromPoolAsync_ptsz", || {
        let pass = || real_call!(cuMemAllocFromPoolAsync_ptsz(dptr, size, pool, stream));
        if !is_default_pool(pool) {
            return pass();
        }
        unsafe { allocate(dptr, size, pass) }
    })
}

fn free_async(dptr: CUdeviceptr, stream: CUstream, pass_through: impl FnOnce() -> CUresult) -> CUresult {
    if !owned(dptr) {
        return pass_through();
    }
    if capturing(stream) {
        // The free is a node of the graph being captured, which may run any number of
        // times, later: the memory stays the graph's (placed, counted) for the process.
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            tracing::info!(dptr, "cuMemFreeAsync during a stream capture: the memory stays with the graph");
        }
        return result::SUCCESS;
    }
    if let Some(info) = find(dptr) {
        // Pending write-backs into the memory come before the free on its stream.
        crate::coherence::before_free(info.base, info.size as usize, stream as usize);
    }
    match state().manager.as_mut().map(|m| m.free_async(dptr, stream as u64)) {
        Some(Ok(())) => result::SUCCESS,
        Some(Err(code)) => code,
        None => result::INVALID_VALUE,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    guard("cuMemFreeAsync", || free_async(dptr, stream, || real_call!(cuMemFreeAsync(dptr, stream))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    guard("cuMemFreeAsync_ptsz", || {
        free_async(dptr, per_thread_stream(stream), || real_call!(cuMemFreeAsync_ptsz(dptr, stream)))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    guard("cuMemGetInfo_v2", || {
        check_for_aimdo();
        if free.is_null() || total.is_null() {
            return real_call!(cuMemGetInfo_v2(free, total));
        }
        let (mut physical_free, mut physical_total) = (0usize, 0usize);
        let code = real_call!(cuMemGetInfo_v2(&mut physical_free, &mut physical_total));
        if code != result::SUCCESS {
            return code;
        }
        let virtual_info = current_device().ok().and_then(|device| {
            state().manager().and_then(|m| {
                // Stream-ordered frees whose stream has passed them count as free.
                m.reclaim();
                m.memory_info(device, physical_free as u64, physical_total as u64)
            })
        });
        let (f, t) = virtual_info.unwrap_or((physical_free as u64, physical_total as u64));
        unsafe {
            free.write(f as usize);
            total.write(t as usize);
        }
        result::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: CUdevice) -> CUresult {
    guard("cuDeviceTotalMem_v2", || {
        let code = real_call!(cuDeviceTotalMem_v2(bytes, device));
        if code != result::SUCCESS || bytes.is_null() || device < 0 {
            return code;
        }
        let reported = state().manager().and_then(|m| m.usage(device as u32)).map(|u| u.reported_total);
        if let Some(reported) = reported {
            unsafe { bytes.write(reported as usize) };
        }
        result::SUCCESS
    })
}

fn find(address: u64) -> Option<AllocationInfo> {
    state().manager.as_ref().and_then(|m| m.find(address))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(base: *mut CUdeviceptr, size: *mut usize, dptr: CUdeviceptr) -> CUresult {
    guard("cuMemGetAddressRange_v2", || {
        let Some(info) = find(dptr) else { return real_call!(cuMemGetAddressRange_v2(base, size, dptr)) };
        unsafe {
            if !base.is_null() {
                base.write(info.base);
            }
            if !size.is_null() {
                size.write(info.size as usize);
            }
        }
        result::SUCCESS
    })
}

/// Answers a pointer attribute for a vvram allocation, as a real device allocation of
/// the same size on the compute device would; `None` for attributes the driver answers.
unsafe fn own_attribute(info: &AllocationInfo, attribute: c_int, data: *mut c_void) -> Option<CUresult> {
    unsafe {
        Some(match attribute {
            CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => write(data as *mut u64, info.base),
            CU_POINTER_ATTRIBUTE_RANGE_SIZE => write(data as *mut usize, info.size as usize),
            CU_POINTER_ATTRIBUTE_BUFFER_ID => write(data as *mut u64, info.id),
            CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => write(data as *mut c_int, info.device as c_int),
            CU_POINTER_ATTRIBUTE_MEMORY_TYPE => write(data as *mut c_uint, CU_MEMORYTYPE_DEVICE),
            CU_POINTER_ATTRIBUTE_IS_MANAGED => write(data as *mut c_uint, 0),
            // Its chunks are the shim's, made without shareable handle types.
            CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE => write(data as *mut c_int, 0),
            _ => return None,
        })
    }
}

/// The physical allocation the application mapped at `address`, if it is the
/// application's own virtual memory (the driver knows a handle for it).
fn mapped_handle(address: u64) -> Option<u64> {
    let mut handle = 0;
    if real_call!(cuMemRetainAllocationHandle(&mut handle, address as *mut c_void)) != result::SUCCESS {
        return None;
    }
    real_call!(cuMemRelease(handle));
    Some(handle)
}

/// After the driver answered a pointer query: memory the application asked for on its
/// GPU (`cuMemCreate`) that vvram placed on the host is device memory to the
/// application, as it would be without vvram, so that no library takes it for a CPU
/// buffer (the driver says HOST for host-located virtual memory).
unsafe fn as_device_memory(code: CUresult, attribute: c_int, data: *mut c_void, ptr: CUdeviceptr) -> CUresult {
    if code != result::SUCCESS || attribute != CU_POINTER_ATTRIBUTE_MEMORY_TYPE || data.is_null() {
        return code;
    }
    // SAFETY: the driver just wrote the memory type there.
    if unsafe { *(data as *const c_uint) } == CU_MEMORYTYPE_HOST
        && let Some(handle) = mapped_handle(ptr)
        && state().manager.as_ref().is_some_and(|m| m.is_application_handle(handle))
    {
        unsafe { *(data as *mut c_uint) = CU_MEMORYTYPE_DEVICE };
    }
    code
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: c_int, ptr: CUdeviceptr) -> CUresult {
    guard("cuPointerGetAttribute", || {
        find(ptr).and_then(|info| unsafe { own_attribute(&info, attribute, data) }).unwrap_or_else(|| unsafe {
            as_device_memory(real_call!(cuPointerGetAttribute(data, attribute, ptr)), attribute, data, ptr)
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttributes(count: c_uint, attributes: *mut c_int, data: *mut *mut c_void, ptr: CUdeviceptr) -> CUresult {
    guard("cuPointerGetAttributes", || {
        let Some(info) = find(ptr) else {
            let code = real_call!(cuPointerGetAttributes(count, attributes, data, ptr));
            if code == result::SUCCESS && !attributes.is_null() && !data.is_null() {
                for i in 0..count as usize {
                    // SAFETY: the application's arrays of `count` entries.
                    unsafe { as_device_memory(code, *attributes.add(i), *data.add(i), ptr) };
                }
            }
            return code;
        };
        if attributes.is_null() || data.is_null() {
            return result::INVALID_VALUE;
        }
        for i in 0..count as usize {
            let (attribute, slot) = unsafe { (attributes.add(i), *data.add(i)) };
            let code = unsafe { own_attribute(&info, *attribute, slot) }.unwrap_or_else(|| {
                let mut one = slot;
                real_call!(cuPointerGetAttributes(1, attribute, &mut one, ptr))
            });
            if code != result::SUCCESS {
                return code;
            }
        }
        result::SUCCESS
    })
}

/// Stream captures begun and not yet ended, in the whole process.
static CAPTURES: AtomicUsize = AtomicUsize::new(0);
/// vvram memory given to `cuMemFree` while a stream captured.
static DEFERRED_FREES: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Whether a stream capture is under way in the process (moves wait: a copy ordered after
/// a capturing stream would join the capture).
pub fn capture_under_way() -> bool {
    CAPTURES.load(Ordering::Acquire) > 0
}

/// `cuStreamDestroy_v2`: the stream is forgotten by the use records (its handle may be
/// reused by another stream).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamDestroy_v2(stream: CUstream) -> CUresult {
    guard("cuStreamDestroy_v2", || {
        let code = real_call!(cuStreamDestroy_v2(stream));
        if code == result::SUCCESS && crate::staging::ACTIVE.load(Ordering::Relaxed) {
            crate::staging::table().forget_stream(stream as usize);
        }
        code
    })
}

/// Counts a capture that began.
fn began(code: CUresult) -> CUresult {
    if code == result::SUCCESS {
        CAPTURES.fetch_add(1, Ordering::AcqRel);
    }
    code
}

/// Counts a capture that ended (also one a refused operation had invalidated).
fn ended(code: CUresult) -> CUresult {
    if code == result::SUCCESS || code == result::STREAM_CAPTURE_INVALIDATED {
        let _ = CAPTURES.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
    code
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamBeginCapture_v2(stream: CUstream, mode: c_uint) -> CUresult {
    guard("cuStreamBeginCapture_v2", || began(real_call!(cuStreamBeginCapture_v2(stream, mode))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamBeginCapture_v2_ptsz(stream: CUstream, mode: c_uint) -> CUresult {
    guard("cuStreamBeginCapture_v2_ptsz", || began(real_call!(cuStreamBeginCapture_v2_ptsz(stream, mode))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    guard("cuStreamEndCapture", || ended(real_call!(cuStreamEndCapture(stream, graph))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture_ptsz(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    guard("cuStreamEndCapture_ptsz", || ended(real_call!(cuStreamEndCapture_ptsz(stream, graph))))
}

/// The legacy default stream, on which the synchronous copies are ordered.
const LEGACY: CUstream = CU_STREAM_LEGACY as CUstream;
/// The per-thread default stream, on which the `_ptds` synchronous copies are ordered.
const PER_THREAD: CUstream = CU_STREAM_PER_THREAD as CUstream;

/// Whether `stream` is being captured into a graph (or the driver cannot say, as for the
/// legacy stream while a blocking stream captures): a CPU copy would then not be in the
/// graph, and synchronising the stream would break the capture.
fn capturing(stream: CUstream) -> bool {
    let mut status = CU_STREAM_CAPTURE_STATUS_NONE;
    real_call!(cuStreamIsCapturing(stream, &mut status)) != result::SUCCESS || status != CU_STREAM_CAPTURE_STATUS_NONE
}

/// The fast path: host-tier pieces of the destination are written by the CPU once the
/// copy's stream (`order`: the legacy or per-thread default stream for synchronous
/// copies) has finished its earlier work; other pieces go through `device_copy`. `None`
/// when the destination has no host-tier piece, the source is not memory the CPU may
/// read, or the stream is being captured (the caller passes the call to the driver).
fn fast_h2d(dst: u64, src: *const c_void, len: usize, order: CUstream, device_copy: impl Fn(u64, *const c_void, usize) -> CUresult) -> Option<CUresult> {
    if src.is_null() || len == 0 || !is_host_memory(src as u64) || capturing(order) {
        return None;
    }
    // Pinned from the lookup to the end of the copy: a racing free is deferred until then,
    // and no move starts meanwhile; the stream is noted, so a later move is ordered after
    // the copy's device pieces.
    let (base, segments) = state().manager.as_mut().and_then(|m| m.pin(dst, len as u64))?;
    let _pinned = Pinned(base);
    crate::working_set::note_user(dst, order as usize);
    if !segments.iter().any(|s| s.host) {
        return None;
    }
    let waited = real_call!(cuStreamSynchronize(order));
    if waited != result::SUCCESS {
        return Some(waited);
    }
    before_cpu_write(dst, len);
    let mut cpu_bytes = 0;
    for segment in segments {
        let source = (src as u64 + (segment.address - dst)) as *const c_void;
        if segment.host {
            // SAFETY: the segment is mapped CPU-writable host memory inside the allocation;
            // the source is the application's buffer of `len` bytes.
            unsafe { cpu_copy(segment.address, source as u64, segment.len as usize) };
            cpu_bytes += segment.len;
        } else {
            let code = device_copy(segment.address, source, segment.len as usize);
            if code != result::SUCCESS {
                return Some(code);
            }
        }
    }
    if let Some(manager) = state().manager.as_mut() {
        manager.count_fast_h2d(cpu_bytes);
    }
    Some(result::SUCCESS)
}

/// A pinned allocation (see `MemoryManager::pin`), unpinned on drop.
struct Pinned(u64);

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(manager) = state().manager.as_mut() {
            manager.unpin(self.0);
        }
    }
}

/// Whether `address` is host memory the CPU may read: pinned, or pageable (unknown to
/// the driver); never a vvram allocation, nor the application's own virtual memory,
/// which the driver calls HOST when it is host-located although the CPU may have no
/// access to it.
fn is_host_memory(address: u64) -> bool {
    if find(address).is_some() {
        return false;
    }
    let mut kind: c_uint = 0;
    match real_call!(cuPointerGetAttribute(&mut kind as *mut c_uint as *mut c_void, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, address)) {
        result::SUCCESS => kind == CU_MEMORYTYPE_HOST && mapped_handle(address).is_none(),
        _ => true,
    }
}

/// The fast path for unified-address copies (`cuMemcpy`, `cuMemcpyAsync`) from host
/// memory into vvram memory.
fn unified_h2d(dst: u64, src: u64, len: usize, order: CUstream, device_copy: impl Fn(u64, u64, usize) -> CUresult) -> Option<CUresult> {
    find(dst)?;
    fast_h2d(dst, src as *const c_void, len, order, |d, s, n| device_copy(d, s as u64, n))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, len: usize) -> CUresult {
    guard("cuMemcpy", || {
        unified_h2d(dst, src, len, LEGACY, |d, s, n| real_call!(cuMemcpy(d, s, n))).unwrap_or_else(|| around(Some((src, len)), Some((dst, len)), None, 0, || real_call!(cuMemcpy(dst, src, len))))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, len: usize) -> CUresult {
    guard("cuMemcpy_ptds", || {
        unified_h2d(dst, src, len, PER_THREAD, |d, s, n| real_call!(cuMemcpy_ptds(d, s, n)))
            .unwrap_or_else(|| around(Some((src, len)), Some((dst, len)), None, CU_STREAM_PER_THREAD, || real_call!(cuMemcpy_ptds(dst, src, len))))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, len: usize, stream: CUstream) -> CUresult {
    guard("cuMemcpyAsync", || {
        unified_h2d(dst, src, len, stream, |d, s, n| real_call!(cuMemcpyAsync(d, s, n, stream)))
            .unwrap_or_else(|| {
                let key = stream as usize;
                around(Some((src, len)), Some((dst, len)), Some(key), key, || real_call!(cuMemcpyAsync(dst, src, len, stream)))
            })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyAsync_ptsz(dst: CUdeviceptr, src: CUdeviceptr, len: usize, stream: CUstream) -> CUresult {
    guard("cuMemcpyAsync_ptsz", || {
        let ordered = per_thread_stream(stream);
        unified_h2d(dst, src, len, ordered, |d, s, n| real_call!(cuMemcpyAsync_ptsz(d, s, n, stream)))
            .unwrap_or_else(|| {
                let key = ordered as usize;
                around(Some((src, len)), Some((dst, len)), Some(key), key, || real_call!(cuMemcpyAsync_ptsz(dst, src, len, stream)))
            })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, len: usize) -> CUresult {
    guard("cuMemcpyHtoD_v2", || {
        fast_h2d(dst, src, len, LEGACY, |d, s, n| real_call!(cuMemcpyHtoD_v2(d, s, n)))
            .unwrap_or_else(|| around(None, Some((dst, len)), None, 0, || real_call!(cuMemcpyHtoD_v2(dst, src, len))))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2_ptds(dst: CUdeviceptr, src: *const c_void, len: usize) -> CUresult {
    guard("cuMemcpyHtoD_v2_ptds", || {
        fast_h2d(dst, src, len, PER_THREAD, |d, s, n| real_call!(cuMemcpyHtoD_v2_ptds(d, s, n)))
            .unwrap_or_else(|| around(None, Some((dst, len)), None, CU_STREAM_PER_THREAD, || real_call!(cuMemcpyHtoD_v2_ptds(dst, src, len))))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, len: usize, stream: CUstream) -> CUresult {
    guard("cuMemcpyHtoDAsync_v2", || {
        fast_h2d(dst, src, len, stream, |d, s, n| real_call!(cuMemcpyHtoDAsync_v2(d, s, n, stream))).unwrap_or_else(|| {
            let key = stream as usize;
            around(None, Some((dst, len)), Some(key), key, || real_call!(cuMemcpyHtoDAsync_v2(dst, src, len, stream)))
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2_ptsz(dst: CUdeviceptr, src: *const c_void, len: usize, stream: CUstream) -> CUresult {
    guard("cuMemcpyHtoDAsync_v2_ptsz", || {
        let ordered = per_thread_stream(stream);
        fast_h2d(dst, src, len, ordered, |d, s, n| real_call!(cuMemcpyHtoDAsync_v2_ptsz(d, s, n, stream))).unwrap_or_else(|| {
            let key = ordered as usize;
            around(None, Some((dst, len)), Some(key), key, || real_call!(cuMemcpyHtoDAsync_v2_ptsz(dst, src, len, stream)))
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(handle: *mut CUmemGenericAllocationHandle, size: usize, prop: *const CUmemAllocationProp, flags: u64) -> CUresult {
    guard("cuMemCreate", || {
        let pass = || real_call!(cuMemCreate(handle, size, prop, flags));
        // SAFETY: the application's property struct, read only.
        let Some(asked) = (unsafe { prop.as_ref() }).copied() else { return pass() };
        if handle.is_null() || asked.type_ != CU_MEM_ALLOCATION_TYPE_PINNED || asked.location.type_ != CU_MEM_LOCATION_TYPE_DEVICE || asked.location.id < 0 {
            return pass();
        }
        let device = asked.location.id as u32;
        let mut state = state();
        let (phase, tag) = (state.phase.clone(), state.tag.clone());
        let Some(manager) = state.manager().filter(|m| m.manages(device)) else {
            if let Some(code) = state.machine_error() {
                return code;
            }
            drop(state);
            return pass();
        };
        let request = Request { device, size: size as u64, phase: phase.as_deref(), tag: tag.as_deref() };
        crate::working_set::note_kernels(manager, device);
        let created = manager.create_for_application(request, |location| {
            let mut placed = asked;
            placed.location = mem_location(location);
            let mut made = 0;
            match real_call!(cuMemCreate(&mut made, size, &placed, flags)) {
                result::SUCCESS => Ok(made),
                code => Err(code),
            }
        });
        match created {
            Ok(made) => unsafe { write(handle, made) },
            Err(code) => code,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
    guard("cuMemRelease", || {
        if let Some(manager) = state().manager.as_mut() {
            manager.forget_application_handle(handle);
        }
        real_call!(cuMemRelease(handle))
    })
}

/// vvram memory is a `cuMemAlloc`-like allocation to the application: it has no handle
/// of the application's to retain, whatever backs it (the driver's answer for such
/// memory is `CUDA_ERROR_INVALID_VALUE`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRetainAllocationHandle(handle: *mut CUmemGenericAllocationHandle, address: *mut c_void) -> CUresult {
    guard("cuMemRetainAllocationHandle", || {
        if find(address as u64).is_some() {
            return result::INVALID_VALUE;
        }
        real_call!(cuMemRetainAllocationHandle(handle, address))
    })
}

/// vvram memory cannot be shared with another process through a legacy IPC handle (its
/// chunks are the shim's, made without shareable handle types): refused as the driver
/// refuses memory it cannot export, `CUDA_ERROR_INVALID_VALUE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcGetMemHandle(handle: *mut CUipcMemHandle, dptr: CUdeviceptr) -> CUresult {
    guard("cuIpcGetMemHandle", || {
        if find(dptr).is_some() {
            tracing::warn!(dptr, "cuIpcGetMemHandle on vvram memory: it cannot be shared with another process");
            return result::INVALID_VALUE;
        }
        real_call!(cuIpcGetMemHandle(handle, dptr))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64) -> CUresult {
    guard("cuGetProcAddress", || unsafe { crate::doors::get_proc_address(symbol, pfn, version, flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetProcAddress_v2(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64, status: *mut c_int) -> CUresult {
    guard("cuGetProcAddress_v2", || unsafe { crate::doors::get_proc_address_v2(symbol, pfn, version, flags, status) })
}
