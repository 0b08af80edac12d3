//! An in-memory [`Driver`] that checks how it is used: mappings inside reservations and
//! never overlapping, physical memory released only once, unmaps of what was mapped,
//! access only on mapped ranges. Capacity per location and fault injection let tests
//! reach every error path.

use crate::driver::{Driver, EventId, Handle, Location};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use vvram_cuda::{CUresult, result};

/// Counts of what the in-memory driver was asked to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Calls {
    /// `create` calls that succeeded.
    pub creates: u64,
    /// `synchronize` calls.
    pub synchronizes: u64,
}

#[derive(Default)]
struct State {
    next: u64,
    reservations: BTreeMap<u64, u64>,
    physical: HashMap<Handle, (u64, Location, bool)>,
    mappings: BTreeMap<u64, (u64, Handle, bool)>,
    used: HashMap<Location, u64>,
    capacity: HashMap<Location, u64>,
    fail_creates_at: HashMap<Location, CUresult>,
    fail_next: HashMap<&'static str, (CUresult, u32)>,
    events: HashMap<EventId, bool>,
    calls: Calls,
}

/// A [`Driver`] on bookkeeping alone.
pub struct MemoryDriver {
    state: RefCell<State>,
}

impl Default for MemoryDriver {
    fn default() -> MemoryDriver {
        MemoryDriver::new()
    }
}

impl MemoryDriver {
    /// A driver with unlimited memory everywhere.
    pub fn new() -> MemoryDriver {
        MemoryDriver { state: RefCell::new(State { next: 0x7000_0000_0000, ..State::default() }) }
    }

    /// Limits physical memory at `location`: `create` beyond it fails with out-of-memory,
    /// as a full GPU does.
    pub fn with_capacity(self, location: Location, bytes: u64) -> MemoryDriver {
        self.state.borrow_mut().capacity.insert(location, bytes);
        self
    }

    /// Makes every `create` at `location` fail with `code`.
    pub fn fail_creates(&self, location: Location, code: CUresult) {
        self.state.borrow_mut().fail_creates_at.insert(location, code);
    }

    /// Makes the next `times` calls of `operation` (`"unmap"`, `"release"`, `"map"`,
    /// `"set_access"`, `"record_event"`) fail with `code`, doing nothing.
    pub fn fail_next(&self, operation: &'static str, code: CUresult, times: u32) {
        self.state.borrow_mut().fail_next.insert(operation, (code, times));
    }

    /// Physical bytes in use at `location`.
    pub fn used(&self, location: Location) -> u64 {
        self.state.borrow().used.get(&location).copied().unwrap_or(0)
    }

    /// Mappings that exist now.
    pub fn mapping_count(&self) -> usize {
        self.state.borrow().mappings.len()
    }

    /// Live physical allocations.
    pub fn physical_count(&self) -> usize {
        self.state.borrow().physical.len()
    }

    /// Whether the byte at `address` is mapped with access granted, and whether the CPU may touch it.
    pub fn accessible(&self, address: u64) -> Option<bool> {
        let state = self.state.borrow();
        let (&base, &(size, _, host)) = state.mappings.range(..=address).next_back()?;
        (address < base + size).then_some(host)
    }

    /// Where the physical memory behind `address` lives.
    pub fn location_of(&self, address: u64) -> Option<Location> {
        let state = self.state.borrow();
        let (&base, &(size, handle, _)) = state.mappings.range(..=address).next_back()?;
        (address < base + size).then(|| state.physical[&handle].1)
    }

    /// Marks an event complete, as the stream passing it would.
    pub fn complete_event(&self, event: EventId) {
        self.state.borrow_mut().events.insert(event, true);
    }

    /// Events recorded and not destroyed.
    pub fn live_events(&self) -> Vec<EventId> {
        self.state.borrow().events.keys().copied().collect()
    }

    /// What was called so far.
    pub fn calls(&self) -> Calls {
        self.state.borrow().calls.clone()
    }
}

impl State {
    /// The injected failure of `operation`, if one is due.
    fn injected(&mut self, operation: &'static str) -> Result<(), CUresult> {
        match self.fail_next.get_mut(operation) {
            Some((code, times)) if *times > 0 => {
                *times -= 1;
                Err(*code)
            }
            _ => Ok(()),
        }
    }
}

