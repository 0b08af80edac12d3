//! Live statistics of a process running under libvvram.so.
//!
//! The shim builds a [`Snapshot`]; `vvram_stats_json` returns it as JSON, and a
//! background thread publishes it into a shared-memory region, `/dev/shm/vvram.<pid>`
//! (owner-only), which `vvram stats PID` reads without stopping the process. The region
//! is a header with a sequence number (odd while the writer is writing) and the JSON
//! text; a reader retries until it reads the same even sequence before and after.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering, fence};

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

const MAGIC: u64 = u64::from_le_bytes(*b"VVRAMST1");
const HEADER: usize = 32;
/// Size of the region: the header and at most this much JSON.
pub const REGION_SIZE: usize = 256 << 10;

#[repr(C)]
struct Header {
    magic: u64,
    pid: u64,
    sequence: AtomicU64,
    length: AtomicU64,
}

/// The region's name for a process.
pub fn region_name(pid: u32) -> String {
    format!("/vvram.{pid}")
}

/// A region mapped into this process.
pub struct Region {
    base: *mut u8,
    name: CString,
    /// The creating process; a forked child must not remove its parent's region.
    owner: Option<u32>,
}

// SAFETY: the mapping is process-wide; writes are serialised by the writer's own lock.
unsafe impl Send for Region {}

fn map(fd: i32, writable: bool) -> Result<*mut u8, std::io::Error> {
    let protection = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: mapping a descriptor we hold, of REGION_SIZE bytes.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), REGION_SIZE, protection, libc::MAP_SHARED, fd, 0) };
    // SAFETY: the mapping keeps the memory; the descriptor is no longer needed.
    unsafe { libc::close(fd) };
    if base == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(base as *mut u8) }
}

impl Region {
    /// Creates this process's region (owner read-write only); removed again on drop.
    pub fn create() -> Result<Region, std::io::Error> {
        let pid = std::process::id();
        let name = CString::new(region_name(pid)).unwrap_or_default();
        // SAFETY: plain shm_open/ftruncate on a name we own.
        let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC | libc::O_CLOEXEC, 0o600) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // shm_open's mode is masked by the umask; make sure it is owner-only whatever the umask.
        if unsafe { libc::fchmod(fd, 0o600) } != 0 || unsafe { libc::ftruncate(fd, REGION_SIZE as libc::off_t) } != 0 {
            let error = std::io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(error);
        }
        let base = map(fd, true)?;
        // SAFETY: the fresh mapping is ours and zeroed.
        unsafe {
            let header = &*(base as *const Header);
            (base as *mut u64).write(MAGIC);
            (base as *mut u64).add(1).write(pid as u64);
            header.sequence.store(0, Ordering::Release);
        }
        Ok(Region { base, name, owner: Some(pid) })
    }

    /// Publishes a snapshot.
    pub fn publish(&self, snapshot: &Snapshot) {
        let json = snapshot.to_json();
        let bytes = &json.as_bytes()[..json.len().min(REGION_SIZE - HEADER)];
        // SAFETY: the header lives at the start of our mapping; the text after it.
        let header = unsafe { &*(self.base as *const Header) };
        let sequence = header.sequence.load(Ordering::Relaxed);
        header.sequence.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(HEADER), bytes.len()) };
        header.length.store(bytes.len() as u64, Ordering::Relaxed);
        fence(Ordering::Release);
        header.sequence.store(sequence + 2, Ordering::Release);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping and name.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, REGION_SIZE);
            if self.owner == Some(std::process::id()) {
                libc::shm_unlink(self.name.as_ptr());
            }
        }
    }
}

