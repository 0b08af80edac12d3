//! The timing model, on when `FAKECUDA_LINK_GBPS` is set: the machine behaves like one
//! GPU on a link, so a schedule of copies and kernels can be measured without a GPU.
//!
//! * One compute engine: kernels from every stream run one at a time.
//! * One copy engine per direction: a host-to-device copy (from pageable or host-located
//!   memory into device-located memory) occupies the H2D engine for `bytes / LINK`, a
//!   device-to-host copy the D2H engine; both directions run at once, and beside the
//!   compute engine. Device-to-device and host-to-host copies take no modelled time.
//! * A kernel takes the longest of `FAKECUDA_KERNEL_US`, its own run time (`weight_sum`'s
//!   `ns` parameter) and the time its operands' bytes that live in host memory take to
//!   cross the link at `FAKECUDA_ZERO_COPY_GBPS`: once for a read or a write, twice for
//!   a read-modify-write (`scale_f32`), `FAKECUDA_ZERO_COPY_REREAD` times for
//!   `weight_sum`'s weight (a GEMM re-reads its weight tiles; zero-copy reads cross the
//!   link every time).
//!
//! Time is virtual: nothing sleeps. Each piece of stream work starts when the work before
//! it on its stream, the work it waits for on other streams, its engine and the
//! application's clock all allow, and ends its modelled time later; events take the
//! virtual time at which their stream passes them, so `cuEventElapsedTime` measures the
//! modelled schedule, exactly and however loaded the machine is. The application's clock
//! moves on when it synchronises (a stream, an event, the context): work issued after a
//! wait cannot start before what it waited for finished. The CPU's own time is not
//! modelled (it issues instantly), and an engine shared by several streams serves them in
//! the order their workers reach it. Without `FAKECUDA_LINK_GBPS` only
//! `FAKECUDA_KERNEL_US` and `weight_sum`'s run time delay kernels, in real time.

use crate::kernels::{Access, Kernel};
use crate::memory::{self, Place};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The model's rates.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// Link bytes per second, each direction.
    pub link: f64,
    /// Bytes per second a kernel reads host memory at.
    pub zero_copy: f64,
    /// How many times a kernel reads each byte of its weight operand.
    pub reread: f64,
}

/// An engine of the modelled GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The compute engine.
    Compute = 0,
    /// The host-to-device copy engine.
    HostToDevice = 1,
    /// The device-to-host copy engine.
    DeviceToHost = 2,
}

/// What an operation costs: the engine it holds and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// The engine.
    pub lane: Lane,
    /// Modelled time.
    pub time: Duration,
}

fn rate(name: &str, default: Option<f64>) -> Option<f64> {
    match std::env::var(name) {
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(value) if value > 0.0 && value.is_finite() => Some(value),
            _ => {
                eprintln!("fakecuda: {name}={text:?} is not a positive number");
                std::process::exit(2);
            }
        },
        Err(_) => default,
    }
}

/// The model, when `FAKECUDA_LINK_GBPS` turns it on. An invalid value stops the process.
pub fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let link = rate("FAKECUDA_LINK_GBPS", None)?;
            let zero_copy = rate("FAKECUDA_ZERO_COPY_GBPS", Some(link)).unwrap_or(link);
            let reread = rate("FAKECUDA_ZERO_COPY_REREAD", Some(8.0)).unwrap_or(8.0);
            Some(Model { link: link * 1e9, zero_copy: zero_copy * 1e9, reread })
        })
        .as_ref()
}

/// Bytes of `[address, address + len)` (application addresses) that live in host
/// memory: host-located mappings and memory the driver does not know (pageable).
pub fn host_bytes(address: u64, len: u64) -> u64 {
    let end = address.saturating_add(len);
    let (mut cursor, mut host) = (address, 0);
    while cursor < end {
        let (piece_end, on_host) = match (memory::mapping_containing(cursor), memory::allocation_containing(cursor)) {
            (Some((base, mapping)), _) => (base + mapping.size, mapping.place == Place::Host),
            (None, Some((base, allocation))) => (base + allocation.size.max(1), false),
            (None, None) => (end, true),
        };
        let piece_end = piece_end.min(end).max(cursor + 1);
        if on_host {
            host += piece_end - cursor;
        }
        cursor = piece_end;
    }
    host
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// The cost of copying `bytes` from `src` to `dst` (application addresses), when the
/// model is on and the copy crosses the link.
pub fn copy_cost(dst: u64, src: u64, bytes: u64) -> Option<Cost> {
    let model = model()?;
    let from_host = host_bytes(src, bytes) == bytes;
    let to_host = host_bytes(dst, bytes) == bytes;
    let lane = match (from_host, to_host) {
        (true, false) => Lane::HostToDevice,
        (false, true) => Lane::DeviceToHost,
        _ => return None,
    };
    Some(Cost { lane, time: seconds(bytes as f64 / model.link) })
}

/// How long a kernel runs, from its packed parameters (application addresses).
pub fn kernel_time(kernel: Kernel, params: &[u8], kernel_us: u64) -> Duration {
    let mut time = Duration::from_micros(kernel_us).max(Duration::from_nanos(kernel.run_ns(params).unwrap_or(0)));
    if let Some(model) = model() {
        let crossed: f64 = kernel
            .operands(params)
            .into_iter()
            .map(|(address, bytes, access)| {
                let passes = match access {
                    Access::Read | Access::Write => 1.0,
                    Access::ReadWrite => 2.0,
                    Access::Tiled => model.reread,
                };
                host_bytes(address, bytes) as f64 * passes
            })
            .sum();
        time = time.max(seconds(crossed / model.zero_copy));
    }
    time
}

/// When each engine is next free, in virtual seconds.
fn lanes() -> &'static [Mutex<f64>; 3] {
    static LANES: OnceLock<[Mutex<f64>; 3]> = OnceLock::new();
    LANES.get_or_init(|| [Mutex::new(0.0), Mutex::new(0.0), Mutex::new(0.0)])
}

