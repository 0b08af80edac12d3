//! A fake `libcuda.so.1` for tests without a GPU.
//!
//! It implements the part of the CUDA driver API that vvram and its test programs use,
//! with the driver's names, C signatures, enum values and struct layouts, on host memory
//! (see `memory`), with asynchronous streams (see `stream`), a few built-in kernels (see
//! `kernels`), a configurable machine (see `config`) and fault injection (see `fault`).
//! It behaves as driver 580 does on libcudart's path: `cuLibraryGetKernel` gives
//! `CUkernel` handles, `cuFuncGetParamInfo` refuses them with `CUDA_ERROR_INVALID_HANDLE`,
//! and `cuKernelGetParamInfo` is reachable only through `cuGetProcAddress`.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod config;
mod fault;
mod kernels;
mod memory;
mod stream;

use config::config;
use kernels::Kernel;
use memory::Place;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use stream::{Event, Registry, Stream};
use vvram_cuda::*;

static INITIALIZED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The current context: device index + 1, or 0 for none.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

type Outcome = Result<(), CUresult>;

/// Runs an entry point: fault injection, the initialisation check, no unwinding into C.
fn entry(symbol: &str, needs_init: bool, body: impl FnOnce() -> Outcome) -> CUresult {
    if let Some(code) = fault::injected(&config().faults, symbol) {
        return code;
    }
    if needs_init && !INITIALIZED.load(Ordering::Acquire) {
        return result::NOT_INITIALIZED;
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => result::SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => result::UNKNOWN,
    }
}

unsafe fn out<T>(pointer: *mut T, value: T) -> Outcome {
    if pointer.is_null() {
        return Err(result::INVALID_VALUE);
    }
    // SAFETY: the caller passed a non-null output pointer, as the API requires.
    unsafe { pointer.write(value) };
    Ok(())
}

fn device_index(device: CUdevice) -> Result<usize, CUresult> {
    usize::try_from(device).ok().filter(|d| *d < config().devices.len()).ok_or(result::INVALID_DEVICE)
}

fn context_handle(device: usize) -> CUcontext {
    (0xC000_0000usize + device * 0x1000) as CUcontext
}

fn context_device(context: CUcontext) -> Result<usize, CUresult> {
    let value = (context as usize).wrapping_sub(0xC000_0000);
    if value.is_multiple_of(0x1000) && value / 0x1000 < config().devices.len() {
        Ok(value / 0x1000)
    } else {
        Err(result::INVALID_CONTEXT)
    }
}

fn current_device() -> Result<usize, CUresult> {
    match CURRENT.with(Cell::get) {
        0 => Err(result::INVALID_CONTEXT),
        n => Ok(n - 1),
    }
}

fn streams() -> &'static Registry<Stream> {
    static STREAMS: OnceLock<Registry<Stream>> = OnceLock::new();
    STREAMS.get_or_init(Registry::new)
}

fn events() -> &'static Registry<Event> {
    static EVENTS: OnceLock<Registry<Event>> = OnceLock::new();
    EVENTS.get_or_init(Registry::new)
}

/// The stream a handle names; `per_thread` is set for the `_ptsz`/`_ptds` entry points,
/// where stream 0 is the calling thread's default stream.
fn stream_of(handle: CUstream, per_thread: bool) -> Result<Arc<Stream>, CUresult> {
    match handle as usize {
        0 if per_thread => Ok(stream::per_thread()),
        0 | CU_STREAM_LEGACY => Ok(stream::legacy().clone()),
        CU_STREAM_PER_THREAD => Ok(stream::per_thread()),
        other => streams().get(other).ok_or(result::INVALID_HANDLE),
    }
}

/// Queues `work` on a stream; with `wait`, returns only once it has run (synchronous API).
fn submit(stream: &Arc<Stream>, wait: bool, work: impl FnOnce() + Send + 'static) {
    let seq = stream.enqueue(Vec::new(), Box::new(work));
    if wait {
        stream.wait_for(seq);
    }
}

fn copy_bytes(dst: u64, src: u64, bytes: usize) -> impl FnOnce() + Send + 'static {
    // SAFETY: as on a GPU, the addresses are the application's; a bad one faults.
    move || unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) }
}

