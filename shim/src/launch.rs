//! The launch hooks: `cuLaunchKernel`, `cuLaunchKernelEx`, `cuLaunchCooperativeKernel`
//! (each with `_ptsz`) and `cuGraphLaunch`.
//!
//! Every 8-byte word of the parameters is looked up in the lock-free donor-extent table
//! (`kernelParams` by the sizes `cuFuncGetParamInfo` / `cuKernelGetParamInfo` give,
//! cached per function handle; a packed `extra` buffer whole). A launch with no donor
//! word passes straight through, untouched and without a lock. Otherwise the device's
//! engine stages what it needs and the launch goes out with a copy of the parameters in
//! which every word inside a staged extent points at the same offset of its copy. A
//! 128-byte parameter that is a recorded tensor-map descriptor (`tensor_map`) whose
//! global address lies in a donor extent references that extent; with a staged copy it
//! is re-encoded for the copy instead of being scanned word by word. Launch attributes
//! of `cuLaunchKernelEx` pass through unchanged.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use crate::real::real;
use crate::real_call;
use crate::staging::{self, ACTIVE, LAUNCHES_SEEN, UNSCANNED_LAUNCHES, stream_key, with_current};
use crate::tensor_map;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void};
use crate::hooks::guard;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use vvram_cuda::*;
use vvram_engine::{DESCRIPTOR_BYTES, Hit, Translation, rewrite};
use crate::working_set;

/// Distinct donor extents one launch can have translated; more are read in place.
const MAX_REFS: usize = 32;
/// Tensor-map parameters one launch can have re-encoded; more are scanned as words.
const MAX_MAPS: usize = 8;
/// Function handles whose parameter layout is cached.
const LAYOUT_SLOTS: usize = 1 << 14;
/// Slots probed per lookup.
const PROBES: usize = 32;

/// A function's parameter sizes, or `None` when the driver gives no layout.
type Layout = Option<Box<[u32]>>;

struct LayoutSlot {
    function: AtomicUsize,
    layout: AtomicPtr<Layout>,
}

/// Bumped when a module or library is unloaded: its function handles may be reused by
/// another kernel with another layout, so older cache entries no longer match.
static LAYOUT_GENERATION: AtomicUsize = AtomicUsize::new(0);

static LAYOUTS: [LayoutSlot; LAYOUT_SLOTS] =
    [const { LayoutSlot { function: AtomicUsize::new(0), layout: AtomicPtr::new(std::ptr::null_mut()) } }; LAYOUT_SLOTS];

type ParamInfo = unsafe extern "C" fn(*mut c_void, usize, *mut usize, *mut usize) -> CUresult;

/// `cuKernelGetParamInfo`: on driver 580 only `cuGetProcAddress` gives it.
fn kernel_param_info() -> Option<ParamInfo> {
    static FOUND: OnceLock<Option<ParamInfo>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        if let Some(f) = real().api.cuKernelGetParamInfo {
            return Some(f);
        }
        let get = real().api.cuGetProcAddress_v2?;
        let mut address = std::ptr::null_mut();
        let mut status: c_int = 0;
        // SAFETY: valid output pointers; the symbol name is a C string.
        let code = unsafe { get(c"cuKernelGetParamInfo".as_ptr() as *const c_char, &mut address, 12040, 0, &mut status) };
        // SAFETY: the driver's cuKernelGetParamInfo has this signature.
        (code == result::SUCCESS && !address.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, ParamInfo>(address) })
    })
}

/// Asks the driver for a function's parameter sizes: `cuFuncGetParamInfo`, or
/// `cuKernelGetParamInfo` for the `CUkernel` handles libcudart launches.
fn query_layout(function: CUfunction) -> Layout {
    let getters = [real().api.cuFuncGetParamInfo, kernel_param_info()];
    for getter in getters.into_iter().flatten() {
        let mut sizes = Vec::new();
        loop {
            let (mut offset, mut size) = (0usize, 0usize);
            // SAFETY: valid output pointers.
            match unsafe { getter(function, sizes.len(), &mut offset, &mut size) } {
                result::SUCCESS => sizes.push(size as u32),
                result::INVALID_VALUE => return Some(sizes.into_boxed_slice()),
                _ => break,
            }
        }
    }
    None
}

