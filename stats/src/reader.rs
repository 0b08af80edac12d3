//! The reader's side (`vvram stats`): trusts nothing in the region. The owner, type,
//! permissions and size are checked with `fstat`, the content is read with `pread`
//! (never mapped, so a file truncated under the reader cannot kill it), and a region
//! whose process is gone, or whose PID now belongs to another process, is stale.

use crate::Snapshot;
use crate::layout::*;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::sys::uio::pread;
use nix::unistd::getuid;
use std::os::fd::OwnedFd;

/// Why a process's statistics could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No process has this PID.
    NoProcess(u32),
    /// The process belongs to another user.
    OtherUser(u32),
    /// The process is not running vvram with an active policy.
    NotVvram(u32),
    /// The region was not made by the process's owner, or others may write it.
    Forged(u32, String),
    /// The region is there but unreadable.
    Corrupt(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NoProcess(pid) => write!(f, "no process {pid} is running"),
            ReadError::OtherUser(pid) => write!(f, "process {pid} belongs to another user: vvram's statistics are readable by their owner only"),
            ReadError::NotVvram(pid) => write!(f, "process {pid} is not running vvram with an active policy (no /dev/shm{})", region_name(*pid)),
            ReadError::Forged(pid, why) => write!(f, "/dev/shm{} is not process {pid}'s own statistics region ({why}): not shown", region_name(*pid)),
            ReadError::Corrupt(why) => write!(f, "the statistics region is unreadable: {why}"),
        }
    }
}

fn word(fd: &OwnedFd, offset: usize) -> Result<u64, ReadError> {
    let mut bytes = [0u8; 8];
    match pread(fd, &mut bytes, offset as i64) {
        Ok(8) => Ok(u64::from_le_bytes(bytes)),
        Ok(_) => Err(ReadError::Corrupt("the region is shorter than its header".into())),
        Err(e) => Err(ReadError::Corrupt(e.to_string())),
    }
}

fn open_region(pid: u32) -> nix::Result<OwnedFd> {
    shm_open(region_name(pid).as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK, Mode::empty())
}

/// Checks what `fstat` says: a regular file of the process owner's, private, of the
/// region's size.
fn check_file(fd: &OwnedFd, pid: u32, owner: u32) -> Result<(), ReadError> {
    let stat = fstat(fd).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    if stat.st_uid != owner {
        return Err(ReadError::Forged(pid, format!("it belongs to uid {}, the process to uid {owner}", stat.st_uid)));
    }
    if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Err(ReadError::Forged(pid, "not a regular file".into()));
    }
    if stat.st_mode & 0o077 != 0 {
        return Err(ReadError::Forged(pid, format!("mode {:o}: others may access it", stat.st_mode & 0o777)));
    }
    if stat.st_size != REGION_SIZE as i64 {
        return Err(ReadError::Corrupt(format!("{} bytes long, expected {REGION_SIZE}", stat.st_size)));
    }
    Ok(())
}

/// Reads the statistics of process `pid`. A region left by a process that is gone is
/// removed (when it is our own user's).
pub fn read(pid: u32) -> Result<Snapshot, ReadError> {
    let Some(process) = process_info(pid) else {
        remove_if_stale(pid);
        return Err(ReadError::NoProcess(pid));
    };
    if process.uid != getuid().as_raw() {
        return Err(ReadError::OtherUser(pid));
    }
    let fd = match open_region(pid) {
        Ok(fd) => fd,
        Err(Errno::EACCES) => return Err(ReadError::Forged(pid, "it is not readable by the process's owner".into())),
        Err(Errno::ENOENT) => return Err(ReadError::NotVvram(pid)),
        Err(e) => return Err(ReadError::Corrupt(e.to_string())),
    };
    check_file(&fd, pid, process.uid)?;
    if word(&fd, 0)? != MAGIC || word(&fd, PID_AT)? != pid as u64 {
        return Err(ReadError::Corrupt("unexpected header".into()));
    }
    if word(&fd, START_AT)? != process.start_time {
        // The PID was reused: the region is a dead process's.
        let _ = shm_unlink(region_name(pid).as_str());
        return Err(ReadError::NotVvram(pid));
    }
    let mut text = vec![0u8; REGION_SIZE - HEADER];
    for _ in 0..1000 {
        let before = word(&fd, SEQUENCE_AT)?;
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let length = word(&fd, LENGTH_AT)?;
        if length > (REGION_SIZE - HEADER) as u64 {
            return Err(ReadError::Corrupt(format!("text length {length} exceeds the region")));
        }
        let length = length as usize;
        let got = pread(&fd, &mut text[..length], HEADER as i64).map_err(|e| ReadError::Corrupt(e.to_string()))?;
        if word(&fd, SEQUENCE_AT)? == before {
            if got != length {
                return Err(ReadError::Corrupt("the region is shorter than its text".into()));
            }
            if length == 0 {
                return Err(ReadError::NotVvram(pid));
            }
            return serde_json::from_slice(&text[..length]).map_err(|e| ReadError::Corrupt(e.to_string()));
        }
    }
    Err(ReadError::Corrupt("the writer never finished a snapshot".into()))
}

/// Whether the region of `pid` is stale: its process is gone or the PID was reused.
fn stale(pid: u32) -> bool {
    let Some(process) = process_info(pid) else { return true };
    let Ok(fd) = open_region(pid) else { return false };
    matches!(word(&fd, START_AT), Ok(start) if start != process.start_time)
}

/// Removes the region of `pid` if it is stale and our own user's (other users' files in
/// the sticky `/dev/shm` cannot be removed, and are not ours to judge).
fn remove_if_stale(pid: u32) -> bool {
    let owned = open_region(pid).ok().and_then(|fd| fstat(&fd).ok()).is_some_and(|s| s.st_uid == getuid().as_raw());
    owned && stale(pid) && shm_unlink(region_name(pid).as_str()).is_ok()
}

/// Removes every stale region of our own user (left by a process that ended by SIGKILL,
/// or by a signal whose handler the application had replaced); how many it removed.
pub fn remove_stale_regions() -> usize {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else { return 0 };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("vvram.")?.parse::<u32>().ok())
        .filter(|pid| remove_if_stale(*pid))
        .count()
}
