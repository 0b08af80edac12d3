//! The lock-free answer to "is this 8-byte word inside a vvram extent, and which one?",
//! asked for every word of every kernel launch's parameters, and the per-extent record of
//! how often and on which streams launches used it.
//!
//! A fixed-capacity sorted table of `[base, end)` ranges behind a sequence lock: the
//! writer (allocation hooks and the working-set mover, serialised by the caller) rewrites
//! it with the sequence odd; readers (launch and copy hooks, any thread) never lock and
//! never allocate: they read the sequence, search, and retry if it changed. Most words
//! are rejected by two compares against the lowest base and highest end.
//!
//! Each extent carries a *slot*, stable for the extent's life, that indexes its use
//! record: a launch counter and the streams that used it (a few, then "many"). Readers
//! update the record with relaxed atomics; the working-set classifier reads the counters
//! and the mover reads the streams to order a move after the extent's last users.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

/// Streams remembered per extent; an extent used on more is marked as used on many.
pub const STREAMS_PER_EXTENT: usize = 4;

const DONOR: u64 = 1 << 32;
const MOVING: u64 = 1 << 33;
const SLOT_MASK: u64 = (1 << 32) - 1;

/// One extent as the writer gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First byte.
    pub base: u64,
    /// Bytes.
    pub len: u64,
    /// Its use record, below the table's capacity.
    pub slot: u32,
    /// Its memory is on a donor tier: launches using it go to the migration engine.
    pub donor: bool,
    /// Its backing is being moved: launches and copies using it wait for the move.
    pub moving: bool,
}

/// An extent a word lies in, as a reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The extent's first byte.
    pub base: u64,
    /// Its use record.
    pub slot: u32,
    /// On a donor tier.
    pub donor: bool,
    /// Being moved.
    pub moving: bool,
}

impl Hit {
    fn new(base: u64, info: u64) -> Hit {
        Hit { base, slot: (info & SLOT_MASK) as u32, donor: info & DONOR != 0, moving: info & MOVING != 0 }
    }
}

/// vvram's extents, searchable without locks, with their use records.
pub struct ExtentTable {
    sequence: AtomicU64,
    len: AtomicUsize,
    low: AtomicU64,
    high: AtomicU64,
    bases: Box<[AtomicU64]>,
    ends: Box<[AtomicU64]>,
    infos: Box<[AtomicU64]>,
    uses: Box<[AtomicU64]>,
    streams: Box<[AtomicUsize]>,
    many_streams: Box<[AtomicBool]>,
}

/// The table had no room: extents past its capacity are not tracked (read in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull {
    /// Extents that did not fit.
    pub dropped: usize,
}

