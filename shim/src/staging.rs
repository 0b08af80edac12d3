//! The migration engine's glue: one [`Engine`] per compute device with streaming on,
//! carried out over the real driver ([`DriverTransfers`]: a non-blocking staging stream,
//! a non-blocking write-back stream, pooled events), and the lock-free table the launch
//! hooks scan against (written by `working_set::publish`).
//!
//! Locks: the shim's state lock (allocation hooks) is taken before an engine's lock, never
//! after. The launch path takes no lock unless a launch references a donor extent; then it
//! takes that device's engine lock (not a global one).

use crate::real_call;
use crate::runtime::HOOK_ERRORS;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use vvram_allocator::MemoryManager;
use vvram_cuda::*;
use vvram_engine::{Engine, ExtentTable, Settings, Source, Transfers};
use vvram_policy::Tier;

/// Donor extents tracked at most (a FLUX-sized model has about a thousand tensors).
const TABLE_CAPACITY: usize = 1 << 16;
/// Compute devices with an engine at most.
const DEVICES: usize = 16;
/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;

/// Whether any engine runs: the launch hooks pass straight through while it is false.
pub static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Launches the hooks have seen while an engine runs.
pub static LAUNCHES_SEEN: AtomicU64 = AtomicU64::new(0);
/// Launches whose parameters could not be scanned (no layout for the function).
pub static UNSCANNED_LAUNCHES: AtomicU64 = AtomicU64::new(0);
/// Launches referencing donor memory captured into a graph (not translated: a graph
/// replays later, when a staged copy may be gone).
pub static CAPTURED_LAUNCHES: AtomicU64 = AtomicU64::new(0);
/// Devices whose engine could not start (bit per device): said once, not retried.
static FAILED_TO_START: AtomicU64 = AtomicU64::new(0);

/// Whether `stream` is being captured into a graph (or the driver cannot say).
pub fn capturing(stream: usize) -> bool {
    let mut status = CU_STREAM_CAPTURE_STATUS_NONE;
    real_call!(cuStreamIsCapturing(stream as CUstream, &mut status)) != result::SUCCESS || status != CU_STREAM_CAPTURE_STATUS_NONE
}

/// The donor extents of every device, for the launch hooks.
pub fn table() -> &'static ExtentTable {
    static TABLE: OnceLock<ExtentTable> = OnceLock::new();
    TABLE.get_or_init(|| ExtentTable::new(TABLE_CAPACITY))
}

/// Stall probes in flight at most: a kernel's wait for a copy still in flight is timed
/// with two timing events around it while fewer than this many are unread.
const PROBES: usize = 64;

/// The engine's device operations on the real driver.
pub struct DriverTransfers {
    stage_stream: CUstream,
    write_back_stream: CUstream,
    events: Vec<CUevent>,
    timing_events: Vec<CUevent>,
    probes: std::collections::VecDeque<(CUevent, CUevent)>,
    /// Time kernels' streams waited for staging copies, over the probes read so far.
    pub stall_ns: u64,
    /// Probes read.
    pub stall_probes: u64,
}

// SAFETY: stream and event handles may be used from any thread of the context.
unsafe impl Send for DriverTransfers {}

fn check(code: CUresult) -> Result<(), CUresult> {
    if code == result::SUCCESS { Ok(()) } else { Err(code) }
}

impl DriverTransfers {
    /// Waits until every copy queued on the staging and write-back streams has finished.
    fn drain(&mut self) -> Result<(), CUresult> {
        check(real_call!(cuStreamSynchronize(self.stage_stream)))?;
        check(real_call!(cuStreamSynchronize(self.write_back_stream)))
    }

    /// Streams in the calling thread's context.
    fn new() -> Result<DriverTransfers, CUresult> {
        let (mut stage_stream, mut write_back_stream) = (std::ptr::null_mut(), std::ptr::null_mut());
        check(real_call!(cuStreamCreate(&mut stage_stream, CU_STREAM_NON_BLOCKING)))?;
        check(real_call!(cuStreamCreate(&mut write_back_stream, CU_STREAM_NON_BLOCKING)))?;
        Ok(DriverTransfers {
            stage_stream,
            write_back_stream,
            events: Vec::new(),
            timing_events: Vec::new(),
            probes: std::collections::VecDeque::new(),
            stall_ns: 0,
            stall_probes: 0,
        })
    }

