//! Live statistics of a process running under libvvram.so.
//!
//! The shim builds a [`Snapshot`]; `vvram_stats_json` returns it as JSON, and a
//! background thread publishes it into a shared-memory region, `/dev/shm/vvram.<pid>`
//! (owner-only), which `vvram stats PID` reads without stopping the process. The region
//! is a header with a sequence number (odd while the writer is writing) and the JSON
//! text; a reader retries until it reads the same even sequence before and after.
//!
//! The region is created exclusively (`O_EXCL`): a file of that name made by another
//! user is never used, one of our own user is stale (its PID is ours now) and replaced.
//! The reader trusts nothing in it: it checks the owner and size with `fstat` and reads
//! with `pread`, so a short or forged file is an error, never a crash.

use serde::{Deserialize, Serialize};

mod layout;
mod reader;
mod region;

pub use layout::{REGION_SIZE, region_name};
pub use reader::{ReadError, read, remove_stale_regions};
pub use region::Region;

/// Bytes of one tier of one compute device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSnapshot {
    /// `local`, `peer:N` or `host`.
    pub tier: String,
    /// Bytes of physical memory placed there.
    pub used: u64,
    /// The tier's budget.
    pub capacity: u64,
}

/// One compute device the policy manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    /// CUDA device index.
    pub device: u32,
    /// What the application is told the card holds.
    pub reported_total: u64,
    /// Live allocations.
    pub allocations: u64,
    /// Tiers, local first.
    pub tiers: Vec<TierSnapshot>,
}

/// Everything `vvram_stats_json` and `vvram stats` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// libvvram.so's version.
    pub version: String,
    /// The process.
    pub pid: u32,
    /// Where the policy came from, if there is one.
    pub policy: Option<String>,
    /// Whether placement is active (a policy resolved against the machine).
    pub active: bool,
    /// Why the policy does not fit the machine (placement is then inactive).
    #[serde(default)]
    pub policy_error: Option<String>,
    /// The current phase.
    pub phase: Option<String>,
    /// The current allocation tag.
    pub tag: Option<String>,
    /// Managed compute devices.
    pub devices: Vec<DeviceSnapshot>,
    /// Pinned host memory ready in the pool.
    pub host_pool_bytes: u64,
    /// Allocations served since start.
    pub allocations: u64,
    /// Allocations freed since start.
    pub frees: u64,
    /// Requests refused with out-of-memory.
    pub out_of_memory: u64,
    /// Bytes copied host-to-device by the CPU into host-tier memory.
    pub fast_h2d_bytes: u64,
    /// Errors (driver failures while placing, panics caught in hooks).
    pub errors: u64,
}

impl Snapshot {
    /// As JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The C signature of `vvram_stats_json`.
pub type StatsJsonFn = unsafe extern "C" fn(*mut std::ffi::c_char, usize) -> usize;

/// The JSON text `vvram_stats_json` writes, retried with a larger buffer until it fits
/// (the snapshot can grow between calls).
///
/// # Safety
/// `stats_json` must be libvvram.so's `vvram_stats_json`.
pub unsafe fn control_api_json(stats_json: StatsJsonFn) -> Vec<u8> {
    let mut buffer = vec![0u8; 8192];
    loop {
        // SAFETY: the documented signature; the buffer is ours and `len` bytes long.
        let needed = unsafe { stats_json(buffer.as_mut_ptr() as *mut std::ffi::c_char, buffer.len()) };
        if needed <= buffer.len() {
            buffer.truncate(needed.saturating_sub(1));
            return buffer;
        }
        buffer.resize(needed * 2, 0);
    }
}

#[cfg(test)]
mod tests;
