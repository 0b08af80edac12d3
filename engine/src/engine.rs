//! The engine: which donor extents have a staged copy in the local cache, what to stage
//! next, and what keeps the copies coherent with the extents they stand for.
//!
//! Everything is stream-ordered through [`Transfers`]: a staging copy waits for the
//! events of the slot's previous users (and their write-back), a kernel's stream waits
//! for the staging event of every copy it is given, and an event recorded after the
//! kernel keeps the slot from being reused before the kernel has run. The engine never
//! waits with the CPU on the launch path; only copy hooks that write or read an extent
//! with the CPU ([`Engine::before_host_write`] / [`Engine::before_host_read`] with no
//! stream) wait for the engine's own copies of that extent.
//!
//! Coherence: the donor extent is the truth except while a staged copy may be *dirty*
//! (a kernel given the translated pointer may have written it). Unless the settings say
//! weights are read-only, every staged copy a kernel used counts as dirty and is written
//! back (device to host, the link's otherwise idle direction) when it is displaced, when
//! anything else reads the extent, and before a graph launch. A write into the extent by
//! anything else drops the staged copy after writing back what a kernel may have written.

use crate::predictor::{Predictor, PredictorState};
use crate::ring::{Ring, Slot};
use std::collections::{BTreeMap, HashMap};
use vvram_cuda::CUresult;

/// The stream-ordered operations the engine needs; the shim implements them over the
/// driver (a dedicated non-blocking staging stream and write-back stream), tests over a
/// recording fake.
pub trait Transfers {
    /// A stream of the application.
    type Stream: Copy + Eq + std::fmt::Debug;
    /// An event.
    type Event: Copy + std::fmt::Debug;
    /// Copies `len` bytes from `src` to `dst` on the staging stream once every event in
    /// `after` has passed; returns an event recorded after the copy.
    fn stage(&mut self, dst: u64, src: u64, len: u64, after: &[Self::Event]) -> Result<Self::Event, CUresult>;
    /// The same on the write-back stream (device to host).
    fn write_back(&mut self, dst: u64, src: u64, len: u64, after: &[Self::Event]) -> Result<Self::Event, CUresult>;
    /// Records an event at the current end of `stream`, re-recording `reuse` if given.
    fn record(&mut self, stream: Self::Stream, reuse: Option<Self::Event>) -> Result<Self::Event, CUresult>;
    /// Makes later work on `stream` wait for `event`.
    fn wait(&mut self, stream: Self::Stream, event: Self::Event) -> Result<(), CUresult>;
    /// Blocks the calling thread until `event` has passed.
    fn synchronize(&mut self, event: Self::Event) -> Result<(), CUresult>;
    /// Whether `event` has passed.
    fn passed(&mut self, event: Self::Event) -> bool;
    /// Gives an event back; it is not used again by the engine.
    fn release(&mut self, event: Self::Event);
}

/// Where a donor extent's memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Pinned host memory.
    Host,
    /// Another GPU, by device index.
    Peer(u32),
}

/// The engine's settings, from the policy's `[streaming]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Device address of the local cache.
    pub cache_base: u64,
    /// Bytes of the local cache.
    pub cache_bytes: u64,
    /// Predicted launches staged ahead (`prefetch_depth`).
    pub lookahead: usize,
    /// Write staged copies back when kernels may have written them (false only with
    /// `weights_read_only`).
    pub write_back: bool,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes staged from host memory.
    pub staged_host_bytes: u64,
    /// Bytes staged from peer GPUs.
    pub staged_peer_bytes: u64,
    /// Bytes written back from staged copies.
    pub written_back_bytes: u64,
    /// Launches that referenced donor extents.
    pub donor_launches: u64,
    /// Of those, launches whose every donor reference was translated.
    pub translated_launches: u64,
    /// Launches with at least one donor reference read in place (no copy could be had).
    pub missed_launches: u64,
    /// Translated references whose copy had not finished when the kernel was issued.
    pub waited_references: u64,
    /// Copies staged because a launch needed them (not predicted in time).
    pub demand_copies: u64,
    /// Copies staged ahead from the prediction.
    pub prefetch_copies: u64,
    /// Staged copies dropped because something else wrote their extent.
    pub dropped_copies: u64,
    /// Graph launches (not translated; staged copies written back before them).
    pub graph_launches: u64,
}

