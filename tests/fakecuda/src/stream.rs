//! Streams and events: each stream runs its work on its own host thread, in order, later
//! than it was issued, so ordering bugs in the code under test show up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

type Work = Box<dyn FnOnce() + Send>;

struct Job {
    seq: u64,
    waits: Vec<(Arc<Stream>, u64)>,
    work: Work,
    /// The timing model's host clock when the work was issued.
    issued: f64,
}

#[derive(Default)]
struct Progress {
    queue: VecDeque<Job>,
    submitted: u64,
    completed: u64,
}

/// A stream: an ordered queue of work run by one worker thread.
pub struct Stream {
    progress: Mutex<Progress>,
    work_ready: Condvar,
    work_done: Condvar,
    /// Blocking streams synchronise with their device's legacy default stream.
    pub blocking: bool,
    /// The device (context) the stream belongs to.
    pub device: usize,
    /// The timing model's clock: when each recent piece of work finished.
    clock: Mutex<crate::timing::StreamClock>,
    /// The capture in progress on this stream, if any (see `capture`).
    pub capture: Mutex<Option<crate::capture::Capture>>,
}

impl Stream {
    /// A new stream of `device`'s context, with its worker thread.
    pub fn new(device: usize, blocking: bool) -> Arc<Stream> {
        let stream = Arc::new(Stream {
            progress: Mutex::new(Progress::default()),
            work_ready: Condvar::new(),
            work_done: Condvar::new(),
            blocking,
            device,
            clock: Mutex::new(crate::timing::StreamClock::default()),
            capture: Mutex::new(None),
        });
        let weak = Arc::downgrade(&stream);
        std::thread::Builder::new()
            .name("fakecuda-stream".into())
            .spawn(move || worker(weak))
            .expect("fakecuda: cannot start a stream thread");
        all_streams().lock().unwrap().push(Arc::downgrade(&stream));
        stream
    }

    /// Queues `work` to run after everything before it on this stream and after the
    /// given points of other streams. Returns its sequence number.
    pub fn enqueue(self: &Arc<Stream>, mut waits: Vec<(Arc<Stream>, u64)>, work: Work) -> u64 {
        waits.extend(implicit_waits(self));
        let mut progress = self.progress.lock().unwrap();
        progress.submitted += 1;
        let seq = progress.submitted;
        progress.queue.push_back(Job { seq, waits, work, issued: crate::timing::host_clock() });
        self.work_ready.notify_one();
        seq
    }

    /// The sequence number of the last work queued.
    pub fn submitted(&self) -> u64 {
        self.progress.lock().unwrap().submitted
    }

    /// Whether work `seq` has completed.
    pub fn has_completed(&self, seq: u64) -> bool {
        self.progress.lock().unwrap().completed >= seq
    }

    /// Blocks the application's thread until work `seq` has completed (the timing
    /// model's host clock moves on to when it finished).
    pub fn wait_for(&self, seq: u64) {
        self.wait_done(seq);
        crate::timing::host_waited(self.finished_at(seq));
    }

    /// Blocks until work `seq` has completed.
    fn wait_done(&self, seq: u64) {
        let mut progress = self.progress.lock().unwrap();
        while progress.completed < seq {
            progress = self.work_done.wait(progress).unwrap();
        }
    }

    /// The timing model's time at which work `seq` finished (0 when unknown).
    pub fn finished_at(&self, seq: u64) -> f64 {
        self.clock.lock().unwrap().at(seq)
    }

    /// Blocks until everything queued so far has completed.
    pub fn synchronize(&self) {
        let target = self.submitted();
        self.wait_for(target);
    }
}

fn worker(stream: Weak<Stream>) {
    loop {
        let Some(strong) = stream.upgrade() else { return };
        let job = {
            let mut progress = strong.progress.lock().unwrap();
            loop {
                if let Some(job) = progress.queue.pop_front() {
                    break Some(job);
                }
                if Arc::strong_count(&strong) == 1 {
                    // Only this worker still holds the stream: it was destroyed and drained.
                    break None;
                }
                let (guard, _) = strong
                    .work_ready
                    .wait_timeout(progress, std::time::Duration::from_millis(50))
                    .unwrap();
                progress = guard;
            }
        };
        let Some(job) = job else { return };
        let mut ready = job.issued.max(strong.finished_at(job.seq - 1));
        for (other, seq) in &job.waits {
            other.wait_done(*seq);
            ready = ready.max(other.finished_at(*seq));
        }
        let finished = crate::timing::run_job(ready, job.work);
        strong.clock.lock().unwrap().set(job.seq, finished);
        let mut progress = strong.progress.lock().unwrap();
        progress.completed = job.seq;
        strong.work_done.notify_all();
    }
}

fn all_streams() -> &'static Mutex<Vec<Weak<Stream>>> {
    static STREAMS: OnceLock<Mutex<Vec<Weak<Stream>>>> = OnceLock::new();
    STREAMS.get_or_init(Default::default)
}

/// The legacy default stream (`0` / `CU_STREAM_LEGACY`) of `device`'s context.
pub fn legacy(device: usize) -> Arc<Stream> {
    static LEGACY: OnceLock<Mutex<HashMap<usize, Arc<Stream>>>> = OnceLock::new();
    let mut streams = LEGACY.get_or_init(Default::default).lock().unwrap();
    streams.entry(device).or_insert_with(|| Stream::new(device, false)).clone()
}