    fn timing_event(&mut self) -> Result<CUevent, CUresult> {
        match self.timing_events.pop() {
            Some(event) => Ok(event),
            None => {
                let mut event = std::ptr::null_mut();
                check(real_call!(cuEventCreate(&mut event, 0)))?;
                Ok(event)
            }
        }
    }

    /// Adds the stall of every finished probe, oldest first.
    pub fn read_probes(&mut self) {
        while let Some(&(start, end)) = self.probes.front() {
            if real_call!(cuEventQuery(end)) != result::SUCCESS {
                return;
            }
            let mut ms = 0f32;
            if real_call!(cuEventElapsedTime(&mut ms, start, end)) == result::SUCCESS {
                self.stall_ns += (ms.max(0.0) as f64 * 1e6) as u64;
                self.stall_probes += 1;
            }
            self.probes.pop_front();
            self.timing_events.extend([start, end]);
        }
    }

    fn event(&mut self) -> Result<CUevent, CUresult> {
        match self.events.pop() {
            Some(event) => Ok(event),
            None => {
                let mut event = std::ptr::null_mut();
                check(real_call!(cuEventCreate(&mut event, EVENT_DISABLE_TIMING)))?;
                Ok(event)
            }
        }
    }

    fn copy_on(&mut self, stream: CUstream, dst: u64, src: u64, len: u64, after: &[usize]) -> Result<usize, CUresult> {
        for &event in after {
            check(real_call!(cuStreamWaitEvent(stream, event as CUevent, 0)))?;
        }
        check(real_call!(cuMemcpyAsync(dst, src, len as usize, stream)))?;
        let event = self.event()?;
        check(real_call!(cuEventRecord(event, stream)))?;
        Ok(event as usize)
    }
}

impl Transfers for DriverTransfers {
    type Stream = usize;
    type Event = usize;

    fn stage(&mut self, dst: u64, src: u64, len: u64, after: &[usize]) -> Result<usize, CUresult> {
        self.copy_on(self.stage_stream, dst, src, len, after)
    }

    fn write_back(&mut self, dst: u64, src: u64, len: u64, after: &[usize]) -> Result<usize, CUresult> {
        self.copy_on(self.write_back_stream, dst, src, len, after)
    }

    fn record(&mut self, stream: usize, reuse: Option<usize>) -> Result<usize, CUresult> {
        let event = match reuse {
            Some(event) => event as CUevent,
            None => self.event()?,
        };
        check(real_call!(cuEventRecord(event, stream as CUstream)))?;
        Ok(event as usize)
    }

    fn wait(&mut self, stream: usize, event: usize) -> Result<(), CUresult> {
        self.read_probes();
        let in_flight = real_call!(cuEventQuery(event as CUevent)) == result::NOT_READY;
        let probe = if in_flight && self.probes.len() < PROBES {
            let start = self.timing_event()?;
            check(real_call!(cuEventRecord(start, stream as CUstream)))?;
            Some(start)
        } else {
            None
        };
        check(real_call!(cuStreamWaitEvent(stream as CUstream, event as CUevent, 0)))?;
        if let Some(start) = probe {
            let end = self.timing_event()?;
            check(real_call!(cuEventRecord(end, stream as CUstream)))?;
            self.probes.push_back((start, end));
        }
        Ok(())
    }

    fn synchronize(&mut self, event: usize) -> Result<(), CUresult> {
        check(real_call!(cuEventSynchronize(event as CUevent)))
    }

    fn passed(&mut self, event: usize) -> bool {
        real_call!(cuEventQuery(event as CUevent)) == result::SUCCESS
    }

    fn release(&mut self, event: usize) {
        self.events.push(event as CUevent);
    }
}

/// One device's engine and what it was built from.
pub struct DeviceEngine {
    /// The engine.
    pub engine: Engine<DriverTransfers>,
    /// The manager's allocation count + free count when the extents were last synced.
    generation: u64,
}

