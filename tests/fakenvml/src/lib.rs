//! A fake `libnvidia-ml.so.1` for tests without a GPU, beside the fake driver.
//!
//! PyTorch resolves a handful of NVML functions when its allocator first needs them (the
//! expandable-segments path asks whether the GPU has a fabric; out-of-memory messages
//! list the processes on the GPU) and calls them without checking that they resolved,
//! so a process on the fake driver needs an NVML too. This one describes the same
//! devices as the fake driver: `FAKECUDA_DEVICES` gives their number (NVML, like the real
//! one, ignores `CUDA_VISIBLE_DEVICES`), `FAKECUDA_NAME` their name; PCI bus ids and
//! UUIDs are the fake driver's. It answers:
//!
//! | function | answer |
//! |---|---|
//! | `nvmlInit_v2`, `nvmlInitWithFlags`, `nvmlShutdown` | counted; every other call before init is `NVML_ERROR_UNINITIALIZED` |
//! | `nvmlSystemGetCudaDriverVersion(_v2)` | 13000 |
//! | `nvmlDeviceGetCount_v2`, `nvmlDeviceGetHandleByIndex_v2`, `nvmlDeviceGetHandleByPciBusId_v2`, `nvmlDeviceGetIndex` | the fake's devices |
//! | `nvmlDeviceGetName`, `nvmlDeviceGetUUID` | as the fake driver names them |
//! | `nvmlDeviceGetComputeRunningProcesses` | no processes |
//! | `nvmlDeviceGetNvLinkRemoteDeviceType`, `nvmlDeviceGetNvLinkRemotePciInfo_v2` | `NVML_ERROR_NOT_SUPPORTED`: no NVLink |
//! | `nvmlDeviceGetGpuFabricInfoV` | fabric state "not supported", as a PCIe card |
//! | `nvmlErrorString` | the code's description |

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `nvmlReturn_t`.
type NvmlReturn = c_uint;

const SUCCESS: NvmlReturn = 0;
const UNINITIALIZED: NvmlReturn = 1;
const INVALID_ARGUMENT: NvmlReturn = 2;
const NOT_SUPPORTED: NvmlReturn = 3;
const NOT_FOUND: NvmlReturn = 6;
const INSUFFICIENT_SIZE: NvmlReturn = 7;
const VERSION_MISMATCH: NvmlReturn = 25;

/// The driver version the fake driver reports.
const CUDA_DRIVER_VERSION: c_int = 13000;

/// How many times NVML is initialised (`nvmlShutdown` undoes one).
static INITIALISED: AtomicUsize = AtomicUsize::new(0);

/// The machine's device count, from `FAKECUDA_DEVICES` as the fake driver reads it.
fn device_count() -> usize {
    match std::env::var("FAKECUDA_DEVICES") {
        Ok(list) if !list.trim().is_empty() => list.split(',').count(),
        _ => 1,
    }
}

fn device_name() -> String {
    std::env::var("FAKECUDA_NAME").ok().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "fakecuda GPU".to_string())
}

/// The PCI bus of a device, as the fake driver numbers them (domain 0, device 0).
fn pci_bus(device: usize) -> usize {
    0x18 + device
}

/// The UUID the fake driver gives the device, in NVML's text form.
fn uuid_text(device: usize) -> String {
    let mut id = *b"fakecuda-gpu-\0\0\0";
    id[13..].copy_from_slice(&(device as u32).to_be_bytes()[1..]);
    let hex = |range: std::ops::Range<usize>| id[range].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("GPU-{}-{}-{}-{}-{}", hex(0..4), hex(4..6), hex(6..8), hex(8..10), hex(10..16))
}

/// Opaque device handles: addresses in this array.
static HANDLES: [u8; 64] = [0; 64];

fn handle(device: usize) -> *mut c_void {
    HANDLES.as_ptr().wrapping_add(device) as *mut c_void
}

fn device_of(handle: *mut c_void) -> Result<usize, NvmlReturn> {
    let offset = (handle as usize).wrapping_sub(HANDLES.as_ptr() as usize);
    if offset < device_count().min(HANDLES.len()) { Ok(offset) } else { Err(INVALID_ARGUMENT) }
}

