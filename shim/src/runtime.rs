//! The shim's state: the policy read at start-up, the memory manager built once the
//! driver is initialised, the phase and tag, and the background pool filler.

use crate::ops::RealOps;
use crate::real_call;
use std::ffi::{CStr, CString, c_int};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use vvram_allocator::{CHUNK, Driver, Location, MemoryManager};
use vvram_cuda::{CUdevice, CUresult, result};
use vvram_policy::{Plan, Tier, Machine, Policy, parse_policy, policy_from_allocation, read_policy_file, resolve, valid_name};
use vvram_stats::Region;

/// The shim's mutable state, behind one lock.
pub struct State {
    /// The policy in force (not yet resolved when `manager` is `None`).
    pub policy: Option<Policy>,
    /// Where the policy came from, for stats.
    pub policy_origin: String,
    /// The memory manager, once the policy is resolved against the machine.
    pub manager: Option<MemoryManager<RealOps>>,
    /// The current phase.
    pub phase: Option<String>,
    /// The current allocation tag.
    pub tag: Option<String>,
    /// Why the policy in force does not fit the machine, once that was found.
    pub policy_error: Option<String>,
    said_pass_through: bool,
    /// Why the machine could not be read from the driver, while it cannot.
    machine_error: Option<CUresult>,
}

static STATE: Mutex<State> = Mutex::new(State {
    policy: None,
    policy_origin: String::new(),
    manager: None,
    phase: None,
    tag: None,
    policy_error: None,
    said_pass_through: false,
    machine_error: None,
});

