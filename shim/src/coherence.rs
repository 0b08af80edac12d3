//! Copies and memsets that touch a donor extent with a staged copy: a read first gets what
//! kernels wrote into the copy (written back), a write first writes back and drops the
//! copy, and later staging copies wait for the write. Everything else passes through.
//! Hooked here: `cuMemcpyDtoH`, `cuMemcpyDtoD` (sync, `_ptds`, async, `_ptsz`),
//! `cuMemsetD8`/`cuMemsetD32` (sync and async); `cuMemcpy`, `cuMemcpyAsync` and the
//! host-to-device hooks call [`around`] / [`before_cpu_write`] from `hooks`.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use crate::real_call;
use crate::staging::{self, ACTIVE, stream_key, with_current};
use std::ffi::{c_uint, c_void};
use crate::hooks::guard;
use std::sync::atomic::Ordering;
use vvram_cuda::*;

/// A byte range `(address, len)`.
pub type Range = Option<(u64, usize)>;

fn touches(range: Range) -> bool {
    range.is_some_and(|(address, len)| {
        let table = staging::table();
        len > 0 && (table.find(address).is_some() || table.find(address + len as u64 - 1).is_some())
    })
}

/// Runs a copy or memset that reads `read` and writes `write`, coherent with staged
/// copies. `stream` is the call's stream for stream-ordered calls (`None` for
/// synchronous ones: the CPU waits for the engine's copies instead); `fence_stream` is
/// where the call's own work is ordered (later staging copies wait for it there).
pub fn around(read: Range, write: Range, stream: Option<usize>, fence_stream: usize, call: impl FnOnce() -> CUresult) -> CUresult {
    if !ACTIVE.load(Ordering::Relaxed) || !(touches(read) || touches(write)) || stream.is_some_and(staging::capturing) {
        return call();
    }
    let mut call = Some(call);
    let outcome = with_current(|engine| {
        if let Some((address, len)) = read
            && let Err(code) = engine.before_host_read(address, len as u64, stream)
        {
            staging::count_error("before_host_read", code);
        }
        if let Some((address, len)) = write
            && let Err(code) = engine.before_host_write(address, len as u64, stream)
        {
            staging::count_error("before_host_write", code);
        }
        let code = call.take().map_or(result::UNKNOWN, |c| c());
        if code == result::SUCCESS
            && let Some((address, len)) = write
            && let Err(code) = engine.after_host_write(address, len as u64, fence_stream)
        {
            staging::count_error("after_host_write", code);
        }
        code
    });
    match (outcome, call) {
        (Some(code), _) => code,
        (None, Some(call)) => call(),
        (None, None) => result::UNKNOWN,
    }
}

/// Before the CPU writes `[address, address + len)` (the fast host-to-device path):
/// staged copies of it are written back and dropped, and the CPU waits for the engine's
/// copies of it.
pub fn before_cpu_write(address: u64, len: usize) {
    if !ACTIVE.load(Ordering::Relaxed) || !touches(Some((address, len))) {
        return;
    }
    if let Some(Err(code)) = with_current(|engine| engine.before_host_write(address, len as u64, None)) {
        staging::count_error("before_host_write", code);
    }
}

/// Before memory is freed stream-ordered on `stream`: the free waits for the engine's
/// copies of it (a dirty staged copy is written back first, as for any write).
pub fn before_free(address: u64, len: usize, stream: usize) {
    if !ACTIVE.load(Ordering::Relaxed) || !touches(Some((address, len))) {
        return;
    }
    if let Some(Err(code)) = with_current(|engine| engine.before_host_write(address, len as u64, Some(stream))) {
        staging::count_error("before_free", code);
    }
}

/// The stream synchronous calls are ordered on.
fn default_stream(per_thread: bool) -> usize {
    if per_thread { CU_STREAM_PER_THREAD } else { 0 }
}

macro_rules! device_to_host {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: *mut c_void, src: CUdeviceptr, len: usize) -> CUresult {
            guard(stringify!($name), || around(Some((src, len)), None, None, default_stream($per_thread), || real_call!($name(dst, src, len))))
        }
    };
}

device_to_host!(cuMemcpyDtoH_v2, false);
device_to_host!(cuMemcpyDtoH_v2_ptds, true);

macro_rules! device_to_host_async {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: *mut c_void, src: CUdeviceptr, len: usize, stream: CUstream) -> CUresult {
            guard(stringify!($name), || {
                let key = stream_key(stream, $per_thread);
                around(Some((src, len)), None, Some(key), key, || real_call!($name(dst, src, len, stream)))
            })
        }
    };
}

device_to_host_async!(cuMemcpyDtoHAsync_v2, false);
device_to_host_async!(cuMemcpyDtoHAsync_v2_ptsz, true);

macro_rules! device_to_device {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: CUdeviceptr, src: CUdeviceptr, len: usize) -> CUresult {
            guard(stringify!($name), || {
                around(Some((src, len)), Some((dst, len)), None, default_stream($per_thread), || real_call!($name(dst, src, len)))
            })
        }
    };
}

device_to_device!(cuMemcpyDtoD_v2, false);
device_to_device!(cuMemcpyDtoD_v2_ptds, true);

macro_rules! device_to_device_async {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dst: CUdeviceptr, src: CUdeviceptr, len: usize, stream: CUstream) -> CUresult {
            guard(stringify!($name), || {
                let key = stream_key(stream, $per_thread);
                around(Some((src, len)), Some((dst, len)), Some(key), key, || real_call!($name(dst, src, len, stream)))
            })
        }
    };
}

device_to_device_async!(cuMemcpyDtoDAsync_v2, false);
device_to_device_async!(cuMemcpyDtoDAsync_v2_ptsz, true);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: u8, count: usize) -> CUresult {
    guard("cuMemsetD8_v2", || around(None, Some((dst, count)), None, 0, || real_call!(cuMemsetD8_v2(dst, value, count))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, value: c_uint, count: usize) -> CUresult {
    guard("cuMemsetD32_v2", || around(None, Some((dst, count * 4)), None, 0, || real_call!(cuMemsetD32_v2(dst, value, count))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, value: u8, count: usize, stream: CUstream) -> CUresult {
    guard("cuMemsetD8Async", || {
        let key = stream as usize;
        around(None, Some((dst, count)), Some(key), key, || real_call!(cuMemsetD8Async(dst, value, count, stream)))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, value: c_uint, count: usize, stream: CUstream) -> CUresult {
    guard("cuMemsetD32Async", || {
        let key = stream as usize;
        around(None, Some((dst, count * 4)), Some(key), key, || real_call!(cuMemsetD32Async(dst, value, count, stream)))
    })
}
