//! Faithful memory: device addresses are host addresses.
//!
//! `cuMemAddressReserve` maps `PROT_NONE`; `cuMemCreate` makes a memfd; `cuMemMap` maps it
//! `MAP_FIXED | MAP_SHARED` (so one physical allocation mapped twice aliases, as on a GPU);
//! `cuMemSetAccess` sets the protection; `cuMemUnmap` returns the range to `PROT_NONE`.
//! Touching an unmapped range faults, as a GPU's MMU would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use vvram_cuda::{CUresult, result};

/// Physical allocation granularity, as on current NVIDIA GPUs.
pub const GRANULARITY: u64 = 2 << 20;

/// Where physical memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A device's memory.
    Device(usize),
    /// Host memory.
    Host,
}

/// A `cuMemAlloc` allocation.
#[derive(Debug, Clone, Copy)]
pub struct Allocation {
    /// Bytes asked for.
    pub size: u64,
    /// Bytes charged (rounded to the granularity).
    pub charged: u64,
    /// The device.
    pub device: usize,
    /// A unique id (`CU_POINTER_ATTRIBUTE_BUFFER_ID`).
    pub id: u64,
}

struct PhysicalHandle {
    fd: i32,
    size: u64,
    place: Place,
    released: bool,
    mappings: usize,
}

/// A `cuMemMap` mapping.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    /// Length.
    pub size: u64,
    /// The physical allocation.
    pub handle: u64,
    /// Where the physical memory lives.
    pub place: Place,
}

#[derive(Default)]
struct State {
    device_used: Vec<u64>,
    host_used: u64,
    allocations: BTreeMap<u64, Allocation>,
    reservations: BTreeMap<u64, u64>,
    mappings: BTreeMap<u64, Mapping>,
    handles: HashMap<u64, PhysicalHandle>,
    next_id: u64,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        Mutex::new(State {
            device_used: vec![0; crate::config::config().devices.len()],
            next_id: 1,
            ..State::default()
        })
    })
}

fn round_up(size: u64) -> u64 {
    size.div_ceil(GRANULARITY) * GRANULARITY
}

fn charge(state: &mut State, place: Place, bytes: u64) -> Result<(), CUresult> {
    let config = crate::config::config();
    match place {
        Place::Device(d) => {
            if state.device_used[d] + bytes > config.devices[d] {
                return Err(result::OUT_OF_MEMORY);
            }
            state.device_used[d] += bytes;
        }
        Place::Host => {
            if state.host_used + bytes > config.host {
                return Err(result::OUT_OF_MEMORY);
            }
            state.host_used += bytes;
        }
    }
    Ok(())
}

fn refund(state: &mut State, place: Place, bytes: u64) {
    match place {
        Place::Device(d) => state.device_used[d] -= bytes,
        Place::Host => state.host_used -= bytes,
    }
}

/// Bytes in use on a device (`cuMemGetInfo`).
pub fn device_used(device: usize) -> u64 {
    state().lock().unwrap().device_used[device]
}

/// `cuMemAlloc`: readable and writable memory charged to `device`.
pub fn allocate(device: usize, size: u64) -> Result<u64, CUresult> {
    if size == 0 {
        return Err(result::INVALID_VALUE);
    }
    let charged = round_up(size);
    let mut state = state().lock().unwrap();
    charge(&mut state, Place::Device(device), charged)?;
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            charged as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        refund(&mut state, Place::Device(device), charged);
        return Err(result::OUT_OF_MEMORY);
    }
    let id = state.next_id;
    state.next_id += 1;
    state.allocations.insert(address as u64, Allocation { size, charged, device, id });
    Ok(address as u64)
}

/// `cuMemFree`: the allocation starting at `address`.
pub fn free(address: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    let allocation = state.allocations.remove(&address).ok_or(result::INVALID_VALUE)?;
    // SAFETY: the range is the mapping `allocate` made.
    unsafe { libc::munmap(address as *mut libc::c_void, allocation.charged as usize) };
    refund(&mut state, Place::Device(allocation.device), allocation.charged);
    Ok(())
}

/// The `cuMemAlloc` allocation containing `address`: its base and description.
pub fn allocation_containing(address: u64) -> Option<(u64, Allocation)> {
    let state = state().lock().unwrap();
    let (&base, &allocation) = state.allocations.range(..=address).next_back()?;
    (address < base + allocation.size).then_some((base, allocation))
}

/// The mapping containing `address`: its base and description.
pub fn mapping_containing(address: u64) -> Option<(u64, Mapping)> {
    let state = state().lock().unwrap();
    let (&base, &mapping) = state.mappings.range(..=address).next_back()?;
    (address < base + mapping.size).then_some((base, mapping))
}

/// `cuMemAddressReserve`: an inaccessible range, aligned as asked.
pub fn reserve(size: u64, alignment: u64, hint: u64) -> Result<u64, CUresult> {
    if size == 0 || !size.is_multiple_of(GRANULARITY) {
        return Err(result::INVALID_VALUE);
    }
    let alignment = alignment.max(GRANULARITY);
    if !alignment.is_power_of_two() {
        return Err(result::INVALID_VALUE);
    }
    let span = size + alignment;
    // SAFETY: a fresh PROT_NONE mapping; the hint is only a hint (no MAP_FIXED).
    let raw = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            span as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(result::OUT_OF_MEMORY);
    }
    let raw = raw as u64;
    let start = raw.next_multiple_of(alignment);
    // SAFETY: trimming the parts of our own mapping outside [start, start + size).
    unsafe {
        if start > raw {
            libc::munmap(raw as *mut libc::c_void, (start - raw) as usize);
        }
        let end = start + size;
        if raw + span > end {
            libc::munmap(end as *mut libc::c_void, (raw + span - end) as usize);
        }
    }
    state().lock().unwrap().reservations.insert(start, size);
    Ok(start)
}

