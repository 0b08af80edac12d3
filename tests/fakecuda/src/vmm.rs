//! Virtual memory management: reservations, physical allocations, mappings, access.

use super::*;

/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`.
const HANDLE_TYPE_POSIX_FD: c_uint = 0x1;
/// `CU_MEM_HANDLE_TYPE_FABRIC`.
const HANDLE_TYPE_FABRIC: c_uint = 0x8;

/// Where `cuMemCreate` (or a granularity query) puts memory: a valid device, `HOST`, or
/// `HOST_NUMA` with the id of a NUMA node; `HOST_NUMA_CURRENT` and anything else are
/// refused with `CUDA_ERROR_INVALID_VALUE`, as the driver documents. Host locations need
/// host VMM support.
fn place_of(location: &CUmemLocation) -> Result<Place, CUresult> {
    let config = config();
    match location.type_ {
        CU_MEM_LOCATION_TYPE_DEVICE => device_index(location.id).map(Place::Device),
        CU_MEM_LOCATION_TYPE_HOST | CU_MEM_LOCATION_TYPE_HOST_NUMA if !config.host_vmm => Err(result::NOT_SUPPORTED),
        CU_MEM_LOCATION_TYPE_HOST => Ok(Place::Host),
        CU_MEM_LOCATION_TYPE_HOST_NUMA if config.is_numa_node(location.id) => Ok(Place::Host),
        _ => Err(result::INVALID_VALUE),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAddressReserve(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, _flags: u64) -> CUresult {
    entry("cuMemAddressReserve", true, || unsafe { out(ptr, memory::reserve(size as u64, alignment as u64, addr)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> CUresult {
    entry("cuMemAddressFree", true, || memory::release_reservation(ptr, size as u64))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: u64,
) -> CUresult {
    entry("cuMemCreate", true, || {
        let prop = unsafe { prop.as_ref() }.ok_or(result::INVALID_VALUE)?;
        if prop.type_ != CU_MEM_ALLOCATION_TYPE_PINNED || flags != 0 || handle.is_null() {
            return Err(result::INVALID_VALUE);
        }
        let place = place_of(&prop.location)?;
        let types = prop.requestedHandleTypes;
        // Linux: file descriptors or fabric handles only; HOST memory is not shareable.
        if types & !(HANDLE_TYPE_POSIX_FD | HANDLE_TYPE_FABRIC) != 0
            || (prop.location.type_ == CU_MEM_LOCATION_TYPE_HOST && types != 0)
        {
            return Err(result::INVALID_VALUE);
        }
        if types & HANDLE_TYPE_FABRIC != 0 {
            // No IMEX channel on this machine.
            return Err(result::NOT_PERMITTED);
        }
        unsafe { out(handle, memory::create(size as u64, place)?) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
    entry("cuMemRelease", true, || memory::release(handle))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: CUmemGenericAllocationHandle, flags: u64) -> CUresult {
    entry("cuMemMap", true, || {
        if flags != 0 {
            return Err(result::INVALID_VALUE);
        }
        memory::map(ptr, size as u64, offset as u64, handle)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult {
    entry("cuMemUnmap", true, || memory::unmap(ptr, size as u64))
}

fn protection(flags: c_uint) -> Result<i32, CUresult> {
    match flags {
        CU_MEM_ACCESS_FLAGS_PROT_NONE => Ok(libc::PROT_NONE),
        CU_MEM_ACCESS_FLAGS_PROT_READ => Ok(libc::PROT_READ),
        CU_MEM_ACCESS_FLAGS_PROT_READWRITE => Ok(memory::READ_WRITE),
        _ => Err(result::INVALID_VALUE),
    }
}

/// `cuMemSetAccess`: a device may be given access to its own memory, to host memory, and
/// to a peer's memory where the peer matrix allows it; the CPU (a `HOST_NUMA` location,
/// or `HOST` where the driver accepts it) to host-located memory only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) -> CUresult {
    entry("cuMemSetAccess", true, || {
        if desc.is_null() || count == 0 {
            return Err(result::INVALID_VALUE);
        }
        let descs = unsafe { std::slice::from_raw_parts(desc, count) };
        let places = memory::places(ptr, size as u64)?;
        let config = config();
        let (mut device, mut cpu) = (Vec::new(), None);
        for d in descs {
            let granted = protection(d.flags)?;
            match d.location.type_ {
                CU_MEM_LOCATION_TYPE_DEVICE => {
                    let me = device_index(d.location.id)?;
                    let reachable = places.iter().all(|p| match p {
                        Place::Device(owner) => *owner == me || config.peers[me][*owner],
                        Place::Host => true,
                    });
                    if !reachable {
                        return Err(result::INVALID_DEVICE);
                    }
                    device.push((me, granted));
                }
                kind @ (CU_MEM_LOCATION_TYPE_HOST_NUMA | CU_MEM_LOCATION_TYPE_HOST) => {
                    if !config.host_access.contains(&kind) || places.iter().any(|p| *p != Place::Host) {
                        return Err(result::INVALID_VALUE);
                    }
                    cpu = Some(cpu.unwrap_or(libc::PROT_NONE) | granted);
                }
                _ => return Err(result::INVALID_VALUE),
            }
        }
        memory::set_access(ptr, size as u64, &device, cpu)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(granularity: *mut usize, prop: *const CUmemAllocationProp, option: c_uint) -> CUresult {
    entry("cuMemGetAllocationGranularity", true, || {
        let prop = unsafe { prop.as_ref() }.ok_or(result::INVALID_VALUE)?;
        if option > 1 {
            return Err(result::INVALID_VALUE);
        }
        unsafe { out(granularity, memory::granularity(place_of(&prop.location)?) as usize) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemRetainAllocationHandle(handle: *mut CUmemGenericAllocationHandle, address: *mut c_void) -> CUresult {
    entry("cuMemRetainAllocationHandle", true, || unsafe { out(handle, memory::retain(address as u64)?) })
}