/// The cache, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheState {
    /// Bytes of the local cache.
    pub capacity: u64,
    /// Bytes holding valid staged copies.
    pub occupied: u64,
    /// Valid staged copies.
    pub copies: u64,
}

/// A donor reference of a launch, as the hook must rewrite it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The extent's first byte.
    pub base: u64,
    /// One past its last byte.
    pub end: u64,
    /// Where its staged copy starts, or `None` when the launch reads it in place.
    pub copy: Option<u64>,
}

struct Extent<E> {
    id: u64,
    len: u64,
    source: Source,
    /// The last write into the donor memory (a write-back or the application's own)
    /// that a staging copy must wait for.
    fence: Option<E>,
}

struct Staged<S, E> {
    slot: Slot,
    base: u64,
    len: u64,
    ready: E,
    uses: Vec<(S, E)>,
    /// Holds the extent's current data (false once dropped or the extent freed).
    valid: bool,
    /// A kernel may have written it since it was last written back.
    dirty: bool,
    /// A launch has used it since it was staged (a prefetch not yet used is kept).
    used: bool,
}

/// The migration engine of one compute device.
pub struct Engine<T: Transfers> {
    transfers: T,
    settings: Settings,
    ring: Ring,
    extents: BTreeMap<u64, Extent<T::Event>>,
    by_id: BTreeMap<u64, u64>,
    staged: HashMap<u64, Staged<T::Stream, T::Event>>,
    predictor: Predictor,
    fence: Option<T::Event>,
    next_id: u64,
    counters: Counters,
    current: Vec<u64>,
    upcoming: Vec<u64>,
    victims: Vec<Slot>,
    waits: Vec<T::Event>,
}

impl<T: Transfers> Engine<T> {
    /// An engine with an empty cache.
    pub fn new(transfers: T, settings: Settings) -> Engine<T> {
        Engine {
            transfers,
            ring: Ring::new(settings.cache_bytes),
            settings,
            extents: BTreeMap::new(),
            by_id: BTreeMap::new(),
            staged: HashMap::new(),
            predictor: Predictor::new(),
            fence: None,
            next_id: 0,
            counters: Counters::default(),
            current: Vec::new(),
            upcoming: Vec::new(),
            victims: Vec::new(),
            waits: Vec::new(),
        }
    }

    /// The transfers implementation.
    pub fn transfers(&mut self) -> &mut T {
        &mut self.transfers
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The predictor's state.
    pub fn predictor(&self) -> PredictorState {
        self.predictor.state()
    }

    /// While the predictor is locked: how many launches of the last step (period)
    /// referenced each donor extent, as `(base, uses)`; empty otherwise.
    pub fn uses_per_step(&self) -> Vec<(u64, u64)> {
        let mut counts = Vec::new();
        self.predictor.uses_per_period(&mut counts);
        counts.into_iter().filter_map(|(id, uses)| self.by_id.get(&id).map(|base| (*base, uses))).collect()
    }

    /// Occupancy of the local cache.
    pub fn cache(&self) -> CacheState {
        let valid = self.staged.values().filter(|s| s.valid);
        let (copies, occupied) = valid.fold((0, 0), |(n, b), s| (n + 1, b + s.slot.len));
        CacheState { capacity: self.settings.cache_bytes, occupied, copies }
    }

    /// Makes the donor extents `(base, len, source)` the live set: new ones are
    /// registered (in this order, which is the fallback prediction's order), missing
    /// ones forgotten (their slots stay occupied until displaced, so their last users'
    /// events are still waited for).
    pub fn sync_extents(&mut self, live: &[(u64, u64, Source)]) {
        let wanted: HashMap<u64, u64> = live.iter().map(|&(base, len, _)| (base, len)).collect();
        let gone: Vec<u64> = self.extents.iter().filter(|(base, e)| wanted.get(base) != Some(&e.len)).map(|(base, _)| *base).collect();
        for base in gone {
            if let Some(extent) = self.extents.remove(&base) {
                self.by_id.remove(&extent.id);
                if let Some(staged) = self.staged.get_mut(&extent.id) {
                    staged.valid = false;
                    staged.dirty = false;
                }
                if let Some(fence) = extent.fence {
                    self.transfers.release(fence);
                }
            }
        }
        for &(base, len, source) in live {
            if !self.extents.contains_key(&base) {
                let id = self.next_id;
                self.next_id += 1;
                self.extents.insert(base, Extent { id, len, source, fence: None });
                self.by_id.insert(id, base);
            }
        }
    }

    /// The live donor extents, as `(base, len)`.
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.extents.iter().map(|(base, e)| (*base, e.len))
    }