fn engines() -> &'static [Mutex<Option<DeviceEngine>>; DEVICES] {
    static ENGINES: OnceLock<[Mutex<Option<DeviceEngine>>; DEVICES]> = OnceLock::new();
    ENGINES.get_or_init(|| std::array::from_fn(|_| Mutex::new(None)))
}

/// The engine of `device`, locked (`None` inside when the device has none).
pub fn engine(device: u32) -> Option<MutexGuard<'static, Option<DeviceEngine>>> {
    let slot = engines().get(device as usize)?;
    Some(slot.lock().unwrap_or_else(|p| p.into_inner()))
}

fn source(tier: Tier) -> Source {
    match tier {
        Tier::Peer(n) => Source::Peer(n),
        Tier::Local | Tier::Host => Source::Host,
    }
}

/// After the manager placed or freed memory for `device` (state lock held, the device's
/// context current): starts the device's engine if the policy streams and it has none
/// (its local cache is allocated on the device), and gives it and the launch hooks'
/// table the live donor extents.
pub fn sync(manager: &mut MemoryManager<crate::ops::RealOps>, device: u32) {
    let streaming = manager.plan().streaming;
    if !streaming.enabled || !manager.manages(device) || FAILED_TO_START.load(Ordering::Relaxed) & (1 << device) != 0 {
        return;
    }
    let Some(mut slot) = engine(device) else { return };
    let counters = manager.counters();
    let generation = counters.allocations + counters.frees;
    if slot.is_none() {
        match start(manager, device, streaming) {
            Ok(started) => *slot = Some(started),
            Err(code) => {
                HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
                FAILED_TO_START.fetch_or(1 << device, Ordering::Relaxed);
                tracing::error!(
                    device,
                    code,
                    cache = streaming.local_cache,
                    "cannot start the migration engine (its local cache did not fit in the local budget, or its streams): \
                     donor-tier memory is read in place for the rest of the process"
                );
                return;
            }
        }
    }
    let Some(device_engine) = slot.as_mut() else { return };
    if device_engine.generation == generation {
        return;
    }
    device_engine.generation = generation;
    device_engine.engine.sync_extents(&live_donors(manager, device, &[]));
    drop(slot);
    crate::working_set::publish(manager);
}

/// The donor extents of `device` the engine stages, as `(base, len, source)`, but those
/// in `except` (`(base, len)`).
fn live_donors(manager: &MemoryManager<crate::ops::RealOps>, device: u32, except: &[(u64, u64)]) -> Vec<(u64, u64, Source)> {
    manager
        .donor_extents(device)
        .into_iter()
        .filter(|(base, _, _)| !except.iter().any(|(e, _)| e == base))
        .map(|(b, l, t)| (b, l, source(t)))
        .collect()
}

/// Like [`sync`], even when no allocation or free happened since (extents moved).
pub fn resync(manager: &mut MemoryManager<crate::ops::RealOps>, device: u32) {
    if let Some(device_engine) = engine(device).as_mut().and_then(|slot| slot.as_mut()) {
        device_engine.generation = u64::MAX;
    }
    sync(manager, device);
}

/// Whether `device` has a running engine.
pub fn has_engine(device: u32) -> bool {
    engine(device).is_some_and(|slot| slot.is_some())
}

/// The predictor's state of `device`'s engine.
pub fn predictor(device: u32) -> Option<vvram_engine::PredictorState> {
    engine(device)?.as_ref().map(|d| d.engine.predictor())
}

/// The uses of each donor extent of `device` in the last step, once its engine's
/// predictor is locked.
pub fn uses_per_step(device: u32) -> Vec<(u64, u64)> {
    engine(device).and_then(|slot| slot.as_ref().map(|d| d.engine.uses_per_step())).unwrap_or_default()
}

/// Before the backing of the extents `moving` (`(base, len)`) moves: their staged copies
/// are written back (waited for) and dropped, the engine forgets them (no prefetch stages
/// them while they move; [`resync`] brings back what is still on a donor), and every copy
/// the engine queued has finished.
pub fn before_move(manager: &MemoryManager<crate::ops::RealOps>, device: u32, moving: &[(u64, u64)]) -> Result<(), CUresult> {
    let Some(mut slot) = engine(device) else { return Ok(()) };
    let Some(device_engine) = slot.as_mut() else { return Ok(()) };
    for &(base, len) in moving {
        device_engine.engine.before_host_write(base, len, None)?;
    }
    device_engine.engine.sync_extents(&live_donors(manager, device, moving));
    device_engine.generation = u64::MAX;
    device_engine.engine.transfers().drain()
}