/// The cached parameter layout of `function`; `None` when the driver gives none (or the
/// cache is full: such launches are counted as unscanned).
fn layout_of(function: CUfunction) -> Option<&'static [u32]> {
    if function.is_null() {
        return None;
    }
    let key = function as usize ^ (LAYOUT_GENERATION.load(Ordering::Acquire) << 52);
    let hash = (key >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50;
    for probe in 0..PROBES {
        let slot = &LAYOUTS[(hash + probe) % LAYOUT_SLOTS];
        let mut owner = slot.function.load(Ordering::Acquire);
        if owner == 0 {
            owner = match slot.function.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let layout: &'static Layout = Box::leak(Box::new(query_layout(function)));
                    slot.layout.store(layout as *const Layout as *mut Layout, Ordering::Release);
                    return layout.as_deref();
                }
                Err(current) => current,
            };
        }
        if owner == key {
            let layout = slot.layout.load(Ordering::Acquire);
            if layout.is_null() {
                // Another thread is asking the driver right now: this launch goes unscanned.
                return None;
            }
            // SAFETY: layouts are leaked, never freed.
            return unsafe { (*layout).as_deref() };
        }
    }
    None
}

/// The packed buffer of an `extra` array (`CU_LAUNCH_PARAM_BUFFER_POINTER` / `_SIZE`).
unsafe fn packed(extra: *mut *mut c_void) -> Option<(*mut c_void, usize)> {
    if extra.is_null() {
        return None;
    }
    let (mut buffer, mut size) = (std::ptr::null_mut(), None);
    for i in (0..16).step_by(2) {
        // SAFETY: the driver's contract: pairs up to CU_LAUNCH_PARAM_END.
        let (key, value) = unsafe { (*extra.add(i) as usize, *extra.add(i + 1)) };
        match key {
            CU_LAUNCH_PARAM_END => break,
            CU_LAUNCH_PARAM_BUFFER_POINTER => buffer = value,
            CU_LAUNCH_PARAM_BUFFER_SIZE if !value.is_null() => size = Some(unsafe { *(value as *const usize) }),
            _ => return None,
        }
    }
    size.filter(|_| !buffer.is_null()).map(|s| (buffer, s))
}

/// The extents one launch references: the donor ones (for the engine), the use records
/// of all, whether one is being moved, and which parameters are tensor maps that point
/// into a donor extent.
struct Refs {
    bases: [u64; MAX_REFS],
    len: usize,
    slots: [u32; MAX_REFS],
    slot_count: usize,
    /// More extents than `slots` holds: the launch is treated as using any extent.
    overflow: bool,
    moving: bool,
    maps: [u16; MAX_MAPS],
    map_count: usize,
}

impl Refs {
    /// Whether parameter `index` is a recorded tensor map pointing into a donor extent
    /// (then referenced); such a parameter is re-encoded, not scanned.
    fn tensor_map(&mut self, index: usize, bytes: &[u8]) -> bool {
        let Ok(descriptor) = <&[u8; DESCRIPTOR_BYTES]>::try_from(bytes) else { return false };
        let Some(maps) = tensor_map::recorded().filter(|_| self.map_count < MAX_MAPS) else { return false };
        let Some(hit) = maps.find(descriptor).and_then(|e| staging::table().find(e.address)) else { return false };
        self.add(hit);
        if !hit.donor {
            // Memory on the card: the launch uses it (a move must know), nothing to re-encode.
            return false;
        }
        self.maps[self.map_count] = index as u16;
        self.map_count += 1;
        true
    }

    fn add(&mut self, hit: Hit) {
        self.moving |= hit.moving;
        if !self.slots[..self.slot_count].contains(&hit.slot) {
            if self.slot_count < MAX_REFS {
                self.slots[self.slot_count] = hit.slot;
                self.slot_count += 1;
            } else {
                self.overflow = true;
            }
        }
        if hit.donor && !self.bases[..self.len].contains(&hit.base) && self.len < MAX_REFS {
            self.bases[self.len] = hit.base;
            self.len += 1;
        }
    }
}

