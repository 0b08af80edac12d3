//! Each device's default memory pool (`cudaMallocAsync`, PyTorch's
//! `backend:cudaMallocAsync`): its attributes and what it holds. The fake's pool keeps
//! nothing cached: `cuMemFreeAsync` returns memory at once, so reserved equals used and
//! trimming has nothing to do.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// `CUmemPool_attribute` values.
mod attr {
    pub const REUSE_FOLLOW_EVENT_DEPENDENCIES: i32 = 1;
    pub const REUSE_ALLOW_INTERNAL_DEPENDENCIES: i32 = 3;
    pub const RELEASE_THRESHOLD: i32 = 4;
    pub const RESERVED_MEM_CURRENT: i32 = 5;
    pub const RESERVED_MEM_HIGH: i32 = 6;
    pub const USED_MEM_CURRENT: i32 = 7;
    pub const USED_MEM_HIGH: i32 = 8;
    pub const ALLOCATION_TYPE: i32 = 9;
    pub const EXPORT_HANDLE_TYPES: i32 = 10;
    pub const LOCATION_ID: i32 = 11;
    pub const LOCATION_TYPE: i32 = 12;
}

/// One device's pool.
struct Pool {
    reuse: [c_int; 3],
    release_threshold: u64,
    used: u64,
    used_high: u64,
    live: HashMap<u64, u64>,
}

fn pools() -> &'static Mutex<Vec<Pool>> {
    static POOLS: OnceLock<Mutex<Vec<Pool>>> = OnceLock::new();
    POOLS.get_or_init(|| {
        let pool = || Pool { reuse: [1; 3], release_threshold: 0, used: 0, used_high: 0, live: HashMap::new() };
        Mutex::new(config().devices.iter().map(|_| pool()).collect())
    })
}

fn pool_handle(device: usize) -> CUmemoryPool {
    (0xB000_0000usize + device * 0x1000) as CUmemoryPool
}

fn pool_device(pool: CUmemoryPool) -> Result<usize, CUresult> {
    let value = (pool as usize).wrapping_sub(0xB000_0000);
    if value.is_multiple_of(0x1000) && value / 0x1000 < config().devices.len() {
        Ok(value / 0x1000)
    } else {
        Err(result::INVALID_VALUE)
    }
}

/// Records a stream-ordered allocation served from `device`'s default pool.
pub(crate) fn note_allocation(device: usize, address: u64, bytes: u64) {
    let mut pools = pools().lock().unwrap();
    let pool = &mut pools[device];
    pool.live.insert(address, bytes);
    pool.used += bytes;
    pool.used_high = pool.used_high.max(pool.used);
}

/// Records that an allocation goes back, before its memory is freed (so that a new
/// allocation at the same address is never mistaken for it); addresses the pools did not
/// serve are ignored.
pub(crate) fn note_free(address: u64) {
    for pool in pools().lock().unwrap().iter_mut() {
        if let Some(bytes) = pool.live.remove(&address) {
            pool.used -= bytes;
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut CUmemoryPool, device: CUdevice) -> CUresult {
    entry("cuDeviceGetDefaultMemPool", true, || unsafe { out(pool, pool_handle(device_index(device)?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetMemPool(pool: *mut CUmemoryPool, device: CUdevice) -> CUresult {
    entry("cuDeviceGetMemPool", true, || unsafe { out(pool, pool_handle(device_index(device)?)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolGetAttribute(pool: CUmemoryPool, attribute: c_int, value: *mut c_void) -> CUresult {
    entry("cuMemPoolGetAttribute", true, || {
        let device = pool_device(pool)?;
        let pools = pools().lock().unwrap();
        let pool = &pools[device];
        unsafe {
            match attribute {
                attr::REUSE_FOLLOW_EVENT_DEPENDENCIES..=attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
                    out(value as *mut c_int, pool.reuse[(attribute - 1) as usize])
                }
                attr::RELEASE_THRESHOLD => out(value as *mut u64, pool.release_threshold),
                attr::RESERVED_MEM_CURRENT | attr::USED_MEM_CURRENT => out(value as *mut u64, pool.used),
                attr::RESERVED_MEM_HIGH | attr::USED_MEM_HIGH => out(value as *mut u64, pool.used_high),
                attr::ALLOCATION_TYPE => out(value as *mut c_uint, CU_MEM_ALLOCATION_TYPE_PINNED),
                attr::EXPORT_HANDLE_TYPES => out(value as *mut c_uint, 0),
                attr::LOCATION_ID => out(value as *mut c_int, device as c_int),
                attr::LOCATION_TYPE => out(value as *mut c_uint, CU_MEM_LOCATION_TYPE_DEVICE),
                _ => Err(result::INVALID_VALUE),
            }
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolSetAttribute(pool: CUmemoryPool, attribute: c_int, value: *mut c_void) -> CUresult {
    entry("cuMemPoolSetAttribute", true, || {
        let device = pool_device(pool)?;
        if value.is_null() {
            return Err(result::INVALID_VALUE);
        }
        let mut pools = pools().lock().unwrap();
        let pool = &mut pools[device];
        // SAFETY: the caller passes a value of the attribute's type.
        unsafe {
            match attribute {
                attr::REUSE_FOLLOW_EVENT_DEPENDENCIES..=attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
                    pool.reuse[(attribute - 1) as usize] = (*(value as *const c_int) != 0) as c_int
                }
                attr::RELEASE_THRESHOLD => pool.release_threshold = *(value as *const u64),
                // High-water marks can only be reset, to zero.
                attr::RESERVED_MEM_HIGH | attr::USED_MEM_HIGH if *(value as *const u64) == 0 => pool.used_high = pool.used,
                _ => return Err(result::INVALID_VALUE),
            }
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemPoolTrimTo(pool: CUmemoryPool, _keep: usize) -> CUresult {
    entry("cuMemPoolTrimTo", true, || pool_device(pool).map(|_| ()))
}

/// `cuMemAllocFromPoolAsync` from a device's default pool (the fake has no other pools).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(dptr: *mut CUdeviceptr, bytes: usize, pool: CUmemoryPool, stream: CUstream) -> CUresult {
    entry("cuMemAllocFromPoolAsync", true, || {
        stream_of(stream, false)?;
        let device = pool_device(pool)?;
        if dptr.is_null() {
            return Err(result::INVALID_VALUE);
        }
        let address = memory::allocate(device, bytes as u64)?;
        note_allocation(device, address, bytes as u64);
        unsafe { out(dptr, address) }
    })
}