/// Legacy default stream semantics, within one context: work on it waits for every
/// blocking stream of the context, and work on a blocking stream waits for it.
fn implicit_waits(stream: &Arc<Stream>) -> Vec<(Arc<Stream>, u64)> {
    let legacy = &legacy(stream.device);
    if Arc::ptr_eq(stream, legacy) {
        let streams = all_streams().lock().unwrap();
        streams
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.blocking && s.device == stream.device && !Arc::ptr_eq(s, legacy))
            .map(|s| {
                let seq = s.submitted();
                (s, seq)
            })
            .collect()
    } else if stream.blocking {
        vec![(legacy.clone(), legacy.submitted())]
    } else {
        Vec::new()
    }
}

/// The live streams of `device`'s context.
pub fn streams_of(device: usize) -> Vec<Arc<Stream>> {
    all_streams().lock().unwrap().iter().filter_map(Weak::upgrade).filter(|s| s.device == device).collect()
}

/// Waits until every stream of `device`'s context has finished what was queued so far
/// (`cuCtxSynchronize`: the context's streams only, not other devices').
pub fn synchronize_device(device: usize) {
    let streams: Vec<Arc<Stream>> =
        all_streams().lock().unwrap().iter().filter_map(Weak::upgrade).filter(|s| s.device == device).collect();
    for stream in streams {
        stream.synchronize();
    }
}

thread_local! {
    /// Set while a stream worker runs a host function (`cuLaunchHostFunc`).
    static IN_HOST_FUNCTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is running a host function queued on a stream.
pub fn in_host_function() -> bool {
    IN_HOST_FUNCTION.with(|flag| flag.get())
}

/// Runs `function` as a host function: CUDA calls inside it are refused.
pub fn run_host_function(function: impl FnOnce()) {
    IN_HOST_FUNCTION.with(|flag| flag.set(true));
    function();
    IN_HOST_FUNCTION.with(|flag| flag.set(false));
}

thread_local! {
    static PER_THREAD: std::cell::RefCell<HashMap<usize, Arc<Stream>>> = Default::default();
}

/// This thread's per-thread default stream in `device`'s context.
pub fn per_thread(device: usize) -> Arc<Stream> {
    PER_THREAD.with(|streams| streams.borrow_mut().entry(device).or_insert_with(|| Stream::new(device, true)).clone())
}

static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

/// Handles given to the application for created streams and events.
pub struct Registry<T> {
    items: Mutex<HashMap<usize, Arc<T>>>,
}

impl<T> Registry<T> {
    /// An empty registry.
    pub fn new() -> Registry<T> {
        Registry { items: Mutex::new(HashMap::new()) }
    }

    /// Registers `item`; returns its handle (never 0, 1 or 2, which are reserved stream values).
    pub fn insert(&self, item: Arc<T>) -> usize {
        let handle = 0x5_0000 + NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) * 16;
        self.items.lock().unwrap().insert(handle, item);
        handle
    }

    /// The item behind a handle.
    pub fn get(&self, handle: usize) -> Option<Arc<T>> {
        self.items.lock().unwrap().get(&handle).cloned()
    }

    /// Forgets a handle.
    pub fn remove(&self, handle: usize) -> Option<Arc<T>> {
        self.items.lock().unwrap().remove(&handle)
    }
}

/// An event: a point in one stream's work, with the time it was passed.
#[derive(Default)]
pub struct Event {
    state: Mutex<EventState>,
}

#[derive(Default)]
struct EventState {
    point: Option<(Arc<Stream>, u64)>,
    passed_at: Option<Instant>,
    record_count: u64,
    captured: bool,
}

impl Event {
    /// Records the event at the current end of `stream`.
    pub fn record(self: &Arc<Event>, stream: &Arc<Stream>) {
        let event = self.clone();
        let mut state = self.state.lock().unwrap();
        state.record_count += 1;
        let generation = state.record_count;
        let seq = stream.enqueue(
            Vec::new(),
            Box::new(move || {
                let mut state = event.state.lock().unwrap();
                if state.record_count == generation {
                    state.passed_at = Some(crate::timing::now());
                }
            }),
        );
        state.point = Some((stream.clone(), seq));
        state.passed_at = None;
        state.captured = false;
    }

    /// Records the event in a stream capture: it stands for a point of a graph, not of
    /// the stream's work, until recorded again outside a capture.
    pub fn record_in_capture(&self) {
        let mut state = self.state.lock().unwrap();
        state.record_count += 1;
        state.point = None;
        state.passed_at = None;
        state.captured = true;
    }

    /// Whether the event was last recorded in a capturing stream.
    pub fn captured(&self) -> bool {
        self.state.lock().unwrap().captured
    }

    /// The stream point the event stands for, if recorded.
    pub fn point(&self) -> Option<(Arc<Stream>, u64)> {
        self.state.lock().unwrap().point.clone()
    }

    /// When the stream passed the event.
    pub fn passed_at(&self) -> Option<Instant> {
        self.state.lock().unwrap().passed_at
    }
}
