//! The three doors into the driver, all answered from one table of hooked symbols:
//! the exported symbols themselves (direct ELF binding), `dlsym` on a driver handle, and
//! `cuGetProcAddress` / `cuGetProcAddress_v2` (libcudart's path).

use crate::hooks;
use crate::real::{ensure_real_dlsym, real, real_address};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use vvram_cuda::{CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, CUresult, result};

/// A hooked driver symbol and the shim's replacement.
pub struct Hook {
    /// The exact exported name.
    pub name: &'static CStr,
    /// The shim's function with the same C signature.
    pub address: *const c_void,
}

// SAFETY: function addresses are immutable.
unsafe impl Sync for Hook {}

macro_rules! hook_table {
    ($($name:ident),* $(,)?) => {
        /// Every symbol the shim hooks. Exports, `dlsym` answers and `cuGetProcAddress`
        /// substitutions all come from this table.
        pub static HOOKS: &[Hook] = &[
            $(Hook { name: match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(name) => name,
                Err(_) => panic!("hook names are valid C strings"),
            }, address: hooks::$name as *const c_void }),*
        ];
    };
}

hook_table!(
    cuGetProcAddress,
    cuGetProcAddress_v2,
    cuMemAlloc_v2,
    cuMemAllocPitch_v2,
    cuMemFree_v2,
    cuMemAllocAsync,
    cuMemAllocAsync_ptsz,
    cuMemAllocFromPoolAsync,
    cuMemAllocFromPoolAsync_ptsz,
    cuMemFreeAsync,
    cuMemFreeAsync_ptsz,
    cuMemGetInfo_v2,
    cuDeviceTotalMem_v2,
    cuMemGetAddressRange_v2,
    cuPointerGetAttribute,
    cuPointerGetAttributes,
    cuMemcpy,
    cuMemcpy_ptds,
    cuMemcpyAsync,
    cuMemcpyAsync_ptsz,
    cuMemcpyHtoD_v2,
    cuMemcpyHtoD_v2_ptds,
    cuMemcpyHtoDAsync_v2,
    cuMemcpyHtoDAsync_v2_ptsz,
    cuMemCreate,
    cuMemRelease,
    cuLaunchKernel,
    cuLaunchKernel_ptsz,
    cuLaunchKernelEx,
    cuLaunchKernelEx_ptsz,
    cuLaunchCooperativeKernel,
    cuLaunchCooperativeKernel_ptsz,
    cuGraphLaunch,
    cuGraphLaunch_ptsz,
    cuModuleUnload,
    cuLibraryUnload,
    cuMemcpyDtoH_v2,
    cuMemcpyDtoH_v2_ptds,
    cuMemcpyDtoHAsync_v2,
    cuMemcpyDtoHAsync_v2_ptsz,
    cuMemcpyDtoD_v2,
    cuMemcpyDtoD_v2_ptds,
    cuMemcpyDtoDAsync_v2,
    cuMemcpyDtoDAsync_v2_ptsz,
    cuMemsetD8_v2,
    cuMemsetD32_v2,
    cuMemsetD8Async,
    cuMemsetD32Async,
    cuMemRetainAllocationHandle,
    cuIpcGetMemHandle,
    cuStreamBeginCapture_v2,
    cuStreamBeginCapture_v2_ptsz,
    cuStreamEndCapture,
    cuStreamEndCapture_ptsz,
    cuStreamDestroy_v2,
    cuTensorMapEncodeTiled,
    cuTensorMapEncodeIm2col,
);

/// The hook for an exact symbol name. Allocation-free and lock-free.
fn hook_named(name: &[u8]) -> Option<*const c_void> {
    if !name.starts_with(b"cu") {
        return None;
    }
    HOOKS.iter().find(|h| h.name.to_bytes() == name).map(|h| h.address)
}

/// Decides a `dlsym` call: the hook's address, or null to forward to the real `dlsym`.
extern "C" fn decide_dlsym(handle: *mut c_void, name: *const c_char) -> *const c_void {
    ensure_real_dlsym();
    if name.is_null() || handle == libc::RTLD_NEXT {
        return std::ptr::null();
    }
    // SAFETY: dlsym's contract: `name` is a C string.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    hook_named(name).unwrap_or(std::ptr::null())
}

/// `dlsym`: answers hooked driver names from the table and tail-jumps to the real
/// `dlsym` for everything else, so `RTLD_NEXT` still resolves relative to the caller.
/// Unversioned, it interposes both `dlsym@GLIBC_2.2.5` and `dlsym@GLIBC_2.34` references.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "endbr64",
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {decide}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 2f",
        "ret",
        "2:",
        "jmp qword ptr [rip + {real}]",
        decide = sym decide_dlsym,
        real = sym crate::real::REAL_DLSYM,
    )
}

/// The driver's own addresses of the hooked symbols, in table order.
fn real_addresses() -> &'static [usize] {
    static ADDRESSES: OnceLock<Vec<usize>> = OnceLock::new();
    ADDRESSES.get_or_init(|| HOOKS.iter().map(|h| real_address(h.name) as usize).collect())
}

