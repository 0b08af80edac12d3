//! The region's layout and what identifies the process that wrote it.
//!
//! Header (little-endian u64 words): magic, PID, the process's start time (clock ticks
//! since boot, `/proc/PID/stat` field 22, so a reused PID is told apart), sequence
//! (odd while the writer writes), length of the JSON text that follows at [`HEADER`].

/// `VVRAMST2`: the second layout (the start time was added).
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"VVRAMST2");
/// Bytes before the JSON text.
pub(crate) const HEADER: usize = 40;
/// Offsets of the header words.
pub(crate) const PID_AT: usize = 8;
pub(crate) const START_AT: usize = 16;
pub(crate) const SEQUENCE_AT: usize = 24;
pub(crate) const LENGTH_AT: usize = 32;
/// Size of the region: the header and at most this much JSON.
pub const REGION_SIZE: usize = 256 << 10;

/// The region's name for a process (for `shm_open`; the file is `/dev/shm` + this).
pub fn region_name(pid: u32) -> String {
    format!("/vvram.{pid}")
}

/// The owner and start time of a running process, from `/proc`.
pub(crate) struct ProcessInfo {
    pub uid: u32,
    pub start_time: u64,
}

/// What `/proc` says about `pid`; `None` when no such process runs.
pub(crate) fn process_info(pid: u32) -> Option<ProcessInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let uid = line.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_time = after_name.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some(ProcessInfo { uid, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_known() {
        let me = process_info(std::process::id()).unwrap();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert!(me.start_time > 0);
        assert!(process_info(u32::MAX - 1).is_none());
    }
}
