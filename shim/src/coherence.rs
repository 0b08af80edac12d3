//! Copies and memsets that touch a donor extent with a staged copy: a read first gets what
//! kernels wrote into the copy (written back), a write first writes back and drops the
//! copy, and later staging copies wait for the write. Everything else passes through.
//! Every copy touching a tracked extent notes its stream in the extent's use record and
//! waits while the extent is being moved (`working_set`).
//! Hooked here: `cuMemcpyDtoH`, `cuMemcpyDtoD` (sync, `_ptds`, async, `_ptsz`),
//! `cuMemsetD8`/`cuMemsetD32` (sync and async); `cuMemcpy`, `cuMemcpyAsync` and the
//! host-to-device hooks call [`around`] / [`before_cpu_write`] from `hooks`.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use crate::real_call;
use crate::staging::{self, ACTIVE, stream_key, with_current};
use std::ffi::{c_uint, c_void};
use crate::hooks::guard;
use crate::working_set::{self, Entered};
use vvram_engine::Hit;
use std::sync::atomic::Ordering;
use vvram_cuda::*;

/// A byte range `(address, len)`.
pub type Range = Option<(u64, usize)>;

/// The extents at the ends of `range` (a copy stays inside one allocation), and the
/// oldest table version they were read from.
fn hits(range: Range) -> ([Option<Hit>; 2], u64) {
    let table = staging::table();
    match range {
        Some((address, len)) if len > 0 => {
            let ((first, a), (last, b)) = (table.find_versioned(address), table.find_versioned(address + len as u64 - 1));
            ([first, last], a.min(b))
        }
        _ => ([None, None], table.version()),
    }
}

fn touches(range: Range) -> bool {
    hits(range).0.iter().flatten().any(|h| h.donor)
}

/// Waits until no extent the ranges touch is being moved; notes `stream` as a user of
/// those extents (a move is ordered after it) and returns the guard to hold until the
/// operation is issued (none when no extent is touched), with whether a donor extent is.
fn enter(read: Range, write: Range, stream: usize) -> (Option<Entered>, bool) {
    loop {
        let (([a, b], first), ([c, d], second)) = (hits(read), hits(write));
        let found = [a, b, c, d];
        let found = found.iter().flatten();
        if found.clone().next().is_none() {
            return (None, false);
        }
        let entered = working_set::enter();
        if staging::table().version() != first.min(second) {
            continue;
        }
        if found.clone().any(|h| h.moving) {
            drop(entered);
            working_set::wait_for_moves();
            continue;
        }
        found.clone().for_each(|h| staging::table().note_stream(h.slot, stream));
        return (Some(entered), found.clone().any(|h| h.donor));
    }
}

/// Runs a copy or memset that reads `read` and writes `write`, coherent with staged
/// copies. `stream` is the call's stream for stream-ordered calls (`None` for
/// synchronous ones: the CPU waits for the engine's copies instead); `fence_stream` is
/// where the call's own work is ordered (later staging copies wait for it there).
pub fn around(read: Range, write: Range, stream: Option<usize>, fence_stream: usize, call: impl FnOnce() -> CUresult) -> CUresult {
    if !ACTIVE.load(Ordering::Relaxed) {
        return call();
    }
    let (_entered, donor) = enter(read, write, fence_stream);
    if !donor || stream.is_some_and(staging::capturing) {
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
