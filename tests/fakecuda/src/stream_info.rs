//! Stream priorities, flags and capture status (captures themselves are in `capture`).

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// The lowest priority (the default) and the highest, as an H100 reports them.
const LEAST_PRIORITY: c_int = 0;
const GREATEST_PRIORITY: c_int = -5;

/// `CU_STREAM_CAPTURE_STATUS_NONE`.
const CAPTURE_STATUS_NONE: c_uint = 0;

/// Priorities of the streams created with one; the others have the default.
fn priorities() -> &'static Mutex<HashMap<usize, c_int>> {
    static PRIORITIES: OnceLock<Mutex<HashMap<usize, c_int>>> = OnceLock::new();
    PRIORITIES.get_or_init(|| Mutex::new(HashMap::new()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> CUresult {
    entry("cuCtxGetStreamPriorityRange", true, || {
        current_device()?;
        // SAFETY: either output may be null, as the API allows.
        unsafe {
            if !least.is_null() {
                least.write(LEAST_PRIORITY);
            }
            if !greatest.is_null() {
                greatest.write(GREATEST_PRIORITY);
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(handle: *mut CUstream, flags: c_uint, priority: c_int) -> CUresult {
    entry("cuStreamCreateWithPriority", true, || {
        let status = unsafe { cuStreamCreate(handle, flags) };
        if status != result::SUCCESS {
            return Err(status);
        }
        // The driver clamps a priority outside the range into it.
        let priority = priority.clamp(GREATEST_PRIORITY, LEAST_PRIORITY);
        priorities().lock().unwrap().insert(unsafe { *handle } as usize, priority);
        Ok(())
    })
}

fn stream_priority(handle: CUstream, per_thread: bool, priority: *mut c_int) -> Outcome {
    stream_of(handle, per_thread)?;
    let value = priorities().lock().unwrap().get(&(handle as usize)).copied().unwrap_or(LEAST_PRIORITY);
    unsafe { out(priority, value) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetPriority(handle: CUstream, priority: *mut c_int) -> CUresult {
    entry("cuStreamGetPriority", true, || stream_priority(handle, false, priority))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetPriority_ptsz(handle: CUstream, priority: *mut c_int) -> CUresult {
    entry("cuStreamGetPriority_ptsz", true, || stream_priority(handle, true, priority))
}

fn stream_flags(handle: CUstream, per_thread: bool, flags: *mut c_uint) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    unsafe { out(flags, if stream.blocking { 0 } else { CU_STREAM_NON_BLOCKING }) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags(handle: CUstream, flags: *mut c_uint) -> CUresult {
    entry("cuStreamGetFlags", true, || stream_flags(handle, false, flags))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags_ptsz(handle: CUstream, flags: *mut c_uint) -> CUresult {
    entry("cuStreamGetFlags_ptsz", true, || stream_flags(handle, true, flags))
}

fn is_capturing(handle: CUstream, per_thread: bool, status: *mut c_uint) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    if Arc::ptr_eq(&stream, &stream::legacy(stream.device))
        && stream::streams_of(stream.device).iter().any(|s| s.blocking && capture::status(s).is_some())
    {
        // The legacy stream synchronises with a capturing blocking stream: the driver
        // says so rather than answer.
        return Err(result::STREAM_CAPTURE_IMPLICIT);
    }
    unsafe { out(status, capture::status(&stream).unwrap_or(CAPTURE_STATUS_NONE)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(handle: CUstream, status: *mut c_uint) -> CUresult {
    entry("cuStreamIsCapturing", true, || is_capturing(handle, false, status))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing_ptsz(handle: CUstream, status: *mut c_uint) -> CUresult {
    entry("cuStreamIsCapturing_ptsz", true, || is_capturing(handle, true, status))
}

/// Writes `value` where `pointer` is not null (optional outputs).
unsafe fn out_optional<T>(pointer: *mut T, value: T) {
    if !pointer.is_null() {
        // SAFETY: the caller passed a valid output pointer or null.
        unsafe { pointer.write(value) };
    }
}

/// `cuStreamGetCaptureInfo` of a stream that is not capturing: the status, and the
/// optional outputs (capture id, graph, dependencies, edge data, their count) cleared.
unsafe fn capture_info(
    handle: CUstream,
    per_thread: bool,
    status: *mut c_uint,
    id: *mut u64,
    graph: *mut *mut c_void,
    dependencies: *mut *const c_void,
    edges: *mut *const c_void,
    count: *mut usize,
) -> Outcome {
    is_capturing(handle, per_thread, status)?;
    unsafe {
        out_optional(id, 0);
        out_optional(graph, std::ptr::null_mut());
        out_optional(dependencies, std::ptr::null());
        out_optional(edges, std::ptr::null());
        out_optional(count, 0);
    }
    Ok(())
}

macro_rules! capture_info_entry {
    ($v2:ident, $v3:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $v2(
            handle: CUstream,
            status: *mut c_uint,
            id: *mut u64,
            graph: *mut *mut c_void,
            dependencies: *mut *const c_void,
            count: *mut usize,
        ) -> CUresult {
            entry(stringify!($v2), true, || unsafe {
                capture_info(handle, $per_thread, status, id, graph, dependencies, std::ptr::null_mut(), count)
            })
        }

        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $v3(
            handle: CUstream,
            status: *mut c_uint,
            id: *mut u64,
            graph: *mut *mut c_void,
            dependencies: *mut *const c_void,
            edges: *mut *const c_void,
            count: *mut usize,
        ) -> CUresult {
            entry(stringify!($v3), true, || unsafe { capture_info(handle, $per_thread, status, id, graph, dependencies, edges, count) })
        }
    };
}

capture_info_entry!(cuStreamGetCaptureInfo_v2, cuStreamGetCaptureInfo_v3, false);
capture_info_entry!(cuStreamGetCaptureInfo_v2_ptsz, cuStreamGetCaptureInfo_v3_ptsz, true);
