//! Faithful memory: a GPU's address space is not the CPU's.
//!
//! `cuMemAddressReserve` maps `PROT_NONE` twice: the application's range, and a private
//! *device view* of the same size. `cuMemCreate` makes a memfd; `cuMemMap` maps it
//! `MAP_FIXED | MAP_SHARED` at both (so one physical allocation mapped twice aliases, as
//! on a GPU), inaccessible. Granting a device access opens the device view, which the
//! fake's kernels, copies and memsets use ([`device_view`]); granting the CPU access to
//! host-located memory opens the application's range. So the CPU faults on device memory
//! always, and on host memory until `cuMemSetAccess` grants it, as on a GPU; a kernel
//! faults on memory no device was given access to. `cuMemAlloc` is a reservation with
//! one device mapping. `cuMemUnmap` returns both views to `PROT_NONE`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use vvram_cuda::{CUresult, result};


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
    /// Bytes reserved and mapped (rounded to the granularity).
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
    /// `cuMemCreate` and `cuMemRetainAllocationHandle` references not yet released.
    references: usize,
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
    /// Where the device view maps it.
    pub device_view: u64,
    /// The devices given access (bit per device).
    pub devices: u64,
}

/// A `cuMemAddressReserve` range and its private device view.
#[derive(Debug, Clone, Copy)]
struct Reservation {
    size: u64,
    device_view: u64,
}

