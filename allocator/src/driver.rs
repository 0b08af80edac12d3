//! What the memory manager needs from CUDA: the `Driver` trait.

use vvram_cuda::CUresult;

/// Where physical memory is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// A GPU's memory, by device index.
    Device(u32),
    /// Pinned host memory.
    Host,
}

/// A physical allocation handle (`CUmemGenericAllocationHandle`).
pub type Handle = u64;

/// An event recorded on a stream.
pub type EventId = u64;

/// The virtual memory operations of the CUDA driver, as the memory manager uses them.
/// The shim implements it over the real driver; tests use [`crate::MemoryDriver`].
pub trait Driver {
    /// Reserves `size` bytes of virtual address space (granularity-aligned).
    fn reserve(&self, size: u64) -> Result<u64, CUresult>;
    /// Frees a reservation made by [`Driver::reserve`].
    fn free_reservation(&self, address: u64, size: u64) -> Result<(), CUresult>;
    /// Creates `size` bytes of physical memory at `location`.
    fn create(&self, size: u64, location: Location) -> Result<Handle, CUresult>;
    /// Releases physical memory (freed once it is no longer mapped).
    fn release(&self, handle: Handle) -> Result<(), CUresult>;
    /// Maps a whole physical allocation at `address`.
    fn map(&self, address: u64, size: u64, handle: Handle) -> Result<(), CUresult>;
    /// Unmaps one mapping.
    fn unmap(&self, address: u64, size: u64) -> Result<(), CUresult>;
    /// Makes `[address, address + size)` readable and writable by compute `device`, and by
    /// the CPU too when `host` is set (host-located memory only).
    fn set_access(&self, address: u64, size: u64, device: u32, host: bool) -> Result<(), CUresult>;
    /// Waits until all work queued in the calling thread's context has finished.
    fn synchronize(&self) -> Result<(), CUresult>;
    /// Records an event at the current end of `stream`.
    fn record_event(&self, stream: u64) -> Result<EventId, CUresult>;
    /// Whether the stream has passed the event.
    fn event_complete(&self, event: EventId) -> Result<bool, CUresult>;
    /// Destroys an event.
    fn destroy_event(&self, event: EventId);
}
