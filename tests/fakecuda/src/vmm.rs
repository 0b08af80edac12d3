//! Virtual memory management: reservations, physical allocations, mappings, access.

use super::*;

fn place_of(location: &CUmemLocation) -> Result<Place, CUresult> {
    match location.type_ {
        CU_MEM_LOCATION_TYPE_DEVICE => device_index(location.id).map(Place::Device),
        CU_MEM_LOCATION_TYPE_HOST | CU_MEM_LOCATION_TYPE_HOST_NUMA | CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT => Ok(Place::Host),
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
    _flags: u64,
) -> CUresult {
    entry("cuMemCreate", true, || {
        let prop = unsafe { prop.as_ref() }.ok_or(result::INVALID_VALUE)?;
        if prop.type_ != CU_MEM_ALLOCATION_TYPE_PINNED {
            return Err(result::INVALID_VALUE);
        }
        unsafe { out(handle, memory::create(size as u64, place_of(&prop.location)?)?) }
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

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const CUmemAccessDesc, count: usize) -> CUresult {
    entry("cuMemSetAccess", true, || {
        if desc.is_null() || count == 0 {
            return Err(result::INVALID_VALUE);
        }
        let descs = unsafe { std::slice::from_raw_parts(desc, count) };
        let mut protection = libc::PROT_NONE;
        for d in descs {
            place_of(&d.location)?;
            protection |= match d.flags {
                CU_MEM_ACCESS_FLAGS_PROT_NONE => libc::PROT_NONE,
                CU_MEM_ACCESS_FLAGS_PROT_READ => libc::PROT_READ,
                CU_MEM_ACCESS_FLAGS_PROT_READWRITE => libc::PROT_READ | libc::PROT_WRITE,
                _ => return Err(result::INVALID_VALUE),
            };
        }
        memory::set_access(ptr, size as u64, protection)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(granularity: *mut usize, prop: *const CUmemAllocationProp, _option: c_uint) -> CUresult {
    entry("cuMemGetAllocationGranularity", true, || {
        let prop = unsafe { prop.as_ref() }.ok_or(result::INVALID_VALUE)?;
        place_of(&prop.location)?;
        unsafe { out(granularity, memory::GRANULARITY as usize) }
    })
}