thread_local! {
    /// On a stream worker: when the current piece of work may start, and when it ended.
    static JOB: Cell<(f64, Option<f64>)> = const { Cell::new((0.0, None)) };
}

/// The application's clock, virtual seconds as `f64` bits.
static HOST_CLOCK: AtomicU64 = AtomicU64::new(0);

/// The application's clock (0 without the model).
pub fn host_clock() -> f64 {
    f64::from_bits(HOST_CLOCK.load(Ordering::Acquire))
}

/// The application waited for work that finished at `finished`.
pub fn host_waited(finished: f64) {
    if model().is_none() {
        return;
    }
    let mut current = HOST_CLOCK.load(Ordering::Acquire);
    while f64::from_bits(current) < finished {
        match HOST_CLOCK.compare_exchange(current, finished.to_bits(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// Runs one piece of stream work that may start at `ready`; returns when it finished.
pub fn run_job(ready: f64, work: impl FnOnce()) -> f64 {
    if model().is_none() {
        work();
        return 0.0;
    }
    JOB.with(|job| job.set((ready, None)));
    work();
    JOB.with(|job| {
        let (ready, finished) = job.get();
        finished.unwrap_or(ready)
    })
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The time an event passed by: the virtual time on a stream worker under the model,
/// else now.
pub fn now() -> Instant {
    match model() {
        Some(_) => epoch() + seconds(JOB.with(|job| job.get().0)),
        None => Instant::now(),
    }
}

/// Runs `work` on a stream's worker as an operation of `cost`: under the model it holds
/// its engine for the modelled time, virtually; without it, after a real delay of that time.
pub fn run(cost: Cost, work: impl FnOnce()) {
    if model().is_none() {
        if !cost.time.is_zero() {
            std::thread::sleep(cost.time);
        }
        work();
        return;
    }
    let mut lane = lanes()[cost.lane as usize].lock().unwrap_or_else(|p| p.into_inner());
    let ready = JOB.with(|job| job.get().0);
    let finished = ready.max(*lane) + cost.time.as_secs_f64();
    *lane = finished;
    drop(lane);
    JOB.with(|job| job.set((ready, Some(finished))));
    work();
}

/// When recent work of one stream finished, in virtual seconds.
#[derive(Default)]
pub struct StreamClock {
    recent: std::collections::VecDeque<(u64, f64)>,
}

/// Finished times kept per stream (waits name recent work).
const KEPT: usize = 1 << 12;

impl StreamClock {
    /// Records that work `seq` finished at `at`.
    pub fn set(&mut self, seq: u64, at: f64) {
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, at));
    }

    /// When work `seq` finished (the latest time known at or before it; 0 if none).
    pub fn at(&self, seq: u64) -> f64 {
        let index = self.recent.partition_point(|(s, _)| *s <= seq);
        index.checked_sub(1).map_or(0.0, |i| self.recent[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_clock_answers_for_recent_work() {
        let mut clock = StreamClock::default();
        assert_eq!(clock.at(3), 0.0);
        clock.set(1, 0.5);
        clock.set(2, 0.75);
        clock.set(5, 2.0);
        assert_eq!((clock.at(1), clock.at(2), clock.at(4), clock.at(9)), (0.5, 0.75, 0.75, 2.0));
        for seq in 6..(KEPT as u64 + 10) {
            clock.set(seq, seq as f64);
        }
        assert_eq!(clock.at(1), 0.0, "forgotten work finished long ago");
    }

    #[test]
    fn weight_sum_runs_for_its_parameter_and_other_kernels_for_the_configured_delay() {
        let mut params = vec![0u8; 32];
        params[8..16].copy_from_slice(&0u64.to_ne_bytes());
        params[24..32].copy_from_slice(&5_000u64.to_ne_bytes());
        assert_eq!(kernel_time(Kernel::WeightSum, &params, 2), Duration::from_micros(5));
        assert_eq!(kernel_time(Kernel::WeightSum, &params, 9), Duration::from_micros(9));
        assert_eq!(kernel_time(Kernel::SumF32, &params[..24], 3), Duration::from_micros(3));
    }
}