/// Errors seen by hooks (driver failures while placing, panics caught).
pub static HOOK_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The state, locked. A poisoned lock is recovered: a panic was already caught and counted.
pub fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The constructor: reads `VVRAM_POLICY` (a file) or `VVRAM_ALLOC` (a DisTorch2 string)
/// and `VVRAM_PHASE`. An invalid policy stops the process here, before `main`, with the
/// checker's message.
pub extern "C" fn start() {
    // SAFETY: registering plain functions; they run in the forking thread.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child)) };
    let loaded = match (std::env::var("VVRAM_POLICY"), std::env::var("VVRAM_ALLOC")) {
        (Ok(path), _) if !path.is_empty() => {
            Some(read_policy_file(&path).and_then(|text| parse_policy(&path, &text).map_err(|e| e.to_string())).map(|p| (p, path)))
        }
        (_, Ok(alloc)) if !alloc.is_empty() => Some(
            policy_from_allocation("VVRAM_ALLOC", &alloc, 0)
                .map(|p| (p, "VVRAM_ALLOC".to_string()))
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    };
    let mut state = state();
    match loaded {
        Some(Ok((policy, origin))) => {
            state.policy = Some(policy);
            state.policy_origin = origin;
        }
        Some(Err(message)) => {
            eprintln!("vvram: invalid policy, stopping: {message}");
            // SAFETY: ending the process before main; nothing to unwind.
            unsafe { libc::_exit(2) };
        }
        None => {}
    }
    match std::env::var("VVRAM_PHASE") {
        Ok(phase) if phase.is_empty() => {}
        Ok(phase) if valid_name(&phase) => state.phase = Some(phase),
        Ok(phase) => {
            eprintln!("vvram: invalid VVRAM_PHASE {:?}, stopping: expected 1–64 letters, digits, `_`, `-` or `.`", phase);
            // SAFETY: ending the process before main; nothing to unwind.
            unsafe { libc::_exit(2) };
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("vvram: invalid VVRAM_PHASE (not UTF-8), stopping: expected 1–64 letters, digits, `_`, `-` or `.`");
            // SAFETY: as above.
            unsafe { libc::_exit(2) };
        }
        Err(std::env::VarError::NotPresent) => {}
    }
}

/// Initialises the driver (the control API's path), so that a policy set through it is
/// checked against the machine at once rather than at the application's first CUDA call.
/// Idempotent, as the driver's `cuInit` is; without a driver the check stays deferred.
pub fn init_driver() {
    let code = real_call!(cuInit(0));
    if code != result::SUCCESS {
        tracing::debug!(code, "cuInit from the control API failed: policies are checked at first use");
    }
}

/// The shim's locks, as the forking thread holds them across `fork`.
type ForkGuards = (MutexGuard<'static, State>, MutexGuard<'static, Option<Region>>);

thread_local! {
    static FORK_GUARDS: std::cell::RefCell<Option<ForkGuards>> = const { std::cell::RefCell::new(None) };
}

/// Before `fork`: takes the shim's locks, so that no other thread holds one at the
/// moment of the fork (the child would inherit it locked and hang on its first call).
extern "C" fn before_fork() {
    let guards = (state(), REGION.lock().unwrap_or_else(|p| p.into_inner()));
    FORK_GUARDS.with(|held| *held.borrow_mut() = Some(guards));
}

/// Set in a child created by `fork`: the driver state it inherited is not usable there
/// (CUDA does not survive `fork`), and locks held by the parent's other threads inside the
/// driver stay locked, so the shim no longer calls the driver on its own behalf.
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

/// Whether this process is a child created by `fork` after the shim was loaded.
pub fn forked_child() -> bool {
    FORKED_CHILD.load(Ordering::Relaxed)
}

/// After `fork`, in the parent: releases the locks taken before it.
extern "C" fn after_fork_in_parent() {
    FORK_GUARDS.with(|held| held.borrow_mut().take());
}

/// After `fork`, in the child: marks it as such and releases the locks taken before it.
extern "C" fn after_fork_in_child() {
    FORKED_CHILD.store(true, Ordering::Relaxed);
    FORK_GUARDS.with(|held| held.borrow_mut().take());
}

/// The machine as the driver sees it, once the driver is initialised; the
/// driver's error while it cannot say.
fn machine() -> Result<Machine, CUresult> {
    let mut count: c_int = 0;
    match real_call!(cuDeviceGetCount(&mut count)) {
        result::SUCCESS if count > 0 => {}
        result::SUCCESS => return Err(result::NO_DEVICE),
        code => return Err(code),
    }
    let mut devices = Vec::new();
    for device in 0..count {
        let mut bytes = 0usize;
        match real_call!(cuDeviceTotalMem_v2(&mut bytes, device as CUdevice)) {
            result::SUCCESS => devices.push(bytes as u64),
            code => return Err(code),
        }
    }
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) }.max(0) as u64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    let peers = crate::probe::peers(devices.len());
    let host_unusable = crate::probe::host_tier().err();
    Ok(Machine { devices, host: pages.saturating_mul(page), peers, host_unusable })
}

/// A plan whose GPUs (compute devices and peer donors) all have a granularity that
/// divides vvram's chunks; the message names the GPU otherwise.
fn granularities_fit(plan: Plan) -> Result<Plan, String> {
    let gpus = plan.devices.iter().flat_map(|d| {
        std::iter::once(d.index).chain(d.donors.iter().filter_map(|(tier, _)| match tier {
            Tier::Peer(n) => Some(*n),
            _ => None,
        }))
    });
    crate::probe::device_granularities(gpus)?;
    Ok(plan)
}

impl State {
    /// The manager, built on first need: after the application initialised the driver,
    /// when there is a policy. A policy that does not fit the machine stops the process
    /// with the checker's message (the hooks' path: fail loudly rather than run unplaced).
    pub fn manager(&mut self) -> Option<&mut MemoryManager<RealOps>> {
        match self.try_manager() {
            Ok(manager) => manager,
            Err(error) => {
                eprintln!("vvram: the policy does not fit this machine, stopping: {error}");
                // SAFETY: a fatal configuration error; fail loudly rather than run unplaced.
                unsafe { libc::_exit(2) }
            }
        }
    }

