//! The lock-free answer to "is this 8-byte word inside a donor-tier extent?", asked for
//! every word of every kernel launch's parameters.
//!
//! A fixed-capacity sorted table of `[base, end)` ranges behind a sequence lock: the
//! writer (allocation hooks, under the engine's lock) rewrites it with the sequence odd;
//! readers (launch hooks, any thread) never lock, never allocate and never write shared
//! memory: they read the sequence, search, and retry if it changed. Most words are
//! rejected by two compares against the lowest base and highest end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// Donor-tier extents, searchable without locks.
pub struct ExtentTable {
    sequence: AtomicU64,
    len: AtomicUsize,
    low: AtomicU64,
    high: AtomicU64,
    bases: Box<[AtomicU64]>,
    ends: Box<[AtomicU64]>,
}

/// The table had no room: extents past its capacity are not tracked (read in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull {
    /// Extents that did not fit.
    pub dropped: usize,
}

impl ExtentTable {
    /// An empty table holding at most `capacity` extents.
    pub fn new(capacity: usize) -> ExtentTable {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice();
        ExtentTable {
            sequence: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            low: AtomicU64::new(u64::MAX),
            high: AtomicU64::new(0),
            bases: atomics(capacity),
            ends: atomics(capacity),
        }
    }

    /// How many extents it can hold.
    pub fn capacity(&self) -> usize {
        self.bases.len()
    }

    /// Replaces the contents with `extents` (`(base, len)`, any order, not overlapping).
    /// Only one writer at a time: the caller serialises writers.
    pub fn replace(&self, extents: &mut [(u64, u64)]) -> Result<(), TableFull> {
        extents.sort_unstable_by_key(|e| e.0);
        let kept = extents.len().min(self.capacity());
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, &(base, len)) in extents[..kept].iter().enumerate() {
            self.bases[i].store(base, Ordering::Relaxed);
            self.ends[i].store(base + len, Ordering::Relaxed);
        }
        self.len.store(kept, Ordering::Relaxed);
        let (low, high) = match kept {
            0 => (u64::MAX, 0),
            _ => (extents[0].0, extents[..kept].iter().map(|(b, l)| b + l).max().unwrap_or(0)),
        };
        self.low.store(low, Ordering::Relaxed);
        self.high.store(high, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
        if kept < extents.len() { Err(TableFull { dropped: extents.len() - kept }) } else { Ok(()) }
    }

    /// Calls `found(index, base)` for every 8-aligned word of `bytes` that lies inside an
    /// extent (`index` is the word's byte offset). Lock-free; consistent with one version
    /// of the table.
    pub fn scan(&self, bytes: &[u8], mut found: impl FnMut(usize, u64)) {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
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
                    return;
                }
                continue;
            }
            let mut hits = [(0usize, 0u64); 16];
            let mut count = 0;
            let mut overflow = false;
            self.scan_once(bytes, |offset, base| {
                if count < hits.len() {
                    hits[count] = (offset, base);
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
                hits[..count].iter().for_each(|&(o, b)| found(o, b));
                return;
            }
            // More than 16 hits (rare: a packed buffer full of weight pointers): report
            // them from a second pass, still checked against the same table version.
            let mut all = Vec::new();
            self.scan_once(bytes, |offset, base| all.push((offset, base)));
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) == before {
                all.into_iter().for_each(|(o, b)| found(o, b));
                return;
            }
        }
    }

    fn scan_once(&self, bytes: &[u8], mut found: impl FnMut(usize, u64)) {
        let low = self.low.load(Ordering::Relaxed);
        let high = self.high.load(Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed).min(self.capacity());
        for (i, word) in bytes.chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
            if word < low || word >= high {
                continue;
            }
            if let Some(base) = self.search(word, len) {
                found(i * 8, base);
            }
        }
    }

    /// The base of the extent holding `address`, among the first `len` entries.
    fn search(&self, address: u64, len: usize) -> Option<u64> {
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.bases[mid].load(Ordering::Relaxed) <= address { lo = mid + 1 } else { hi = mid }
        }
        let index = lo.checked_sub(1)?;
        let base = self.bases[index].load(Ordering::Relaxed);
        (address < self.ends[index].load(Ordering::Relaxed)).then_some(base)
    }

    /// The base of the extent holding `address`, if any.
    pub fn find(&self, address: u64) -> Option<u64> {
        let mut result = None;
        self.scan(&address.to_ne_bytes(), |_, base| result = Some(base));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn words(values: &[u64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn words_inside_extents_are_found_at_their_offsets() {
        let table = ExtentTable::new(8);
        table.replace(&mut [(0x3000, 0x100), (0x1000, 0x1000)]).unwrap();
        let bytes = words(&[0, 0x1000, 0x1fff, 0x2000, 0x30ff, 0x3100, 7]);
        let mut hits = Vec::new();
        table.scan(&bytes, |offset, base| hits.push((offset, base)));
        assert_eq!(hits, vec![(8, 0x1000), (16, 0x1000), (32, 0x3000)]);
        assert_eq!(table.find(0x2000), None);
        assert_eq!(table.find(0x1800), Some(0x1000));
    }

    #[test]
    fn a_trailing_partial_word_is_not_read() {
        let table = ExtentTable::new(2);
        table.replace(&mut [(0x1000, 0x10)]).unwrap();
        let mut bytes = words(&[0x1000]);
        bytes.extend_from_slice(&[0, 0x10, 0, 0]);
        let mut hits = 0;
        table.scan(&bytes, |_, _| hits += 1);
        assert_eq!(hits, 1);
    }

    #[test]
    fn many_hits_in_one_buffer_are_all_reported() {
        let table = ExtentTable::new(2);
        table.replace(&mut [(0x1000, 0x1000)]).unwrap();
        let bytes = words(&[0x1008; 40]);
        let mut hits = 0;
        table.scan(&bytes, |_, base| {
            assert_eq!(base, 0x1000);
            hits += 1
        });
        assert_eq!(hits, 40);
    }

    #[test]
    fn extents_past_the_capacity_are_dropped_and_said() {
        let table = ExtentTable::new(1);
        assert_eq!(table.replace(&mut [(0x1000, 8), (0x2000, 8)]), Err(TableFull { dropped: 1 }));
        assert_eq!(table.find(0x1000), Some(0x1000));
        assert_eq!(table.find(0x2000), None);
    }

    #[test]
    fn readers_see_one_version_while_a_writer_rewrites() {
        let table = Arc::new(ExtentTable::new(64));
        table.replace(&mut [(0x10000, 0x10000)]).unwrap();
        let writer = {
            let table = table.clone();
            std::thread::spawn(move || {
                for round in 0..2000u64 {
                    // Version A holds [0x10000, 0x20000); version B holds [0x30000, 0x40000).
                    let mut extents = if round % 2 == 0 { vec![(0x10000, 0x10000)] } else { vec![(0x30000, 0x10000)] };
                    table.replace(&mut extents).unwrap();
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
}
