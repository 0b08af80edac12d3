//! The real driver: the real `dlsym` (found once with `dlvsym`), the real `libcuda.so.1`
//! (or `VVRAM_REAL_LIBCUDA`), and its entry points. The shim reaches the driver only
//! through these pointers, never through its own exported hooks.

use std::ffi::{CStr, c_char, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use vvram_cuda::DriverApi;

/// The real `dlsym`, as an address (0 until found). The `dlsym` trampoline jumps through it.
pub static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);

type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

/// Finds the real `dlsym` if not yet known. Allocation-free: it can run before the
/// shim's constructor, when another preloaded library calls `dlsym`.
pub fn ensure_real_dlsym() -> usize {
    let known = REAL_DLSYM.load(Ordering::Acquire);
    if known != 0 {
        return known;
    }
    let mut found = std::ptr::null_mut();
    for version in [c"GLIBC_2.34", c"GLIBC_2.2.5"] {
        // SAFETY: dlvsym is not interposed by the shim; RTLD_NEXT finds libc's definition.
        found = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), version.as_ptr()) };
        if !found.is_null() {
            break;
        }
    }
    REAL_DLSYM.store(found as usize, Ordering::Release);
    found as usize
}

/// Looks `name` up with the real `dlsym`.
pub fn real_dlsym(handle: *mut c_void, name: &CStr) -> *mut c_void {
    let address = ensure_real_dlsym();
    if address == 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: the address is glibc's dlsym.
    let dlsym: DlsymFn = unsafe { std::mem::transmute(address) };
    unsafe { dlsym(handle, name.as_ptr()) }
}

/// The real driver library and its entry points.
pub struct RealDriver {
    /// Entry points by exact symbol name.
    pub api: DriverApi,
    /// The library handle.
    pub handle: usize,
}

/// The real driver, opened on first use.
pub fn real() -> &'static RealDriver {
    static REAL: OnceLock<RealDriver> = OnceLock::new();
    REAL.get_or_init(|| {
        let chosen = std::env::var("VVRAM_REAL_LIBCUDA").ok().filter(|p| !p.is_empty());
        let path = chosen.clone().unwrap_or_else(|| "libcuda.so.1".to_string());
        let c_path = std::ffi::CString::new(path.clone()).unwrap_or_default();
        // SAFETY: plain dlopen; the driver library has no constructor that calls back into us.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        let api = DriverApi::load(|name| {
            if handle.is_null() {
                return std::ptr::null_mut();
            }
            CStr::from_bytes_with_nul(name).map_or(std::ptr::null_mut(), |name| real_dlsym(handle, name))
        });
        let problem = if handle.is_null() {
            Some("cannot be opened")
        } else if api.cuInit.is_none() || api.cuGetProcAddress_v2.is_none() && api.cuGetProcAddress.is_none() {
            Some("is not a CUDA driver (no cuInit or cuGetProcAddress)")
        } else {
            None
        };
        match (problem, &chosen) {
            (Some(problem), Some(_)) => {
                eprintln!("vvram: VVRAM_REAL_LIBCUDA={path} {problem}, stopping: point it at the driver library (libcuda.so.1)");
                // SAFETY: a fatal configuration error; fail loudly rather than fail every call.
                unsafe { libc::_exit(2) };
            }
            (Some(problem), None) => eprintln!("vvram: the CUDA driver {path} {problem}: every CUDA call will fail"),
            (None, _) => {}
        }
        RealDriver { api, handle: handle as usize }
    })
}

/// The real address of a symbol in the driver library (null when it has none).
pub fn real_address(name: &CStr) -> *mut c_void {
    let handle = real().handle as *mut c_void;
    if handle.is_null() { std::ptr::null_mut() } else { real_dlsym(handle, name) }
}

/// Calls a real entry point, or answers `CUDA_ERROR_NOT_FOUND` when the driver lacks it.
#[macro_export]
macro_rules! real_call {
    ($name:ident ( $($arg:expr),* $(,)? )) => {
        match $crate::real::real().api.$name {
            Some(f) => {
                // SAFETY: the arguments are the application's, passed through unchanged.
                #[allow(unused_unsafe)]
                let code = unsafe { f($($arg),*) };
                code
            }
            None => vvram_cuda::result::NOT_FOUND,
        }
    };
}
