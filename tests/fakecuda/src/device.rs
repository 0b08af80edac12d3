//! Initialisation, devices and contexts.

use super::*;

thread_local! {
    /// The current context: device index + 1, or 0 for none.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

pub(crate) fn device_index(device: CUdevice) -> Result<usize, CUresult> {
    usize::try_from(device).ok().filter(|d| *d < config().devices.len()).ok_or(result::INVALID_DEVICE)
}

pub(crate) fn context_handle(device: usize) -> CUcontext {
    (0xC000_0000usize + device * 0x1000) as CUcontext
}

pub(crate) fn context_device(context: CUcontext) -> Result<usize, CUresult> {
    let value = (context as usize).wrapping_sub(0xC000_0000);
    if value.is_multiple_of(0x1000) && value / 0x1000 < config().devices.len() {
        Ok(value / 0x1000)
    } else {
        Err(result::INVALID_CONTEXT)
    }
}

pub(crate) fn current_device() -> Result<usize, CUresult> {
    match CURRENT.with(Cell::get) {
        0 => Err(result::INVALID_CONTEXT),
        n => Ok(n - 1),
    }
}


#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CUresult {
    entry("cuInit", false, || {
        if flags != 0 {
            return Err(result::INVALID_VALUE);
        }
        if config().devices.is_empty() {
            return Err(result::NO_DEVICE);
        }
        INITIALIZED.store(true, Ordering::Release);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    entry("cuDriverGetVersion", false, || unsafe { out(version, 13000) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    entry("cuDeviceGet", true, || unsafe { out(device, device_index(ordinal)? as CUdevice) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    entry("cuDeviceGetCount", true, || unsafe { out(count, config().devices.len() as c_int) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
    entry("cuDeviceGetName", true, || {
        device_index(device)?;
        write_c_string(name, len, &config().name)
    })
}

fn write_c_string(target: *mut c_char, len: c_int, text: &str) -> Outcome {
    if target.is_null() || len <= 0 {
        return Err(result::INVALID_VALUE);
    }
    let bytes = text.as_bytes();
    let n = bytes.len().min(len as usize - 1);
    // SAFETY: the caller gave a buffer of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), target as *mut u8, n);
        *target.add(n) = 0;
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: CUdevice) -> CUresult {
    entry("cuDeviceTotalMem_v2", true, || unsafe { out(bytes, config().devices[device_index(device)?] as usize) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: CUdevice) -> CUresult {
    entry("cuDeviceGetAttribute", true, || {
        let device = device_index(device)?;
        unsafe { out(value, attributes::value(attribute, device).ok_or(result::INVALID_VALUE)?) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetPCIBusId(bus_id: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
    entry("cuDeviceGetPCIBusId", true, || {
        let device = device_index(device)?;
        write_c_string(bus_id, len, &format!("00000000:{:02X}:00.0", attributes::pci_bus(device)))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(can: *mut c_int, device: CUdevice, peer: CUdevice) -> CUresult {
    entry("cuDeviceCanAccessPeer", true, || {
        let (a, b) = (device_index(device)?, device_index(peer)?);
        unsafe { out(can, config().peers[a][b] as c_int) }
    })
}

/// How many times each device's primary context is retained; it is active while above 0.
fn primary_retains() -> &'static [AtomicUsize] {
    static RETAINS: OnceLock<Vec<AtomicUsize>> = OnceLock::new();
    RETAINS.get_or_init(|| config().devices.iter().map(|_| AtomicUsize::new(0)).collect())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(context: *mut CUcontext, device: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRetain", true, || {
        let device = device_index(device)?;
        unsafe { out(context, context_handle(device))? };
        if primary_retains()[device].fetch_add(1, Ordering::AcqRel) == 0 && config().context_ms > 0 {
            // Creating a context takes the driver a while (FAKECUDA_CTX_MS).
            std::thread::sleep(std::time::Duration::from_millis(config().context_ms));
        }
        Ok(())
    })
}

fn primary_release(device: CUdevice) -> Outcome {
    let retains = &primary_retains()[device_index(device)?];
    retains.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).map(|_| ()).map_err(|_| result::INVALID_CONTEXT)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(device: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRelease_v2", true, || primary_release(device))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease(device: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRelease", true, || primary_release(device))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(device: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CUresult {
    entry("cuDevicePrimaryCtxGetState", true, || {
        let retained = primary_retains()[device_index(device)?].load(Ordering::Acquire) > 0;
        unsafe {
            out(flags, 0)?;
            out(active, retained as c_int)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSetCurrent(context: CUcontext) -> CUresult {
    entry("cuCtxSetCurrent", true, || {
        let value = if context.is_null() { 0 } else { context_device(context)? + 1 };
        CURRENT.with(|c| c.set(value));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(context: *mut CUcontext) -> CUresult {
    entry("cuCtxGetCurrent", true, || {
        let handle = current_device().map_or(std::ptr::null_mut(), context_handle);
        unsafe { out(context, handle) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    entry("cuCtxGetDevice", true, || unsafe { out(device, current_device()? as CUdevice) })
}

/// The device of `context`, or of the current context when it is null (the CUDA 13
/// entry points that take a context).
fn device_of_context(context: CUcontext) -> Result<usize, CUresult> {
    if context.is_null() { current_device() } else { context_device(context) }
}

/// `cuCtxGetDevice_v2` (CUDA 13): the device of a given context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice_v2(device: *mut CUdevice, context: CUcontext) -> CUresult {
    entry("cuCtxGetDevice_v2", true, || unsafe { out(device, device_of_context(context)? as CUdevice) })
}

/// Waits for the current context's streams only, as the driver does.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    entry("cuCtxSynchronize", true, || {
        let device = current_device()?;
        capture::forbid_context_sync(device)?;
        stream::synchronize_device(device);
        Ok(())
    })
}

/// `cuCtxSynchronize_v2` (CUDA 13): waits for a given context's streams.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSynchronize_v2(context: CUcontext) -> CUresult {
    entry("cuCtxSynchronize_v2", true, || {
        let device = device_of_context(context)?;
        capture::forbid_context_sync(device)?;
        stream::synchronize_device(device);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxEnablePeerAccess(peer: CUcontext, flags: c_uint) -> CUresult {
    entry("cuCtxEnablePeerAccess", true, || {
        let (me, other) = (current_device()?, context_device(peer)?);
        if flags != 0 {
            return Err(result::INVALID_VALUE);
        }
        if !config().peers[me][other] {
            return Err(result::PEER_ACCESS_UNSUPPORTED);
        }
        Ok(())
    })
}