    /// Before a launch on `stream` that references the donor extents with these bases:
    /// stages what is not staged yet (if the cache can take it), makes the stream wait for
    /// every copy it will read, and fills `out` with one [`Translation`] per reference.
    /// Call [`Engine::finish_launch`] after the launch.
    pub fn prepare_launch(&mut self, stream: T::Stream, bases: &[u64], out: &mut Vec<Translation>) -> Result<(), CUresult> {
        out.clear();
        self.current.clear();
        self.current.extend(bases.iter().filter_map(|b| self.extents.get(b).map(|e| e.id)));
        self.current.sort_unstable();
        self.current.dedup();
        self.predictor.observe(&self.current);
        self.counters.donor_launches += 1;
        let mut missed = false;
        for i in 0..self.current.len() {
            let id = self.current[i];
            let Some(&base) = self.by_id.get(&id) else { continue };
            let len = self.extents[&base].len;
            let ready = match self.staged.get(&id) {
                Some(s) if s.valid => true,
                _ => self.stage(id, true)?,
            };
            let copy = if ready {
                let staged = &self.staged[&id];
                let (event, address) = (staged.ready, self.settings.cache_base + staged.slot.offset);
                if !self.transfers.passed(event) {
                    self.counters.waited_references += 1;
                }
                self.transfers.wait(stream, event)?;
                Some(address)
            } else {
                missed = true;
                None
            };
            out.push(Translation { base, end: base + len, copy });
        }
        if missed {
            self.counters.missed_launches += 1;
        } else {
            self.counters.translated_launches += 1;
        }
        Ok(())
    }

    /// After the launch prepared by [`Engine::prepare_launch`] was issued on `stream`:
    /// records the event that keeps its copies alive, marks them possibly written, then
    /// stages what the prediction says comes next.
    pub fn finish_launch(&mut self, stream: T::Stream, translations: &[Translation]) -> Result<(), CUresult> {
        for t in translations.iter().filter(|t| t.copy.is_some()) {
            let Some(id) = self.extents.get(&t.base).map(|e| e.id) else { continue };
            let Some(staged) = self.staged.get_mut(&id) else { continue };
            let position = staged.uses.iter().position(|(s, _)| *s == stream);
            let reuse = position.map(|p| staged.uses[p].1);
            let event = self.transfers.record(stream, reuse)?;
            match position {
                Some(p) => staged.uses[p].1 = event,
                None => staged.uses.push((stream, event)),
            }
            staged.used = true;
            staged.dirty |= self.settings.write_back;
        }
        self.prefetch()
    }

    /// Stages the predicted next extents while the cache has room that no unused
    /// prefetch or current reference holds.
    fn prefetch(&mut self) -> Result<(), CUresult> {
        let mut upcoming = std::mem::take(&mut self.upcoming);
        upcoming.clear();
        let lookahead = self.settings.lookahead.max(1);
        if !self.predictor.upcoming(lookahead, &mut upcoming) {
            self.predictor.after_in_first_use_order(&self.current, lookahead, &mut upcoming);
            if upcoming.is_empty() {
                // Nothing used yet after these: the next extents in allocation order.
                let after = self.current.last().copied().unwrap_or(0);
                upcoming.extend(self.by_id.range(after + 1..).take(lookahead).map(|(id, _)| *id));
            }
        }
        let mut outcome = Ok(());
        for &id in &upcoming {
            let too_big = self.by_id.get(&id).is_none_or(|b| self.extents[b].len > self.settings.cache_bytes);
            if too_big || self.staged.get(&id).is_some_and(|s| s.valid) {
                continue;
            }
            match self.stage(id, false) {
                Ok(true) => self.counters.prefetch_copies += 1,
                Ok(false) => break,
                Err(code) => {
                    outcome = Err(code);
                    break;
                }
            }
        }
        self.upcoming = upcoming;
        outcome
    }