/// Why a process's statistics could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No process has this PID.
    NoProcess(u32),
    /// The process belongs to another user.
    OtherUser(u32),
    /// The process is not running vvram with an active policy.
    NotVvram(u32),
    /// The region is there but unreadable.
    Corrupt(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NoProcess(pid) => write!(f, "no process {pid} is running"),
            ReadError::OtherUser(pid) => write!(f, "process {pid} belongs to another user: vvram's statistics are readable by their owner only"),
            ReadError::NotVvram(pid) => write!(f, "process {pid} is not running vvram with an active policy (no /dev/shm{})", region_name(*pid)),
            ReadError::Corrupt(why) => write!(f, "the statistics region is unreadable: {why}"),
        }
    }
}

fn process_owner(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads the statistics of process `pid`.
pub fn read(pid: u32) -> Result<Snapshot, ReadError> {
    let owner = process_owner(pid).ok_or(ReadError::NoProcess(pid))?;
    // SAFETY: getuid has no preconditions.
    if owner != unsafe { libc::getuid() } {
        return Err(ReadError::OtherUser(pid));
    }
    let name = CString::new(region_name(pid)).unwrap_or_default();
    // SAFETY: read-only open of the region.
    let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EACCES) => ReadError::OtherUser(pid),
            _ => ReadError::NotVvram(pid),
        });
    }
    let base = map(fd, false).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    let region = Region { base, name, owner: None };
    // SAFETY: the header is at the start of the mapping.
    let header = unsafe { &*(region.base as *const Header) };
    let (magic, region_pid) = unsafe { ((region.base as *const u64).read(), (region.base as *const u64).add(1).read()) };
    if magic != MAGIC || region_pid != pid as u64 {
        return Err(ReadError::Corrupt("unexpected header".into()));
    }
    for _ in 0..1000 {
        let before = header.sequence.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let length = (header.length.load(Ordering::Relaxed) as usize).min(REGION_SIZE - HEADER);
        let mut text = vec![0u8; length];
        // SAFETY: within the mapping; a torn read is detected by the sequence check.
        unsafe { std::ptr::copy_nonoverlapping(region.base.add(HEADER), text.as_mut_ptr(), length) };
        fence(Ordering::Acquire);
        if header.sequence.load(Ordering::Relaxed) == before {
            if length == 0 {
                return Err(ReadError::NotVvram(pid));
            }
            return serde_json::from_slice(&text).map_err(|e| ReadError::Corrupt(e.to_string()));
        }
    }
    Err(ReadError::Corrupt("the writer never finished a snapshot".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(allocations: u64) -> Snapshot {
        Snapshot {
            version: "0".into(),
            pid: std::process::id(),
            policy: Some("p.toml".into()),
            active: true,
            phase: Some("load".into()),
            tag: None,
            devices: vec![DeviceSnapshot {
                device: 0,
                reported_total: 3 << 30,
                allocations,
                tiers: vec![TierSnapshot { tier: "local".into(), used: 1 << 30, capacity: 1 << 30 }],
            }],
            host_pool_bytes: 0,
            allocations,
            frees: 0,
            out_of_memory: 0,
            fast_h2d_bytes: 0,
            errors: 0,
        }
    }

    #[test]
    fn a_published_snapshot_reads_back_and_the_region_is_private() {
        let region = Region::create().unwrap();
        let pid = std::process::id();
        assert_eq!(read(pid), Err(ReadError::NotVvram(pid)));
        region.publish(&snapshot(3));
        assert_eq!(read(pid).unwrap(), snapshot(3));
        region.publish(&snapshot(4));
        assert_eq!(read(pid).unwrap().allocations, 4);
        let mode = std::fs::metadata(format!("/dev/shm{}", region_name(pid))).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.unwrap() & 0o777, 0o600);
        drop(region);
        assert_eq!(read(pid), Err(ReadError::NotVvram(pid)));
    }

    #[test]
    fn missing_processes_are_named() {
        assert_eq!(read(u32::MAX - 1), Err(ReadError::NoProcess(u32::MAX - 1)));
        if unsafe { libc::getuid() } != 0 {
            assert_eq!(read(1), Err(ReadError::OtherUser(1)));
        }
    }
}
