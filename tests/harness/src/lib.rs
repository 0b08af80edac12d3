//! A small client of the CUDA driver API, loaded the way applications load it, used by
//! the test programs here on the fake driver and on real GPUs.

pub mod fake;


use std::ffi::{CString, c_int, c_void};
use vvram_cuda::{CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, DriverApi, result};

/// How the program reaches the driver's entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `dlsym` on the `libcuda.so.1` handle, by exact symbol name (PyTorch's DriverAPI).
    Dlsym,
    /// `cuGetProcAddress_v2` by base name at version 12000 (libcudart's path).
    ProcAddress,
    /// `cuGetProcAddress_v2` with `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
    ProcAddressPerThread,
}

impl std::str::FromStr for Door {
    type Err = String;

    fn from_str(text: &str) -> Result<Door, String> {
        match text {
            "dlsym" => Ok(Door::Dlsym),
            "procaddress" => Ok(Door::ProcAddress),
            "procaddress-ptds" => Ok(Door::ProcAddressPerThread),
            _ => Err(format!("unknown door `{text}`: expected dlsym, procaddress or procaddress-ptds")),
        }
    }
}

/// The loaded driver.
pub struct Cuda {
    /// Entry points.
    pub api: DriverApi,
    /// The `libcuda.so.1` handle.
    pub handle: *mut c_void,
}

pub use vvram_cuda::{CallError, check};

impl Cuda {
    /// Opens `libcuda.so.1` and resolves every entry point through `door`.
    pub fn load(door: Door) -> Result<Cuda, String> {
        let driver = vvram_cuda::Driver::open()?;
        let handle = driver.handle;
        // SAFETY: plain dlsym on the driver's handle, as applications do.
        let by_dlsym = |name: &'static [u8]| unsafe { libc::dlsym(handle, name.as_ptr() as *const _) };
        let api = match door {
            Door::Dlsym => driver.api,
            Door::ProcAddress | Door::ProcAddressPerThread => {
                let get = by_dlsym(b"cuGetProcAddress_v2\0");
                if get.is_null() {
                    return Err("libcuda.so.1 has no cuGetProcAddress_v2".into());
                }
                // SAFETY: cuGetProcAddress_v2 has this signature.
                let get: vvram_cuda::pfn::cuGetProcAddress_v2 = unsafe { std::mem::transmute(get) };
                let flags = if door == Door::ProcAddressPerThread { CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM } else { 0 };
                DriverApi::load(|name| {
                    let symbol = std::str::from_utf8(&name[..name.len() - 1]).unwrap_or("");
                    // Ask at a version that answers this exact variant: at 13000 the base
                    // name of `cuCtxSynchronize` gives the CUDA 13 one, which takes a context.
                    let Some(variant) = vvram_cuda::variant(symbol) else { return std::ptr::null_mut() };
                    let base = CString::new(variant.base).unwrap_or_default();
                    let mut address = std::ptr::null_mut();
                    let mut status: c_int = 0;
                    let flags = if variant.per_thread { CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM } else { flags };
                    // SAFETY: valid pointers for the outputs.
                    let code = unsafe { get(base.as_ptr(), &mut address, variant.version(), flags, &mut status) };
                    if code == result::SUCCESS { address } else { std::ptr::null_mut() }
                })
            }
        };
        Ok(Cuda { api, handle })
    }
}

/// Calls a driver entry point of a [`Cuda`] as a checked `Result`.
#[macro_export]
macro_rules! cu {
    ($cuda:expr, $name:ident ( $($arg:expr),* $(,)? )) => {
        vvram_cuda::call!($cuda.api, $name($($arg),*))
    };
}
