//! `cuMemAlloc` and its kin, `cuMemFree`, and pointer queries.

use super::*;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    entry("cuMemGetInfo_v2", true, || {
        let device = current_device()?;
        let capacity = config().devices[device];
        unsafe {
            out(free, (capacity - memory::device_used(device)) as usize)?;
            out(total, capacity as usize)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    entry("cuMemAlloc_v2", true, || unsafe { out(dptr, memory::allocate(current_device()?, bytes as u64)?) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    element_size: c_uint,
) -> CUresult {
    entry("cuMemAllocPitch_v2", true, || {
        if ![4, 8, 16].contains(&element_size) || width == 0 || height == 0 {
            return Err(result::INVALID_VALUE);
        }
        let row = width.next_multiple_of(512);
        let address = memory::allocate(current_device()?, (row * height) as u64)?;
        unsafe {
            out(pitch, row)?;
            out(dptr, address)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    entry("cuMemFree_v2", true, || {
        // cuMemFree synchronises the current context, and only that one: work queued in
        // another context may still use the memory, as on a GPU.
        let device = current_device()?;
        capture::forbid_context_sync(device)?;
        stream::synchronize_device(device);
        // The pool forgets the address before it can be handed out again.
        pools::note_free(dptr);
        memory::free(dptr)
    })
}

unsafe fn alloc_async(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream, per_thread: bool) -> Outcome {
    stream_of(stream, per_thread)?;
    if dptr.is_null() {
        return Err(result::INVALID_VALUE);
    }
    let device = current_device()?;
    let address = memory::allocate(device, bytes as u64)?;
    pools::note_allocation(device, address, bytes as u64);
    unsafe { out(dptr, address) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult {
    entry("cuMemAllocAsync", true, || unsafe { alloc_async(dptr, bytes, stream, false) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(dptr: *mut CUdeviceptr, bytes: usize, stream: CUstream) -> CUresult {
    entry("cuMemAllocAsync_ptsz", true, || unsafe { alloc_async(dptr, bytes, stream, true) })
}

fn free_async(dptr: CUdeviceptr, stream: CUstream, per_thread: bool) -> Outcome {
    current_device()?;
    memory::allocation_containing(dptr).filter(|(base, _)| *base == dptr).ok_or(result::INVALID_VALUE)?;
    submit(&stream_of(stream, per_thread)?, false, move || {
        pools::note_free(dptr);
        let _ = memory::free(dptr);
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    entry("cuMemFreeAsync", true, || free_async(dptr, stream, false))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    entry("cuMemFreeAsync_ptsz", true, || free_async(dptr, stream, true))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(base: *mut CUdeviceptr, size: *mut usize, dptr: CUdeviceptr) -> CUresult {
    entry("cuMemGetAddressRange_v2", true, || {
        let (start, len) = if let Some((start, a)) = memory::allocation_containing(dptr) {
            (start, a.size)
        } else if let Some((start, m)) = memory::mapping_containing(dptr) {
            (start, m.size)
        } else {
            return Err(result::NOT_FOUND);
        };
        unsafe {
            if !base.is_null() {
                base.write(start);
            }
            if !size.is_null() {
                size.write(len as usize);
            }
        }
        Ok(())
    })
}

unsafe fn pointer_attribute(data: *mut c_void, attribute: c_int, ptr: CUdeviceptr) -> Outcome {
    // Host-located VMM memory is HOST to pointer queries (the driver's answer, which Open
    // MPI's PR 12751 relies on), although the CPU may not touch it without access.
    let (start, len, device, id, kind, ipc) = if let Some((start, a)) = memory::allocation_containing(ptr) {
        (start, a.size, a.device, a.id, CU_MEMORYTYPE_DEVICE, 1)
    } else if let Some((start, m)) = memory::mapping_containing(ptr) {
        let (device, kind) = match m.place {
            Place::Device(d) => (d, CU_MEMORYTYPE_DEVICE),
            Place::Host => (current_device()?, CU_MEMORYTYPE_HOST),
        };
        (start, m.size, device, m.handle, kind, 0)
    } else {
        return Err(result::INVALID_VALUE);
    };
    unsafe {
        match attribute {
            CU_POINTER_ATTRIBUTE_CONTEXT => out(data as *mut CUcontext, context_handle(device)),
            CU_POINTER_ATTRIBUTE_MEMORY_TYPE => out(data as *mut c_uint, kind),
            CU_POINTER_ATTRIBUTE_DEVICE_POINTER => out(data as *mut u64, ptr),
            CU_POINTER_ATTRIBUTE_HOST_POINTER => out(data as *mut u64, 0),
            CU_POINTER_ATTRIBUTE_BUFFER_ID => out(data as *mut u64, id),
            CU_POINTER_ATTRIBUTE_IS_MANAGED => out(data as *mut c_int, 0),
            CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE => out(data as *mut c_int, ipc),
            CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => out(data as *mut c_int, device as c_int),
            CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => out(data as *mut u64, start),
            CU_POINTER_ATTRIBUTE_RANGE_SIZE => out(data as *mut usize, len as usize),
            CU_POINTER_ATTRIBUTE_MAPPED => out(data as *mut c_int, 1),
            _ => Err(result::INVALID_VALUE),
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: c_int, ptr: CUdeviceptr) -> CUresult {
    entry("cuPointerGetAttribute", true, || unsafe { pointer_attribute(data, attribute, ptr) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuPointerGetAttributes(
    count: c_uint,
    attributes: *mut c_int,
    data: *mut *mut c_void,
    ptr: CUdeviceptr,
) -> CUresult {
    entry("cuPointerGetAttributes", true, || {
        if attributes.is_null() || data.is_null() {
            return Err(result::INVALID_VALUE);
        }
        for i in 0..count as usize {
            unsafe { pointer_attribute(*data.add(i), *attributes.add(i), ptr)? };
        }
        Ok(())
    })
}

/// `cuIpcGetMemHandle`: a handle for a `cuMemAlloc` allocation (its buffer id in the
/// 64 bytes); virtual memory the application mapped itself has no legacy IPC handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuIpcGetMemHandle(handle: *mut [u8; 64], dptr: CUdeviceptr) -> CUresult {
    entry("cuIpcGetMemHandle", true, || {
        let (base, allocation) = memory::allocation_containing(dptr).filter(|(base, _)| *base == dptr).ok_or(result::INVALID_VALUE)?;
        let mut bytes = [0u8; 64];
        bytes[..8].copy_from_slice(&allocation.id.to_ne_bytes());
        bytes[8..16].copy_from_slice(&base.to_ne_bytes());
        unsafe { out(handle, bytes) }
    })
}
