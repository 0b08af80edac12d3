//! Copies and memsets, synchronous and stream-ordered.

use super::*;

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
