//! The working set's glue: the launch table of every extent the engine or the mover cares
//! about, the classes of those extents, and the moves that keep the compute device for
//! what a step uses many times.
//!
//! * [`publish`] writes the lock-free table the launch and copy hooks scan: every donor
//!   extent (the engine stages them) and every movable extent on the device, each with a
//!   stable slot whose use record (launch count, streams) the hooks update.
//! * [`tick`] (the background thread, every [`TICK`]) samples the use records into the
//!   classifier, settles a device once its engine has seen a repeating step, and carries
//!   out one batch of promotions ([`vvram_allocator::working_set::plan_promotions`]), or,
//!   when nothing hot waits, brings weights back into free room beyond a margin
//!   ([`vvram_allocator::working_set::plan_refill`]).
//! * [`make_room`] (the allocation hooks, state lock held) demotes weights when an
//!   automatic allocation on a settled device would not fit on it.
//!
//! A move (see [`execute`]) holds the state lock and [`MOVES`]: the moving extents are
//! marked in the table, the hooks that may have read the table before are waited for
//! (epoch-parity counters, [`enter`]), the engine writes back and drops staged copies of
//! them, the copy into the new backing waits for events recorded on every stream that
//! used them (or for every context, when that is not known), and then the allocator
//! remaps. Hooks that meet a moving extent wait on [`MOVES`] and scan again.

use crate::ops::RealOps;
use crate::real_call;
use crate::runtime::HOOK_ERRORS;
use crate::staging;
use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use vvram_allocator::working_set::{Candidate, Class, Classifier, Move, SETTLE_STEPS, STEP, plan_demotions, plan_promotions, plan_refill};
use vvram_allocator::{MemoryManager, MoveTarget, PendingMove, Request};
use vvram_cuda::*;
use vvram_engine::{Entry, PredictorState};
use vvram_policy::Tier;

// The classifier counts steps in the predictor's units.
const _: () = assert!(STEP == vvram_engine::STEP_UNIT);

/// How often the background thread samples uses and plans promotions.
pub const TICK: Duration = Duration::from_millis(50);
/// Launches that make an extent not yet classified plainly hot.
const PLAINLY_HOT_USES: u64 = 8;
/// Bytes one batch moves at most (demotions and promotions together).
const BATCH: u64 = 4 << 30;
/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;

static EPOCH: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Held while extents move: hooks that meet a moving extent wait for it.
static MOVES: Mutex<()> = Mutex::new(());

/// A hook between its table scan and the call it issues (see [`enter`]).
pub struct Entered(usize);