impl ExtentTable {
    /// An empty table holding at most `capacity` extents (and as many use records).
    pub fn new(capacity: usize) -> ExtentTable {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice();
        ExtentTable {
            sequence: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            low: AtomicU64::new(u64::MAX),
            high: AtomicU64::new(0),
            bases: atomics(capacity),
            ends: atomics(capacity),
            infos: atomics(capacity),
            uses: atomics(capacity),
            streams: (0..capacity * STREAMS_PER_EXTENT).map(|_| AtomicUsize::new(0)).collect(),
            many_streams: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// How many extents it can hold.
    pub fn capacity(&self) -> usize {
        self.bases.len()
    }

    /// Replaces the contents with `entries` (any order, not overlapping, slots below the
    /// capacity and distinct). Only one writer at a time: the caller serialises writers.
    pub fn replace(&self, entries: &mut [Entry]) -> Result<(), TableFull> {
        entries.sort_unstable_by_key(|e| e.base);
        let kept = entries.len().min(self.capacity());
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, entry) in entries[..kept].iter().enumerate() {
            let info = (entry.slot as u64 & SLOT_MASK) | if entry.donor { DONOR } else { 0 } | if entry.moving { MOVING } else { 0 };
            self.bases[i].store(entry.base, Ordering::Relaxed);
            self.ends[i].store(entry.base + entry.len, Ordering::Relaxed);
            self.infos[i].store(info, Ordering::Relaxed);
        }
        self.len.store(kept, Ordering::Relaxed);
        let (low, high) = match kept {
            0 => (u64::MAX, 0),
            _ => (entries[0].base, entries[..kept].iter().map(|e| e.base + e.len).max().unwrap_or(0)),
        };
        self.low.store(low, Ordering::Relaxed);
        self.high.store(high, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::SeqCst);
        if kept < entries.len() { Err(TableFull { dropped: entries.len() - kept }) } else { Ok(()) }
    }

    /// The table's version: it changes with every [`ExtentTable::replace`].
    pub fn version(&self) -> u64 {
        self.sequence.load(Ordering::SeqCst)
    }

    /// Calls `found(index, hit)` for every 8-aligned word of `bytes` that lies inside an
    /// extent (`index` is the word's byte offset). Lock-free; consistent with one version
    /// of the table, which it returns (see [`ExtentTable::version`]).
    pub fn scan(&self, bytes: &[u8], mut found: impl FnMut(usize, Hit)) -> u64 {
        loop {
            // SeqCst: a hook that scans after announcing itself in flight must see a table
            // a mover published before waiting for in-flight hooks (see the shim).
            let before = self.sequence.load(Ordering::SeqCst);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // Most buffers hold no word in [low, high): settle that without searching.
            let (low, high) = (self.low.load(Ordering::Relaxed), self.high.load(Ordering::Relaxed));
            let any_in_range = bytes.chunks_exact(8).any(|w| {
                let word = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
                word >= low && word < high
            });
            if !any_in_range {
                fence(Ordering::Acquire);
                if self.sequence.load(Ordering::Relaxed) == before {
                    return before;
                }
                continue;
            }
            let mut hits = [(0usize, Hit { base: 0, slot: 0, donor: false, moving: false }); 16];
            let mut count = 0;
            let mut overflow = false;
            self.scan_once(bytes, |offset, hit| {
                if count < hits.len() {
                    hits[count] = (offset, hit);
                    count += 1;
                } else {
                    overflow = true;
                }
            });
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) != before {
                continue;
            }
            if !overflow {
                hits[..count].iter().for_each(|&(o, h)| found(o, h));
                return before;
            }
            // More than 16 hits (rare: a packed buffer full of weight pointers): report
            // them from a second pass, still checked against the same table version.
            let mut all = Vec::new();
            self.scan_once(bytes, |offset, hit| all.push((offset, hit)));
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) == before {
                all.into_iter().for_each(|(o, h)| found(o, h));
                return before;
            }
        }
    }

    fn scan_once(&self, bytes: &[u8], mut found: impl FnMut(usize, Hit)) {
        let low = self.low.load(Ordering::Relaxed);
        let high = self.high.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed).min(self.capacity());
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
            if word < low || word >= high {
                continue;
            }
            if let Some(hit) = self.search(word, len) {
                found(i * 8, hit);
            }
        }
    }

    /// The extent holding `address`, among the first `len` entries.
    fn search(&self, address: u64, len: usize) -> Option<Hit> {
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.bases[mid].load(Ordering::Relaxed) <= address { lo = mid + 1 } else { hi = mid }
        }
        let index = lo.checked_sub(1)?;
        let base = self.bases[index].load(Ordering::Relaxed);
        (address < self.ends[index].load(Ordering::Relaxed)).then(|| Hit::new(base, self.infos[index].load(Ordering::Relaxed)))
    }

    /// The extent holding `address`, if any.
    pub fn find(&self, address: u64) -> Option<Hit> {
        let mut result = None;
        self.scan(&address.to_ne_bytes(), |_, hit| result = Some(hit));
        result
    }

    /// Like [`ExtentTable::find`], with the version of the table it answered from.
    pub fn find_versioned(&self, address: u64) -> (Option<Hit>, u64) {
        let mut result = None;
        let version = self.scan(&address.to_ne_bytes(), |_, hit| result = Some(hit));
        (result, version)
    }

    /// Counts one use of the extent with `slot` by a launch on `stream`. The count is a
    /// plain load and store, not a locked add (this is the launch path): threads launching
    /// on the same extent at the same instant may lose a few counts, which classifying an
    /// extent as used once or many times per step tolerates.
    pub fn record_use(&self, slot: u32, stream: usize) {
        let Some(uses) = self.uses.get(slot as usize) else { return };
        uses.store(uses.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        self.note_stream(slot, stream);
    }

    /// Remembers that an operation on `stream` used the extent with `slot`, without
    /// counting a use (copies: they order moves but do not make an extent hot).
    pub fn note_stream(&self, slot: u32, stream: usize) {
        let slot = slot as usize;
        if slot >= self.capacity() {
            return;
        }
        let key = stream.wrapping_add(1);
        let streams = &self.streams[slot * STREAMS_PER_EXTENT..(slot + 1) * STREAMS_PER_EXTENT];
        for known in streams {
            match known.load(Ordering::Relaxed) {
                k if k == key => return,
                0 => match known.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(k) if k == key => return,
                    Err(_) => continue,
                },
                _ => continue,
            }
        }
        self.many_streams[slot].store(true, Ordering::Relaxed);
    }

    /// Launches that used the extent with `slot` since its record was cleared.
    pub fn uses(&self, slot: u32) -> u64 {
        self.uses.get(slot as usize).map_or(0, |u| u.load(Ordering::Relaxed))
    }

    /// The streams that used the extent with `slot`, into `out`; false when it was used on
    /// more than [`STREAMS_PER_EXTENT`] (then `out` holds only some of them).
    pub fn streams(&self, slot: u32, out: &mut Vec<usize>) -> bool {
        out.clear();
        let slot = slot as usize;
        if slot >= self.capacity() {
            return true;
        }
        let streams = &self.streams[slot * STREAMS_PER_EXTENT..(slot + 1) * STREAMS_PER_EXTENT];
        out.extend(streams.iter().map(|s| s.load(Ordering::Relaxed)).filter(|k| *k != 0).map(|k| k.wrapping_sub(1)));
        !self.many_streams[slot].load(Ordering::Relaxed)
    }

    /// Forgets `stream` (destroyed: its handle may be reused) in every record that holds
    /// it; those records say "many streams" from now on, so a move of their extent is
    /// ordered without them.
    pub fn forget_stream(&self, stream: usize) {
        let key = stream.wrapping_add(1);
        for (index, known) in self.streams.iter().enumerate() {
            if known.compare_exchange(key, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.many_streams[index / STREAMS_PER_EXTENT].store(true, Ordering::Relaxed);
            }
        }
    }

    /// Clears the record of `slot` (given to a new extent).
    pub fn clear_record(&self, slot: u32) {
        let slot = slot as usize;
        if slot >= self.capacity() {
            return;
        }
        self.uses[slot].store(0, Ordering::Relaxed);
        self.streams[slot * STREAMS_PER_EXTENT..(slot + 1) * STREAMS_PER_EXTENT].iter().for_each(|s| s.store(0, Ordering::Relaxed));
        self.many_streams[slot].store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn words(values: &[u64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    fn entries(extents: &[(u64, u64)]) -> Vec<Entry> {
        extents.iter().enumerate().map(|(i, &(base, len))| Entry { base, len, slot: i as u32, donor: true, moving: false }).collect()
    }

    #[test]
    fn words_inside_extents_are_found_at_their_offsets() {
        let table = ExtentTable::new(8);
        table.replace(&mut entries(&[(0x3000, 0x100), (0x1000, 0x1000)])).unwrap();
        let bytes = words(&[0, 0x1000, 0x1fff, 0x2000, 0x30ff, 0x3100, 7]);
        let mut hits = Vec::new();
        table.scan(&bytes, |offset, hit| hits.push((offset, hit.base)));
        assert_eq!(hits, vec![(8, 0x1000), (16, 0x1000), (32, 0x3000)]);
        assert_eq!(table.find(0x2000), None);
        assert_eq!(table.find(0x1800).map(|h| (h.base, h.slot)), Some((0x1000, 1)));
    }

    #[test]
    fn a_trailing_partial_word_is_not_read() {
        let table = ExtentTable::new(2);
        table.replace(&mut entries(&[(0x1000, 0x10)])).unwrap();
        let mut bytes = words(&[0x1000]);
        bytes.extend_from_slice(&[0, 0x10, 0, 0]);
        let mut hits = 0;
        table.scan(&bytes, |_, _| hits += 1);
        assert_eq!(hits, 1);
    }

    #[test]
    fn many_hits_in_one_buffer_are_all_reported() {
        let table = ExtentTable::new(2);
        table.replace(&mut entries(&[(0x1000, 0x1000)])).unwrap();
        let bytes = words(&[0x1008; 40]);
        let mut hits = 0;
        table.scan(&bytes, |_, hit| {
            assert_eq!(hit.base, 0x1000);
            hits += 1
        });
        assert_eq!(hits, 40);
    }

    #[test]
    fn extents_past_the_capacity_are_dropped_and_said() {
        let table = ExtentTable::new(1);
        assert_eq!(table.replace(&mut entries(&[(0x1000, 8), (0x2000, 8)])), Err(TableFull { dropped: 1 }));
        assert_eq!(table.find(0x1000).map(|h| h.base), Some(0x1000));
        assert_eq!(table.find(0x2000), None);
    }

    #[test]
    fn readers_see_one_version_while_a_writer_rewrites() {
        let table = Arc::new(ExtentTable::new(64));
        table.replace(&mut entries(&[(0x10000, 0x10000)])).unwrap();
        let writer = {
            let table = table.clone();
            std::thread::spawn(move || {
                for round in 0..2000u64 {
                    // Version A holds [0x10000, 0x20000); version B holds [0x30000, 0x40000).
                    let extents = if round % 2 == 0 { [(0x10000, 0x10000)] } else { [(0x30000, 0x10000)] };
                    table.replace(&mut entries(&extents)).unwrap();
                }
            })
        };
        let bytes = words(&[0x18000, 0x38000]);
        for _ in 0..20000 {
            let mut hits = 0;
            table.scan(&bytes, |_, _| hits += 1);
            assert_eq!(hits, 1, "a scan saw no version or mixed two versions of the table");
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_scan_returns_the_version_it_read_and_every_replace_changes_it() {
        let table = ExtentTable::new(2);
        let first = table.scan(&words(&[0x1000]), |_, _| {});
        assert_eq!(first, table.version());
        table.replace(&mut entries(&[(0x1000, 8)])).unwrap();
        let (hit, second) = table.find_versioned(0x1000);
        assert!(hit.is_some() && second != first && second == table.version());
    }

    #[test]
    fn hits_carry_the_slot_and_the_flags_the_writer_gave() {
        let table = ExtentTable::new(4);
        let mut given = [
            Entry { base: 0x1000, len: 0x100, slot: 3, donor: false, moving: false },
            Entry { base: 0x2000, len: 0x100, slot: 1, donor: true, moving: true },
        ];
        table.replace(&mut given).unwrap();
        assert_eq!(table.find(0x1010), Some(Hit { base: 0x1000, slot: 3, donor: false, moving: false }));
        assert_eq!(table.find(0x20ff), Some(Hit { base: 0x2000, slot: 1, donor: true, moving: true }));
    }

    #[test]
    fn a_use_record_counts_launches_and_remembers_a_few_streams_then_says_many() {
        let table = ExtentTable::new(2);
        let mut streams = Vec::new();
        assert!(table.streams(1, &mut streams) && streams.is_empty());
        for stream in [0, 7, 0, 7, 0] {
            table.record_use(1, stream);
        }
        assert_eq!(table.uses(1), 5);
        assert_eq!(table.uses(0), 0);
        assert!(table.streams(1, &mut streams));
        assert_eq!(streams, vec![0, 7]);
        table.note_stream(1, 100);
        assert_eq!(table.uses(1), 5, "noting a stream is not a use");
        for stream in 101..104 {
            table.record_use(1, stream);
        }
        assert!(!table.streams(1, &mut streams), "six streams fit in four places");
        table.clear_record(1);
        assert_eq!(table.uses(1), 0);
        table.record_use(0, 5);
        table.record_use(1, 5);
        table.record_use(1, 6);
        table.forget_stream(6);
        assert!(table.streams(0, &mut streams) && streams == vec![5], "a record without the stream is untouched");
        assert!(!table.streams(1, &mut streams) && streams == vec![5], "a destroyed stream makes the record say many");
        table.clear_record(1);
        assert!(table.streams(1, &mut streams) && streams.is_empty());
    }

    #[test]
    fn records_of_threads_racing_on_one_extent_keep_every_stream_and_most_uses() {
        let table = Arc::new(ExtentTable::new(1));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let table = table.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| table.record_use(0, t)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!((10_000..=40_000).contains(&table.uses(0)), "{}", table.uses(0));
        let mut streams = Vec::new();
        assert!(table.streams(0, &mut streams));
        streams.sort_unstable();
        assert_eq!(streams, vec![0, 1, 2, 3]);
    }
}
