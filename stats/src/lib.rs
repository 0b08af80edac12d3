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
    /// Of `used`, bytes of extents the observed steps use more than once per step.
    #[serde(default)]
    pub hot: u64,
    /// Of `used`, bytes of extents the observed steps use at most once per step (weights).
    #[serde(default)]
    pub weights: u64,
    /// Of `used`, bytes not classified (not watched long enough, placed by an explicit
    /// rule, slabs, the staging cache).
    #[serde(default)]
    pub unknown: u64,
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

/// The migration engine's counters, summed over compute devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineSnapshot {
    /// Compute devices with a running engine.
    pub engines: u64,
    /// Bytes of live allocations with memory off their compute device (what the engine
    /// stages; counted with or without streaming).
    pub donor_bytes: u64,
    /// Kernel launches seen while an engine runs.
    pub launches_seen: u64,
    /// Launches whose parameters could not be scanned (no parameter layout).
    pub unscanned_launches: u64,
    /// Launches referencing donor memory captured into a graph (not translated).
    pub captured_launches: u64,
    /// Launches that referenced donor-tier memory.
    pub donor_launches: u64,
    /// Of those, launches with every donor reference translated to a staged copy.
    pub translated_launches: u64,
    /// Launches with a donor reference read in place (no copy could be had).
    pub missed_launches: u64,
    /// Translated references whose copy was still in flight when the kernel was issued
    /// (the kernel's stream waited for it).
    pub waited_references: u64,
    /// Time kernels' streams waited for staging copies (nanoseconds), over the probes
    /// read: a kernel issued while its copy was in flight is timed while fewer than 64
    /// such probes are unread.
    pub stall_ns: u64,
    /// Waits timed.
    pub stall_probes: u64,
    /// Bytes staged from host memory.
    pub staged_host_bytes: u64,
    /// Bytes staged from peer GPUs.
    pub staged_peer_bytes: u64,
    /// Bytes written back from staged copies.
    pub written_back_bytes: u64,
    /// Copies staged when a launch needed them.
    pub demand_copies: u64,
    /// Copies staged ahead from the prediction.
    pub prefetch_copies: u64,
    /// Staged copies dropped because something else wrote their memory.
    pub dropped_copies: u64,
    /// Graph launches (not translated).
    pub graph_launches: u64,
    /// The predictor's period in launches (0: none).
    pub period: u64,
    /// Whether the predictor has locked on to a period.
    pub locked: bool,
    /// Launches the predictor had predicted.
    pub predicted: u64,
    /// Of those, predicted right.
    pub predicted_right: u64,
    /// Bytes of local cache.
    pub cache_bytes: u64,
    /// Bytes of it holding staged copies.
    pub cache_occupied: u64,
    /// Staged copies in it.
    pub cache_copies: u64,
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
    /// The migration engine.
    #[serde(default)]
    pub engine: EngineSnapshot,
    /// Automatic placement of the working set.
    #[serde(default)]
    pub working_set: WorkingSetSnapshot,
}

/// Automatic placement: the reserve kept while loading, the classes of what is placed and
/// the moves between tiers, summed over compute devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkingSetSnapshot {
    /// Compute devices placed automatically (streaming on, `[placement] automatic`).
    pub devices: u64,
    /// Of those, devices whose engine has seen a repeating step (the reserve is released
    /// and moves keep the working set local).
    pub settled: u64,
    /// Bytes kept free on devices still loading.
    pub reserve: u64,
    /// Periods the engine's predictor has seen repeat while locked: sampler steps, or
    /// fewer launches when only identical blocks' activations sit on donors (the period is
    /// then a block, until they move to the card).
    pub steps: u64,
    /// Bytes of extents used more than once per step.
    pub hot_bytes: u64,
    /// Of those, bytes living on a donor tier (zero in steady state).
    pub donor_hot_bytes: u64,
    /// Bytes of extents used at most once per step (weights).
    pub weights_bytes: u64,
    /// Of those, bytes on the compute device.
    pub local_weights_bytes: u64,
    /// Extents moved from the compute device to a donor.
    pub demotions: u64,
    /// Bytes moved that way.
    pub demoted_bytes: u64,
    /// Extents moved from a donor to the compute device.
    pub promotions: u64,
    /// Bytes moved that way.
    pub promoted_bytes: u64,
    /// Batches of moves carried out.
    pub batches: u64,
    /// Time the batches took, nanoseconds (applications' operations on the moving extents
    /// wait meanwhile).
    pub move_ns: u64,
    /// Batches ordered with a whole-context synchronisation (an extent used on more
    /// streams than are tracked, or on a per-thread default stream).
    pub context_syncs: u64,
    /// Moves given up (no room on the target tier, or a driver failure).
    pub failed_moves: u64,
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
