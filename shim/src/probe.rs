//! What the machine can do, asked of the driver before a policy is resolved: which GPUs
//! reach each other, whether host-located memory can serve as a tier (host VMM support,
//! the NUMA node, a granularity that fits vvram's chunks, a location type with which
//! `cuMemSetAccess` grants the CPU access), and each GPU's granularity. A policy that
//! needs what the machine cannot do stops the process at start-up with the reason,
//! never at the first copy.

use crate::real_call;
use std::ffi::{c_int, c_uint};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use vvram_allocator::CHUNK;
use vvram_cuda::*;

/// The location type that grants the CPU access to host memory (0 until probed).
static HOST_ACCESS_TYPE: AtomicU32 = AtomicU32::new(0);
/// The host NUMA node host chunks are created on.
static HOST_NUMA_NODE: AtomicI32 = AtomicI32::new(0);

/// The location for the CPU in `cuMemSetAccess`: `HOST_NUMA` (documented) or `HOST`
/// (what driver 580 also accepts), whichever the probe found to work.
pub fn host_access_location() -> CUmemLocation {
    match HOST_ACCESS_TYPE.load(Ordering::Acquire) {
        CU_MEM_LOCATION_TYPE_HOST => CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST, id: 0 },
        _ => CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST_NUMA, id: HOST_NUMA_NODE.load(Ordering::Acquire) },
    }
}

/// Where host chunks are created: `HOST_NUMA` on the node closest to the first GPU.
pub fn host_location() -> CUmemLocation {
    CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST_NUMA, id: HOST_NUMA_NODE.load(Ordering::Acquire) }
}

fn attribute(attribute: c_int, device: CUdevice) -> Result<c_int, CUresult> {
    let mut value = 0;
    match real_call!(cuDeviceGetAttribute(&mut value, attribute, device)) {
        result::SUCCESS => Ok(value),
        code => Err(code),
    }
}

/// The peer matrix: `peers[a][b]` when GPU `a` can access GPU `b`'s memory.
pub fn peers(count: usize) -> Vec<Vec<bool>> {
    (0..count)
        .map(|a| {
            (0..count)
                .map(|b| {
                    let mut can = 0;
                    a == b || (real_call!(cuDeviceCanAccessPeer(&mut can, a as CUdevice, b as CUdevice)) == result::SUCCESS && can == 1)
                })
                .collect()
        })
        .collect()
}

/// The minimum granularity of a location, checked against vvram's chunk size.
fn granularity_fits(location: CUmemLocation, what: &str) -> Result<(), String> {
    let prop = CUmemAllocationProp::pinned(location);
    let mut granularity = 0usize;
    match real_call!(cuMemGetAllocationGranularity(&mut granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)) {
        result::SUCCESS if granularity > 0 && CHUNK.is_multiple_of(granularity as u64) => Ok(()),
        result::SUCCESS => Err(format!(
            "{what} has an allocation granularity of {granularity} bytes, which does not divide vvram's {} MiB chunks",
            CHUNK >> 20
        )),
        code => Err(format!("cuMemGetAllocationGranularity for {what} failed with error {code}")),
    }
}

/// Each GPU's granularity, checked against vvram's chunk size.
pub fn device_granularities(devices: impl IntoIterator<Item = u32>) -> Result<(), String> {
    devices
        .into_iter()
        .try_for_each(|d| granularity_fits(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: d as c_int }, &format!("GPU {d}")))
}

/// What a probe found: the machine's answer, or a driver failure that says nothing about
/// the machine (out of memory, a transient error), after which the probe runs again at
/// the next resolution.
enum Probed {
    Known(Result<(), String>),
    Inconclusive(String),
}

/// Whether host-located memory can be a tier: `Err` says why not. Known answers are
/// kept; an inconclusive probe lets the host tier be tried (its allocations then fail
/// and are counted like any driver error) and is repeated next time.
pub fn host_tier() -> Result<(), String> {
    static KNOWN: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(answer) = known.as_ref() {
        return answer.clone();
    }
    match probe_host() {
        Probed::Known(answer) => known.insert(answer).clone(),
        Probed::Inconclusive(why) => {
            tracing::warn!(%why, "could not probe the host tier; trying it anyway");
            Ok(())
        }
    }
}

/// Error codes with which the driver refuses a request it will always refuse.
fn is_refusal(code: CUresult) -> bool {
    matches!(code, result::INVALID_VALUE | result::NOT_SUPPORTED | result::NOT_PERMITTED)
}

fn probe_host() -> Probed {
    match known_host_support() {
        Ok(()) => {}
        Err(why) => return Probed::Known(Err(why)),
    }
    let device: CUdevice = 0;
    with_a_context(device, || probe_cpu_access(device as u32))
}