    /// The manager as [`State::manager`] builds it, but a policy that does not fit the
    /// machine is returned as an error (and remembered) instead of ending the process:
    /// the control API's path.
    pub fn try_manager(&mut self) -> Result<Option<&mut MemoryManager<RealOps>>, String> {
        if let Some(error) = &self.policy_error {
            return Err(error.clone());
        }
        if self.manager.is_none() {
            crate::log::init();
            let Some(policy) = &self.policy else {
                if !self.said_pass_through {
                    self.said_pass_through = true;
                    eprintln!("vvram: no policy (VVRAM_POLICY or VVRAM_ALLOC): passing every CUDA call through unchanged");
                }
                return Ok(None);
            };
            let machine = match machine() {
                Ok(machine) => machine,
                Err(code) => {
                    if self.machine_error.is_none() {
                        eprintln!(
                            "vvram: the driver cannot describe the machine yet (error {code} from cuDeviceGetCount/cuDeviceTotalMem): \
                             the policy is not applied and allocations fail with that error until it can"
                        );
                    }
                    self.machine_error = Some(code);
                    return Ok(None);
                }
            };
            self.machine_error = None;
            match resolve(policy, &machine).map_err(|e| e.to_string()).and_then(granularities_fit) {
                Ok(plan) => {
                    tracing::info!(origin = %self.policy_origin, devices = plan.devices.len(), "policy resolved against the machine");
                    self.manager = Some(MemoryManager::new(RealOps, plan));
                    start_background();
                }
                Err(error) => {
                    tracing::error!(origin = %self.policy_origin, %error, "the policy does not fit this machine");
                    self.policy_error = Some(error.clone());
                    return Err(error);
                }
            }
        }
        Ok(self.manager.as_mut())
    }

    /// Why a policy is in force but not applied: the driver's error reading the machine.
    pub fn machine_error(&self) -> Option<CUresult> {
        self.machine_error.filter(|_| self.policy.is_some())
    }

    /// Replaces the policy: validated against the machine when the driver is up; applies
    /// to new allocations.
    pub fn set_policy(&mut self, policy: Policy, origin: String) -> Result<(), String> {
        match (&mut self.manager, machine()) {
            (Some(manager), Ok(machine)) => {
                let plan = resolve(&policy, &machine).map_err(|e| e.to_string()).and_then(granularities_fit)?;
                manager.set_plan(plan);
            }
            (None, Ok(machine)) => {
                resolve(&policy, &machine).map_err(|e| e.to_string()).and_then(granularities_fit)?;
            }
            (_, Err(_)) => {}
        }
        self.policy = Some(policy);
        self.policy_origin = origin;
        self.policy_error = None;
        Ok(())
    }
}

/// How often the background thread publishes statistics.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The shared-memory statistics region, removed at exit and on a terminating signal.
static REGION: Mutex<Option<Region>> = Mutex::new(None);

