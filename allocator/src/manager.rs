//! The memory manager: every vvram allocation is a virtual extent whose 2 MiB chunks are
//! backed by physical memory on the tier the policy's rules choose.
//!
//! * A request of [`SMALL_LIMIT`] bytes or more gets its own extent: a range of the
//!   device's reserved address space, chunk by chunk placed on the first tier of its rule
//!   with room, mapped, and made accessible to the compute device (and host chunks to the
//!   CPU, for the fast copy path). A tier whose driver says out-of-memory is skipped for
//!   the rest of the request, so an extent can straddle tiers.
//! * Smaller requests share slabs: single chunks on one tier, carved first-fit.
//! * When no tier has room, the request fails with `CUDA_ERROR_OUT_OF_MEMORY` and
//!   everything taken for it is given back. A tier whose driver fails with another error
//!   is skipped like a full one and the error counted.
//! * Freed host chunks return to a pool of pinned memory, which a background thread keeps
//!   filled to the policy's `pin_ahead` (creating pinned memory is slow).
//! * Automatic placement (streaming on, and no explicit rule matching): while the
//!   application loads (allocations with no kernel launched between them) and until the
//!   device is *settled* (the engine has seen a repeating step), an extent that would leave
//!   less than the working-set reserve free on the device goes to donors first; what is
//!   allocated between kernels (activations) may use the reserve. Such extents are
//!   *movable*: [`MemoryManager::begin_move`] and [`MemoryManager::finish_move`] move their
//!   backing to another tier at the same virtual addresses (see `working_set`).

use crate::driver::{Driver, EventId, Handle, Location};
use std::collections::{BTreeMap, HashMap, HashSet};
use vvram_cuda::{CUresult, result};
use vvram_policy::{Plan, Tier};

/// Physical chunk size: the allocation granularity of current GPUs and of host memory.
pub const CHUNK: u64 = 2 << 20;
/// The first buffer id (`CU_POINTER_ATTRIBUTE_BUFFER_ID`) of a vvram allocation. The
/// driver numbers its buffers from 1 up; vvram's start far above, so that an id names one
/// buffer in the whole process, the driver's or vvram's.
pub const FIRST_BUFFER_ID: u64 = 1 << 48;
/// Requests below this share slabs; requests at or above it get their own extent.
pub const SMALL_LIMIT: u64 = 1 << 20;
/// Alignment of allocations inside slabs (cudaMalloc guarantees 256).
pub const SMALL_ALIGN: u64 = 512;

/// An allocation request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Compute device (the current context's device).
    pub device: u32,
    /// Bytes asked for.
    pub size: u64,
    /// The current phase, if one is set.
    pub phase: Option<&'a str>,
    /// The current allocation tag, if one is set.
    pub tag: Option<&'a str>,
}

/// What is known about an address inside a vvram allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationInfo {
    /// The allocation's first byte.
    pub base: u64,
    /// Bytes asked for.
    pub size: u64,
    /// Compute device it was allocated for.
    pub device: u32,
    /// A unique id (`CU_POINTER_ATTRIBUTE_BUFFER_ID`).
    pub id: u64,
}

/// A piece of a copy destination: host-tier memory the CPU can write, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First byte.
    pub address: u64,
    /// Length.
    pub len: u64,
    /// Backed by host memory the CPU may write directly.
    pub host: bool,
}

/// Bytes on one tier of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierUsage {
    /// The tier.
    pub tier: Tier,
    /// Bytes of physical memory in use.
    pub used: u64,
    /// The tier's budget.
    pub capacity: u64,
}

/// One compute device's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUsage {
    /// Compute device.
    pub device: u32,
    /// Per tier, local first.
    pub tiers: Vec<TierUsage>,
    /// Live allocations.
    pub allocations: u64,
    /// What the application is told the card holds.
    pub reported_total: u64,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Allocations served.
    pub allocations: u64,
    /// Allocations freed.
    pub frees: u64,
    /// Requests refused with out-of-memory.
    pub out_of_memory: u64,
    /// Bytes copied host-to-device by the CPU into host-tier memory.
    pub fast_h2d_bytes: u64,
    /// Driver errors other than out-of-memory.
    pub errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    tier: Tier,
    handle: Handle,
}

#[derive(Debug)]
enum Backing {
    Extent(Vec<Chunk>),
    InSlab(u64),
}

#[derive(Debug)]
struct Allocation {
    device: u32,
    size: u64,
    span: u64,
    id: u64,
    backing: Backing,
    /// Placed automatically: its backing may move between tiers.
    movable: bool,
}

/// An own extent (not a slab piece) of a compute device and where its memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentPlacement {
    /// First byte.
    pub base: u64,
    /// Bytes asked for.
    pub size: u64,
    /// Physical bytes (whole chunks).
    pub span: u64,
    /// Bytes on the compute device.
    pub local_bytes: u64,
    /// The first donor tier holding some of it, if any does.
    pub donor: Option<Tier>,
    /// Placed automatically (may move).
    pub movable: bool,
}

/// A move begun by [`MemoryManager::begin_move`]: the new backing is mapped at `staging`
/// (same size as the extent); the caller copies the extent there, ordered after every
/// operation that used it, then calls [`MemoryManager::finish_move`] (or
/// [`MemoryManager::abort_move`]).
#[derive(Debug)]
pub struct PendingMove {
    /// The extent's first byte.
    pub base: u64,
    /// Where the new backing is mapped meanwhile.
    pub staging: u64,
    /// Bytes to copy (whole chunks).
    pub span: u64,
    space: usize,
    chunks: Vec<Chunk>,
}

