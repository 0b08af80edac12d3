//! The allocator's `Driver` over the real CUDA driver.

use crate::real_call;
use std::ffi::c_void;
use vvram_allocator::{CHUNK, Driver, EventId, Handle, Location};
use vvram_cuda::*;

/// Virtual memory operations on the real driver, in the calling thread's context.
pub struct RealOps;

fn check(code: CUresult) -> Result<(), CUresult> {
    if code == result::SUCCESS { Ok(()) } else { Err(code) }
}

/// The `CUmemLocation` of a tier's physical memory.
pub fn mem_location(location: Location) -> CUmemLocation {
    match location {
        Location::Device(n) => CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: n as i32 },
        Location::Host => crate::probe::host_location(),
    }
}

/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 2;

impl Driver for RealOps {
    fn reserve(&self, size: u64) -> Result<u64, CUresult> {
        let mut address = 0;
        check(real_call!(cuMemAddressReserve(&mut address, size as usize, CHUNK as usize, 0, 0)))?;
        Ok(address)
    }

    fn free_reservation(&self, address: u64, size: u64) -> Result<(), CUresult> {
        check(real_call!(cuMemAddressFree(address, size as usize)))
    }

    fn create(&self, size: u64, location: Location) -> Result<Handle, CUresult> {
        let mut handle = 0;
        let prop = CUmemAllocationProp::pinned(mem_location(location));
        check(real_call!(cuMemCreate(&mut handle, size as usize, &prop, 0)))?;
        Ok(handle)
    }

    fn release(&self, handle: Handle) -> Result<(), CUresult> {
        check(real_call!(cuMemRelease(handle)))
    }

    fn map(&self, address: u64, size: u64, handle: Handle) -> Result<(), CUresult> {
        check(real_call!(cuMemMap(address, size as usize, 0, handle, 0)))
    }

    fn unmap(&self, address: u64, size: u64) -> Result<(), CUresult> {
        check(real_call!(cuMemUnmap(address, size as usize)))
    }

    fn set_access(&self, address: u64, size: u64, device: u32, host: bool) -> Result<(), CUresult> {
        let read_write = |location| CUmemAccessDesc { location, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        let mut descs = vec![read_write(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: device as i32 })];
        if host {
            descs.push(read_write(crate::probe::host_access_location()));
        }
        check(real_call!(cuMemSetAccess(address, size as usize, descs.as_ptr(), descs.len())))
    }

    fn synchronize(&self) -> Result<(), CUresult> {
        check(real_call!(cuCtxSynchronize()))
    }

    fn record_event(&self, stream: u64) -> Result<EventId, CUresult> {
        let mut event = std::ptr::null_mut();
        check(real_call!(cuEventCreate(&mut event, EVENT_DISABLE_TIMING)))?;
        if let Err(code) = check(real_call!(cuEventRecord(event, stream as *mut c_void))) {
            real_call!(cuEventDestroy_v2(event));
            return Err(code);
        }
        Ok(event as EventId)
    }

    fn event_complete(&self, event: EventId) -> Result<bool, CUresult> {
        match real_call!(cuEventQuery(event as *mut c_void)) {
            result::SUCCESS => Ok(true),
            result::NOT_READY => Ok(false),
            code => Err(code),
        }
    }

    fn destroy_event(&self, event: EventId) {
        real_call!(cuEventDestroy_v2(event as *mut c_void));
    }
}

/// Waits until the work of every context that may use vvram memory has finished: the
/// current context, then each GPU's primary context that is active (the application may
/// have queued work on one GPU and free the memory from another's context, and
/// `cuCtxSynchronize` waits for the current context only). The current context is
/// restored.
pub fn synchronize_every_context() -> Result<(), CUresult> {
    let mut current = std::ptr::null_mut();
    check(real_call!(cuCtxGetCurrent(&mut current)))?;
    if !current.is_null() {
        check(real_call!(cuCtxSynchronize()))?;
    }
    let mut count = 0;
    check(real_call!(cuDeviceGetCount(&mut count)))?;
    let mut outcome = Ok(());
    for device in 0..count {
        let (mut flags, mut active) = (0, 0);
        if real_call!(cuDevicePrimaryCtxGetState(device, &mut flags, &mut active)) != result::SUCCESS || active == 0 {
            continue;
        }
        let mut primary = std::ptr::null_mut();
        if real_call!(cuDevicePrimaryCtxRetain(&mut primary, device)) != result::SUCCESS {
            continue;
        }
        if primary != current {
            real_call!(cuCtxSetCurrent(primary));
            outcome = outcome.and(check(real_call!(cuCtxSynchronize())));
        }
        real_call!(cuDevicePrimaryCtxRelease_v2(device));
    }
    real_call!(cuCtxSetCurrent(current));
    outcome
}
