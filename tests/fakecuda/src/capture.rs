//! Stream capture with the driver's rules: work submitted to a capturing stream is
//! recorded into a graph instead of run; `cuGraphLaunch` replays it. While a stream
//! captures, synchronising it (`cuStreamSynchronize`, `cuStreamQuery`, a synchronous
//! call on it) fails with `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`, and so does a
//! context-wide synchronisation (`cuCtxSynchronize`, `cuMemFree`) unless the capture is
//! in relaxed mode; the legacy stream's implicit synchronisation with a capturing
//! blocking stream fails with `CUDA_ERROR_STREAM_CAPTURE_IMPLICIT`; each of these
//! invalidates the capture, so that `cuStreamEndCapture` fails with
//! `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`. An event recorded in a capture refuses
//! `cuEventQuery` and `cuEventSynchronize` with `CUDA_ERROR_CAPTURED_EVENT`.

use super::*;

/// One recorded operation, replayable.
pub type Node = Arc<dyn Fn() + Send + Sync>;

/// `CU_STREAM_CAPTURE_MODE_RELAXED`.
const MODE_RELAXED: c_uint = 2;
/// `CU_STREAM_CAPTURE_STATUS_ACTIVE`.
pub const STATUS_ACTIVE: c_uint = 1;
/// `CU_STREAM_CAPTURE_STATUS_INVALIDATED`.
pub const STATUS_INVALIDATED: c_uint = 2;

/// A capture in progress.
pub struct Capture {
    mode: c_uint,
    nodes: Vec<Node>,
    invalidated: bool,
}

/// A graph, or an executable graph: operations in capture order.
pub struct Graph {
    nodes: Vec<Node>,
}

fn graphs() -> &'static Registry<Graph> {
    static GRAPHS: OnceLock<Registry<Graph>> = OnceLock::new();
    GRAPHS.get_or_init(Registry::new)
}

fn executables() -> &'static Registry<Graph> {
    static EXECUTABLES: OnceLock<Registry<Graph>> = OnceLock::new();
    EXECUTABLES.get_or_init(Registry::new)
}

/// The capture status of a stream (`None` when it does not capture).
pub fn status(stream: &Stream) -> Option<c_uint> {
    stream.capture.lock().unwrap().as_ref().map(|c| if c.invalidated { STATUS_INVALIDATED } else { STATUS_ACTIVE })
}

/// Records `node` when `stream` captures: `Ok(true)`. A synchronous operation (`wait`)
/// on a capturing stream is refused and invalidates the capture.
pub fn record(stream: &Arc<Stream>, wait: bool, node: &Node) -> Result<bool, CUresult> {
    implicit_synchronisation(stream)?;
    let mut capture = stream.capture.lock().unwrap();
    let Some(capture) = capture.as_mut() else { return Ok(false) };
    if wait {
        capture.invalidated = true;
        return Err(result::STREAM_CAPTURE_UNSUPPORTED);
    }
    capture.nodes.push(node.clone());
    Ok(true)
}

/// Work on the legacy stream waits for every blocking stream: not possible while one of
/// them captures.
fn implicit_synchronisation(stream: &Arc<Stream>) -> Outcome {
    if !Arc::ptr_eq(stream, &stream::legacy(stream.device)) {
        return Ok(());
    }
    let mut refused = Ok(());
    for other in stream::streams_of(stream.device).iter().filter(|s| s.blocking) {
        if let Some(capture) = other.capture.lock().unwrap().as_mut() {
            capture.invalidated = true;
            refused = Err(result::STREAM_CAPTURE_IMPLICIT);
        }
    }
    refused
}

/// Refuses synchronising a capturing stream (and invalidates its capture).
pub fn forbid_stream_sync(stream: &Arc<Stream>) -> Outcome {
    implicit_synchronisation(stream)?;
    match stream.capture.lock().unwrap().as_mut() {
        Some(capture) => {
            capture.invalidated = true;
            Err(result::STREAM_CAPTURE_UNSUPPORTED)
        }
        None => Ok(()),
    }
}