/// The hook standing in for a real driver address, if it is a hooked symbol's.
fn substitute(address: *mut c_void) -> Option<*const c_void> {
    let index = real_addresses().iter().position(|a| *a != 0 && *a == address as usize)?;
    Some(HOOKS[index].address)
}

/// The hook for the variant of `base` that `cuGetProcAddress` answers at `version` with
/// `flags`, by name (vvram_cuda's table of variants).
fn hook_by_variant(base: &[u8], version: c_int, flags: u64) -> Option<*const c_void> {
    let base = std::str::from_utf8(base).ok()?;
    let per_thread = flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM != 0;
    let variant = vvram_cuda::answered(base, version, per_thread)?;
    hook_named(variant.symbol.as_bytes())
}

/// After the real `cuGetProcAddress*` answered: put the hook in place of a hooked symbol.
/// The real call chose the variant by `cudaVersion` and `flags` (`_ptsz`/`_ptds`) and
/// set `symbolStatus`; the hook table has a hook per variant. The driver's address is
/// matched first; a driver that answers a hooked name with another address than its
/// exported symbol's (a trampoline, an internal entry) is answered by name and version,
/// with a warning once: vvram is never bypassed silently.
unsafe fn substitute_answer(code: CUresult, pfn: *mut *mut c_void, symbol: *const c_char, version: c_int, flags: u64) -> CUresult {
    if code != result::SUCCESS || pfn.is_null() || symbol.is_null() {
        return code;
    }
    // SAFETY: the real driver just wrote it.
    let answered = unsafe { *pfn };
    // Null, or already a hook: a driver whose own table binds to the exported symbols
    // answers with whatever `LD_PRELOAD` put first.
    if answered.is_null() || HOOKS.iter().any(|h| std::ptr::eq(h.address, answered as *const c_void)) {
        return code;
    }
    if let Some(hook) = substitute(answered) {
        unsafe { *pfn = hook as *mut c_void };
        return code;
    }
    let name = unsafe { CStr::from_ptr(symbol) }.to_bytes();
    if let Some(hook) = hook_by_variant(name, version, flags) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            crate::log::init();
            tracing::warn!(
                symbol = %String::from_utf8_lossy(name),
                version,
                "cuGetProcAddress answered a hooked entry point with another address than its exported symbol: substituting by name and version"
            );
        }
        unsafe { *pfn = hook as *mut c_void };
    }
    code
}

/// Door three, 5-argument form: the real call first, then substitution.
pub unsafe fn get_proc_address_v2(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64, status: *mut c_int) -> CUresult {
    let Some(real_get) = real().api.cuGetProcAddress_v2 else {
        return result::NOT_FOUND;
    };
    // SAFETY: the application's arguments, passed through.
    let code = unsafe { real_get(symbol, pfn, version, flags, status) };
    unsafe { substitute_answer(code, pfn, symbol, version, flags) }
}

/// Door three, 4-argument form (asked for below version 12000).
pub unsafe fn get_proc_address(symbol: *const c_char, pfn: *mut *mut c_void, version: c_int, flags: u64) -> CUresult {
    let code = match (real().api.cuGetProcAddress, real().api.cuGetProcAddress_v2) {
        // SAFETY: the application's arguments, passed through.
        (Some(real_get), _) => unsafe { real_get(symbol, pfn, version, flags) },
        (None, Some(real_get)) => unsafe { real_get(symbol, pfn, version, flags, std::ptr::null_mut()) },
        (None, None) => return result::NOT_FOUND,
    };
    unsafe { substitute_answer(code, pfn, symbol, version, flags) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_is_a_driver_entry_point_named_once() {
        let mut names: Vec<&[u8]> = HOOKS.iter().map(|h| h.name.to_bytes()).collect();
        for name in &names {
            let name = std::str::from_utf8(name).unwrap();
            assert!(vvram_cuda::DriverApi::NAMES.contains(&name), "{name} is not in the driver table");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), HOOKS.len());
    }

    #[test]
    fn every_hook_is_a_variant_cu_get_proc_address_answers() {
        for hook in HOOKS {
            let name = hook.name.to_str().unwrap();
            let variant = vvram_cuda::variant(name).unwrap_or_else(|| panic!("{name} has no cuGetProcAddress variant"));
            let flags = if variant.per_thread { CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM } else { 0 };
            assert_eq!(hook_by_variant(variant.base.as_bytes(), variant.version(), flags), Some(hook.address), "{name}");
        }
        assert_eq!(hook_by_variant(b"cuMemAlloc", 2000, 0), None, "the 32-bit cuMemAlloc of CUDA 2.0 is not hooked");
    }

    #[test]
    fn dlsym_answers_exact_names_only() {
        assert!(hook_named(b"cuMemAlloc_v2").is_some());
        assert!(hook_named(b"cuMemAlloc").is_none());
        assert!(hook_named(b"cuMemAlloc_v2x").is_none());
        assert!(hook_named(b"cudnnCreate").is_none());
        assert!(hook_named(b"malloc").is_none());
    }
}