/// The attribute and granularity checks of the host tier.
fn known_host_support() -> Result<(), String> {
    let device: CUdevice = 0;
    match attribute(CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, device) {
        Ok(1) => {}
        Ok(_) => {
            return Err("the driver does not support host-located virtual memory (cuMemCreate with CU_MEM_LOCATION_TYPE_HOST_NUMA), \
                        as under WSL"
                .into());
        }
        Err(code) => {
            return Err(format!(
                "the driver does not know CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED (error {code}): \
                 host-located virtual memory needs a CUDA 12.2 or newer driver"
            ));
        }
    }
    // -1: the system has no NUMA; the driver then wants node 0.
    let node = attribute(CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID, device).unwrap_or(-1).max(0);
    HOST_NUMA_NODE.store(node, Ordering::Release);
    granularity_fits(host_location(), &format!("host NUMA node {node}"))
}

/// Runs `body` with a context current: the application's, or GPU `device`'s primary one
/// for the time of the call.
fn with_a_context<T>(device: CUdevice, body: impl FnOnce() -> T) -> T {
    let mut current = std::ptr::null_mut();
    real_call!(cuCtxGetCurrent(&mut current));
    if !current.is_null() {
        return body();
    }
    let mut primary = std::ptr::null_mut();
    let borrowed = real_call!(cuDevicePrimaryCtxRetain(&mut primary, device)) == result::SUCCESS;
    if borrowed {
        real_call!(cuCtxSetCurrent(primary));
    }
    let outcome = body();
    if borrowed {
        real_call!(cuCtxSetCurrent(std::ptr::null_mut()));
        real_call!(cuDevicePrimaryCtxRelease_v2(device));
    }
    outcome
}

/// Maps one host chunk and grants the CPU access with `HOST_NUMA`, then `HOST`; records
/// the first that works.
fn probe_cpu_access(device: u32) -> Probed {
    let (mut handle, mut address) = (0, 0u64);
    let prop = CUmemAllocationProp::pinned(host_location());
    let created = real_call!(cuMemCreate(&mut handle, CHUNK as usize, &prop, 0));
    if created != result::SUCCESS {
        let why = format!("cuMemCreate of {} MiB of host memory failed with error {created}", CHUNK >> 20);
        return if is_refusal(created) { Probed::Known(Err(why)) } else { Probed::Inconclusive(why) };
    }
    let reserved = real_call!(cuMemAddressReserve(&mut address, CHUNK as usize, CHUNK as usize, 0, 0));
    let mapped = if reserved == result::SUCCESS { real_call!(cuMemMap(address, CHUNK as usize, 0, handle, 0)) } else { reserved };
    let mut tried = Vec::new();
    let mut refused = true;
    let mut found = None;
    if mapped == result::SUCCESS {
        let gpu = CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: device as c_int }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
        let numa = CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST_NUMA, id: HOST_NUMA_NODE.load(Ordering::Acquire) };
        for (cpu, name) in [(numa, "CU_MEM_LOCATION_TYPE_HOST_NUMA"), (CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST, id: 0 }, "CU_MEM_LOCATION_TYPE_HOST")] {
            let descs = [gpu, CUmemAccessDesc { location: cpu, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE }];
            let code = real_call!(cuMemSetAccess(address, CHUNK as usize, descs.as_ptr(), descs.len()));
            if code == result::SUCCESS {
                found = Some((cpu.type_, name));
                break;
            }
            refused &= is_refusal(code);
            tried.push(format!("{name}: error {code}"));
        }
        real_call!(cuMemUnmap(address, CHUNK as usize));
    }
    if reserved == result::SUCCESS {
        real_call!(cuMemAddressFree(address, CHUNK as usize));
    }
    real_call!(cuMemRelease(handle));
    if mapped != result::SUCCESS {
        return Probed::Inconclusive(format!("mapping a host chunk failed with error {mapped}"));
    }
    let Some((kind, name)) = found else {
        let why = format!("cuMemSetAccess grants the CPU no access to host-located memory ({})", tried.join("; "));
        return if refused { Probed::Known(Err(why)) } else { Probed::Inconclusive(why) };
    };
    HOST_ACCESS_TYPE.store(kind as c_uint, Ordering::Release);
    if tried.is_empty() {
        tracing::info!(location = name, "the CPU gets access to host chunks with the documented location type");
    } else {
        tracing::warn!(location = name, refused = %tried.join("; "), "the driver refused the documented location type for CPU access; using the one it accepts");
    }
    Probed::Known(Ok(()))
}