/// Where a move goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveTarget {
    /// The donors, in the device's order, first with room.
    Donors,
    /// The compute device.
    Local,
}

#[derive(Debug)]
struct Slab {
    device: u32,
    chunk: Chunk,
    free: BTreeMap<u64, u64>,
    live: usize,
}

struct Space {
    device: u32,
    free: BTreeMap<u64, u64>,
    reservations: Vec<(u64, u64)>,
    used: HashMap<Tier, u64>,
    allocations: u64,
}

struct AppHandle {
    device: u32,
    tier: Tier,
    size: u64,
}

/// The memory manager of one process.
pub struct MemoryManager<D: Driver> {
    driver: D,
    plan: Plan,
    spaces: Vec<Space>,
    allocations: BTreeMap<u64, Allocation>,
    slabs: BTreeMap<u64, Slab>,
    pending_frees: Vec<(u64, EventId)>,
    pool: Vec<Handle>,
    app_handles: HashMap<Handle, AppHandle>,
    stuck: Vec<Stuck>,
    pins: HashMap<u64, u32>,
    deferred: HashMap<u64, Allocation>,
    next_id: u64,
    counters: Counters,
    settled: HashSet<u32>,
    computing: HashSet<u32>,
    cache_bytes: HashMap<u32, u64>,
}

/// A chunk whose unmap or release failed. It stays counted as used (the driver still
/// holds it) and its address range stays out of the free list until a retry succeeds.
#[derive(Debug)]
struct Stuck {
    space: usize,
    /// Still mapped there (the unmap failed); `None` once unmapped (the release failed).
    mapped_at: Option<u64>,
    chunk: Chunk,
}

/// The most address space reserved at once: more than any machine's memory, far less
/// than the 47-bit user address space.
pub const MAX_RESERVATION: u64 = 1 << 46;

/// `value` rounded up to a multiple of `to`; `None` past `u64::MAX`.
fn round_up(value: u64, to: u64) -> Option<u64> {
    value.checked_next_multiple_of(to)
}