/// Refuses a context-wide synchronisation of `device` while one of its streams captures
/// in global or thread-local mode (and invalidates those captures).
pub fn forbid_context_sync(device: usize) -> Outcome {
    let mut refused = Ok(());
    for stream in stream::streams_of(device) {
        if let Some(capture) = stream.capture.lock().unwrap().as_mut()
            && capture.mode != MODE_RELAXED
        {
            capture.invalidated = true;
            refused = Err(result::STREAM_CAPTURE_UNSUPPORTED);
        }
    }
    refused
}

fn begin(handle: CUstream, per_thread: bool, mode: c_uint) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    if mode > MODE_RELAXED {
        return Err(result::INVALID_VALUE);
    }
    if Arc::ptr_eq(&stream, &stream::legacy(stream.device)) {
        return Err(result::STREAM_CAPTURE_UNSUPPORTED);
    }
    let mut capture = stream.capture.lock().unwrap();
    if capture.is_some() {
        return Err(result::ILLEGAL_STATE);
    }
    *capture = Some(Capture { mode, nodes: Vec::new(), invalidated: false });
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamBeginCapture_v2(handle: CUstream, mode: c_uint) -> CUresult {
    entry("cuStreamBeginCapture_v2", true, || begin(handle, false, mode))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamBeginCapture_v2_ptsz(handle: CUstream, mode: c_uint) -> CUresult {
    entry("cuStreamBeginCapture_v2_ptsz", true, || begin(handle, true, mode))
}

unsafe fn end(handle: CUstream, per_thread: bool, graph: *mut *mut c_void) -> Outcome {
    let stream = stream_of(handle, per_thread)?;
    let capture = stream.capture.lock().unwrap().take().ok_or(result::ILLEGAL_STATE)?;
    if capture.invalidated {
        unsafe { out(graph, std::ptr::null_mut())? };
        return Err(result::STREAM_CAPTURE_INVALIDATED);
    }
    unsafe { out(graph, graphs().insert(Arc::new(Graph { nodes: capture.nodes })) as *mut c_void) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(handle: CUstream, graph: *mut *mut c_void) -> CUresult {
    entry("cuStreamEndCapture", true, || unsafe { end(handle, false, graph) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture_ptsz(handle: CUstream, graph: *mut *mut c_void) -> CUresult {
    entry("cuStreamEndCapture_ptsz", true, || unsafe { end(handle, true, graph) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(executable: *mut CUgraphExec, graph: *mut c_void, _flags: u64) -> CUresult {
    entry("cuGraphInstantiateWithFlags", true, || {
        let graph = graphs().get(graph as usize).ok_or(result::INVALID_VALUE)?;
        unsafe { out(executable, executables().insert(Arc::new(Graph { nodes: graph.nodes.clone() })) as CUgraphExec) }
    })
}

fn launch_graph(executable: CUgraphExec, handle: CUstream, per_thread: bool) -> Outcome {
    let graph = executables().get(executable as usize).ok_or(result::INVALID_VALUE)?;
    submit(&stream_of(handle, per_thread)?, false, move || graph.nodes.iter().for_each(|node| node()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch(executable: CUgraphExec, handle: CUstream) -> CUresult {
    entry("cuGraphLaunch", true, || launch_graph(executable, handle, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch_ptsz(executable: CUgraphExec, handle: CUstream) -> CUresult {
    entry("cuGraphLaunch_ptsz", true, || launch_graph(executable, handle, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphDestroy(graph: *mut c_void) -> CUresult {
    entry("cuGraphDestroy", true, || graphs().remove(graph as usize).map(|_| ()).ok_or(result::INVALID_VALUE))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphExecDestroy(executable: CUgraphExec) -> CUresult {
    entry("cuGraphExecDestroy", true, || executables().remove(executable as usize).map(|_| ()).ok_or(result::INVALID_VALUE))
}