/// Marks the calling hook as between scan and issue until the guard drops: a move waits
/// for every hook that entered before it marked its extents. Two atomics, no lock.
pub fn enter() -> Entered {
    loop {
        let epoch = EPOCH.load(Ordering::SeqCst);
        let parity = (epoch & 1) as usize;
        IN_FLIGHT[parity].fetch_add(1, Ordering::SeqCst);
        // A mover that flipped the epoch meanwhile may not wait for this parity: count
        // again in the new one.
        if EPOCH.load(Ordering::SeqCst) == epoch {
            return Entered(parity);
        }
        IN_FLIGHT[parity].fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        IN_FLIGHT[self.0].fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the moves in progress are done. Call with no [`Entered`] guard held.
pub fn wait_for_moves() {
    drop(MOVES.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Set while a batch of moves is under way.
static MOVING_NOW: AtomicBool = AtomicBool::new(false);
/// Set once an operation whose extents are unknown was issued (a launch without a
/// parameter layout, a graph launch): moves are then ordered by synchronising every
/// context, as such an operation may use a moving extent on any stream.
static BLIND_SEEN: AtomicBool = AtomicBool::new(false);

/// For an operation that may use any extent without the hooks knowing which: waits for
/// the moves under way, then returns the guard to hold until the operation is issued.
pub fn enter_blind() -> Entered {
    BLIND_SEEN.store(true, Ordering::Relaxed);
    loop {
        let entered = enter();
        if !MOVING_NOW.load(Ordering::SeqCst) {
            return entered;
        }
        drop(entered);
        wait_for_moves();
    }
}

/// After marking extents as moving: waits until every hook that entered before has left.
fn quiesce() {
    let old = (EPOCH.fetch_add(1, Ordering::SeqCst) & 1) as usize;
    while IN_FLIGHT[old].load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

#[derive(Default)]
struct Device {
    classifier: Classifier,
    /// Steps seen, in units of 1/`STEP` step.
    progress: u64,
    /// The predictor's relearn count at the last sample, while it was locked.
    relearns: Option<u64>,
    moved_at: HashMap<u64, u64>,
    context: Option<usize>,
}

#[derive(Default)]
struct Tracked {
    /// Use-record slot of each tracked extent, by base, with the allocation's id.
    slots: HashMap<u64, (u64, u32)>,
    /// vvram's copy stream in each context that moved extents.
    move_streams: HashMap<usize, usize>,
    free_slots: Vec<u32>,
    next_slot: u32,
    moving: HashSet<u64>,
    devices: HashMap<u32, Device>,
    counters: vvram_stats::WorkingSetSnapshot,
}

fn tracked() -> MutexGuard<'static, Tracked> {
    static TRACKED: OnceLock<Mutex<Tracked>> = OnceLock::new();
    TRACKED.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the working set applies to `device`: its engine runs and placement is automatic.
fn automatic(manager: &MemoryManager<RealOps>, device: u32) -> bool {
    manager.plan().device(device).is_some_and(|d| d.automatic) && staging::has_engine(device)
}

/// Rewrites the hooks' table: the donor extents of every device with an engine, and its
/// movable extents on the device. Slots of extents gone are freed, new ones cleared.
pub fn publish(manager: &MemoryManager<RealOps>) {
    let mut entries = Vec::new();
    for device in manager.plan().devices.iter().map(|d| d.index).filter(|d| staging::has_engine(*d)) {
        for (base, size, _) in manager.donor_extents(device) {
            entries.push(Entry { base, len: size, slot: 0, donor: true, moving: false });
        }
        for extent in manager.extents(device).into_iter().filter(|e| e.movable && e.local_bytes == e.span) {
            entries.push(Entry { base: extent.base, len: extent.size, slot: 0, donor: false, moving: false });
        }
    }
    let ids: HashMap<u64, u64> = entries.iter().map(|e| (e.base, manager.find(e.base).map_or(0, |info| info.id))).collect();
    let mut tracked = tracked();
    let gone: Vec<(u64, u32)> =
        tracked.slots.iter().filter(|(b, (id, _))| ids.get(b) != Some(id)).map(|(b, (_, slot))| (*b, *slot)).collect();
    for (base, slot) in gone {
        // Freed, or another allocation at the same address: its history goes with it.
        tracked.slots.remove(&base);
        tracked.free_slots.push(slot);
        for state in tracked.devices.values_mut() {
            state.classifier.forget(base);
            state.moved_at.remove(&base);
        }
    }
    let capacity = staging::table().capacity() as u32;
    entries.retain_mut(|entry| {
        let slot = match tracked.slots.get(&entry.base) {
            Some((_, slot)) => *slot,
            None => {
                let slot = match tracked.free_slots.pop() {
                    Some(slot) => slot,
                    None if tracked.next_slot < capacity => {
                        tracked.next_slot += 1;
                        tracked.next_slot - 1
                    }
                    None => return false,
                };
                staging::table().clear_record(slot);
                tracked.slots.insert(entry.base, (ids[&entry.base], slot));
                slot
            }
        };
        entry.slot = slot;
        entry.moving = tracked.moving.contains(&entry.base);
        true
    });
    if let Err(full) = staging::table().replace(&mut entries) {
        HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(dropped = full.dropped, "more extents than the launch table holds: those are read in place and never moved");
    }
}

/// The background thread's turn: classifies, settles, promotes. No move starts while a
/// stream capture is under way.
pub fn tick(manager: &mut MemoryManager<RealOps>) {
    for device in manager.plan().devices.iter().map(|d| d.index).collect::<Vec<_>>() {
        if !automatic(manager, device) {
            continue;
        }
        let Some(predictor) = staging::predictor(device) else { continue };
        sample(manager, device, predictor);
        if predictor.locked && !manager.settled(device) {
            manager.settle(device);
            tracing::info!(device, steps = predictor.steps, "the engine saw a repeating step: the working-set reserve is released");
        }
        // Hot extents first; then weights into the room left.
        for refill in [false, true] {
            let candidates = candidates(manager, device);
            let free = manager.local_free(device);
            let moves = if refill {
                let budget = manager.plan().device(device).map_or(0, |d| d.local_budget);
                plan_refill(&candidates, free, refill_margin(budget), BATCH)
            } else {
                plan_promotions(&candidates, free, BATCH)
            };
            if !moves.is_empty() && !crate::hooks::capture_under_way() && current_context(device) {
                execute(manager, device, &moves);
            }
        }
    }
}

/// Bytes of the compute device that bringing weights back leaves free: 1/64 of the
/// local budget, at least two chunks (what sampling allocates later demotes weights
/// again if it needs more).
fn refill_margin(local_budget: u64) -> u64 {
    (local_budget / 64).max(2 * vvram_allocator::CHUNK)
}

/// Before an allocation (state lock held): tells the manager whether kernels were
/// launched since the previous allocation (then it is computing's, and may use the
/// reserve; allocations back to back are a load).
pub fn note_kernels(manager: &mut MemoryManager<RealOps>, device: u32) {
    static AT_LAST_ALLOCATION: AtomicU64 = AtomicU64::new(0);
    let launches = staging::LAUNCHES_SEEN.load(Ordering::Relaxed);
    if AT_LAST_ALLOCATION.swap(launches, Ordering::Relaxed) != launches {
        manager.kernels_ran(device);
    }
}

/// Before an automatic allocation on a settled device: when the device lacks room for
/// it, demotes just enough weights (least used first) so that it fits.
pub fn make_room(manager: &mut MemoryManager<RealOps>, request: Request) {
    let Some(shortfall) = manager.shortfall(request) else { return };
    if !automatic(manager, request.device) || crate::hooks::capture_under_way() {
        return;
    }
    let free = manager.local_free(request.device);
    let moves = plan_demotions(&candidates(manager, request.device), free, free + shortfall, BATCH);
    if !moves.is_empty() {
        tracing::debug!(device = request.device, size = request.size, shortfall, moves = moves.len(), "demoting weights to make room");
        execute(manager, request.device, &moves);
    }
}

/// Samples the use records into the classifier; windows in which the predictor relearnt
/// its period (its step count was approximate) start again instead. Donor extents are
/// classified at once from the engine's exact count over the last step.
fn sample(manager: &MemoryManager<RealOps>, device: u32, predictor: PredictorState) {
    let table = staging::table();
    let exact = staging::uses_per_step(device);
    let mut tracked = tracked();
    let uses: Vec<(u64, u64)> = manager
        .extents(device)
        .into_iter()
        .filter(|e| e.movable || e.donor.is_some())
        .filter_map(|e| tracked.slots.get(&e.base).map(|(_, slot)| (e.base, table.uses(*slot))))
        .collect();
    let state = tracked.devices.entry(device).or_default();
    state.progress = predictor.progress;
    if predictor.locked && state.relearns == Some(predictor.relearns) {
        state.classifier.sample(predictor.progress, &uses);
    } else {
        state.classifier.restart_all(predictor.progress, &uses);
    }
    state.relearns = predictor.locked.then_some(predictor.relearns);
    let counted: HashMap<u64, u64> = uses.into_iter().collect();
    for (base, uses_per_step) in exact {
        let uses = counted.get(&base).copied().unwrap_or(0);
        state.classifier.set_exact(base, uses_per_step, predictor.progress, uses);
    }
}

/// The movable extents of `device` that have a use record, as the planners see them.
/// Before the device settles, and once an operation whose extents are unknown was seen
/// (a graph launch: its uses are not counted), nothing on the card is taken for weights:
/// nothing is demoted, moves only use free room. One not yet
/// classified that launches used [`PLAINLY_HOT_USES`] times already is hot (a weight is
/// used once or twice per step, and steps repeat within the second); one on a donor that
/// launches used, but fewer times, counts as weights (it may come back into free room).
fn candidates(manager: &MemoryManager<RealOps>, device: u32) -> Vec<Candidate> {
    let keep_on_card = BLIND_SEEN.load(Ordering::Relaxed) || !manager.settled(device);
    let mut tracked = tracked();
    let Tracked { slots, devices, .. } = &mut *tracked;
    let state = devices.entry(device).or_default();
    manager
        .extents(device)
        .into_iter()
        .filter(|e| e.movable && slots.contains_key(&e.base))
        .map(|e| Candidate {
            base: e.base,
            span: e.span,
            local: e.local_bytes == e.span,
            class: match state.classifier.class(e.base) {
                Class::Weights if keep_on_card && e.local_bytes == e.span => Class::Unknown,
                Class::Unknown => match slots.get(&e.base).map_or(0, |(_, slot)| staging::table().uses(*slot)) {
                    uses if uses >= PLAINLY_HOT_USES => Class::Hot,
                    uses if uses > 0 && e.local_bytes < e.span => Class::Weights,
                    _ => Class::Unknown,
                },
                class => class,
            },
            uses_per_step: state.classifier.uses_per_step(e.base),
            settling: state.moved_at.get(&e.base).is_some_and(|at| state.progress < at + SETTLE_STEPS * STEP),
        })
        .collect()
}

/// Makes `device`'s primary context current on the calling (background) thread.
fn current_context(device: u32) -> bool {
    let known = tracked().devices.entry(device).or_default().context;
    let context = match known {
        Some(context) => context,
        None => {
            let mut context = std::ptr::null_mut();
            if real_call!(cuDevicePrimaryCtxRetain(&mut context, device as CUdevice)) != result::SUCCESS {
                return false;
            }
            tracked().devices.entry(device).or_default().context = Some(context as usize);
            context as usize
        }
    };
    real_call!(cuCtxSetCurrent(context as CUcontext)) == result::SUCCESS
}

/// Carries out `moves` for `device` (the device's context current, state lock held):
/// demotions first, so that promotions find their room.
fn execute(manager: &mut MemoryManager<RealOps>, device: u32, moves: &[Move]) {
    let started = Instant::now();
    let _moving = MOVES.lock().unwrap_or_else(|p| p.into_inner());
    let demotions: Vec<u64> = moves.iter().filter_map(|m| if let Move::Demote(b) = m { Some(*b) } else { None }).collect();
    let promotions: Vec<u64> = moves.iter().filter_map(|m| if let Move::Promote(b) = m { Some(*b) } else { None }).collect();
    for (bases, target) in [(demotions, MoveTarget::Donors), (promotions, MoveTarget::Local)] {
        if !bases.is_empty() {
            move_phase(manager, device, &bases, target);
        }
    }
    let mut tracked = tracked();
    tracked.counters.batches += 1;
    tracked.counters.move_ns += started.elapsed().as_nanos() as u64;
}

fn move_phase(manager: &mut MemoryManager<RealOps>, device: u32, bases: &[u64], target: MoveTarget) {
    let mut pending: Vec<PendingMove> = Vec::new();
    for &base in bases {
        match manager.begin_move(base, target) {
            Ok(move_) => pending.push(move_),
            Err(code) => {
                tracked().counters.failed_moves += 1;
                tracing::debug!(device, base, code, ?target, "a move found no room or failed to start");
            }
        }
    }
    if pending.is_empty() {
        return;
    }
    let moved = catch_unwind(AssertUnwindSafe(|| carry_out(manager, device, pending, target)));
    // Whatever happened, the extents are no longer moving: hooks waiting on them go on.
    tracked().moving.clear();
    staging::resync(manager, device);
    publish(manager);
    MOVING_NOW.store(false, Ordering::SeqCst);
    if moved.is_err() {
        HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(device, "panic while moving extents; the moves were given up");
    }
}

/// The body of a move phase: the engine lets go of the extents, they are marked as moving,
/// the hooks that read the table before are waited for, the copies ordered after every
/// user, then the allocator remaps.
fn carry_out(manager: &mut MemoryManager<RealOps>, device: u32, pending: Vec<PendingMove>, target: MoveTarget) {
    let moving: Vec<(u64, u64)> = pending.iter().map(|p| (p.base, p.span)).collect();
    let prepared = staging::before_move(manager, device, &moving);
    tracked().moving.extend(moving.iter().map(|(base, _)| *base));
    publish(manager);
    MOVING_NOW.store(true, Ordering::SeqCst);
    quiesce();
    let copied = prepared.and_then(|_| copy_after_users(&pending));
    if copied.is_err()
        && let Ok(stream) = move_stream()
    {
        // Copies queued before the failure still write the staging ranges.
        real_call!(cuStreamSynchronize(stream as CUstream));
    }
    let step = tracked().devices.get(&device).map_or(0, |d| d.progress);
    for move_ in pending {
        let (base, span) = (move_.base, move_.span);
        if let Err(code) = copied {
            manager.abort_move(move_);
            tracked().counters.failed_moves += 1;
            HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device, base, code, "copying an extent to its new tier failed: it stays where it was");
            continue;
        }
        match manager.finish_move(move_) {
            Ok(()) => {
                let mut tracked = tracked();
                let uses = tracked.slots.get(&base).map_or(0, |(_, slot)| staging::table().uses(*slot));
                let counters = &mut tracked.counters;
                match target {
                    MoveTarget::Donors => (counters.demotions += 1, counters.demoted_bytes += span),
                    MoveTarget::Local => (counters.promotions += 1, counters.promoted_bytes += span),
                };
                let state = tracked.devices.entry(device).or_default();
                state.moved_at.insert(base, step);
                state.classifier.restart(base, step, uses);
                tracing::debug!(device, base, span, ?target, "moved");
            }
            Err(code) => {
                tracked().counters.failed_moves += 1;
                HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device, base, code, "remapping a moved extent failed: it stays where it was");
            }
        }
    }
}

/// Copies every pending move's extent into its staging range on the device's move stream,
/// after every operation that used it, and waits for the copies.
fn copy_after_users(pending: &[PendingMove]) -> Result<(), CUresult> {
    let check = |code: CUresult| if code == result::SUCCESS { Ok(()) } else { Err(code) };
    let stream = move_stream()?;
    let mut streams = Vec::new();
    let mut users = Vec::new();
    let mut known = !BLIND_SEEN.load(Ordering::Relaxed);
    {
        let tracked = tracked();
        for move_ in pending {
            let Some(&(_, slot)) = tracked.slots.get(&move_.base) else {
                known = false;
                continue;
            };
            known &= staging::table().streams(slot, &mut users);
            for &user in &users {
                known &= user != CU_STREAM_PER_THREAD;
                if !streams.contains(&user) {
                    streams.push(user);
                }
            }
        }
    }
    if streams.iter().any(|s| staging::capturing(*s)) {
        // A copy ordered after a capturing stream would join its capture.
        return Err(result::STREAM_CAPTURE_UNSUPPORTED);
    }
    if known {
        for &user in &streams {
            let mut event = std::ptr::null_mut();
            check(real_call!(cuEventCreate(&mut event, EVENT_DISABLE_TIMING)))?;
            let ordered = check(real_call!(cuEventRecord(event, user as CUstream)))
                .and_then(|_| check(real_call!(cuStreamWaitEvent(stream as CUstream, event, 0))));
            real_call!(cuEventDestroy_v2(event));
            if ordered.is_err() {
                known = false;
                break;
            }
        }
    }
    if !known {
        tracked().counters.context_syncs += 1;
        crate::ops::synchronize_every_context()?;
    }
    for move_ in pending {
        check(real_call!(cuMemcpyAsync(move_.staging, move_.base, move_.span as usize, stream as CUstream)))?;
    }
    check(real_call!(cuStreamSynchronize(stream as CUstream)))
}

/// vvram's copy stream in the calling thread's current context.
fn move_stream() -> Result<usize, CUresult> {
    let mut context = std::ptr::null_mut();
    let code = real_call!(cuCtxGetCurrent(&mut context));
    if code != result::SUCCESS || context.is_null() {
        return Err(if code == result::SUCCESS { result::INVALID_CONTEXT } else { code });
    }
    if let Some(stream) = tracked().move_streams.get(&(context as usize)) {
        return Ok(*stream);
    }
    let mut stream = std::ptr::null_mut();
    let code = real_call!(cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING));
    if code != result::SUCCESS {
        return Err(code);
    }
    tracked().move_streams.insert(context as usize, stream as usize);
    Ok(stream as usize)
}

/// Notes that an operation on `stream` writes or reads `address` (a copy the hooks do
/// not otherwise see): a later move of its extent is ordered after it.
pub fn note_user(address: u64, stream: usize) {
    if staging::ACTIVE.load(Ordering::Relaxed)
        && let Some(hit) = staging::table().find(address)
    {
        staging::table().note_stream(hit.slot, stream);
    }
}

/// Bytes of each tier of `device` by class: `(tier, hot, weights)`.
pub fn classes(manager: &MemoryManager<RealOps>, device: u32) -> Vec<(Tier, u64, u64)> {
    let mut out: Vec<(Tier, u64, u64)> = Vec::new();
    let tracked = tracked();
    let Some(state) = tracked.devices.get(&device) else { return out };
    for extent in manager.extents(device) {
        let class = state.classifier.class(extent.base);
        let pieces = [(Tier::Local, extent.local_bytes), (extent.donor.unwrap_or(Tier::Host), extent.span - extent.local_bytes)];
        for (tier, bytes) in pieces.into_iter().filter(|(_, b)| *b > 0) {
            let (hot, weights) = match class {
                Class::Hot => (bytes, 0),
                Class::Weights => (0, bytes),
                Class::Unknown => continue,
            };
            if let Some(entry) = out.iter_mut().find(|(t, _, _)| *t == tier) {
                entry.1 += hot;
                entry.2 += weights;
            } else {
                out.push((tier, hot, weights));
            }
        }
    }
    out
}

/// The working set's statistics over every device; the bytes by class are summed from
/// the devices' tiers, as the statistics show them (built with [`classes`]).
pub fn snapshot(manager: &MemoryManager<RealOps>, devices: &[vvram_stats::DeviceSnapshot]) -> vvram_stats::WorkingSetSnapshot {
    let mut out = tracked().counters.clone();
    for plan in &manager.plan().devices {
        if !automatic(manager, plan.index) {
            continue;
        }
        out.devices += 1;
        if manager.settled(plan.index) {
            out.settled += 1;
        } else {
            out.reserve += plan.reserve;
        }
        out.steps = out.steps.max(tracked().devices.get(&plan.index).map_or(0, |d| d.progress / STEP));
        for tier in devices.iter().filter(|d| d.device == plan.index).flat_map(|d| &d.tiers) {
            out.hot_bytes += tier.hot;
            out.weights_bytes += tier.weights;
            if tier.tier == Tier::Local.to_string() {
                out.local_weights_bytes += tier.weights;
            } else {
                out.donor_hot_bytes += tier.hot;
            }
        }
    }
    out
}