/// Runs a call: the initialisation check, no unwinding into C.
fn call(body: impl FnOnce() -> Result<(), NvmlReturn>) -> NvmlReturn {
    if INITIALISED.load(Ordering::Acquire) == 0 {
        return UNINITIALIZED;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => INVALID_ARGUMENT,
    }
}

unsafe fn out<T>(pointer: *mut T, value: T) -> Result<(), NvmlReturn> {
    if pointer.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: the caller passed a non-null output pointer, as the API requires.
    unsafe { pointer.write(value) };
    Ok(())
}

/// Copies `text` and its NUL into a caller's buffer of `len` bytes.
unsafe fn out_text(target: *mut c_char, len: c_uint, text: &str) -> Result<(), NvmlReturn> {
    if target.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    if text.len() + 1 > len as usize {
        return Err(INSUFFICIENT_SIZE);
    }
    // SAFETY: the buffer holds `len` bytes, more than the text and its NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), target as *mut u8, text.len());
        *target.add(text.len()) = 0;
    }
    Ok(())
}

/// Parses a PCI bus id (`DOMAIN:BUS:DEVICE.FUNCTION`, hexadecimal) into (domain, bus, device).
fn parse_bus_id(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split(':');
    let (domain, bus, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let device = rest.split('.').next()?;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    Some((hex(domain)?, hex(bus)?, hex(device)?))
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    INITIALISED.fetch_add(1, Ordering::AcqRel);
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    nvmlInit_v2()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    match INITIALISED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
        Ok(_) => SUCCESS,
        Err(_) => UNINITIALIZED,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(code: NvmlReturn) -> *const c_char {
    let text: &CStr = match code {
        SUCCESS => c"Success",
        UNINITIALIZED => c"Uninitialized",
        INVALID_ARGUMENT => c"Invalid Argument",
        NOT_SUPPORTED => c"Not Supported",
        NOT_FOUND => c"Not Found",
        INSUFFICIENT_SIZE => c"Insufficient Size",
        VERSION_MISMATCH => c"Version Mismatch",
        _ => c"Unknown Error",
    };
    text.as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> NvmlReturn {
    call(|| unsafe { out(version, CUDA_DRIVER_VERSION) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> NvmlReturn {
    call(|| unsafe { out(version, CUDA_DRIVER_VERSION) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    call(|| unsafe { out(count, device_count() as c_uint) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut *mut c_void) -> NvmlReturn {
    call(|| {
        let index = index as usize;
        if index >= device_count() {
            return Err(INVALID_ARGUMENT);
        }
        unsafe { out(device, handle(index)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(bus_id: *const c_char, device: *mut *mut c_void) -> NvmlReturn {
    call(|| {
        if bus_id.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(bus_id) }.to_string_lossy();
        let (domain, bus, dev) = parse_bus_id(&text).ok_or(INVALID_ARGUMENT)?;
        let index = (0..device_count()).find(|&d| domain == 0 && dev == 0 && bus as usize == pci_bus(d)).ok_or(NOT_FOUND)?;
        unsafe { out(device, handle(index)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: *mut c_void, index: *mut c_uint) -> NvmlReturn {
    call(|| unsafe { out(index, device_of(device)? as c_uint) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: *mut c_void, name: *mut c_char, len: c_uint) -> NvmlReturn {
    call(|| {
        device_of(device)?;
        unsafe { out_text(name, len, &device_name()) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: *mut c_void, uuid: *mut c_char, len: c_uint) -> NvmlReturn {
    call(|| unsafe { out_text(uuid, len, &uuid_text(device_of(device)?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(device: *mut c_void, count: *mut c_uint, _infos: *mut c_void) -> NvmlReturn {
    call(|| {
        device_of(device)?;
        unsafe { out(count, 0) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemoteDeviceType(device: *mut c_void, _link: c_uint, _kind: *mut c_uint) -> NvmlReturn {
    call(|| device_of(device).and(Err(NOT_SUPPORTED)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(device: *mut c_void, _link: c_uint, _pci: *mut c_void) -> NvmlReturn {
    call(|| device_of(device).and(Err(NOT_SUPPORTED)))
}

/// Bytes of `nvmlGpuFabricInfoV_t` up to and including its `state` field.
const FABRIC_INFO_STATE_END: usize = 29;
/// Offset of `status` and of `state` in `nvmlGpuFabricInfoV_t`.
const FABRIC_INFO_STATUS: usize = 20;
const FABRIC_INFO_STATE: usize = 28;
/// `NVML_GPU_FABRIC_STATE_NOT_SUPPORTED`.
const FABRIC_STATE_NOT_SUPPORTED: u8 = 0;

/// A GPU outside any NVLink fabric, as a PCIe card answers: success, state "not
/// supported". The structure's size is in the low 24 bits of its `version` field.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuFabricInfoV(device: *mut c_void, info: *mut c_void) -> NvmlReturn {
    call(|| {
        device_of(device)?;
        if info.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let bytes = info as *mut u8;
        // SAFETY: the caller's structure starts with its version word, which gives its size.
        unsafe {
            let size = ((bytes as *const u32).read_unaligned() & 0x00FF_FFFF) as usize;
            if size < FABRIC_INFO_STATE_END {
                return Err(VERSION_MISMATCH);
            }
            std::ptr::write_bytes(bytes.add(4), 0, size - 4);
            (bytes.add(FABRIC_INFO_STATUS) as *mut u32).write_unaligned(SUCCESS);
            bytes.add(FABRIC_INFO_STATE).write(FABRIC_STATE_NOT_SUPPORTED);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_parse_in_both_domain_widths() {
        assert_eq!(parse_bus_id("00000000:18:00.0"), Some((0, 0x18, 0)));
        assert_eq!(parse_bus_id("0000:1A:00.0"), Some((0, 0x1A, 0)));
        assert_eq!(parse_bus_id("garbage"), None);
    }

    #[test]
    fn uuids_have_nvmls_form_and_the_fake_drivers_bytes() {
        let text = uuid_text(1);
        assert_eq!(text.len(), 40);
        assert!(text.starts_with("GPU-66616b65-"), "{text}");
        assert!(text.ends_with("000001"), "{text}");
    }

    #[test]
    fn calls_before_init_are_refused_and_after_answered() {
        let mut count = 0;
        // The test binary shares one NVML state: only this test initialises it.
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut count) }, UNINITIALIZED);
        assert_eq!(nvmlInit_v2(), SUCCESS);
        assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut count) }, SUCCESS);
        assert!(count >= 1);
        let mut device = std::ptr::null_mut();
        assert_eq!(unsafe { nvmlDeviceGetHandleByPciBusId_v2(c"00000000:18:00.0".as_ptr(), &mut device) }, SUCCESS);
        assert_eq!(device, handle(0));
        assert_eq!(unsafe { nvmlDeviceGetHandleByPciBusId_v2(c"0000:7f:00.0".as_ptr(), &mut device) }, NOT_FOUND);
        let mut processes = 5;
        assert_eq!(unsafe { nvmlDeviceGetComputeRunningProcesses(device, &mut processes, std::ptr::null_mut()) }, SUCCESS);
        assert_eq!(processes, 0);
        let mut fabric = [0xFFu8; 40];
        fabric[..4].copy_from_slice(&(40u32 | 3 << 24).to_le_bytes());
        assert_eq!(unsafe { nvmlDeviceGetGpuFabricInfoV(device, fabric.as_mut_ptr() as *mut c_void) }, SUCCESS);
        assert_eq!(fabric[FABRIC_INFO_STATE], FABRIC_STATE_NOT_SUPPORTED);
        assert!(fabric[4..].iter().all(|b| *b == 0));
        fabric[..4].copy_from_slice(&(8u32 | 3 << 24).to_le_bytes());
        assert_eq!(unsafe { nvmlDeviceGetGpuFabricInfoV(device, fabric.as_mut_ptr() as *mut c_void) }, VERSION_MISMATCH);
        assert_eq!(nvmlShutdown(), SUCCESS);
        assert_eq!(nvmlShutdown(), UNINITIALIZED);
    }
}
