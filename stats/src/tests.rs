//! The region's tests: round trip, and every way a hostile or stale file could fool or
//! kill the reader or the writer.

use super::*;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::{Child, Command};
use std::sync::Mutex;

/// Tests that create this process's own region run one at a time.
static OWN_REGION: Mutex<()> = Mutex::new(());

fn snapshot(allocations: u64) -> Snapshot {
    Snapshot {
        version: "0".into(),
        pid: std::process::id(),
        policy: Some("p.toml".into()),
        active: true,
        policy_error: None,
        phase: Some("load".into()),
        tag: None,
        devices: vec![DeviceSnapshot {
            device: 0,
            reported_total: 3 << 30,
            allocations,
            tiers: vec![TierSnapshot { tier: "local".into(), used: 1 << 30, capacity: 1 << 30, hot: 1 << 29, weights: 0, unknown: 1 << 29 }],
        }],
        host_pool_bytes: 0,
        allocations,
        frees: 0,
        out_of_memory: 0,
        fast_h2d_bytes: 0,
        errors: 0,
        engine: Default::default(),
        working_set: Default::default(),
    }
}

fn path(pid: u32) -> String {
    format!("/dev/shm{}", region_name(pid))
}

/// A live process of ours that is not running vvram.
struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("30").spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(path(self.pid()));
    }
}

/// Writes a file where a region would be, with `mode` and `bytes`.
fn forge(pid: u32, mode: u32, bytes: &[u8]) {
    let _ = std::fs::remove_file(path(pid));
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(mode).open(path(pid)).unwrap();
    std::fs::set_permissions(path(pid), std::fs::Permissions::from_mode(mode)).unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
}

fn header(pid: u32, start_time: u64, length: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; REGION_SIZE];
    for (i, word) in [layout::MAGIC, pid as u64, start_time, 0, length].into_iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

#[test]
fn a_published_snapshot_reads_back_and_the_region_is_private() {
    let _own = OWN_REGION.lock().unwrap_or_else(|p| p.into_inner());
    let region = Region::create().unwrap();
    let pid = std::process::id();
    assert_eq!(read(pid), Err(ReadError::NotVvram(pid)));
    region.publish(&snapshot(3));
    assert_eq!(read(pid).unwrap(), snapshot(3));
    region.publish(&snapshot(4));
    assert_eq!(read(pid).unwrap().allocations, 4);
    let mode = std::fs::metadata(path(pid)).map(|m| m.permissions().mode());
    assert_eq!(mode.unwrap() & 0o777, 0o600);
    drop(region);
    assert_eq!(read(pid), Err(ReadError::NotVvram(pid)));
}

#[test]
fn missing_processes_are_named() {
    assert_eq!(read(u32::MAX - 1), Err(ReadError::NoProcess(u32::MAX - 1)));
    if nix::unistd::getuid().as_raw() != 0 {
        assert_eq!(read(1), Err(ReadError::OtherUser(1)));
    }
}

#[test]
fn a_short_region_is_an_error_not_a_crash() {
    let sleeper = Sleeper::new();
    forge(sleeper.pid(), 0o600, &layout::MAGIC.to_le_bytes());
    assert!(matches!(read(sleeper.pid()), Err(ReadError::Corrupt(m)) if m.contains("bytes long")));
    forge(sleeper.pid(), 0o600, b"");
    assert!(matches!(read(sleeper.pid()), Err(ReadError::Corrupt(_))));
}

#[test]
fn a_region_others_may_write_is_not_shown() {
    let sleeper = Sleeper::new();
    let start = layout::process_info(sleeper.pid()).unwrap().start_time;
    let mut bytes = header(sleeper.pid(), start, 2);
    bytes[layout::HEADER..layout::HEADER + 2].copy_from_slice(b"{}");
    forge(sleeper.pid(), 0o666, &bytes);
    assert!(matches!(read(sleeper.pid()), Err(ReadError::Forged(_, m)) if m.contains("others")), "{:?}", read(sleeper.pid()));
}

#[test]
fn a_region_of_another_user_is_not_shown_and_not_used() {
    if nix::unistd::getuid().as_raw() != 0 {
        return;
    }
    let sleeper = Sleeper::new();
    let start = layout::process_info(sleeper.pid()).unwrap().start_time;
    forge(sleeper.pid(), 0o600, &header(sleeper.pid(), start, 0));
    std::os::unix::fs::chown(path(sleeper.pid()), Some(54321), Some(54321)).unwrap();
    assert!(matches!(read(sleeper.pid()), Err(ReadError::Forged(_, m)) if m.contains("uid 54321")));

    // The writer: another user's file of our name is refused and left as it was.
    let _own = OWN_REGION.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    forge(pid, 0o644, b"planted");
    std::os::unix::fs::chown(path(pid), Some(54321), Some(54321)).unwrap();
    let refused = Region::create().err().unwrap();
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(std::fs::read(path(pid)).unwrap(), b"planted");
    std::fs::remove_file(path(pid)).unwrap();
}

#[test]
fn a_stale_region_of_our_own_is_replaced() {
    let _own = OWN_REGION.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    forge(pid, 0o644, b"left by a process that had our PID");
    let region = Region::create().unwrap();
    region.publish(&snapshot(1));
    assert_eq!(read(pid).unwrap().allocations, 1);
    assert_eq!(std::fs::metadata(path(pid)).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn regions_of_dead_or_reused_pids_are_removed() {
    // The PID now belongs to another process (different start time): stale.
    let sleeper = Sleeper::new();
    let start = layout::process_info(sleeper.pid()).unwrap().start_time;
    forge(sleeper.pid(), 0o600, &header(sleeper.pid(), start + 1, 2));
    assert_eq!(read(sleeper.pid()), Err(ReadError::NotVvram(sleeper.pid())));
    assert!(!std::path::Path::new(&path(sleeper.pid())).exists());

    // The process is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    forge(dead, 0o600, &header(dead, 1, 0));
    assert!(remove_stale_regions() >= 1);
    assert!(!std::path::Path::new(&path(dead)).exists());
    forge(dead, 0o600, &header(dead, 1, 0));
    assert_eq!(read(dead), Err(ReadError::NoProcess(dead)));
    assert!(!std::path::Path::new(&path(dead)).exists());
}

#[test]
fn lengths_beyond_the_region_are_refused() {
    let sleeper = Sleeper::new();
    let start = layout::process_info(sleeper.pid()).unwrap().start_time;
    forge(sleeper.pid(), 0o600, &header(sleeper.pid(), start, u64::MAX));
    assert!(matches!(read(sleeper.pid()), Err(ReadError::Corrupt(m)) if m.contains("exceeds")));
}