/// Per-thread buffers for translated parameters (kept between launches).
#[derive(Default)]
struct Scratch {
    translations: Vec<Translation>,
    bytes: Vec<u8>,
    pointers: Vec<*mut c_void>,
    extra: [*mut c_void; 5],
    extra_size: usize,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The parameters as the application passed them.
#[derive(Clone, Copy)]
struct Params {
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
}

/// Scans a launch and issues it through `issue`, translated where the engine has copies.
unsafe fn launch(hook: &'static str, function: CUfunction, stream: usize, given: Params, issue: impl Fn(Params) -> CUresult) -> CUresult {
    if !ACTIVE.load(Ordering::Relaxed) {
        return issue(given);
    }
    LAUNCHES_SEEN.fetch_add(1, Ordering::Relaxed);
    let table = staging::table();
    let (_entered, refs, layout) = loop {
        let mut refs =
            Refs { bases: [0; MAX_REFS], len: 0, slots: [0; MAX_REFS], slot_count: 0, overflow: false, moving: false, maps: [0; MAX_MAPS], map_count: 0 };
        let mut layout: &[u32] = &[];
        let mut version = table.version();
        if !given.params.is_null() {
            let Some(found) = layout_of(function) else {
                UNSCANNED_LAUNCHES.fetch_add(1, Ordering::Relaxed);
                let _blind = working_set::enter_blind();
                return issue(given);
            };
            layout = found;
            for (i, &size) in layout.iter().enumerate() {
                // SAFETY: the driver's contract: one pointer per parameter, each to `size` bytes.
                let bytes = unsafe { staging::bytes(*given.params.add(i), size as usize) };
                if size as usize == DESCRIPTOR_BYTES && refs.tensor_map(i, bytes) {
                    continue;
                }
                version = version.min(table.scan(bytes, |_, hit| refs.add(hit)));
            }
        } else if let Some((buffer, size)) = unsafe { packed(given.extra) } {
            version = version.min(table.scan(unsafe { staging::bytes(buffer, size) }, |_, hit| refs.add(hit)));
        } else if !given.extra.is_null() {
            // An `extra` array not in the packed form: its parameters cannot be read.
            UNSCANNED_LAUNCHES.fetch_add(1, Ordering::Relaxed);
            let _blind = working_set::enter_blind();
            return issue(given);
        }
        if refs.slot_count == 0 && refs.len == 0 {
            // No vvram extent: nothing a move or the engine must know about.
            return issue(given);
        }
        // Counted as in flight before the table may change again; a table replaced since
        // the scan (a move may have begun) means scanning again. A launch with more
        // extents than are recorded waits for any move under way instead.
        let entered = if refs.overflow { working_set::enter_blind() } else { working_set::enter() };
        if table.version() != version {
            continue;
        }
        if !refs.moving {
            break (entered, refs, layout);
        }
        drop(entered);
        working_set::wait_for_moves();
    };
    refs.slots[..refs.slot_count].iter().for_each(|slot| table.record_use(*slot, stream));
    if refs.len == 0 {
        return issue(given);
    }
    if staging::capturing(stream) {
        // A graph replays later, when a staged copy may be gone: read in place (graph
        // launches write dirty copies back first).
        staging::CAPTURED_LAUNCHES.fetch_add(1, Ordering::Relaxed);
        return issue(given);
    }
    guard(hook, || unsafe { translated(stream, given, layout, &refs, &issue) })
}

/// The slow path: the device's engine prepares the references, the launch goes out with
/// translated parameters, the engine records it and stages what comes next.
unsafe fn translated(stream: usize, given: Params, layout: &[u32], refs: &Refs, issue: &impl Fn(Params) -> CUresult) -> CUresult {
    let bases = &refs.bases[..refs.len];
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let scratch = &mut *scratch;
        let outcome = with_current(|engine| {
            if let Err(code) = engine.prepare_launch(stream, bases, &mut scratch.translations) {
                staging::count_error("prepare_launch", code);
                return issue(given);
            }
            let issued = if scratch.translations.iter().any(|t| t.copy.is_some()) {
                let params = unsafe { translate(scratch, given, layout, &refs.maps[..refs.map_count]) };
                issue(params)
            } else {
                issue(given)
            };
            if issued == result::SUCCESS
                && let Err(code) = engine.finish_launch(stream, &scratch.translations)
            {
                staging::count_error("finish_launch", code);
            }
            issued
        });
        outcome.unwrap_or_else(|| issue(given))
    })
}

/// A tensor-map parameter re-encoded in place for the staged copy of its extent; `false`
/// when its extent has no copy, its record is gone or the driver refuses.
fn reencode(descriptor: &mut [u8], translations: &[Translation]) -> bool {
    let Ok(key) = <&[u8; DESCRIPTOR_BYTES]>::try_from(&*descriptor) else { return false };
    let Some(encoding) = tensor_map::recorded().and_then(|maps| maps.find(key)) else { return false };
    let copy = translations.iter().find(|t| t.base <= encoding.address && encoding.address < t.end).and_then(|t| t.copy.map(|c| c + (encoding.address - t.base)));
    copy.is_some_and(|address| tensor_map::reencode(&encoding, address, descriptor))
}