#[derive(Default)]
struct State {
    device_used: Vec<u64>,
    host_used: u64,
    allocations: BTreeMap<u64, Allocation>,
    reservations: BTreeMap<u64, Reservation>,
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

/// The allocation granularity of physical memory at `place`.
pub fn granularity(place: Place) -> u64 {
    let config = crate::config::config();
    match place {
        Place::Device(_) => config.granularity,
        Place::Host => config.host_granularity,
    }
}

/// The finest granularity of any place: reservations and mappings align to it.
fn finest_granularity() -> u64 {
    granularity(Place::Device(0)).min(granularity(Place::Host))
}

/// An address no CPU or device view maps: touching it faults.
fn faulting(address: u64) -> u64 {
    address & 0xFFF
}

/// The device view of `address` (what the fake's kernels and copies touch), for an
/// address inside a reservation; otherwise an address that faults, as a GPU faults on
/// memory outside its address space.
pub fn device_view(address: u64) -> u64 {
    device_view_of(address).unwrap_or_else(|| faulting(address))
}

/// The device view of `address` for a kernel running on `device`: an address faults
/// where it is mapped but that device was not given access, as on a GPU.
pub fn kernel_view(address: u64, device: usize) -> u64 {
    match mapping_containing(address) {
        Some((_, mapping)) if mapping.devices & (1 << device) == 0 => faulting(address),
        _ => device_view(address),
    }
}

/// The device view of a unified address: device memory through its view, anything else
/// as host memory (a pageable or pinned host buffer of a unified copy).
pub fn unified_view(address: u64) -> u64 {
    device_view_of(address).unwrap_or(address)
}

fn device_view_of(address: u64) -> Option<u64> {
    let state = state().lock().unwrap();
    let (&base, r) = state.reservations.range(..=address).next_back()?;
    (address < base + r.size).then_some(r.device_view + (address - base))
}

fn anonymous(hint: u64, len: u64, fixed: bool) -> Option<u64> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | if fixed { libc::MAP_FIXED } else { 0 };
    // SAFETY: an anonymous PROT_NONE mapping; with MAP_FIXED only over our own ranges.
    let raw = unsafe { libc::mmap(hint as *mut libc::c_void, len as usize, libc::PROT_NONE, flags, -1, 0) };
    (raw != libc::MAP_FAILED).then_some(raw as u64)
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

/// `cuMemAlloc`: a reservation with one device-located mapping that `device` may read
/// and write (the CPU may not).
pub fn allocate(device: usize, size: u64) -> Result<u64, CUresult> {
    if size == 0 {
        return Err(result::INVALID_VALUE);
    }
    let charged = size.next_multiple_of(granularity(Place::Device(device)));
    let address = reserve(charged, 0, 0)?;
    let handle = match create(charged, Place::Device(device)) {
        Ok(handle) => handle,
        Err(code) => {
            let _ = release_reservation(address, charged);
            return Err(code);
        }
    };
    let mapped = map(address, charged, 0, handle).and_then(|()| set_access(address, charged, &[(device, READ_WRITE)], None));
    let _ = release(handle);
    if let Err(code) = mapped {
        let _ = unmap(address, charged);
        let _ = release_reservation(address, charged);
        return Err(code);
    }
    let mut state = state().lock().unwrap();
    let id = state.next_id;
    state.next_id += 1;
    state.allocations.insert(address, Allocation { size, charged, device, id });
    Ok(address)
}

/// `PROT_READ | PROT_WRITE`.
pub const READ_WRITE: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// `cuMemFree`: the allocation starting at `address`.
pub fn free(address: u64) -> Result<(), CUresult> {
    let allocation = state().lock().unwrap().allocations.remove(&address).ok_or(result::INVALID_VALUE)?;
    unmap(address, allocation.charged)?;
    release_reservation(address, allocation.charged)
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

/// `cuMemAddressReserve`: an inaccessible range, aligned as asked, and its device view.
pub fn reserve(size: u64, alignment: u64, hint: u64) -> Result<u64, CUresult> {
    let finest = finest_granularity();
    if size == 0 || !size.is_multiple_of(finest) {
        return Err(result::INVALID_VALUE);
    }
    let alignment = alignment.max(finest);
    if !alignment.is_power_of_two() {
        return Err(result::INVALID_VALUE);
    }
    let span = size + alignment;
    // The hint is only a hint (no MAP_FIXED).
    let raw = anonymous(hint, span, false).ok_or(result::OUT_OF_MEMORY)?;
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
    let Some(device_view) = anonymous(0, size, false) else {
        // SAFETY: the range just made.
        unsafe { libc::munmap(start as *mut libc::c_void, size as usize) };
        return Err(result::OUT_OF_MEMORY);
    };
    state().lock().unwrap().reservations.insert(start, Reservation { size, device_view });
    Ok(start)
}

/// `cuMemAddressFree`: the whole reservation, which must have no mappings left.
pub fn release_reservation(address: u64, size: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    let reservation = state.reservations.get(&address).copied().filter(|r| r.size == size).ok_or(result::INVALID_VALUE)?;
    if state.mappings.range(address..address + size).next().is_some() {
        return Err(result::INVALID_VALUE);
    }
    state.reservations.remove(&address);
    // SAFETY: the reservation's own PROT_NONE ranges.
    unsafe {
        libc::munmap(address as *mut libc::c_void, size as usize);
        libc::munmap(reservation.device_view as *mut libc::c_void, size as usize);
    }
    Ok(())
}

/// `cuMemCreate`: physical memory at `place`, backed by a memfd.
pub fn create(size: u64, place: Place) -> Result<u64, CUresult> {
    if size == 0 || !size.is_multiple_of(granularity(place)) {
        return Err(result::INVALID_VALUE);
    }
    let rate = crate::config::config().pin_bytes_per_second;
    if place == Place::Host && rate > 0 {
        // Pinning host memory is slow on the driver (3.4-5 GB/s): taken outside any lock.
        std::thread::sleep(std::time::Duration::from_secs_f64(size as f64 / rate as f64));
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
    state.handles.insert(handle, PhysicalHandle { fd, size, place, references: 1, mappings: 0 });
    Ok(handle)
}

fn destroy_if_unused(state: &mut State, handle: u64) {
    let unused = state.handles.get(&handle).is_some_and(|h| h.references == 0 && h.mappings == 0);
    if unused
        && let Some(h) = state.handles.remove(&handle) {
            // SAFETY: the descriptor belongs to the handle being destroyed.
            unsafe { libc::close(h.fd) };
            refund(state, h.place, h.size);
        }
}

/// `cuMemRelease`: drops one reference; the memory goes once the last is released and
/// the last mapping unmapped.
pub fn release(handle: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    match state.handles.get_mut(&handle) {
        Some(h) if h.references > 0 => h.references -= 1,
        _ => return Err(result::INVALID_VALUE),
    }
    destroy_if_unused(&mut state, handle);
    Ok(())
}

/// `cuMemMap`: maps `size` bytes of `handle` from `offset` at `address` and at its
/// device view, both inaccessible until `cuMemSetAccess`.
pub fn map(address: u64, size: u64, offset: u64, handle: u64) -> Result<(), CUresult> {
    let mut state = state().lock().unwrap();
    let place = state.handles.get(&handle).ok_or(result::INVALID_HANDLE)?.place;
    let g = granularity(place);
    if size == 0 || !address.is_multiple_of(g) || !size.is_multiple_of(g) || !offset.is_multiple_of(g) {
        return Err(result::INVALID_VALUE);
    }
    let device_view = state
        .reservations
        .range(..=address)
        .next_back()
        .filter(|(base, r)| address + size <= *base + r.size)
        .map(|(base, r)| r.device_view + (address - base))
        .ok_or(result::INVALID_VALUE)?;
    let overlaps = state
        .mappings
        .range(..address + size)
        .next_back()
        .is_some_and(|(&base, m)| base + m.size > address);
    if overlaps {
        return Err(result::ALREADY_MAPPED);
    }
    let physical = state.handles.get_mut(&handle).ok_or(result::INVALID_HANDLE)?;
    if physical.references == 0 || offset + size > physical.size {
        return Err(result::INVALID_VALUE);
    }
    for at in [address, device_view] {
        // SAFETY: the range lies inside our own reservation (or its view) and overlaps no mapping.
        let mapped = unsafe {
            libc::mmap(at as *mut libc::c_void, size as usize, libc::PROT_NONE, libc::MAP_SHARED | libc::MAP_FIXED, physical.fd, offset as libc::off_t)
        };
        if mapped == libc::MAP_FAILED {
            anonymous(address, size, true);
            anonymous(device_view, size, true);
            return Err(result::OUT_OF_MEMORY);
        }
    }
    physical.mappings += 1;
    state.mappings.insert(address, Mapping { size, handle, place, device_view, devices: 0 });
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
    for (base, mapping) in &inside {
        // Back to PROT_NONE reserved space over our own mappings, in both views.
        anonymous(*base, mapping.size, true);
        anonymous(mapping.device_view, mapping.size, true);
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

/// `cuMemRetainAllocationHandle`: one more reference to the physical allocation mapped
/// at `address`. Memory from `cuMemAlloc` is not the application's virtual memory: the
/// driver refuses it, as an address nothing maps.
pub fn retain(address: u64) -> Result<u64, CUresult> {
    if allocation_containing(address).is_some() {
        return Err(result::INVALID_VALUE);
    }
    let (_, mapping) = mapping_containing(address).ok_or(result::INVALID_VALUE)?;
    let mut state = state().lock().unwrap();
    let physical = state.handles.get_mut(&mapping.handle).ok_or(result::INVALID_VALUE)?;
    physical.references += 1;
    Ok(mapping.handle)
}

/// The places of the physical memory mapped over `[address, address + size)`, which
/// must be mapped throughout, within one reservation.
pub fn places(address: u64, size: u64) -> Result<Vec<Place>, CUresult> {
    let state = state().lock().unwrap();
    let within = state.reservations.range(..=address).next_back().is_some_and(|(base, r)| address + size <= base + r.size);
    if size == 0 || !within {
        return Err(result::INVALID_VALUE);
    }
    let mut places = Vec::new();
    let mut cursor = address;
    while cursor < address + size {
        let Some((&base, m)) = state.mappings.range(..=cursor).next_back() else {
            return Err(result::INVALID_VALUE);
        };
        if base + m.size <= cursor {
            return Err(result::INVALID_VALUE);
        }
        places.push(m.place);
        cursor = base + m.size;
    }
    Ok(places)
}

/// `cuMemSetAccess` once checked: each device's grant (a protection, `PROT_NONE` to
/// revoke) is recorded per mapping and opens or closes the device view; the CPU's goes to
/// the application's range; `None` leaves the CPU side as it was.
pub fn set_access(address: u64, size: u64, devices: &[(usize, i32)], cpu: Option<i32>) -> Result<(), CUresult> {
    places(address, size)?;
    let view = device_view_of(address).ok_or(result::INVALID_VALUE)?;
    let mut device = None;
    if !devices.is_empty() {
        let mut state = state().lock().unwrap();
        let mut anyone = false;
        for (_, mapping) in state.mappings.range_mut(..address + size).rev().take_while(|(base, m)| **base + m.size > address) {
            for &(d, protection) in devices {
                if protection == libc::PROT_NONE { mapping.devices &= !(1 << d) } else { mapping.devices |= 1 << d }
            }
            anyone |= mapping.devices != 0;
        }
        let granted = devices.iter().fold(libc::PROT_NONE, |p, (_, g)| p | g);
        device = match (granted, anyone) {
            (_, false) => Some(libc::PROT_NONE),
            (libc::PROT_NONE, true) => None,
            (granted, true) => Some(granted),
        };
    }
    for (at, protection) in [(view, device), (address, cpu)] {
        if let Some(protection) = protection {
            // SAFETY: the range is mapped by us throughout.
            if unsafe { libc::mprotect(at as *mut libc::c_void, size as usize, protection) } != 0 {
                return Err(result::INVALID_VALUE);
            }
        }
    }
    Ok(())
}
