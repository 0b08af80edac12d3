//! Copies and memsets, synchronous and stream-ordered. They reach device memory through
//! its device view (see `memory`): a device address outside every reservation faults, as
//! on a GPU; host buffers are the application's own.

use super::*;

/// How a copy's side is addressed.
#[derive(Clone, Copy)]
enum Side {
    /// A device address (`CUdeviceptr` of `cuMemcpyHtoD` and kin).
    Device,
    /// A host buffer the application owns.
    Host,
    /// A unified address (`cuMemcpy`, `cuMemcpyAsync`, peer copies): device memory
    /// through its view, anything else as host memory.
    Unified,
}

impl Side {
    /// Whether `[address, address + len)` may be handed to the copy engine: the driver
    /// refuses a NULL side, a range past 2^64, and a device range outside live allocations
    /// and mappings with an error before queuing (a stream worker touching it would fault).
    fn accepts(self, address: u64, len: usize) -> bool {
        let Some(end) = address.checked_add(len as u64) else { return false };
        if address == 0 {
            return false;
        }
        if !matches!(self, Side::Device) {
            return true;
        }
        let mut cursor = address;
        while cursor < end {
            cursor = match (memory::allocation_containing(cursor), memory::mapping_containing(cursor)) {
                (Some((base, allocation)), _) => base + allocation.size.max(1),
                (None, Some((base, mapping))) => base + mapping.size,
                (None, None) => return false,
            };
        }
        true
    }

    /// The address the copy engine touches.
    fn view(self, address: u64) -> u64 {
        match self {
            Side::Device => memory::device_view(address),
            Side::Host => address,
            Side::Unified => memory::unified_view(address),
        }
    }
}

fn copy_bytes(dst: u64, src: u64, bytes: usize) -> impl Fn() + Send + Sync + 'static {
    // SAFETY: as on a GPU, the addresses are the application's; a bad one faults.
    move || unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) }
}

fn copy(dst: (Side, u64), src: (Side, u64), bytes: usize, stream: CUstream, per_thread: bool, wait: bool) -> Outcome {
    current_device()?;
    if bytes == 0 {
        return Ok(());
    }
    if !dst.0.accepts(dst.1, bytes) || !src.0.accepts(src.1, bytes) {
        return Err(result::INVALID_VALUE);
    }
    let cost = timing::copy_cost(dst.1, src.1, bytes as u64);
    let (dst, src) = (dst.0.view(dst.1), src.0.view(src.1));
    let work = copy_bytes(dst, src, bytes);
    match cost {
        Some(cost) => submit(&stream_of(stream, per_thread)?, wait, move || timing::run(cost, &work)),
        None => submit(&stream_of(stream, per_thread)?, wait, work),
    }
}

fn memset(dst: u64, value: u32, width: usize, count: usize, stream: CUstream, per_thread: bool, wait: bool) -> Outcome {
    current_device()?;
    let dst = memory::device_view(dst);
    submit(&stream_of(stream, per_thread)?, wait, move || {
        // SAFETY: as on a GPU, the address is the application's; a bad one faults.
        unsafe {
            match width {
                1 => std::ptr::write_bytes(dst as *mut u8, value as u8, count),
                _ => std::slice::from_raw_parts_mut(dst as *mut u32, count).fill(value),
            }
        }
    })
}


macro_rules! copy_entry {
    ($name:ident, $ptname:ident, ($($arg:ident : $ty:ty),*), $dkind:ident $dst:expr, $skind:ident $src:expr, $bytes:expr, $stream:expr, $wait:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CUresult {
            entry(stringify!($name), true, || copy((Side::$dkind, $dst as u64), (Side::$skind, $src as u64), $bytes, $stream, false, $wait))
        }
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $ptname($($arg: $ty),*) -> CUresult {
            entry(stringify!($ptname), true, || copy((Side::$dkind, $dst as u64), (Side::$skind, $src as u64), $bytes, $stream, true, $wait))
        }
    };
}

const NO_STREAM: CUstream = std::ptr::null_mut();

copy_entry!(cuMemcpy, cuMemcpy_ptds, (dst: CUdeviceptr, src: CUdeviceptr, n: usize), Unified dst, Unified src, n, NO_STREAM, true);
copy_entry!(cuMemcpyAsync, cuMemcpyAsync_ptsz, (dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream), Unified dst, Unified src, n, s, false);
copy_entry!(cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, (dst: CUdeviceptr, src: *const c_void, n: usize), Device dst, Host src, n, NO_STREAM, true);
copy_entry!(cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, (dst: *mut c_void, src: CUdeviceptr, n: usize), Host dst, Device src, n, NO_STREAM, true);
copy_entry!(cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds, (dst: CUdeviceptr, src: CUdeviceptr, n: usize), Device dst, Device src, n, NO_STREAM, true);
copy_entry!(cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz, (dst: CUdeviceptr, src: *const c_void, n: usize, s: CUstream), Device dst, Host src, n, s, false);
copy_entry!(cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz, (dst: *mut c_void, src: CUdeviceptr, n: usize, s: CUstream), Host dst, Device src, n, s, false);
copy_entry!(cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz, (dst: CUdeviceptr, src: CUdeviceptr, n: usize, s: CUstream), Device dst, Device src, n, s, false);

fn peer_copy(dst: u64, dst_ctx: CUcontext, src: u64, src_ctx: CUcontext, n: usize, s: CUstream, per_thread: bool, wait: bool) -> Outcome {
    context_device(dst_ctx)?;
    context_device(src_ctx)?;
    copy((Side::Unified, dst), (Side::Unified, src), n, s, per_thread, wait)
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