/// `cuMemAddressFree`: the whole reservation, which must have no mappings left.
pub fn release_reservation(address: u64, size: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    if state.reservations.get(&address) != Some(&size) {
        return Err(result::INVALID_VALUE);
    }
    if state.mappings.range(address..address + size).next().is_some() {
        return Err(result::INVALID_VALUE);
    }
    state.reservations.remove(&address);
    // SAFETY: the reservation's own PROT_NONE range.
    unsafe { libc::munmap(address as *mut libc::c_void, size as usize) };
    Ok(())
}

/// `cuMemCreate`: physical memory at `place`, backed by a memfd.
pub fn create(size: u64, place: Place) -> Result<u64, CUresult> {
    if size == 0 || !size.is_multiple_of(GRANULARITY) {
        return Err(result::INVALID_VALUE);
    }
    let mut state = state().lock().unwrap();
    charge(&mut state, place, size)?;
    // SAFETY: plain syscalls on a new descriptor.
    let fd = unsafe { libc::memfd_create(c"fakecuda-physical".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 || unsafe { libc::ftruncate(fd, size as libc::off_t) } != 0 {
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        refund(&mut state, place, size);
        return Err(result::OUT_OF_MEMORY);
    }
    let handle = state.next_id;
    state.next_id += 1;
    state.handles.insert(handle, PhysicalHandle { fd, size, place, released: false, mappings: 0 });
    Ok(handle)
}

fn destroy_if_unused(state: &mut State, handle: u64) {
    let unused = state.handles.get(&handle).is_some_and(|h| h.released && h.mappings == 0);
    if unused
        && let Some(h) = state.handles.remove(&handle) {
            // SAFETY: the descriptor belongs to the handle being destroyed.
            unsafe { libc::close(h.fd) };
            refund(state, h.place, h.size);
        }
}

/// `cuMemRelease`: the memory goes once its last mapping is unmapped.
pub fn release(handle: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    match state.handles.get_mut(&handle) {
        Some(h) if !h.released => h.released = true,
        _ => return Err(result::INVALID_VALUE),
    }
    destroy_if_unused(&mut state, handle);
    Ok(())
}

/// `cuMemMap`: maps `size` bytes of `handle` from `offset` at `address`, inaccessible
/// until `cuMemSetAccess`.
pub fn map(address: u64, size: u64, offset: u64, handle: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    if size == 0 || !address.is_multiple_of(GRANULARITY) || !size.is_multiple_of(GRANULARITY) || !offset.is_multiple_of(GRANULARITY) {
        return Err(result::INVALID_VALUE);
    }
    let inside = state
        .reservations
        .range(..=address)
        .next_back()
        .is_some_and(|(&base, &len)| address + size <= base + len);
    if !inside {
        return Err(result::INVALID_VALUE);
    }
    let overlaps = state
        .mappings
        .range(..address + size)
        .next_back()
        .is_some_and(|(&base, m)| base + m.size > address);
    if overlaps {
        return Err(result::ALREADY_MAPPED);
    }
    let physical = state.handles.get_mut(&handle).ok_or(result::INVALID_HANDLE)?;
    if physical.released || offset + size > physical.size {
        return Err(result::INVALID_VALUE);
    }
    // SAFETY: the range lies inside our own reservation and overlaps no mapping.
    let mapped = unsafe {
        libc::mmap(
            address as *mut libc::c_void,
            size as usize,
            libc::PROT_NONE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            physical.fd,
            offset as libc::off_t,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(result::OUT_OF_MEMORY);
    }
    physical.mappings += 1;
    let place = physical.place;
    state.mappings.insert(address, Mapping { size, handle, place });
    Ok(())
}

/// `cuMemUnmap`: the range must cover whole mappings.
pub fn unmap(address: u64, size: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    let inside: Vec<(u64, Mapping)> =
        state.mappings.range(address..address + size).map(|(&a, &m)| (a, m)).collect();
    let starts_clean = state
        .mappings
        .range(..address)
        .next_back()
        .is_none_or(|(&base, m)| base + m.size <= address);
    let covered: u64 = inside.iter().map(|(_, m)| m.size).sum();
    let ends_clean = inside.last().is_none_or(|(a, m)| a + m.size <= address + size);
    if inside.is_empty() || !starts_clean || !ends_clean || covered != size {
        return Err(result::INVALID_VALUE);
    }
    // SAFETY: back to PROT_NONE reserved space over our own mappings.
    unsafe {
        libc::mmap(
            address as *mut libc::c_void,
            size as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        );
    }
    for (base, mapping) in inside {
        state.mappings.remove(&base);
        if let Some(h) = state.handles.get_mut(&mapping.handle) {
            h.mappings -= 1;
        }
        destroy_if_unused(&mut state, mapping.handle);
    }
    Ok(())
}

/// `cuMemSetAccess`: the range must be mapped throughout.
pub fn set_access(address: u64, size: u64, protection: i32) -> Result<(), CUresult> {
    let state = state().lock().unwrap();
    let mut cursor = address;
    while cursor < address + size {
        let Some((&base, m)) = state.mappings.range(..=cursor).next_back() else {
            return Err(result::INVALID_VALUE);
        };
        if base + m.size <= cursor {
            return Err(result::INVALID_VALUE);
        }
        cursor = base + m.size;
    }
    // SAFETY: the range is mapped by us throughout.
    if unsafe { libc::mprotect(address as *mut libc::c_void, size as usize, protection) } != 0 {
        return Err(result::INVALID_VALUE);
    }
    Ok(())
}
