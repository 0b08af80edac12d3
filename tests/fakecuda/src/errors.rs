//! Error names and strings.

use super::*;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, text: *mut *const c_char) -> CUresult {
    entry("cuGetErrorName", false, || {
        let name = result::name(error).ok_or(result::INVALID_VALUE)?;
        unsafe { out(text, name.as_ptr()) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, text: *mut *const c_char) -> CUresult {
    entry("cuGetErrorString", false, || {
        let name = result::name(error).ok_or(result::INVALID_VALUE)?;
        unsafe { out(text, name.as_ptr()) }
    })
}
