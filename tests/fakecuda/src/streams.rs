//! Stream and event entry points; the machinery is in `stream`.

use super::*;

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
pub(crate) fn stream_of(handle: CUstream, per_thread: bool) -> Result<Arc<Stream>, CUresult> {
    match handle as usize {
        0 if per_thread => Ok(stream::per_thread(current_device()?)),
        0 | CU_STREAM_LEGACY => Ok(stream::legacy(current_device()?)),
        CU_STREAM_PER_THREAD => Ok(stream::per_thread(current_device()?)),
        other => streams().get(other).ok_or(result::INVALID_HANDLE),
    }
}

/// Queues `work` on a stream; with `wait`, returns only once it has run (synchronous API).
/// On a capturing stream the work is recorded into the capture's graph instead.
pub(crate) fn submit(stream: &Arc<Stream>, wait: bool, work: impl Fn() + Send + Sync + 'static) -> Outcome {
    let work: capture::Node = Arc::new(work);
    if capture::record(stream, wait, &work)? {
        return Ok(());
    }
    let seq = stream.enqueue(Vec::new(), Box::new(move || work()));
    if wait {
        stream.wait_for(seq);
    }
    Ok(())
}


#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(handle: *mut CUstream, flags: c_uint) -> CUresult {
    entry("cuStreamCreate", true, || {
        let stream = Stream::new(current_device()?, flags & CU_STREAM_NON_BLOCKING == 0);
        unsafe { out(handle, streams().insert(stream) as CUstream) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamDestroy_v2(handle: CUstream) -> CUresult {
    entry("cuStreamDestroy_v2", true, || streams().remove(handle as usize).map(|_| ()).ok_or(result::INVALID_HANDLE))
}

fn stream_sync(handle: CUstream, per_thread: bool) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    capture::forbid_stream_sync(&stream)?;
    stream.synchronize();
    Ok(())
}

/// A host function and its argument, carried to the stream's worker.
#[derive(Clone, Copy)]
struct HostFunction(unsafe extern "C" fn(*mut c_void), usize);

fn launch_host_function(handle: CUstream, per_thread: bool, function: Option<unsafe extern "C" fn(*mut c_void)>, data: *mut c_void) -> Outcome {
    let function = HostFunction(function.ok_or(result::INVALID_VALUE)?, data as usize);
    submit(&stream_of(handle, per_thread)?, false, move || {
        let HostFunction(function, data) = function;
        // SAFETY: the application's function with its own argument, as the driver calls it.
        crate::stream::run_host_function(|| unsafe { function(data as *mut c_void) });
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchHostFunc(handle: CUstream, function: Option<unsafe extern "C" fn(*mut c_void)>, data: *mut c_void) -> CUresult {
    entry("cuLaunchHostFunc", true, || launch_host_function(handle, false, function, data))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchHostFunc_ptsz(handle: CUstream, function: Option<unsafe extern "C" fn(*mut c_void)>, data: *mut c_void) -> CUresult {
    entry("cuLaunchHostFunc_ptsz", true, || launch_host_function(handle, true, function, data))
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
    capture::forbid_stream_sync(&stream)?;
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
    let stream = stream_of(handle, per_thread)?;
    if capture::status(&stream).is_some() {
        event.record_in_capture();
        return Ok(());
    }
    event.record(&stream);
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
        if event.captured() {
            return Err(result::CAPTURED_EVENT);
        }
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
        if event.captured() {
            return Err(result::CAPTURED_EVENT);
        }
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

/// `cuEventElapsedTime_v2` (CUDA 12.8): the same contract as `cuEventElapsedTime`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(milliseconds: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    entry("cuEventElapsedTime_v2", true, || {
        let start = events().get(start as usize).ok_or(result::INVALID_HANDLE)?;
        let end = events().get(end as usize).ok_or(result::INVALID_HANDLE)?;
        match (start.passed_at(), end.passed_at()) {
            (Some(a), Some(b)) => unsafe { out(milliseconds, b.saturating_duration_since(a).as_secs_f32() * 1000.0) },
            _ => Err(result::NOT_READY),
        }
    })
}
