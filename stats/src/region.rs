//! The writer's side: this process's region, created exclusively, removed at exit and
//! on a terminating SIGTERM, SIGINT or SIGHUP.

use crate::Snapshot;
use crate::layout::*;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, raise, sigaction, signal};
use nix::sys::stat::{Mode, fchmod, fstat};
use nix::unistd::{ftruncate, getuid};
use std::ffi::{c_int, c_void};
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// A region mapped into this process, removed again on drop.
pub struct Region {
    base: NonNull<u8>,
    name: String,
    /// The creating process; a forked child must not remove its parent's region.
    owner: u32,
}

// SAFETY: the mapping is process-wide; writes are serialised by the writer's own lock.
unsafe impl Send for Region {}

fn owner_only() -> Mode {
    Mode::S_IRUSR | Mode::S_IWUSR
}

fn create_exclusive(name: &str) -> nix::Result<OwnedFd> {
    shm_open(name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, owner_only())
}

/// A region of our name that already exists: it is stale when our own user made it (the
/// process that had our PID is gone), and then removed; made by anyone else, it is an error.
fn remove_stale_own(name: &str) -> Result<(), std::io::Error> {
    let fd = shm_open(name, OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK, Mode::empty())?;
    let stat = fstat(&fd)?;
    if stat.st_uid != getuid().as_raw() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("/dev/shm{name} already exists and belongs to uid {}, not to this process's user: not using it", stat.st_uid),
        ));
    }
    shm_unlink(name)?;
    Ok(())
}

impl Region {
    /// Creates this process's region (owner read-write only), exclusively: a stale region
    /// of our own user with our PID is replaced, one of another user is refused.
    pub fn create() -> Result<Region, std::io::Error> {
        let pid = std::process::id();
        let start_time = process_info(pid).map_or(0, |p| p.start_time);
        let name = region_name(pid);
        let fd = match create_exclusive(&name) {
            Err(Errno::EEXIST) => {
                remove_stale_own(&name)?;
                create_exclusive(&name)?
            }
            other => other?,
        };
        let made = (|| -> nix::Result<NonNull<c_void>> {
            // shm_open's mode is masked by the umask; make it owner-only whatever the umask.
            fchmod(&fd, owner_only())?;
            ftruncate(&fd, REGION_SIZE as i64)?;
            let length = NonZeroUsize::new(REGION_SIZE).ok_or(Errno::EINVAL)?;
            // SAFETY: a fresh shared mapping of the file we just created and sized.
            unsafe { mmap(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &fd, 0) }
        })();
        let base = match made {
            Ok(base) => base.cast::<u8>(),
            Err(e) => {
                let _ = shm_unlink(name.as_str());
                return Err(e.into());
            }
        };
        let region = Region { base, name, owner: pid };
        region.word(PID_AT).store(pid as u64, Ordering::Relaxed);
        region.word(START_AT).store(start_time, Ordering::Relaxed);
        region.word(SEQUENCE_AT).store(0, Ordering::Relaxed);
        region.word(0).store(MAGIC, Ordering::Release);
        Ok(region)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: header words are 8-byte aligned inside our page-aligned mapping.
        unsafe { &*(self.base.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// Publishes a snapshot.
    pub fn publish(&self, snapshot: &Snapshot) {
        let json = snapshot.to_json();
        let bytes = &json.as_bytes()[..json.len().min(REGION_SIZE - HEADER)];
        let sequence = self.word(SEQUENCE_AT).load(Ordering::Relaxed);
        self.word(SEQUENCE_AT).store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: the text area of our mapping holds REGION_SIZE - HEADER bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr().add(HEADER), bytes.len()) };
        self.word(LENGTH_AT).store(bytes.len() as u64, Ordering::Relaxed);
        fence(Ordering::Release);
        self.word(SEQUENCE_AT).store(sequence + 2, Ordering::Release);
    }

    /// Removes the region when SIGTERM, SIGINT or SIGHUP ends the process. A handler the
    /// application installed before is chained (then the application decides, and a normal
    /// exit removes the region); an ignored signal stays ignored.
    pub fn remove_on_termination_signals(&self) -> Result<(), std::io::Error> {
        let path = format!("/dev/shm{}\0", self.name);
        let mut buffer = [0u8; 64];
        if path.len() > buffer.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "region path too long"));
        }
        buffer[..path.len()].copy_from_slice(path.as_bytes());
        if SIGNAL_PATH.set(buffer).is_err() {
            return Ok(());
        }
        SIGNAL_OWNER.store(self.owner, Ordering::Release);
        let ours = SigAction::new(SigHandler::SigAction(on_termination), SaFlags::SA_SIGINFO | SaFlags::SA_RESTART, SigSet::empty());
        for (slot, which) in TERMINATING.iter().enumerate() {
            // SAFETY: the handler only calls async-signal-safe functions (unlink, getpid,
            // signal, raise) or the previous handler.
            let previous = unsafe { sigaction(*which, &ours) }?;
            let _ = PREVIOUS[slot].set(previous);
        }
        Ok(())
    }
}

const TERMINATING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];
static PREVIOUS: [OnceLock<SigAction>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
/// `/dev/shm/vvram.PID`, NUL-terminated, for the signal handler (which must not allocate).
static SIGNAL_PATH: OnceLock<[u8; 64]> = OnceLock::new();
static SIGNAL_OWNER: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_termination(number: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let Some(slot) = TERMINATING.iter().position(|s| *s as c_int == number) else { return };
    let previous = PREVIOUS[slot].get().map_or(SigHandler::SigDfl, |a| a.handler());
    match previous {
        SigHandler::SigDfl => {
            // SAFETY: getpid and unlink are async-signal-safe; the path is NUL-terminated.
            if let Some(path) = SIGNAL_PATH.get()
                && SIGNAL_OWNER.load(Ordering::Acquire) == unsafe { libc::getpid() } as u32
            {
                unsafe { libc::unlink(path.as_ptr() as *const libc::c_char) };
            }
            // The default action, now: the signal is blocked in its handler, so it is
            // delivered (and ends the process) as the handler returns.
            let which = TERMINATING[slot];
            // SAFETY: restoring the default disposition.
            let _ = unsafe { signal(which, SigHandler::SigDfl) };
            let _ = raise(which);
        }
        SigHandler::SigIgn => {}
        SigHandler::Handler(handler) => handler(number),
        SigHandler::SigAction(handler) => handler(number, info, context),
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping of REGION_SIZE bytes.
        let _ = unsafe { munmap(self.base.cast::<c_void>(), REGION_SIZE) };
        if self.owner == std::process::id() {
            let _ = shm_unlink(self.name.as_str());
        }
    }
}
