//! vvram's virtual memory manager.
//!
//! All placement decisions live here, behind the [`Driver`] trait, so they are tested
//! with the in-memory [`MemoryDriver`]; the shim only translates C calls into calls of
//! [`MemoryManager`]. See `manager` for the memory model.

mod driver;
mod manager;
mod memory_driver;
pub mod working_set;

pub use driver::{Driver, EventId, Handle, Location};
pub use manager::{FIRST_BUFFER_ID, ExtentPlacement, MoveTarget, PendingMove,
    AllocationInfo, CHUNK, MAX_RESERVATION, Counters, DeviceUsage, MemoryManager, Request, SMALL_ALIGN, SMALL_LIMIT, Segment, TierUsage,
};
pub use memory_driver::{Calls, MemoryDriver};

#[cfg(test)]
mod tests;