    /// Stages extent `id` into the cache; false when it cannot have a slot now. `demand`
    /// lets it displace prefetched copies not used yet (never the current launch's).
    fn stage(&mut self, id: u64, demand: bool) -> Result<bool, CUresult> {
        let Some(&base) = self.by_id.get(&id) else { return Ok(false) };
        let (len, source) = (self.extents[&base].len, self.extents[&base].source);
        let reuse_slot = self.staged.get(&id).map(|s| s.slot);
        let offset = match reuse_slot {
            Some(slot) => slot.offset,
            None => {
                let (current, staged) = (&self.current, &self.staged);
                let evictable = |slot: &Slot| {
                    !current.contains(&slot.extent) && staged.get(&slot.extent).is_none_or(|s| demand || s.used || !s.valid)
                };
                let mut victims = std::mem::take(&mut self.victims);
                let planned = self.ring.plan(len, &mut victims, evictable);
                self.victims = victims;
                match planned {
                    Some(offset) => offset,
                    None => return Ok(false),
                }
            }
        };
        let mut waits = std::mem::take(&mut self.waits);
        waits.clear();
        let mut release = Vec::new();
        let displaced: Vec<u64> = match reuse_slot {
            Some(_) => vec![id],
            None => self.victims.iter().map(|v| v.extent).collect(),
        };
        for victim in displaced {
            self.vacate(victim, &mut waits, &mut release)?;
        }
        if let Some(fence) = self.extents[&base].fence {
            waits.push(fence);
        }
        if let Some(fence) = self.fence {
            waits.push(fence);
        }
        let destination = self.settings.cache_base + offset;
        let staged = self.transfers.stage(destination, base, len, &waits);
        for &event in &release {
            self.transfers.release(event);
        }
        self.waits = waits;
        let ready = staged?;
        let slot = self.ring.commit(offset, len, id);
        self.staged.insert(id, Staged { slot, base, len, ready, uses: Vec::new(), valid: true, dirty: false, used: false });
        match source {
            Source::Host => self.counters.staged_host_bytes += len,
            Source::Peer(_) => self.counters.staged_peer_bytes += len,
        }
        if demand {
            self.counters.demand_copies += 1;
        }
        Ok(true)
    }

    /// Empties the slot of extent `id`: writes a dirty copy back, and adds to `waits` what
    /// a new copy into the slot must wait for (the slot's users and that write-back), and
    /// to `release` the events no one needs once that copy is issued.
    fn vacate(&mut self, id: u64, waits: &mut Vec<T::Event>, release: &mut Vec<T::Event>) -> Result<(), CUresult> {
        self.ring.remove(id);
        let Some(staged) = self.staged.remove(&id) else { return Ok(()) };
        if staged.dirty {
            let written = self.write_back(&staged)?;
            waits.push(written);
        }
        let slot_events = staged.uses.iter().map(|(_, e)| *e).chain(std::iter::once(staged.ready));
        for event in slot_events {
            waits.push(event);
            release.push(event);
        }
        Ok(())
    }

    /// Writes a staged copy back into its extent after its users; the write becomes the
    /// extent's fence. Returns the write-back's event.
    fn write_back(&mut self, staged: &Staged<T::Stream, T::Event>) -> Result<T::Event, CUresult> {
        let mut after: Vec<T::Event> = staged.uses.iter().map(|(_, e)| *e).collect();
        after.push(staged.ready);
        let source = self.settings.cache_base + staged.slot.offset;
        let written = self.transfers.write_back(staged.base, source, staged.len, &after)?;
        self.counters.written_back_bytes += staged.len;
        if let Some(old) = self.extents.get_mut(&staged.base).and_then(|extent| extent.fence.replace(written)) {
            self.transfers.release(old);
        }
        Ok(written)
    }

    /// The extents overlapping `[address, address + len)`, as ids.
    fn overlapping(&self, address: u64, len: u64) -> Vec<u64> {
        let end = address.saturating_add(len.max(1));
        let first = self.extents.range(..=address).next_back().map_or(address, |(b, _)| *b);
        self.extents.range(first..end).filter(|(b, e)| **b + e.len > address).map(|(_, e)| e.id).collect()
    }