/// Copies of the parameters with every word inside a staged extent rewritten, and every
/// tensor map in `maps` (parameter indices) re-encoded for its copy.
unsafe fn translate(scratch: &mut Scratch, given: Params, layout: &[u32], maps: &[u16]) -> Params {
    let Scratch { translations, bytes, pointers, extra, extra_size } = scratch;
    if !given.params.is_null() {
        let total: usize = layout.iter().map(|s| (*s as usize).next_multiple_of(16)).sum();
        bytes.clear();
        bytes.reserve(total);
        pointers.clear();
        for (i, &size) in layout.iter().enumerate() {
            let original = unsafe { *given.params.add(i) };
            let start = bytes.len();
            bytes.extend_from_slice(unsafe { staging::bytes(original, size as usize) });
            bytes.resize(start + (size as usize).next_multiple_of(16), 0);
            let param = &mut bytes[start..start + size as usize];
            let changed = if maps.contains(&(i as u16)) { reencode(param, translations) } else { rewrite(param, translations) > 0 };
            // The buffer was reserved whole: pointers into it stay valid.
            pointers.push(if changed { unsafe { bytes.as_mut_ptr().add(start) as *mut c_void } } else { original });
        }
        return Params { params: pointers.as_mut_ptr(), extra: given.extra };
    }
    let Some((buffer, size)) = (unsafe { packed(given.extra) }) else { return given };
    bytes.clear();
    bytes.extend_from_slice(unsafe { staging::bytes(buffer, size) });
    rewrite(bytes, translations);
    *extra_size = size;
    *extra = [
        CU_LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
        bytes.as_mut_ptr() as *mut c_void,
        CU_LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
        extra_size as *mut usize as *mut c_void,
        CU_LAUNCH_PARAM_END as *mut c_void,
    ];
    Params { params: given.params, extra: extra.as_mut_ptr() }
}

macro_rules! launch_kernel {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            function: CUfunction,
            gx: c_uint, gy: c_uint, gz: c_uint,
            bx: c_uint, by: c_uint, bz: c_uint,
            shared: c_uint,
            stream: CUstream,
            params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> CUresult {
            guard(stringify!($name), || unsafe {
                launch(stringify!($name), function, stream_key(stream, $per_thread), Params { params, extra }, |p| {
                    real_call!($name(function, gx, gy, gz, bx, by, bz, shared, stream, p.params, p.extra))
                })
            })
        }
    };
}

launch_kernel!(cuLaunchKernel, false);
launch_kernel!(cuLaunchKernel_ptsz, true);

macro_rules! launch_kernel_ex {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(config: *const CUlaunchConfig, function: CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void) -> CUresult {
            guard(stringify!($name), || unsafe {
                let Some(stream) = config.as_ref().map(|c| c.hStream) else { return real_call!($name(config, function, params, extra)) };
                launch(stringify!($name), function, stream_key(stream, $per_thread), Params { params, extra }, |p| {
                    real_call!($name(config, function, p.params, p.extra))
                })
            })
        }
    };
}

launch_kernel_ex!(cuLaunchKernelEx, false);
launch_kernel_ex!(cuLaunchKernelEx_ptsz, true);

macro_rules! launch_cooperative {
    ($name:ident, $per_thread:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            function: CUfunction,
            gx: c_uint, gy: c_uint, gz: c_uint,
            bx: c_uint, by: c_uint, bz: c_uint,
            shared: c_uint,
            stream: CUstream,
            params: *mut *mut c_void,
        ) -> CUresult {
            guard(stringify!($name), || unsafe {
                let given = Params { params, extra: std::ptr::null_mut() };
                launch(stringify!($name), function, stream_key(stream, $per_thread), given, |p| {
                    real_call!($name(function, gx, gy, gz, bx, by, bz, shared, stream, p.params))
                })
            })
        }
    };
}

launch_cooperative!(cuLaunchCooperativeKernel, false);
launch_cooperative!(cuLaunchCooperativeKernel_ptsz, true);

/// Unloading a module or library retires the cached parameter layouts of its functions.
fn unload(issue: impl FnOnce() -> CUresult) -> CUresult {
    let code = issue();
    if code == result::SUCCESS {
        LAYOUT_GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    code
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleUnload(module: CUmodule) -> CUresult {
    guard("cuModuleUnload", || unload(|| real_call!(cuModuleUnload(module))))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLibraryUnload(library: CUlibrary) -> CUresult {
    guard("cuLibraryUnload", || unload(|| real_call!(cuLibraryUnload(library))))
}

/// A graph launch is not translated: dirty staged copies are written back before it and
/// every staged copy is dropped after it (it may write donor extents).
unsafe fn graph_launch(stream: usize, issue: impl FnOnce() -> CUresult) -> CUresult {
    if !ACTIVE.load(Ordering::Relaxed) {
        return issue();
    }
    let _blind = working_set::enter_blind();
    if let Some(Err(code)) = with_current(|engine| engine.before_graph(stream)) {
        staging::count_error("before_graph", code);
    }
    let code = issue();
    if code == result::SUCCESS
        && let Some(Err(code)) = with_current(|engine| engine.after_graph(stream))
    {
        staging::count_error("after_graph", code);
    }
    code
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch(graph: CUgraphExec, stream: CUstream) -> CUresult {
    guard("cuGraphLaunch", || unsafe { graph_launch(stream_key(stream, false), || real_call!(cuGraphLaunch(graph, stream))) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch_ptsz(graph: CUgraphExec, stream: CUstream) -> CUresult {
    guard("cuGraphLaunch_ptsz", || unsafe { graph_launch(stream_key(stream, true), || real_call!(cuGraphLaunch_ptsz(graph, stream))) })
}