impl<D: Driver> MemoryManager<D> {
    /// A manager for `plan`, using `driver`. Reserves nothing until the first request.
    pub fn new(driver: D, plan: Plan) -> MemoryManager<D> {
        MemoryManager {
            driver,
            plan,
            spaces: Vec::new(),
            allocations: BTreeMap::new(),
            slabs: BTreeMap::new(),
            pending_frees: Vec::new(),
            pool: Vec::new(),
            app_handles: HashMap::new(),
            stuck: Vec::new(),
            pins: HashMap::new(),
            deferred: HashMap::new(),
            next_id: FIRST_BUFFER_ID - 1,
            counters: Counters::default(),
            settled: HashSet::new(),
            computing: HashSet::new(),
            cache_bytes: HashMap::new(),
        }
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The plan in force.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Replaces the plan. Existing allocations stay where they are; new requests follow
    /// the new plan.
    pub fn set_plan(&mut self, plan: Plan) {
        self.plan = plan;
        self.trim_pool();
    }

    /// Whether requests for `device` are placed by vvram (the policy configures it).
    pub fn manages(&self, device: u32) -> bool {
        self.plan.device(device).is_some()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts bytes the CPU copied into host-tier memory.
    pub fn count_fast_h2d(&mut self, bytes: u64) {
        self.counters.fast_h2d_bytes += bytes;
    }

    fn space_index(&mut self, device: u32) -> Result<usize, CUresult> {
        if let Some(i) = self.spaces.iter().position(|s| s.device == device) {
            return Ok(i);
        }
        let span = self.reservation_size(device, 0).ok_or(result::OUT_OF_MEMORY)?;
        let base = self.driver.reserve(span)?;
        self.spaces.push(Space {
            device,
            free: BTreeMap::from([(base, span)]),
            reservations: vec![(base, span)],
            used: HashMap::new(),
            allocations: 0,
        });
        Ok(self.spaces.len() - 1)
    }

    /// Address space to reserve at a time: twice the device's virtual size, at least 4 GiB
    /// and at most [`MAX_RESERVATION`]; `None` when `at_least` is more than that.
    fn reservation_size(&self, device: u32, at_least: u64) -> Option<u64> {
        let virtual_total = self.plan.device(device).map_or(0, |d| d.tiers().fold(0u64, |sum, (_, c)| sum.saturating_add(c)));
        let wanted = virtual_total.saturating_mul(2).clamp(4 << 30, MAX_RESERVATION);
        round_up(wanted.max(at_least), 1 << 30).filter(|size| *size <= MAX_RESERVATION)
    }

    fn take_address_space(&mut self, space: usize, len: u64) -> Result<u64, CUresult> {
        let found = self.spaces[space].free.iter().find(|(_, l)| **l >= len).map(|(a, l)| (*a, *l));
        let (start, free_len) = match found {
            Some(found) => found,
            None => {
                let span = self.reservation_size(self.spaces[space].device, len).ok_or(result::OUT_OF_MEMORY)?;
                let base = self.driver.reserve(span)?;
                self.spaces[space].reservations.push((base, span));
                (base, span)
            }
        };
        let free = &mut self.spaces[space].free;
        free.remove(&start);
        if free_len > len {
            free.insert(start + len, free_len - len);
        }
        Ok(start)
    }

    fn give_back_address_space(&mut self, space: usize, start: u64, len: u64) {
        insert_merged(&mut self.spaces[space].free, start, len);
    }

    fn capacity(&self, device: u32, tier: Tier) -> u64 {
        self.plan.device(device).map_or(0, |d| d.capacity(tier))
    }

    fn location(device: u32, tier: Tier) -> Location {
        match tier {
            Tier::Local => Location::Device(device),
            Tier::Peer(n) => Location::Device(n),
            Tier::Host => Location::Host,
        }
    }

    /// Takes `size` bytes of physical memory on the first tier of `order` with room,
    /// skipping the tiers in `full` and adding those it finds full. A tier whose driver
    /// fails with another error (say, host-located memory on a driver without it) is
    /// skipped the same way, and counted. `create` makes the application's own memory at
    /// a location; without it vvram's chunks come from the driver, host ones from the
    /// pinned pool first.
    fn take_physical(
        &mut self,
        space: usize,
        order: &[Tier],
        size: u64,
        full: &mut Vec<Tier>,
        mut create: Option<&mut dyn FnMut(Location) -> Result<Handle, CUresult>>,
    ) -> Result<(Tier, Handle), CUresult> {
        let device = self.spaces[space].device;
        for &tier in order {
            if full.contains(&tier) {
                continue;
            }
            let used = self.spaces[space].used.get(&tier).copied().unwrap_or(0);
            if used.checked_add(size).is_none_or(|total| total > self.capacity(device, tier)) {
                full.push(tier);
                continue;
            }
            let location = Self::location(device, tier);
            let pooled = if create.is_none() && tier == Tier::Host { self.pool.pop() } else { None };
            let physical = match (pooled, create.as_mut()) {
                (Some(handle), _) => Ok(handle),
                (None, Some(create)) => create(location),
                (None, None) => self.driver.create(size, location),
            };
            match physical {
                Ok(handle) => {
                    *self.spaces[space].used.entry(tier).or_default() += size;
                    return Ok((tier, handle));
                }
                Err(result::OUT_OF_MEMORY) => full.push(tier),
                Err(_) => {
                    self.counters.errors += 1;
                    full.push(tier);
                }
            }
        }
        Err(result::OUT_OF_MEMORY)
    }

    /// Takes one chunk on the first tier of `order` with room (see [`Self::take_physical`]).
    fn acquire_chunk(&mut self, space: usize, order: &[Tier], full: &mut Vec<Tier>) -> Result<Chunk, CUresult> {
        self.take_physical(space, order, CHUNK, full, None).map(|(tier, handle)| Chunk { tier, handle })
    }

    /// Takes `count` chunks on the tiers of `order` (see [`Self::acquire_chunk`]): all, or
    /// none (those taken are returned) and the error.
    fn acquire_chunks(&mut self, space: usize, order: &[Tier], count: u64) -> Result<Vec<Chunk>, CUresult> {
        let mut chunks = Vec::with_capacity(count as usize);
        let mut full = Vec::new();
        while (chunks.len() as u64) < count {
            match self.acquire_chunk(space, order, &mut full) {
                Ok(chunk) => chunks.push(chunk),
                Err(code) => {
                    chunks.into_iter().for_each(|chunk| self.return_chunk(space, chunk));
                    return Err(code);
                }
            }
        }
        Ok(chunks)
    }

    /// Returns an unmapped chunk: to the pool (host chunks, while it is below target) or
    /// to the driver. A failed release keeps the chunk counted and retries it later.
    fn return_chunk(&mut self, space: usize, chunk: Chunk) {
        let pooled = chunk.tier == Tier::Host && (self.pool.len() as u64 + 1) * CHUNK <= self.plan.host_pool;
        if pooled {
            self.pool.push(chunk.handle);
        } else if self.driver.release(chunk.handle).is_err() {
            self.counters.errors += 1;
            self.stuck.push(Stuck { space, mapped_at: None, chunk });
            return;
        }
        if let Some(used) = self.spaces[space].used.get_mut(&chunk.tier) {
            *used -= CHUNK;
        }
    }

    /// Takes apart an extent at `start`: the first `mapped` chunks are unmapped, every
    /// chunk is returned and the `span` bytes of address space given back. A chunk whose
    /// unmap fails keeps its address range (mapping into it again would fail) until a
    /// retry in [`Self::reclaim`] succeeds.
    fn dismantle(&mut self, space: usize, start: u64, span: u64, chunks: Vec<Chunk>, mapped: usize) {
        let covered = chunks.len() as u64 * CHUNK;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let address = start + i as u64 * CHUNK;
            if i < mapped && self.driver.unmap(address, CHUNK).is_err() {
                self.counters.errors += 1;
                self.stuck.push(Stuck { space, mapped_at: Some(address), chunk });
                continue;
            }
            self.give_back_address_space(space, address, CHUNK);
            self.return_chunk(space, chunk);
        }
        if span > covered {
            self.give_back_address_space(space, start + covered, span - covered);
        }
    }

    /// Retries the unmaps and releases that failed before.
    fn retry_stuck(&mut self) {
        for stuck in std::mem::take(&mut self.stuck) {
            match stuck.mapped_at {
                Some(address) if self.driver.unmap(address, CHUNK).is_err() => self.stuck.push(stuck),
                Some(address) => {
                    self.give_back_address_space(stuck.space, address, CHUNK);
                    self.return_chunk(stuck.space, stuck.chunk);
                }
                None if self.driver.release(stuck.chunk.handle).is_err() => self.stuck.push(stuck),
                None => {
                    if let Some(used) = self.spaces[stuck.space].used.get_mut(&stuck.chunk.tier) {
                        *used -= CHUNK;
                    }
                }
            }
        }
    }

    /// Chunks whose unmap or release failed and is being retried.
    pub fn stuck_chunks(&self) -> usize {
        self.stuck.len()
    }

    /// Maps chunks at `start` and grants access, host chunks to the CPU as well.
    fn map_chunks(&mut self, device: u32, start: u64, chunks: &[Chunk]) -> Result<usize, (usize, CUresult)> {
        for (i, chunk) in chunks.iter().enumerate() {
            self.driver.map(start + i as u64 * CHUNK, CHUNK, chunk.handle).map_err(|e| (i, e))?;
        }
        let mut run_start = 0;
        for i in 1..=chunks.len() {
            let run_host = chunks[run_start].tier == Tier::Host;
            if i == chunks.len() || (chunks[i].tier == Tier::Host) != run_host {
                let address = start + run_start as u64 * CHUNK;
                let len = (i - run_start) as u64 * CHUNK;
                self.driver.set_access(address, len, device, run_host).map_err(|e| (chunks.len(), e))?;
                run_start = i;
            }
        }
        Ok(chunks.len())
    }

    /// Says that the application launched kernels on `device` since its previous
    /// allocation: the next allocation is computing's (an activation), not a weight being
    /// loaded, and may use the working-set reserve.
    pub fn kernels_ran(&mut self, device: u32) {
        self.computing.insert(device);
    }

    /// Whether an automatic extent of `span` bytes on `device` goes to donors first: while
    /// loading, when it would leave less than the reserve free.
    fn held_back(&self, device: u32, span: u64) -> bool {
        !self.settled.contains(&device) && !self.computing.contains(&device) && !self.leaves_reserve(device, span)
    }

    /// Allocates for a device the policy manages.
    pub fn allocate(&mut self, request: Request) -> Result<u64, CUresult> {
        self.reclaim();
        let first = self.try_allocate(request);
        let outcome = match first {
            Err(result::OUT_OF_MEMORY) if !self.pending_frees.is_empty() => {
                // Memory freed stream-ordered may be waiting for its stream: wait, then retry.
                self.driver.synchronize()?;
                self.reclaim();
                self.try_allocate(request)
            }
            other => other,
        };
        match outcome {
            Ok(_) => self.counters.allocations += 1,
            Err(result::OUT_OF_MEMORY) => self.counters.out_of_memory += 1,
            Err(_) => {}
        }
        if request.size >= SMALL_LIMIT {
            self.computing.remove(&request.device);
        }
        outcome
    }

    /// Allocates `size` bytes on the compute device itself, whatever the rules say (the
    /// migration engine's local cache).
    pub fn allocate_local(&mut self, device: u32, size: u64) -> Result<u64, CUresult> {
        let request = Request { device, size, phase: None, tag: None };
        let placed = self.try_allocate_on(request, Some(&[Tier::Local]));
        if placed.is_ok() {
            self.counters.allocations += 1;
            *self.cache_bytes.entry(device).or_default() += size.next_multiple_of(CHUNK);
        }
        placed
    }

    /// Every live allocation of `device` with memory off the compute device, as
    /// `(base, size, tier)` with the first such tier: what the migration engine stages.
    pub fn donor_extents(&self, device: u32) -> Vec<(u64, u64, Tier)> {
        let off_device = |tier: Tier| (tier != Tier::Local).then_some(tier);
        self.allocations
            .iter()
            .filter(|(_, a)| a.device == device)
            .filter_map(|(&base, a)| {
                let tier = match &a.backing {
                    Backing::Extent(chunks) => chunks.iter().find_map(|c| off_device(c.tier)),
                    Backing::InSlab(slab) => self.slabs.get(slab).and_then(|s| off_device(s.chunk.tier)),
                }?;
                Some((base, a.size, tier))
            })
            .collect()
    }

    fn try_allocate(&mut self, request: Request) -> Result<u64, CUresult> {
        self.try_allocate_on(request, None)
    }

    fn try_allocate_on(&mut self, request: Request, tiers: Option<&[Tier]>) -> Result<u64, CUresult> {
        if request.size == 0 {
            return Err(result::INVALID_VALUE);
        }
        let plan = self.plan.device(request.device).ok_or(result::INVALID_VALUE)?;
        let mut order = tiers.map_or_else(|| plan.placement(request.size, request.phase, request.tag), <[Tier]>::to_vec);
        let space = self.space_index(request.device)?;
        if request.size < SMALL_LIMIT {
            return self.allocate_small(space, request, &order);
        }
        let span = round_up(request.size, CHUNK).ok_or(result::OUT_OF_MEMORY)?;
        let movable = tiers.is_none() && self.automatic(request);
        if movable && self.held_back(request.device, span) {
            // Loading: keep the reserve for what sampling will use many times.
            order.sort_by_key(|tier| *tier == Tier::Local);
        }
        let start = self.take_address_space(space, span)?;
        let chunks = match self.acquire_chunks(space, &order, span / CHUNK) {
            Ok(chunks) => chunks,
            Err(code) => {
                self.give_back_address_space(space, start, span);
                return Err(code);
            }
        };
        if let Err((mapped, code)) = self.map_chunks(request.device, start, &chunks) {
            self.counters.errors += 1;
            self.dismantle(space, start, span, chunks, mapped);
            return Err(code);
        }
        let id = self.next_id();
        self.spaces[space].allocations += 1;
        self.allocations.insert(
            start,
            Allocation { device: request.device, size: request.size, span, id, backing: Backing::Extent(chunks), movable },
        );
        Ok(start)
    }

    /// Whether `request` is placed automatically: the device streams, the policy leaves
    /// placement to vvram (no explicit rule matches) and it gets its own extent.
    fn automatic(&self, request: Request) -> bool {
        request.size >= SMALL_LIMIT && self.plan.device(request.device).is_some_and(|d| d.is_automatic(request.size, request.phase, request.tag))
    }

    /// Whether `span` more bytes on `device` (besides the engine's cache) still leave the
    /// working-set reserve free.
    fn leaves_reserve(&self, device: u32, span: u64) -> bool {
        let Some(plan) = self.plan.device(device) else { return true };
        let cache = self.plan.streaming.local_cache;
        let allowed = plan.local_budget.saturating_sub(cache).saturating_sub(plan.reserve);
        let placed = self.local_used(device).saturating_sub(self.cache_bytes.get(&device).copied().unwrap_or(0));
        placed.saturating_add(span) <= allowed
    }

    fn local_used(&self, device: u32) -> u64 {
        self.spaces.iter().find(|s| s.device == device).and_then(|s| s.used.get(&Tier::Local)).copied().unwrap_or(0)
    }

    /// Bytes of the device's local budget not in use.
    pub fn local_free(&self, device: u32) -> u64 {
        self.capacity(device, Tier::Local).saturating_sub(self.local_used(device))
    }

    /// Ends the load: from now on automatic placement on `device` no longer keeps the
    /// reserve (the engine has seen a repeating step; moves keep the working set local).
    pub fn settle(&mut self, device: u32) {
        self.settled.insert(device);
    }

    /// Whether [`Self::settle`] was called for `device`.
    pub fn settled(&self, device: u32) -> bool {
        self.settled.contains(&device)
    }

    /// For an automatic request on a settled device whose first choice is the device
    /// itself: how many more bytes the device would need free to take it whole.
    pub fn shortfall(&self, request: Request) -> Option<u64> {
        if !self.settled.contains(&request.device) || !self.automatic(request) {
            return None;
        }
        let plan = self.plan.device(request.device)?;
        if plan.placement(request.size, request.phase, request.tag).first() != Some(&Tier::Local) {
            return None;
        }
        let span = round_up(request.size, CHUNK)?;
        span.checked_sub(self.local_free(request.device)).filter(|need| *need > 0)
    }

    /// The own extents (not slab pieces) of `device`, with where their memory is.
    pub fn extents(&self, device: u32) -> Vec<ExtentPlacement> {
        self.allocations
            .iter()
            .filter(|(_, a)| a.device == device)
            .filter_map(|(&base, a)| match &a.backing {
                Backing::Extent(chunks) => Some(ExtentPlacement {
                    base,
                    size: a.size,
                    span: a.span,
                    local_bytes: chunks.iter().filter(|c| c.tier == Tier::Local).count() as u64 * CHUNK,
                    donor: chunks.iter().map(|c| c.tier).find(|t| *t != Tier::Local),
                    movable: a.movable,
                }),
                Backing::InSlab(_) => None,
            })
            .collect()
    }

    /// Starts moving the backing of the movable extent at `base` to `target`: takes the
    /// new memory (whole, or nothing: `CUDA_ERROR_OUT_OF_MEMORY`) and maps it at a
    /// staging range of the device's address space.
    pub fn begin_move(&mut self, base: u64, target: MoveTarget) -> Result<PendingMove, CUresult> {
        let allocation = self.allocations.get(&base).filter(|a| a.movable).ok_or(result::INVALID_VALUE)?;
        let (device, span) = (allocation.device, allocation.span);
        if self.pins.contains_key(&base) {
            return Err(result::NOT_READY);
        }
        let plan = self.plan.device(device).ok_or(result::INVALID_VALUE)?;
        let order: Vec<Tier> = match target {
            MoveTarget::Local => vec![Tier::Local],
            MoveTarget::Donors => plan.donors.iter().map(|(tier, _)| *tier).collect(),
        };
        let space = self.space_index(device)?;
        let chunks = self.acquire_chunks(space, &order, span / CHUNK)?;
        let staging = match self.take_address_space(space, span) {
            Ok(staging) => staging,
            Err(code) => {
                chunks.into_iter().for_each(|chunk| self.return_chunk(space, chunk));
                return Err(code);
            }
        };
        if let Err((mapped, code)) = self.map_chunks(device, staging, &chunks) {
            self.counters.errors += 1;
            self.dismantle(space, staging, span, chunks, mapped);
            return Err(code);
        }
        Ok(PendingMove { base, staging, span, space, chunks })
    }

    /// Gives up a move begun by [`Self::begin_move`]: the new memory is released.
    pub fn abort_move(&mut self, pending: PendingMove) {
        let mapped = pending.chunks.len();
        self.dismantle(pending.space, pending.staging, pending.span, pending.chunks, mapped);
    }

    /// Completes a move begun by [`Self::begin_move`], once its contents were copied to the
    /// staging range and nothing uses the extent: the extent's range is remapped onto the
    /// new memory and the old memory returned. On a driver failure the old backing is
    /// put back where possible and the move given up.
    pub fn finish_move(&mut self, pending: PendingMove) -> Result<(), CUresult> {
        let Some(allocation) = self.allocations.get_mut(&pending.base) else {
            self.abort_move(pending);
            return Err(result::INVALID_VALUE);
        };
        let device = allocation.device;
        let Backing::Extent(old) = std::mem::replace(&mut allocation.backing, Backing::Extent(Vec::new())) else {
            self.abort_move(pending);
            return Err(result::INVALID_VALUE);
        };
        for (i, _) in old.iter().enumerate() {
            if let Err(code) = self.driver.unmap(pending.base + i as u64 * CHUNK, CHUNK) {
                self.counters.errors += 1;
                let restored = self.map_chunks(device, pending.base, &old[..i]).is_ok();
                if let Some(allocation) = self.allocations.get_mut(&pending.base) {
                    allocation.backing = Backing::Extent(old);
                }
                if !restored {
                    self.counters.errors += 1;
                }
                self.abort_move(pending);
                return Err(code);
            }
        }
        if let Err((mapped, code)) = self.map_chunks(device, pending.base, &pending.chunks) {
            self.counters.errors += 1;
            let PendingMove { base, staging, space, chunks, .. } = pending;
            let mut kept = Vec::new();
            for (i, _) in chunks.iter().enumerate().take(mapped) {
                // A chunk still mapped at the extent is never handed out again.
                if self.driver.unmap(base + i as u64 * CHUNK, CHUNK).is_err() {
                    kept.push(i);
                }
            }
            if self.map_chunks(device, base, &old).is_err() {
                self.counters.errors += 1;
            }
            if let Some(allocation) = self.allocations.get_mut(&base) {
                allocation.backing = Backing::Extent(old);
            }
            for (i, chunk) in chunks.into_iter().enumerate() {
                let at_staging = staging + i as u64 * CHUNK;
                if kept.contains(&i) {
                    self.counters.errors += 1;
                    self.stuck.push(Stuck { space, mapped_at: Some(base + i as u64 * CHUNK), chunk });
                } else if self.driver.unmap(at_staging, CHUNK).is_err() {
                    self.counters.errors += 1;
                    self.stuck.push(Stuck { space, mapped_at: Some(at_staging), chunk });
                } else {
                    self.give_back_address_space(space, at_staging, CHUNK);
                    self.return_chunk(space, chunk);
                }
            }
            return Err(code);
        }
        let PendingMove { base, staging, space, chunks, .. } = pending;
        for (i, _) in chunks.iter().enumerate() {
            if self.driver.unmap(staging + i as u64 * CHUNK, CHUNK).is_err() {
                // The staging range stays out of the free list; the memory is mapped at the
                // extent too, so it is not lost.
                self.counters.errors += 1;
                continue;
            }
            self.give_back_address_space(space, staging + i as u64 * CHUNK, CHUNK);
        }
        if let Some(allocation) = self.allocations.get_mut(&base) {
            allocation.backing = Backing::Extent(chunks);
        }
        old.into_iter().for_each(|chunk| self.return_chunk(space, chunk));
        Ok(())
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn allocate_small(&mut self, space: usize, request: Request, order: &[Tier]) -> Result<u64, CUresult> {
        let need = request.size.next_multiple_of(SMALL_ALIGN);
        let mut full = Vec::new();
        for &tier in order {
            let existing = self.slabs.iter().find_map(|(base, slab)| {
                (slab.device == request.device && slab.chunk.tier == tier)
                    .then(|| slab.free.iter().find(|(_, l)| **l >= need).map(|(o, _)| (*base, *o)))
                    .flatten()
            });
            let (slab_base, offset) = match existing {
                Some(found) => found,
                None => match self.new_slab(space, tier, &mut full) {
                    Ok(base) => (base, 0),
                    Err(result::OUT_OF_MEMORY) => continue,
                    Err(code) => return Err(code),
                },
            };
            let slab = self.slabs.get_mut(&slab_base).ok_or(result::UNKNOWN)?;
            let free_len = slab.free.remove(&offset).unwrap_or(0);
            if free_len > need {
                slab.free.insert(offset + need, free_len - need);
            }
            slab.live += 1;
            let id = self.next_id();
            self.spaces[space].allocations += 1;
            self.allocations.insert(
                slab_base + offset,
                Allocation { device: request.device, size: request.size, span: need, id, backing: Backing::InSlab(slab_base), movable: false },
            );
            return Ok(slab_base + offset);
        }
        Err(result::OUT_OF_MEMORY)
    }

    fn new_slab(&mut self, space: usize, tier: Tier, full: &mut Vec<Tier>) -> Result<u64, CUresult> {
        let chunk = self.acquire_chunk(space, &[tier], full)?;
        let start = match self.take_address_space(space, CHUNK) {
            Ok(start) => start,
            Err(code) => {
                self.return_chunk(space, chunk);
                return Err(code);
            }
        };
        let device = self.spaces[space].device;
        if let Err((mapped, code)) = self.map_chunks(device, start, &[chunk]) {
            self.dismantle(space, start, CHUNK, vec![chunk], mapped);
            self.counters.errors += 1;
            return Err(code);
        }
        self.slabs.insert(start, Slab { device, chunk, free: BTreeMap::from([(0, CHUNK)]), live: 0 });
        Ok(start)
    }

    /// Whether `address` is the start of a live vvram allocation.
    pub fn owns(&self, address: u64) -> bool {
        self.allocations.contains_key(&address)
    }

    /// Frees an allocation. The caller has made sure no queued work still uses it
    /// (`cuMemFree` synchronises first). An allocation already freed stream-ordered
    /// (`cuMemFreeAsync`) is no longer the application's: `CUDA_ERROR_INVALID_VALUE`.
    pub fn free(&mut self, address: u64) -> Result<(), CUresult> {
        if self.pending_frees.iter().any(|(a, _)| *a == address) {
            return Err(result::INVALID_VALUE);
        }
        self.release_allocation(address)
    }

    fn release_allocation(&mut self, address: u64) -> Result<(), CUresult> {
        let allocation = self.allocations.remove(&address).ok_or(result::INVALID_VALUE)?;
        if self.pins.contains_key(&address) {
            // The CPU is copying into it: it goes when the copy ends (see `unpin`).
            self.deferred.insert(address, allocation);
            return Ok(());
        }
        self.dispose(address, allocation)
    }

    /// Like [`Self::segments`], and keeps the allocation's memory where it is until
    /// [`Self::unpin`] with the returned base: a free meanwhile is deferred, so a CPU copy
    /// into host-tier chunks never writes into freed or reused memory.
    pub fn pin(&mut self, address: u64, len: u64) -> Option<(u64, Vec<Segment>)> {
        let segments = self.segments(address, len)?;
        let base = self.find(address)?.base;
        *self.pins.entry(base).or_default() += 1;
        Some((base, segments))
    }

    /// Ends a [`Self::pin`]; a free deferred meanwhile happens now.
    pub fn unpin(&mut self, base: u64) {
        let Some(count) = self.pins.get_mut(&base) else { return };
        *count -= 1;
        if *count == 0 {
            self.pins.remove(&base);
            if let Some(allocation) = self.deferred.remove(&base)
                && self.dispose(base, allocation).is_err()
            {
                self.counters.errors += 1;
            }
        }
    }

    fn dispose(&mut self, address: u64, allocation: Allocation) -> Result<(), CUresult> {
        let space = self.spaces.iter().position(|s| s.device == allocation.device).ok_or(result::UNKNOWN)?;
        self.spaces[space].allocations -= 1;
        self.counters.frees += 1;
        match allocation.backing {
            Backing::Extent(chunks) => {
                let mapped = chunks.len();
                self.dismantle(space, address, allocation.span, chunks, mapped);
            }
            Backing::InSlab(slab_base) => {
                let slab = self.slabs.get_mut(&slab_base).ok_or(result::UNKNOWN)?;
                insert_merged(&mut slab.free, address - slab_base, allocation.span);
                slab.live -= 1;
                if slab.live == 0 {
                    let slab = self.slabs.remove(&slab_base).ok_or(result::UNKNOWN)?;
                    self.dismantle(space, slab_base, CHUNK, vec![slab.chunk], 1);
                }
            }
        }
        Ok(())
    }

    /// Frees an allocation once `stream` has passed this point (`cuMemFreeAsync`).
    pub fn free_async(&mut self, address: u64, stream: u64) -> Result<(), CUresult> {
        if !self.owns(address) || self.pending_frees.iter().any(|(a, _)| *a == address) {
            return Err(result::INVALID_VALUE);
        }
        let event = self.driver.record_event(stream)?;
        self.pending_frees.push((address, event));
        self.reclaim();
        Ok(())
    }

    /// Completes stream-ordered frees whose stream has passed them, and retries unmaps
    /// and releases that failed.
    pub fn reclaim(&mut self) {
        self.retry_stuck();
        let pending = std::mem::take(&mut self.pending_frees);
        for (address, event) in pending {
            match self.driver.event_complete(event) {
                Ok(true) => {
                    self.driver.destroy_event(event);
                    if self.release_allocation(address).is_err() {
                        self.counters.errors += 1;
                    }
                }
                Ok(false) => self.pending_frees.push((address, event)),
                Err(_) => {
                    self.counters.errors += 1;
                    self.pending_frees.push((address, event));
                }
            }
        }
    }

    /// The allocation containing `address`.
    pub fn find(&self, address: u64) -> Option<AllocationInfo> {
        let (&base, allocation) = self.allocations.range(..=address).next_back()?;
        (address < base + allocation.size.max(1)).then_some(AllocationInfo {
            base,
            size: allocation.size,
            device: allocation.device,
            id: allocation.id,
        })
    }

    /// Splits `[address, address + len)` into host-tier and other pieces, when it lies
    /// inside one allocation.
    pub fn segments(&self, address: u64, len: u64) -> Option<Vec<Segment>> {
        let info = self.find(address)?;
        if address.checked_add(len)? > info.base + info.size {
            return None;
        }
        let allocation = &self.allocations[&info.base];
        let tier_at = |offset: u64| match &allocation.backing {
            Backing::Extent(chunks) => chunks[(offset / CHUNK) as usize].tier,
            Backing::InSlab(slab) => self.slabs[slab].chunk.tier,
        };
        let mut segments: Vec<Segment> = Vec::new();
        let end = address + len;
        let mut cursor = address;
        while cursor < end {
            let offset = cursor - info.base;
            let piece_end = match &allocation.backing {
                Backing::Extent(_) => (info.base + (offset / CHUNK + 1) * CHUNK).min(end),
                Backing::InSlab(_) => end,
            };
            let host = tier_at(offset) == Tier::Host;
            match segments.last_mut() {
                Some(last) if last.host == host => last.len += piece_end - cursor,
                _ => segments.push(Segment { address: cursor, len: piece_end - cursor, host }),
            }
            cursor = piece_end;
        }
        Some(segments)
    }

    /// Chooses the tier for the application's own `cuMemCreate` on a compute device the
    /// policy manages (PyTorch's expandable segments map the memory themselves): `create`
    /// makes the memory at a location with the application's other properties, tried
    /// tier by tier in the rule's order until one has room.
    pub fn create_for_application(
        &mut self,
        request: Request,
        mut create: impl FnMut(Location) -> Result<Handle, CUresult>,
    ) -> Result<Handle, CUresult> {
        let plan = self.plan.device(request.device).ok_or(result::INVALID_VALUE)?;
        let mut order = plan.placement(request.size, request.phase, request.tag);
        if self.automatic(request) && self.held_back(request.device, request.size) {
            order.sort_by_key(|tier| *tier == Tier::Local);
        }
        self.computing.remove(&request.device);
        let space = self.space_index(request.device)?;
        match self.take_physical(space, &order, request.size, &mut Vec::new(), Some(&mut create)) {
            Ok((tier, handle)) => {
                self.app_handles.insert(handle, AppHandle { device: request.device, tier, size: request.size });
                self.spaces[space].allocations += 1;
                self.counters.allocations += 1;
                Ok(handle)
            }
            Err(code) => {
                self.counters.out_of_memory += 1;
                Err(code)
            }
        }
    }

    /// Whether `handle` was made by [`Self::create_for_application`] and is still live.
    pub fn is_application_handle(&self, handle: Handle) -> bool {
        self.app_handles.contains_key(&handle)
    }

    /// Forgets a handle made by [`Self::create_for_application`]; false when it is not one.
    /// The caller releases it with the driver.
    pub fn forget_application_handle(&mut self, handle: Handle) -> bool {
        let Some(app) = self.app_handles.remove(&handle) else { return false };
        if let Some(space) = self.spaces.iter_mut().find(|s| s.device == app.device) {
            space.allocations -= 1;
            if let Some(used) = space.used.get_mut(&app.tier) {
                *used -= app.size;
            }
        }
        self.counters.frees += 1;
        true
    }

    /// What `cuMemGetInfo` reports for a managed device, given the physical card's free
    /// and total memory: total is the policy's reported size; free is that minus what
    /// vvram placed for the device and what others use on the card.
    pub fn memory_info(&self, device: u32, physical_free: u64, physical_total: u64) -> Option<(u64, u64)> {
        let plan = self.plan.device(device)?;
        let usage = self.usage(device)?;
        let placed: u64 = usage.tiers.iter().map(|t| t.used).sum();
        let local_placed = usage.tiers.first().map_or(0, |t| t.used);
        let others = physical_total.saturating_sub(physical_free).saturating_sub(local_placed);
        let total = plan.reported_total;
        Some((total.saturating_sub(placed.saturating_add(others)), total))
    }

    /// Usage of one compute device the policy manages.
    pub fn usage(&self, device: u32) -> Option<DeviceUsage> {
        let plan = self.plan.device(device)?;
        let space = self.spaces.iter().find(|s| s.device == device);
        Some(DeviceUsage {
            device,
            tiers: plan
                .tiers()
                .map(|(tier, capacity)| TierUsage {
                    tier,
                    used: space.and_then(|s| s.used.get(&tier)).copied().unwrap_or(0),
                    capacity,
                })
                .collect(),
            allocations: space.map_or(0, |s| s.allocations),
            reported_total: plan.reported_total,
        })
    }

    /// Bytes of pinned host memory ready in the pool.
    pub fn pool_bytes(&self) -> u64 {
        self.pool.len() as u64 * CHUNK
    }

    /// Whether the pinned pool is below target: one more host chunk should be made (with
    /// [`Driver::create`] at [`Location::Host`], outside any lock: pinning is slow) and
    /// handed over with [`Self::add_to_pool`].
    pub fn pool_wants_chunk(&self) -> bool {
        self.pool_bytes() + CHUNK <= self.plan.host_pool
    }

    /// Takes a host chunk pinned ahead; one the pool no longer wants (the plan changed
    /// while it was being made) is released.
    pub fn add_to_pool(&mut self, handle: Handle) {
        if self.pool_wants_chunk() {
            self.pool.push(handle);
        } else if self.driver.release(handle).is_err() {
            self.counters.errors += 1;
        }
    }

    fn trim_pool(&mut self) {
        while self.pool_bytes() > self.plan.host_pool {
            if let Some(handle) = self.pool.pop()
                && self.driver.release(handle).is_err() {
                    self.counters.errors += 1;
                }
        }
    }

    /// Releases everything: allocations, slabs, the pool and the address space.
    pub fn release_all(&mut self) {
        let addresses: Vec<u64> = self.allocations.keys().copied().collect();
        for address in addresses {
            let _ = self.release_allocation(address);
        }
        self.retry_stuck();
        for (_, event) in std::mem::take(&mut self.pending_frees) {
            self.driver.destroy_event(event);
        }
        for handle in std::mem::take(&mut self.pool) {
            let _ = self.driver.release(handle);
        }
        for space in std::mem::take(&mut self.spaces) {
            for (base, size) in space.reservations {
                let _ = self.driver.free_reservation(base, size);
            }
        }
    }
}

fn insert_merged(free: &mut BTreeMap<u64, u64>, mut start: u64, mut len: u64) {
    if let Some((&before, &before_len)) = free.range(..start).next_back()
        && before + before_len == start {
            free.remove(&before);
            start = before;
            len += before_len;
        }
    if let Some(&after_len) = free.get(&(start + len)) {
        free.remove(&(start + len));
        len += after_len;
    }
    free.insert(start, len);
}
