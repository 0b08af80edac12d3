//! Slot planning in the local cache: a ring over the cache's bytes. Copies are placed at
//! the head in the order they are staged (the predicted order of use), so the copy that
//! must wait is always the one for the oldest resident: in a periodic scan that is the
//! resident used longest ago, and every copy waits only for kernels issued before it.

use std::collections::VecDeque;

/// Alignment of slots inside the cache (what cudaMalloc guarantees, and enough for
/// vectorised loads).
pub const SLOT_ALIGN: u64 = 512;

/// A staged copy's place in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Offset from the cache's start.
    pub offset: u64,
    /// Bytes (rounded up to [`SLOT_ALIGN`]).
    pub len: u64,
    /// The extent staged there (its base address).
    pub extent: u64,
}

/// The ring of slots.
#[derive(Debug)]
pub struct Ring {
    capacity: u64,
    head: u64,
    residents: VecDeque<Slot>,
}

impl Ring {
    /// An empty ring over `capacity` bytes.
    pub fn new(capacity: u64) -> Ring {
        Ring { capacity, head: 0, residents: VecDeque::new() }
    }


    /// Where a copy of `len` bytes would go, and the residents it would displace, or
    /// `None` when it cannot fit or `evictable` refuses a resident in the way. Nothing
    /// changes until [`Ring::commit`].
    pub fn plan(&self, len: u64, victims: &mut Vec<Slot>, evictable: impl Fn(&Slot) -> bool) -> Option<u64> {
        let len = len.next_multiple_of(SLOT_ALIGN);
        if len > self.capacity || len == 0 {
            return None;
        }
        let start = if self.head + len <= self.capacity { self.head } else { 0 };
        let end = start + len;
        victims.clear();
        for slot in &self.residents {
            if slot.offset < end && start < slot.offset + slot.len {
                if !evictable(slot) {
                    victims.clear();
                    return None;
                }
                victims.push(*slot);
            }
        }
        Some(start)
    }

    /// Places `extent` at `offset` (from [`Ring::plan`]), dropping the residents it displaces.
    pub fn commit(&mut self, offset: u64, len: u64, extent: u64) -> Slot {
        let len = len.next_multiple_of(SLOT_ALIGN);
        let end = offset + len;
        self.residents.retain(|s| !(s.offset < end && offset < s.offset + s.len));
        let slot = Slot { offset, len, extent };
        self.residents.push_back(slot);
        self.head = end;
        slot
    }

    /// Forgets the resident for `extent` (dropped or freed): its bytes are free again.
    pub fn remove(&mut self, extent: u64) -> Option<Slot> {
        let index = self.residents.iter().position(|s| s.extent == extent)?;
        self.residents.remove(index)
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(ring: &mut Ring, len: u64, extent: u64) -> (u64, Vec<u64>) {
        let mut victims = Vec::new();
        let offset = ring.plan(len, &mut victims, |_| true).expect("fits");
        ring.commit(offset, len, extent);
        (offset, victims.iter().map(|v| v.extent).collect())
    }

    #[test]
    fn copies_go_in_order_and_wrap_displacing_the_oldest() {
        let mut ring = Ring::new(4096);
        assert_eq!(stage(&mut ring, 1000, 1), (0, vec![]));
        assert_eq!(stage(&mut ring, 1024, 2), (1024, vec![]));
        assert_eq!(stage(&mut ring, 2048, 3), (2048, vec![]));
        assert_eq!(ring.residents.iter().map(|s| s.len).sum::<u64>(), 4096);
        assert_eq!(stage(&mut ring, 1500, 4), (0, vec![1, 2]));
        assert_eq!(stage(&mut ring, 512, 5), (1536, vec![]));
        assert_eq!(stage(&mut ring, 1024, 6), (2048, vec![3]));
        assert_eq!(ring.residents.iter().map(|s| s.extent).collect::<Vec<_>>(), vec![4, 5, 6]);
    }

    #[test]
    fn a_resident_that_may_not_go_blocks_the_copy() {
        let mut ring = Ring::new(2048);
        stage(&mut ring, 1024, 1);
        stage(&mut ring, 1024, 2);
        let mut victims = Vec::new();
        assert_eq!(ring.plan(512, &mut victims, |s| s.extent != 1), None);
        assert!(victims.is_empty());
        assert_eq!(ring.plan(4096, &mut victims, |_| true), None, "larger than the cache");
    }

    #[test]
    fn removed_residents_free_their_bytes() {
        let mut ring = Ring::new(2048);
        stage(&mut ring, 1024, 1);
        stage(&mut ring, 1024, 2);
        assert_eq!(ring.remove(1).map(|s| s.offset), Some(0));
        assert_eq!(stage(&mut ring, 1024, 3), (0, vec![]));
        assert_eq!(ring.remove(9), None);
    }
}