extern "C" fn remove_region() {
    REGION.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// The background thread, off the application's threads: keeps the pinned host pool
/// filled, publishes statistics for `vvram stats` and keeps the working set on the compute
/// devices (`working_set::tick`).
fn start_background() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    match Region::create() {
        Ok(region) => {
            if let Err(e) = region.remove_on_termination_signals() {
                tracing::warn!(error = %e, "cannot arm removal of the statistics region on SIGTERM/SIGINT/SIGHUP");
            }
            *REGION.lock().unwrap_or_else(|p| p.into_inner()) = Some(region);
            // SAFETY: registering a plain function.
            unsafe { libc::atexit(remove_region) };
        }
        Err(e) => tracing::warn!(error = %e, "cannot create the statistics region: `vvram stats` will not see this process"),
    }
    let spawned = std::thread::Builder::new().name("vvram-background".into()).spawn(|| {
        let mut context = std::ptr::null_mut();
        let device = state().manager.as_ref().and_then(|m| m.plan().devices.first().map(|d| d.index)).unwrap_or(0);
        if real_call!(cuDevicePrimaryCtxRetain(&mut context, device as CUdevice)) == result::SUCCESS {
            real_call!(cuCtxSetCurrent(context));
        }
        let mut published = String::new();
        let mut last_publish = Instant::now() - PUBLISH_EVERY;
        let mut last_tick = Instant::now();
        loop {
            if last_tick.elapsed() >= crate::working_set::TICK {
                last_tick = Instant::now();
                let mut state = state();
                if let Some(manager) = state.manager.as_mut() {
                    let ticked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::working_set::tick(manager)));
                    if ticked.is_err() {
                        HOOK_ERRORS.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("panic caught in the working set's background turn");
                    }
                }
            }
            if last_publish.elapsed() >= PUBLISH_EVERY {
                last_publish = Instant::now();
                let snapshot = crate::control::snapshot();
                let json = snapshot.to_json();
                if json != published {
                    if let Some(region) = REGION.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        region.publish(&snapshot);
                    }
                    published = json;
                }
            }
            // Pinning is slow (3.4-5 GB/s): the chunk is made without the lock, so that the
            // application's allocations never wait for it.
            let wants = state().manager.as_ref().is_some_and(|m| m.pool_wants_chunk());
            let filled = wants.then(|| {
                RealOps.create(CHUNK, Location::Host).map(|handle| {
                    match state().manager.as_mut() {
                        Some(manager) => manager.add_to_pool(handle),
                        None => drop(RealOps.release(handle)),
                    }
                    true
                })
            });
            match filled {
                Some(Ok(true)) => continue,
                Some(Err(code)) => {
                    tracing::warn!(code, "pinning host memory ahead failed; will retry");
                    std::thread::sleep(Duration::from_secs(1));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the background thread: host memory will be pinned on demand");
    }
}

/// Warns once when ComfyUI's Dynamic VRAM (comfy-aimdo) is loaded in the process: it
/// patches libcuda's allocation functions itself and the two managers would fight.
pub fn check_for_aimdo() {
    // Lock-free: this runs on every allocation. At most one scan per second, by one thread.
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static NEXT_CHECK_MS: AtomicU64 = AtomicU64::new(0);
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.load(Ordering::Relaxed) {
        return;
    }
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let due = NEXT_CHECK_MS.load(Ordering::Relaxed);
    if now < due || NEXT_CHECK_MS.compare_exchange(due, now + 1000, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    if aimdo_loaded() && !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "vvram: ComfyUI's Dynamic VRAM (comfy-aimdo) is loaded: it patches libcuda's allocation calls \
             itself and will fight vvram. Start ComfyUI with --disable-dynamic-vram under vvram \
             (vvram run --policy POLICY -- python main.py --disable-dynamic-vram)."
        );
        tracing::info!("comfy-aimdo detected in the process");
    }
}

/// Whether comfy-aimdo's native library is in the process: a loaded object whose file
/// name (not its directory) contains "aimdo" and that exports `aimdo_setup_hooks`, its
/// hook installer. A name alone is not enough: any path may contain the word.
pub fn aimdo_loaded() -> bool {
    loaded_objects_named("aimdo").iter().any(|path| exports(path, c"aimdo_setup_hooks"))
}

/// The paths of the loaded shared objects whose file name contains `needle`.
fn loaded_objects_named(needle: &str) -> Vec<CString> {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes valid info; data is our (needle, found) pair.
        let (needle, found) = unsafe { &mut *(data as *mut (&str, Vec<CString>)) };
        let name = unsafe { (*info).dlpi_name };
        if name.is_null() {
            return 0;
        }
        let name = unsafe { CStr::from_ptr(name) };
        let path = name.to_bytes();
        let file = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        if file.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(name.to_owned());
        }
        0
    }
    let mut search = (needle, Vec::new());
    // SAFETY: the callback only reads the loader's list and appends to our vector.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut (&str, Vec<CString>) as *mut libc::c_void) };
    search.1
}

/// Whether the already loaded object at `path` exports `symbol`.
fn exports(path: &CStr, symbol: &CStr) -> bool {
    // SAFETY: RTLD_NOLOAD only finds an object already loaded; the handle is closed again.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    if handle.is_null() {
        return false;
    }
    let found = !crate::real::real_dlsym(handle, symbol).is_null();
    unsafe { libc::dlclose(handle) };
    found
}