impl Driver for MemoryDriver {
    fn reserve(&self, size: u64) -> Result<u64, CUresult> {
        let mut state = self.state.borrow_mut();
        let address = state.next;
        state.next += size.next_multiple_of(1 << 30) + (1 << 30);
        state.reservations.insert(address, size);
        Ok(address)
    }

    fn free_reservation(&self, address: u64, size: u64) -> Result<(), CUresult> {
        let mut state = self.state.borrow_mut();
        assert_eq!(state.reservations.get(&address), Some(&size), "freeing a reservation that does not exist");
        assert!(state.mappings.range(address..address + size).next().is_none(), "freeing a reservation with live mappings");
        state.reservations.remove(&address);
        Ok(())
    }

    fn create(&self, size: u64, location: Location) -> Result<Handle, CUresult> {
        let mut state = self.state.borrow_mut();
        if let Some(code) = state.fail_creates_at.get(&location) {
            return Err(*code);
        }
        let used = state.used.get(&location).copied().unwrap_or(0);
        if state.capacity.get(&location).is_some_and(|c| used + size > *c) {
            return Err(result::OUT_OF_MEMORY);
        }
        *state.used.entry(location).or_default() += size;
        state.next += 1;
        let handle = state.next;
        state.physical.insert(handle, (size, location, false));
        state.calls.creates += 1;
        Ok(handle)
    }

    fn release(&self, handle: Handle) -> Result<(), CUresult> {
        let mut state = self.state.borrow_mut();
        state.injected("release")?;
        let (size, location, _) = state.physical.remove(&handle).expect("releasing an unknown or released handle");
        assert!(!state.mappings.values().any(|(_, h, _)| *h == handle), "releasing memory that is still mapped");
        *state.used.get_mut(&location).expect("used") -= size;
        Ok(())
    }

    fn map(&self, address: u64, size: u64, handle: Handle) -> Result<(), CUresult> {
        let mut state = self.state.borrow_mut();
        state.injected("map")?;
        let inside = state.reservations.range(..=address).next_back().is_some_and(|(&b, &l)| address + size <= b + l);
        assert!(inside, "mapping outside any reservation");
        let overlaps = state.mappings.range(..address + size).next_back().is_some_and(|(&b, m)| b + m.0 > address);
        assert!(!overlaps, "mapping over an existing mapping");
        assert_eq!(state.physical.get(&handle).map(|p| p.0), Some(size), "mapping a handle of another size");
        state.mappings.insert(address, (size, handle, false));
        Ok(())
    }

    fn unmap(&self, address: u64, size: u64) -> Result<(), CUresult> {
        let mut state = self.state.borrow_mut();
        state.injected("unmap")?;
        let mapping = state.mappings.remove(&address).expect("unmapping what is not mapped");
        assert_eq!(mapping.0, size, "unmapping part of a mapping");
        Ok(())
    }

    fn set_access(&self, address: u64, size: u64, _device: u32, host: bool) -> Result<(), CUresult> {
        let mut state = self.state.borrow_mut();
        state.injected("set_access")?;
        let mut cursor = address;
        while cursor < address + size {
            let (base, (len, handle, _)) = state
                .mappings
                .range(..=cursor)
                .next_back()
                .map(|(b, m)| (*b, *m))
                .filter(|(b, m)| cursor < b + m.0)
                .expect("setting access on an unmapped range");
            if host {
                assert_eq!(state.physical[&handle].1, Location::Host, "host access to device memory");
            }
            state.mappings.insert(base, (len, handle, host));
            cursor = base + len;
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), CUresult> {
        let mut state = self.state.borrow_mut();
        state.calls.synchronizes += 1;
        state.events.values_mut().for_each(|done| *done = true);
        Ok(())
    }

    fn record_event(&self, _stream: u64) -> Result<EventId, CUresult> {
        let mut state = self.state.borrow_mut();
        state.injected("record_event")?;
        state.next += 1;
        let event = state.next;
        state.events.insert(event, false);
        Ok(event)
    }

    fn event_complete(&self, event: EventId) -> Result<bool, CUresult> {
        self.state.borrow().events.get(&event).copied().ok_or(result::INVALID_HANDLE)
    }

    fn destroy_event(&self, event: EventId) {
        self.state.borrow_mut().events.remove(&event);
    }
}