    /// Before something other than a translated kernel writes `[address, address + len)`:
    /// a dirty staged copy is written back and every copy of the range dropped; the write
    /// is ordered after the engine's copies of it (on `stream`, or by waiting with the CPU
    /// when `stream` is `None`). Call [`Engine::after_host_write`] once the write is issued.
    pub fn before_host_write(&mut self, address: u64, len: u64, stream: Option<T::Stream>) -> Result<(), CUresult> {
        for id in self.overlapping(address, len) {
            if let Some(staged) = self.staged.get_mut(&id).filter(|s| s.valid) {
                staged.valid = false;
                self.counters.dropped_copies += 1;
                let snapshot = Staged { uses: staged.uses.clone(), ..*staged };
                let ready = staged.ready;
                if snapshot.dirty {
                    self.write_back(&snapshot)?;
                }
                if let Some(staged) = self.staged.get_mut(&id) {
                    staged.dirty = false;
                }
                self.order(stream, ready)?;
            }
            let base = self.by_id[&id];
            if let Some(fence) = self.extents[&base].fence {
                self.order(stream, fence)?;
            }
        }
        Ok(())
    }

    /// After the write announced by [`Engine::before_host_write`] was issued on `stream`:
    /// later staging copies of the range wait for it.
    pub fn after_host_write(&mut self, address: u64, len: u64, stream: T::Stream) -> Result<(), CUresult> {
        for id in self.overlapping(address, len) {
            let event = self.transfers.record(stream, None)?;
            let base = self.by_id[&id];
            if let Some(old) = self.extents.get_mut(&base).and_then(|e| e.fence.replace(event)) {
                self.transfers.release(old);
            }
        }
        Ok(())
    }

    /// Before something other than a translated kernel reads `[address, address + len)`:
    /// dirty staged copies are written back (and stay staged, clean) and the read is
    /// ordered after that (on `stream`, or with the CPU when `stream` is `None`).
    pub fn before_host_read(&mut self, address: u64, len: u64, stream: Option<T::Stream>) -> Result<(), CUresult> {
        for id in self.overlapping(address, len) {
            if let Some(staged) = self.staged.get(&id).filter(|s| s.valid && s.dirty) {
                let snapshot = Staged { uses: staged.uses.clone(), ..*staged };
                self.write_back(&snapshot)?;
                if let Some(staged) = self.staged.get_mut(&id) {
                    staged.dirty = false;
                }
            }
            let base = self.by_id[&id];
            if let Some(fence) = self.extents[&base].fence {
                self.order(stream, fence)?;
            }
        }
        Ok(())
    }

    fn order(&mut self, stream: Option<T::Stream>, event: T::Event) -> Result<(), CUresult> {
        match stream {
            Some(stream) => self.transfers.wait(stream, event),
            None => self.transfers.synchronize(event),
        }
    }

    /// Before a graph launch on `stream` (graphs are not translated): every dirty staged
    /// copy is written back and the graph waits for it.
    pub fn before_graph(&mut self, stream: T::Stream) -> Result<(), CUresult> {
        self.counters.graph_launches += 1;
        let dirty: Vec<u64> = self.staged.iter().filter(|(_, s)| s.valid && s.dirty).map(|(id, _)| *id).collect();
        for id in dirty {
            let staged = &self.staged[&id];
            let snapshot = Staged { uses: staged.uses.clone(), ..*staged };
            let written = self.write_back(&snapshot)?;
            if let Some(staged) = self.staged.get_mut(&id) {
                staged.dirty = false;
            }
            self.transfers.wait(stream, written)?;
        }
        Ok(())
    }

    /// After a graph launch on `stream`: it may have written any donor extent, so every
    /// staged copy is dropped and later staging copies wait for the graph.
    pub fn after_graph(&mut self, stream: T::Stream) -> Result<(), CUresult> {
        for staged in self.staged.values_mut().filter(|s| s.valid) {
            staged.valid = false;
            self.counters.dropped_copies += 1;
        }
        let event = self.transfers.record(stream, None)?;
        if let Some(old) = self.fence.replace(event) {
            self.transfers.release(old);
        }
        Ok(())
    }
}