fn copy(dst: u64, src: u64, bytes: usize, stream: CUstream, per_thread: bool, wait: bool) -> Outcome {
    current_device()?;
    submit(&stream_of(stream, per_thread)?, wait, copy_bytes(dst, src, bytes));
    Ok(())
}

fn memset(dst: u64, value: u32, width: usize, count: usize, stream: CUstream, per_thread: bool, wait: bool) -> Outcome {
    current_device()?;
    submit(&stream_of(stream, per_thread)?, wait, move || {
        // SAFETY: as on a GPU, the address is the application's; a bad one faults.
        unsafe {
            match width {
                1 => std::ptr::write_bytes(dst as *mut u8, value as u8, count),
                _ => std::slice::from_raw_parts_mut(dst as *mut u32, count).fill(value),
            }
        }
    });
    Ok(())
}

// ---------------------------------------------------------------- init and devices

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CUresult {
    entry("cuInit", false, || {
        if flags != 0 {
            return Err(result::INVALID_VALUE);
        }
        if config().devices.is_empty() {
            return Err(result::NO_DEVICE);
        }
        INITIALIZED.store(true, Ordering::Release);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    entry("cuDriverGetVersion", false, || unsafe { out(version, 13000) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    entry("cuDeviceGet", true, || unsafe { out(device, device_index(ordinal)? as CUdevice) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    entry("cuDeviceGetCount", true, || unsafe { out(count, config().devices.len() as c_int) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
    entry("cuDeviceGetName", true, || {
        device_index(device)?;
        write_c_string(name, len, &config().name)
    })
}

fn write_c_string(target: *mut c_char, len: c_int, text: &str) -> Outcome {
    if target.is_null() || len <= 0 {
        return Err(result::INVALID_VALUE);
    }
    let bytes = text.as_bytes();
    let n = bytes.len().min(len as usize - 1);
    // SAFETY: the caller gave a buffer of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), target as *mut u8, n);
        *target.add(n) = 0;
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: CUdevice) -> CUresult {
    entry("cuDeviceTotalMem_v2", true, || unsafe { out(bytes, config().devices[device_index(device)?] as usize) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: CUdevice) -> CUresult {
    entry("cuDeviceGetAttribute", true, || {
        let device = device_index(device)?;
        let v = match attribute {
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => 9,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => 0,
            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => 132,
            CU_DEVICE_ATTRIBUTE_PCI_BUS_ID => 0x18 + device as c_int,
            CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID | CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID => 0,
            CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING | CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 1,
            _ => 0,
        };
        unsafe { out(value, v) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetPCIBusId(bus_id: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
    entry("cuDeviceGetPCIBusId", true, || {
        let device = device_index(device)?;
        write_c_string(bus_id, len, &format!("00000000:{:02X}:00.0", 0x18 + device))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(can: *mut c_int, device: CUdevice, peer: CUdevice) -> CUresult {
    entry("cuDeviceCanAccessPeer", true, || {
        let (a, b) = (device_index(device)?, device_index(peer)?);
        unsafe { out(can, config().peers[a][b] as c_int) }
    })
}

// ---------------------------------------------------------------- contexts

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(context: *mut CUcontext, device: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRetain", true, || unsafe { out(context, context_handle(device_index(device)?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(device: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRelease_v2", true, || device_index(device).map(|_| ()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSetCurrent(context: CUcontext) -> CUresult {
    entry("cuCtxSetCurrent", true, || {
        let value = if context.is_null() { 0 } else { context_device(context)? + 1 };
        CURRENT.with(|c| c.set(value));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(context: *mut CUcontext) -> CUresult {
    entry("cuCtxGetCurrent", true, || {
        let handle = current_device().map_or(std::ptr::null_mut(), context_handle);
        unsafe { out(context, handle) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    entry("cuCtxGetDevice", true, || unsafe { out(device, current_device()? as CUdevice) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    entry("cuCtxSynchronize", true, || {
        current_device()?;
        stream::synchronize_all();
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxEnablePeerAccess(peer: CUcontext, flags: c_uint) -> CUresult {
    entry("cuCtxEnablePeerAccess", true, || {
        let (me, other) = (current_device()?, context_device(peer)?);
        if flags != 0 {
            return Err(result::INVALID_VALUE);
        }
        if !config().peers[me][other] {
            return Err(result::PEER_ACCESS_UNSUPPORTED);
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- memory

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    entry("cuMemGetInfo_v2", true, || {
        let device = current_device()?;
        let capacity = config().devices[device];
        unsafe {
            out(free, (capacity - memory::device_used(device)) as usize)?;
            out(total, capacity as usize)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    entry("cuMemAlloc_v2", true, || unsafe { out(dptr, memory::allocate(current_device()?, bytes as u64)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    element_size: c_uint,
) -> CUresult {
    entry("cuMemAllocPitch_v2", true, || {
        if ![4, 8, 16].contains(&element_size) || width == 0 || height == 0 {
            return Err(result::INVALID_VALUE);
        }
        let row = width.next_multiple_of(512);
        let address = memory::allocate(current_device()?, (row * height) as u64)?;
        unsafe {
            out(pitch, row)?;
            out(dptr, address)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    entry("cuMemFree_v2", true, || {
        current_device()?;
        // cuMemFree synchronises: memory still used by queued work is never unmapped early.
        stream::synchronize_all();
        memory::free(dptr)
    })
}

unsafe fn alloc_async(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream, per_thread: bool) -> Outcome {
    stream_of(stream, per_thread)?;
    unsafe { out(dptr, memory::allocate(current_device()?, bytes as u64)?) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult {
    entry("cuMemAllocAsync", true, || unsafe { alloc_async(dptr, bytes, stream, false) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult {
    entry("cuMemAllocAsync_ptsz", true, || unsafe { alloc_async(dptr, bytes, stream, true) })
}

fn free_async(dptr: CUdeviceptr, stream: CUstream, per_thread: bool) -> Outcome {
    current_device()?;
    memory::allocation_containing(dptr).filter(|(base, _)| *base == dptr).ok_or(result::INVALID_VALUE)?;
    submit(&stream_of(stream, per_thread)?, false, move || {
        let _ = memory::free(dptr);
    });
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    entry("cuMemFreeAsync", true, || free_async(dptr, stream, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    entry("cuMemFreeAsync_ptsz", true, || free_async(dptr, stream, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(base: *mut CUdeviceptr, size: *mut usize, dptr: CUdeviceptr) -> CUresult {
    entry("cuMemGetAddressRange_v2", true, || {
        let (start, len) = if let Some((start, a)) = memory::allocation_containing(dptr) {
            (start, a.size)
        } else if let Some((start, m)) = memory::mapping_containing(dptr) {
            (start, m.size)
        } else {
            return Err(result::NOT_FOUND);
        };
        unsafe {
            if !base.is_null() {
                base.write(start);
            }
            if !size.is_null() {
                size.write(len as usize);
            }
        }
        Ok(())
    })
}

unsafe fn pointer_attribute(data: *mut c_void, attribute: c_int, ptr: CUdeviceptr) -> Outcome {
    let (start, len, device, id) = if let Some((start, a)) = memory::allocation_containing(ptr) {
        (start, a.size, a.device, a.id)
    } else if let Some((start, m)) = memory::mapping_containing(ptr) {
        let device = match m.place {
            Place::Device(d) => d,
            Place::Host => current_device()?,
        };
        (start, m.size, device, m.handle)
    } else {
        return Err(result::INVALID_VALUE);
    };
    unsafe {
        match attribute {
            CU_POINTER_ATTRIBUTE_CONTEXT => out(data as *mut CUcontext, context_handle(device)),
            CU_POINTER_ATTRIBUTE_MEMORY_TYPE => out(data as *mut c_uint, CU_MEMORYTYPE_DEVICE),
            CU_POINTER_ATTRIBUTE_DEVICE_POINTER => out(data as *mut u64, ptr),
            CU_POINTER_ATTRIBUTE_HOST_POINTER => out(data as *mut u64, 0),
            CU_POINTER_ATTRIBUTE_BUFFER_ID => out(data as *mut u64, id),
            CU_POINTER_ATTRIBUTE_IS_MANAGED => out(data as *mut c_int, 0),
            CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => out(data as *mut c_int, device as c_int),
            CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => out(data as *mut u64, start),
            CU_POINTER_ATTRIBUTE_RANGE_SIZE => out(data as *mut usize, len as usize),
            CU_POINTER_ATTRIBUTE_MAPPED => out(data as *mut c_int, 1),
            _ => Err(result::INVALID_VALUE),
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: c_int, ptr: CUdeviceptr) -> CUresult {
    entry("cuPointerGetAttribute", true, || unsafe { pointer_attribute(data, attribute, ptr) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttributes(
    count: c_uint,
    attributes: *mut c_int,
    data: *mut *mut c_void,
    ptr: CUdeviceptr,
) -> CUresult {
    entry("cuPointerGetAttributes", true, || {
        if attributes.is_null() || data.is_null() {
            return Err(result::INVALID_VALUE);
        }
        for i in 0..count as usize {
            unsafe { pointer_attribute(*data.add(i), *attributes.add(i), ptr)? };
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- copies and memset

macro_rules! copy_entry {
    ($name:ident, $ptname:ident, ($($arg:ident : $ty:ty),*), $dst:expr, $src:expr, $bytes:expr, $stream:expr, $wait:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
            entry(stringify!($name), true, || copy($dst as u64, $src as u64, $bytes, $stream, false, $wait))
        }
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $ptname($($arg: $ty),*) -> CUresult {
            entry(stringify!($ptname), true, || copy($dst as u64, $src as u64, $bytes, $stream, true, $wait))
        }
    };
}

const NO_STREAM: CUstream = std::ptr::null_mut();

copy_entry!(cuMemcpy, cuMemcpy_ptds, (dst: CUdeviceptr, src: CUdeviceptr, n: usize), dst, src, n, NO_STREAM, true);
copy_entry!(cuMemcpyAsync, cuMemcpyAsync_ptsz, (dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream), dst, src, n, s, false);
copy_entry!(cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, (dst: CUdeviceptr, src: *const c_void, n: usize), dst, src, n, NO_STREAM, true);
copy_entry!(cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, (dst: *mut c_void, src: CUdeviceptr, n: usize), dst, src, n, NO_STREAM, true);
copy_entry!(cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds, (dst: CUdeviceptr, src: CUdeviceptr, n: usize), dst, src, n, NO_STREAM, true);
copy_entry!(cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz, (dst: CUdeviceptr, src: *const c_void, n: usize, s: CUstream), dst, src, n, s, false);
copy_entry!(cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz, (dst: *mut c_void, src: CUdeviceptr, n: usize, s: CUstream), dst, src, n, s, false);
copy_entry!(cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz, (dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream), dst, src, n, s, false);

fn peer_copy(dst: u64, dst_ctx: CUcontext, src: u64, src_ctx: CUcontext, n: usize, s: CUstream, per_thread: bool, wait: bool) -> Outcome {
    context_device(dst_ctx)?;
    context_device(src_ctx)?;
    copy(dst, src, n, s, per_thread, wait)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyPeer(dst: CUdeviceptr, dst_ctx: CUcontext, src: CUdeviceptr, src_ctx: CUcontext, n: usize) -> CUresult {
    entry("cuMemcpyPeer", true, || peer_copy(dst, dst_ctx, src, src_ctx, n, NO_STREAM, false, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyPeer_ptds(dst: CUdeviceptr, dst_ctx: CUcontext, src: CUdeviceptr, src_ctx: CUcontext, n: usize) -> CUresult {
    entry("cuMemcpyPeer_ptds", true, || peer_copy(dst, dst_ctx, src, src_ctx, n, NO_STREAM, true, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyPeerAsync(dst: CUdeviceptr, dst_ctx: CUcontext, src: CUdeviceptr, src_ctx: CUcontext, n: usize, s: CUstream) -> CUresult {
    entry("cuMemcpyPeerAsync", true, || peer_copy(dst, dst_ctx, src, src_ctx, n, s, false, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyPeerAsync_ptsz(dst: CUdeviceptr, dst_ctx: CUcontext, src: CUdeviceptr, src_ctx: CUcontext, n: usize, s: CUstream) -> CUresult {
    entry("cuMemcpyPeerAsync_ptsz", true, || peer_copy(dst, dst_ctx, src, src_ctx, n, s, true, false))
}

macro_rules! memset_entry {
    ($name:ident, $ptname:ident, $value:ty, $width:expr, sync) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: CUdeviceptr, value: $value, count: usize) -> CUresult {
            entry(stringify!($name), true, || memset(dst, value as u32, $width, count, NO_STREAM, false, true))
        }
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $ptname(dst: CUdeviceptr, value: $value, count: usize) -> CUresult {
            entry(stringify!($ptname), true, || memset(dst, value as u32, $width, count, NO_STREAM, true, true))
        }
    };
    ($name:ident, $ptname:ident, $value:ty, $width:expr, async) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: CUdeviceptr, value: $value, count: usize, s: CUstream) -> CUresult {
            entry(stringify!($name), true, || memset(dst, value as u32, $width, count, s, false, false))
        }
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $ptname(dst: CUdeviceptr, value: $value, count: usize, s: CUstream) -> CUresult {
            entry(stringify!($ptname), true, || memset(dst, value as u32, $width, count, s, true, false))
        }
    };
}

memset_entry!(cuMemsetD8_v2, cuMemsetD8_v2_ptds, u8, 1, sync);
memset_entry!(cuMemsetD32_v2, cuMemsetD32_v2_ptds, c_uint, 4, sync);
memset_entry!(cuMemsetD8Async, cuMemsetD8Async_ptsz, u8, 1, async);
memset_entry!(cuMemsetD32Async, cuMemsetD32Async_ptsz, c_uint, 4, async);

// ---------------------------------------------------------------- streams and events

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(handle: *mut CUstream, flags: c_uint) -> CUresult {
    entry("cuStreamCreate", true, || {
        current_device()?;
        let stream = Stream::new(flags & CU_STREAM_NON_BLOCKING == 0);
        unsafe { out(handle, streams().insert(stream) as CUstream) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamDestroy_v2(handle: CUstream) -> CUresult {
    entry("cuStreamDestroy_v2", true, || streams().remove(handle as usize).map(|_| ()).ok_or(result::INVALID_HANDLE))
}

fn stream_sync(handle: CUstream, per_thread: bool) -> Outcome {
    stream_of(handle, per_thread)?.synchronize();
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamSynchronize(handle: CUstream) -> CUresult {
    entry("cuStreamSynchronize", true, || stream_sync(handle, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamSynchronize_ptsz(handle: CUstream) -> CUresult {
    entry("cuStreamSynchronize_ptsz", true, || stream_sync(handle, true))
}

fn stream_query(handle: CUstream, per_thread: bool) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    if stream.has_completed(stream.submitted()) { Ok(()) } else { Err(result::NOT_READY) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamQuery(handle: CUstream) -> CUresult {
    entry("cuStreamQuery", true, || stream_query(handle, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamQuery_ptsz(handle: CUstream) -> CUresult {
    entry("cuStreamQuery_ptsz", true, || stream_query(handle, true))
}

fn stream_wait_event(handle: CUstream, event: CUevent, per_thread: bool) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    let event = events().get(event as usize).ok_or(result::INVALID_HANDLE)?;
    if let Some(point) = event.point() {
        stream.enqueue(vec![point], Box::new(|| {}));
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamWaitEvent(handle: CUstream, event: CUevent, _flags: c_uint) -> CUresult {
    entry("cuStreamWaitEvent", true, || stream_wait_event(handle, event, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamWaitEvent_ptsz(handle: CUstream, event: CUevent, _flags: c_uint) -> CUresult {
    entry("cuStreamWaitEvent_ptsz", true, || stream_wait_event(handle, event, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(event: *mut CUevent, _flags: c_uint) -> CUresult {
    entry("cuEventCreate", true, || {
        current_device()?;
        unsafe { out(event, events().insert(Arc::new(Event::default())) as CUevent) }
    })
}

fn event_record(event: CUevent, handle: CUstream, per_thread: bool) -> Outcome {
    let event = events().get(event as usize).ok_or(result::INVALID_HANDLE)?;
    event.record(&stream_of(handle, per_thread)?);
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventRecord(event: CUevent, handle: CUstream) -> CUresult {
    entry("cuEventRecord", true, || event_record(event, handle, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventRecord_ptsz(event: CUevent, handle: CUstream) -> CUresult {
    entry("cuEventRecord_ptsz", true, || event_record(event, handle, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventQuery(event: CUevent) -> CUresult {
    entry("cuEventQuery", true, || {
        let event = events().get(event as usize).ok_or(result::INVALID_HANDLE)?;
        match event.point() {
            Some((stream, seq)) if !stream.has_completed(seq) => Err(result::NOT_READY),
            _ => Ok(()),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventSynchronize(event: CUevent) -> CUresult {
    entry("cuEventSynchronize", true, || {
        let event = events().get(event as usize).ok_or(result::INVALID_HANDLE)?;
        if let Some((stream, seq)) = event.point() {
            stream.wait_for(seq);
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventDestroy_v2(event: CUevent) -> CUresult {
    entry("cuEventDestroy_v2", true, || events().remove(event as usize).map(|_| ()).ok_or(result::INVALID_HANDLE))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(milliseconds: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    entry("cuEventElapsedTime", true, || {
        let start = events().get(start as usize).ok_or(result::INVALID_HANDLE)?;
        let end = events().get(end as usize).ok_or(result::INVALID_HANDLE)?;
        match (start.passed_at(), end.passed_at()) {
            (Some(a), Some(b)) => unsafe { out(milliseconds, b.saturating_duration_since(a).as_secs_f32() * 1000.0) },
            _ => Err(result::NOT_READY),
        }
    })
}

// ---------------------------------------------------------------- virtual memory management

fn place_of(location: &CUmemLocation) -> Result<Place, CUresult> {
    match location.type_ {
        CU_MEM_LOCATION_TYPE_DEVICE => device_index(location.id).map(Place::Device),
        CU_MEM_LOCATION_TYPE_HOST | CU_MEM_LOCATION_TYPE_HOST_NUMA | CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT => Ok(Place::Host),
        _ => Err(result::INVALID_VALUE),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAddressReserve(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, _flags: u64) -> CUresult {
    entry("cuMemAddressReserve", true, || unsafe { out(ptr, memory::reserve(size as u64, alignment as u64, addr)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> CUresult {
    entry("cuMemAddressFree", true, || memory::release_reservation(ptr, size as u64))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    _flags: u64,
) -> CUresult {
    entry("cuMemCreate", true, || {
        let prop = unsafe { prop.as_ref() }.ok_or(result::INVALID_VALUE)?;
        if prop.type_ != CU_MEM_ALLOCATION_TYPE_PINNED {
            return Err(result::INVALID_VALUE);
        }
        unsafe { out(handle, memory::create(size as u64, place_of(&prop.location)?)?) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
    entry("cuMemRelease", true, || memory::release(handle))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: u64) -> CUresult {
    entry("cuMemMap", true, || {
        if flags != 0 {
            return Err(result::INVALID_VALUE);
        }
        memory::map(ptr, size as u64, offset as u64, handle)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult {
    entry("cuMemUnmap", true, || memory::unmap(ptr, size as u64))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) -> CUresult {
    entry("cuMemSetAccess", true, || {
        if desc.is_null() || count == 0 {
            return Err(result::INVALID_VALUE);
        }
        let descs = unsafe { std::slice::from_raw_parts(desc, count) };
        let mut protection = libc::PROT_NONE;
        for d in descs {
            place_of(&d.location)?;
            protection |= match d.flags {
                CU_MEM_ACCESS_FLAGS_PROT_NONE => libc::PROT_NONE,
                CU_MEM_ACCESS_FLAGS_PROT_READ => libc::PROT_READ,
                CU_MEM_ACCESS_FLAGS_PROT_READWRITE => libc::PROT_READ | libc::PROT_WRITE,
                _ => return Err(result::INVALID_VALUE),
            };
        }
        memory::set_access(ptr, size as u64, protection)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(granularity: *mut usize, prop: *const CUmemAllocationProp, _option: c_uint) -> CUresult {
    entry("cuMemGetAllocationGranularity", true, || {
        let prop = unsafe { prop.as_ref() }.ok_or(result::INVALID_VALUE)?;
        place_of(&prop.location)?;
        unsafe { out(granularity, memory::GRANULARITY as usize) }
    })
}

// ---------------------------------------------------------------- modules and kernels

/// A loaded module or library: the built-in kernels its image declares.
struct Module {
    kernels: Vec<Kernel>,
}

fn modules() -> &'static Registry<Module> {
    static MODULES: OnceLock<Registry<Module>> = OnceLock::new();
    MODULES.get_or_init(Registry::new)
}

/// Function handles: `CUfunction`s from modules, then `CUkernel`s from libraries.
static FUNCTION_HANDLES: [u8; 2 * kernels::ALL.len()] = [0; 2 * kernels::ALL.len()];

fn function_handle(kernel: Kernel, library: bool) -> *mut c_void {
    let index = kernels::ALL.iter().position(|k| *k == kernel).unwrap_or(0);
    let slot = index + if library { kernels::ALL.len() } else { 0 };
    FUNCTION_HANDLES.as_ptr().wrapping_add(slot) as *mut c_void
}

/// The kernel behind a handle and whether it is a library `CUkernel`.
fn kernel_of(handle: *mut c_void) -> Result<(Kernel, bool), CUresult> {
    let offset = (handle as usize).wrapping_sub(FUNCTION_HANDLES.as_ptr() as usize);
    let count = kernels::ALL.len();
    if offset < 2 * count { Ok((kernels::ALL[offset % count], offset >= count)) } else { Err(result::INVALID_HANDLE) }
}

unsafe fn load_image(image: *const c_void) -> Result<usize, CUresult> {
    if image.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let text = unsafe { CStr::from_ptr(image as *const c_char) }.to_bytes();
    let kernels = kernels::declared_in(text);
    if kernels.is_empty() {
        return Err(result::INVALID_IMAGE);
    }
    Ok(modules().insert(Arc::new(Module { kernels })))
}

unsafe fn find_kernel(module: *mut c_void, name: *const c_char, library: bool) -> Result<*mut c_void, CUresult> {
    let module = modules().get(module as usize).ok_or(result::INVALID_HANDLE)?;
    if name.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let name = unsafe { CStr::from_ptr(name) }.to_str().map_err(|_| result::NOT_FOUND)?;
    let kernel = Kernel::by_name(name).filter(|k| module.kernels.contains(k)).ok_or(result::NOT_FOUND)?;
    Ok(function_handle(kernel, library))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    entry("cuModuleLoadData", true, || unsafe {
        current_device()?;
        out(module, load_image(image)? as CUmodule)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleUnload(module: CUmodule) -> CUresult {
    entry("cuModuleUnload", true, || modules().remove(module as usize).map(|_| ()).ok_or(result::INVALID_HANDLE))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(function: *mut CUfunction, module: CUmodule, name: *const c_char) -> CUresult {
    entry("cuModuleGetFunction", true, || unsafe { out(function, find_kernel(module, name, false)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryLoadData(
    library: *mut CUlibrary,
    code: *const c_void,
    _jit_options: *mut c_int,
    _jit_values: *mut *mut c_void,
    _jit_count: c_uint,
    _library_options: *mut c_int,
    _library_values: *mut *mut c_void,
    _library_count: c_uint,
) -> CUresult {
    entry("cuLibraryLoadData", true, || unsafe { out(library, load_image(code)? as CUlibrary) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryGetKernel(kernel: *mut CUkernel, library: CUlibrary, name: *const c_char) -> CUresult {
    entry("cuLibraryGetKernel", true, || unsafe { out(kernel, find_kernel(library, name, true)?) })
}

unsafe fn param_info(kernel: Kernel, index: usize, offset: *mut usize, size: *mut usize) -> Outcome {
    let &(o, s) = kernel.params().get(index).ok_or(result::INVALID_VALUE)?;
    unsafe {
        out(offset, o)?;
        if !size.is_null() {
            size.write(s);
        }
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetParamInfo(function: CUfunction, index: usize, offset: *mut usize, size: *mut usize) -> CUresult {
    entry("cuFuncGetParamInfo", true, || match kernel_of(function)? {
        // Driver 580 refuses CUkernel handles here (measured): use cuKernelGetParamInfo.
        (_, true) => Err(result::INVALID_HANDLE),
        (kernel, false) => unsafe { param_info(kernel, index, offset, size) },
    })
}

/// `cuKernelGetParamInfo`: not exported, reachable through `cuGetProcAddress` only, as
/// on driver 580.
unsafe extern "C" fn cuKernelGetParamInfo(kernel: CUkernel, index: usize, offset: *mut usize, size: *mut usize) -> CUresult {
    entry("cuKernelGetParamInfo", true, || match kernel_of(kernel)? {
        (kernel, true) => unsafe { param_info(kernel, index, offset, size) },
        (_, false) => Err(result::INVALID_HANDLE),
    })
}

/// Packs the parameters the way the kernel reads them, from `kernelParams` or `extra`.
unsafe fn pack_params(kernel: Kernel, params: *mut *mut c_void, extra: *mut *mut c_void) -> Result<Vec<u8>, CUresult> {
    let mut packed = vec![0u8; kernel.param_bytes()];
    if !params.is_null() {
        for (i, &(offset, size)) in kernel.params().iter().enumerate() {
            let source = unsafe { *params.add(i) } as *const u8;
            if source.is_null() {
                return Err(result::INVALID_VALUE);
            }
            unsafe { std::ptr::copy_nonoverlapping(source, packed.as_mut_ptr().add(offset), size) };
        }
        return Ok(packed);
    }
    if extra.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let (mut buffer, mut length) = (std::ptr::null::<u8>(), None);
    let mut i = 0;
    loop {
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            CU_LAUNCH_PARAM_END => break,
            CU_LAUNCH_PARAM_BUFFER_POINTER => buffer = unsafe { *extra.add(i + 1) } as *const u8,
            CU_LAUNCH_PARAM_BUFFER_SIZE => length = Some(unsafe { *(*extra.add(i + 1) as *const usize) }),
            _ => return Err(result::INVALID_VALUE),
        }
        i += 2;
    }
    match length {
        Some(length) if !buffer.is_null() && length >= packed.len() => {
            unsafe { std::ptr::copy_nonoverlapping(buffer, packed.as_mut_ptr(), packed.len()) };
            Ok(packed)
        }
        _ => Err(result::INVALID_VALUE),
    }
}

unsafe fn launch(function: CUfunction, stream: CUstream, per_thread: bool, params: *mut *mut c_void, extra: *mut *mut c_void) -> Outcome {
    current_device()?;
    let (kernel, _) = kernel_of(function)?;
    let packed = unsafe { pack_params(kernel, params, extra)? };
    let delay = config().kernel_us;
    submit(&stream_of(stream, per_thread)?, false, move || {
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        // SAFETY: as on a GPU, the kernel's addresses are the application's.
        unsafe { kernel.run(&packed) };
    });
    Ok(())
}

macro_rules! launch_entry {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            function: CUfunction,
            _gx: c_uint, _gy: c_uint, _gz: c_uint,
            _bx: c_uint, _by: c_uint, _bz: c_uint,
            _shared: c_uint,
            stream: CUstream,
            params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> CUresult {
            entry(stringify!($name), true, || unsafe { launch(function, stream, $per_thread, params, extra) })
        }
    };
}

launch_entry!(cuLaunchKernel, false);
launch_entry!(cuLaunchKernel_ptsz, true);

macro_rules! launch_ex_entry {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(config: *const CUlaunchConfig, function: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult {
            entry(stringify!($name), true, || unsafe {
                let config = config.as_ref().ok_or(result::INVALID_VALUE)?;
                launch(function, config.hStream, $per_thread, params, extra)
            })
        }
    };
}

launch_ex_entry!(cuLaunchKernelEx, false);
launch_ex_entry!(cuLaunchKernelEx_ptsz, true);

// ---------------------------------------------------------------- errors

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, text: *mut *const c_char) -> CUresult {
    entry("cuGetErrorName", false, || {
        let name = result::name(error).ok_or(result::INVALID_VALUE)?;
        unsafe { out(text, name.as_ptr()) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, text: *mut *const c_char) -> CUresult {
    entry("cuGetErrorString", false, || {
        let name = result::name(error).ok_or(result::INVALID_VALUE)?;
        unsafe { out(text, name.as_ptr()) }
    })
}

// ---------------------------------------------------------------- unsupported

macro_rules! unsupported {
    ($($name:ident),* $(,)?) => {
        $(
            /// Not implemented by the fake driver: logged, `CUDA_ERROR_NOT_SUPPORTED`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name() -> CUresult {
                eprintln!("fakecuda: {} is not supported", stringify!($name));
                result::NOT_SUPPORTED
            }
        )*
    };
}

unsupported!(
    cuMemAllocManaged,
    cuMemAllocHost_v2,
    cuMemHostAlloc,
    cuMemFreeHost,
    cuMemHostRegister_v2,
    cuMemHostUnregister,
    cuMemAllocFromPoolAsync,
    cuDeviceGetDefaultMemPool,
    cuMemPoolCreate,
    cuCtxCreate_v2,
    cuGraphLaunch,
    cuLaunchCooperativeKernel,
    cuTensorMapEncodeTiled,
);

// ---------------------------------------------------------------- cuGetProcAddress

mod procaddress;