fn start(manager: &mut MemoryManager<crate::ops::RealOps>, device: u32, streaming: vvram_policy::Streaming) -> Result<DeviceEngine, CUresult> {
    let transfers = DriverTransfers::new()?;
    let cache_base = manager.allocate_local(device, streaming.local_cache)?;
    let settings = Settings {
        cache_base,
        cache_bytes: streaming.local_cache,
        lookahead: streaming.prefetch_depth as usize,
        write_back: !streaming.weights_read_only,
    };
    tracing::info!(device, cache = streaming.local_cache, cache_base, "migration engine started");
    ACTIVE.store(true, Ordering::Release);
    Ok(DeviceEngine { engine: Engine::new(transfers, settings), generation: u64::MAX })
}

/// The engine statistics of every device, summed.
pub fn snapshot() -> vvram_stats::EngineSnapshot {
    let mut out = vvram_stats::EngineSnapshot {
        launches_seen: LAUNCHES_SEEN.load(Ordering::Relaxed),
        unscanned_launches: UNSCANNED_LAUNCHES.load(Ordering::Relaxed),
        captured_launches: CAPTURED_LAUNCHES.load(Ordering::Relaxed),
        ..Default::default()
    };
    for slot in engines() {
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        let Some(device_engine) = guard.as_mut() else { continue };
        let transfers = device_engine.engine.transfers();
        transfers.read_probes();
        out.stall_ns += transfers.stall_ns;
        out.stall_probes += transfers.stall_probes;
        let engine = &device_engine.engine;
        let c = engine.counters();
        let p = engine.predictor();
        let cache = engine.cache();
        out.engines += 1;
        out.staged_host_bytes += c.staged_host_bytes;
        out.staged_peer_bytes += c.staged_peer_bytes;
        out.written_back_bytes += c.written_back_bytes;
        out.donor_launches += c.donor_launches;
        out.translated_launches += c.translated_launches;
        out.missed_launches += c.missed_launches;
        out.waited_references += c.waited_references;
        out.demand_copies += c.demand_copies;
        out.prefetch_copies += c.prefetch_copies;
        out.dropped_copies += c.dropped_copies;
        out.graph_launches += c.graph_launches;
        out.period = out.period.max(p.period.unwrap_or(0));
        out.locked |= p.locked;
        out.predicted += p.predicted;
        out.predicted_right += p.hits;
        out.cache_bytes += cache.capacity;
        out.cache_occupied += cache.occupied;
        out.cache_copies += cache.copies;
    }
    out
}

/// Runs `body` with the engine of the calling thread's device, if it has one.
pub fn with_current<R>(body: impl FnOnce(&mut Engine<DriverTransfers>) -> R) -> Option<R> {
    let mut device: CUdevice = 0;
    if real_call!(cuCtxGetDevice(&mut device)) != result::SUCCESS || device < 0 {
        return None;
    }
    let mut slot = engine(device as u32)?;
    slot.as_mut().map(|d| body(&mut d.engine))
}

/// A stream handle as the engine records it: the per-thread entry points' stream 0 is the
/// per-thread default stream.
pub fn stream_key(stream: CUstream, per_thread: bool) -> usize {
    if stream.is_null() && per_thread { CU_STREAM_PER_THREAD } else { stream as usize }
}

/// Counts an engine failure on a hook path; the call itself goes on untranslated.
pub fn count_error(what: &'static str, code: CUresult) {
    HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(what, code, "migration engine call failed");
}

/// Address of a launch parameter pointer as a byte slice.
///
/// # Safety
/// `pointer` must be valid for `len` bytes (the driver's contract for kernel parameters).
pub unsafe fn bytes<'a>(pointer: *const c_void, len: usize) -> &'a [u8] {
    if pointer.is_null() || len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(pointer as *const u8, len) } }
}
