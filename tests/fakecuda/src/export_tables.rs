//! `cuGetExportTable`: the driver's private interfaces to libcudart, each a table of
//! function pointers named by a UUID. libcudart refuses to start without them
//! (`cudaErrorCallRequiresNewerDriver`) and verifies the integrity-check answer.
//!
//! Layouts are facts from public reimplementations of the driver: most tables hold their
//! own size in bytes in slot 0; a slot libcudart is not known to call is null. What each
//! function does here:
//!
//! | table | slot | answer |
//! |---|---|---|
//! | runtime interface | 1, 6, 8: load a fat binary | `CUDA_ERROR_NO_BINARY_FOR_GPU`, said once on stderr: the fake cannot run SASS |
//! | | 2: primary context of a device | the device's context |
//! | | 7: notification | ignored |
//! | | 12: load the compilers | success |
//! | tool callback hooks | 2, 6: a tools buffer and its size | zeroed static buffers |
//! | tools thread-local storage | — | size only |
//! | context-local storage | 0 put, 1 delete, 2 get | a map keyed by context and key; get of a missing key is `CUDA_ERROR_INVALID_HANDLE` |
//! | context checks | 2: flags of a context; 3: a global flag | 0, 0 |
//! | context identity | 4: a number for a context | device index + 1, 0 for none |
//! | | every other slot | `CUDA_ERROR_NOT_SUPPORTED`, said once on stderr with the slot |
//! | integrity check | 1: the check | see `integrity` |
//!
//! One more table (`F8CFF951-…`) is asked for before `cuInit`; it is refused, as drivers
//! without it do, and libcudart carries on.

use super::*;
use crate::integrity::{DeviceIdentity, Probe};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

/// One slot of a table: a function address, a size, or null.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Slot(*const c_void);

// SAFETY: the slots are immutable addresses and integers.
unsafe impl Sync for Slot {}

const NULL: Slot = Slot(std::ptr::null());

const fn size_of_table(slots: usize) -> Slot {
    Slot((slots * std::mem::size_of::<usize>()) as *const c_void)
}

type Uuid = [u8; 16];

const RUNTIME_INTERFACE: Uuid = uuid(0x6BD5FB6C, 0x5BF4, 0xE74A, 0x8987_D93912FD9DF9);
const TOOLS_TLS: Uuid = uuid(0x42D85A81, 0x23F6, 0xCB47, 0x8298_F6E78A3AECDC);
const TOOL_CALLBACK_HOOKS: Uuid = uuid(0xA094798C, 0x2E74, 0x2E74, 0x93F2_0800200C0A66);
const CONTEXT_LOCAL_STORAGE: Uuid = uuid(0xC693336E, 0x1121, 0xDF11, 0xA8C3_68F355D89593);
const CONTEXT_CHECKS: Uuid = uuid(0x263E8860, 0x7CD2, 0x6143, 0x92F6_BBD5006DFA7E);
const INTEGRITY_CHECK: Uuid = uuid(0xD4082055, 0xBDE6, 0x704B, 0x8D34_BA123C66E1F2);
const CONTEXT_IDENTITY: Uuid = uuid(0x21318C60, 0x9714, 0x3248, 0x8CA6_41FF7324C8F2);
/// Asked for before `cuInit`; libcudart works without it, as it does on drivers that lack it.
const EARLY_OPTIONAL: Uuid = uuid(0xF8CFF951, 0x2146, 0x8B4E, 0xB9E2_FB469E7C0DD9);

/// The 16 bytes of a UUID written `AAAAAAAA-BBBB-CCCC-DDDDDDDDDDDDDDDD`, in written order.
const fn uuid(a: u32, b: u16, c: u16, d: u64) -> Uuid {
    let (a, b, c, d) = (a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes(), d.to_be_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

static RUNTIME_INTERFACE_TABLE: [Slot; 13] = [
    size_of_table(13),
    Slot(load_fat_binary as *const c_void),
    Slot(primary_context as *const c_void),
    NULL,
    NULL,
    NULL,
    Slot(load_fat_binary_ext as *const c_void),
    Slot(notify as *const c_void),
    Slot(load_fat_binary_header as *const c_void),
    NULL,
    NULL,
    NULL,
    Slot(load_compilers as *const c_void),
];

static TOOLS_TLS_TABLE: [Slot; 4] = [size_of_table(4), NULL, NULL, NULL];

static TOOL_CALLBACK_HOOKS_TABLE: [Slot; 7] = [
    size_of_table(7),
    NULL,
    Slot(tools_buffer as *const c_void),
    NULL,
    NULL,
    NULL,
    Slot(tools_small_buffer as *const c_void),
];

static CONTEXT_LOCAL_STORAGE_TABLE: [Slot; 4] = [
    Slot(storage_put as *const c_void),
    Slot(storage_delete as *const c_void),
    Slot(storage_get as *const c_void),
    NULL,
];

static CONTEXT_CHECKS_TABLE: [Slot; 4] = [
    size_of_table(4),
    NULL,
    Slot(context_flags as *const c_void),
    Slot(global_flag as *const c_void),
];

/// Slots of the context-identity table: 94 functions after the size, as driver 595 has.
const CONTEXT_IDENTITY_SLOTS: usize = 95;

/// Slot 4 of the context-identity table: a number naming a context (0 for none).
const CONTEXT_NUMBER_SLOT: usize = 4;

static CONTEXT_IDENTITY_TABLE: [Slot; CONTEXT_IDENTITY_SLOTS] = {
    let mut slots = [NULL; CONTEXT_IDENTITY_SLOTS];
    slots[0] = size_of_table(CONTEXT_IDENTITY_SLOTS);
    let mut i = 1;
    while i < CONTEXT_IDENTITY_SLOTS {
        slots[i] = Slot(CONTEXT_IDENTITY_REFUSALS[i] as *const c_void);
        i += 1;
    }
    slots[CONTEXT_NUMBER_SLOT] = Slot(context_number as *const c_void);
    slots
};

static INTEGRITY_CHECK_TABLE: [Slot; 3] = [size_of_table(3), Slot(integrity_check as *const c_void), NULL];

/// The table a UUID names.
fn table(id: &Uuid) -> Option<&'static [Slot]> {
    Some(match *id {
        RUNTIME_INTERFACE => &RUNTIME_INTERFACE_TABLE,
        TOOLS_TLS => &TOOLS_TLS_TABLE,
        TOOL_CALLBACK_HOOKS => &TOOL_CALLBACK_HOOKS_TABLE,
        CONTEXT_LOCAL_STORAGE => &CONTEXT_LOCAL_STORAGE_TABLE,
        CONTEXT_CHECKS => &CONTEXT_CHECKS_TABLE,
        INTEGRITY_CHECK => &INTEGRITY_CHECK_TABLE,
        CONTEXT_IDENTITY => &CONTEXT_IDENTITY_TABLE,
        _ => return None,
    })
}

fn format_uuid(id: &Uuid) -> String {
    let hex = |range: std::ops::Range<usize>| id[range].iter().map(|b| format!("{b:02X}")).collect::<String>();
    format!("{}-{}-{}-{}-{}", hex(0..4), hex(4..6), hex(6..8), hex(8..10), hex(10..16))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetExportTable(table_out: *mut *const c_void, id: *const Uuid) -> CUresult {
    entry("cuGetExportTable", false, || {
        if table_out.is_null() || id.is_null() {
            return Err(result::INVALID_VALUE);
        }
        // SAFETY: the caller passes a 16-byte UUID.
        let id = unsafe { *id };
        match table(&id) {
            Some(slots) => unsafe { out(table_out, slots.as_ptr() as *const c_void) },
            None => {
                if id != EARLY_OPTIONAL {
                    eprintln!("fakecuda: cuGetExportTable: no table {{{}}}", format_uuid(&id));
                }
                Err(result::INVALID_VALUE)
            }
        }
    })
}

// ---------------------------------------------------------------- runtime interface

unsafe extern "C" fn load_fat_binary(module: *mut CUmodule, _wrapper: *const c_void) -> CUresult {
    if module.is_null() { result::INVALID_VALUE } else { refuse_fat_binary() }
}

unsafe extern "C" fn load_fat_binary_ext(module: *mut CUmodule, _wrapper: *const c_void, _a: *mut c_void, _b: *mut c_void, _c: c_uint) -> CUresult {
    if module.is_null() { result::INVALID_VALUE } else { refuse_fat_binary() }
}

unsafe extern "C" fn load_fat_binary_header(_header: *const c_void, module: *mut CUmodule, _a: *mut c_void, _b: *mut c_void, _c: c_uint) -> CUresult {
    if module.is_null() { result::INVALID_VALUE } else { refuse_fat_binary() }
}

unsafe extern "C" fn primary_context(context: *mut CUcontext, device: CUdevice) -> CUresult {
    entry("cuGetExportTable.primary_context", true, || unsafe { out(context, context_handle(device_index(device)?)) })
}

unsafe extern "C" fn notify(_value: usize) {}

unsafe extern "C" fn load_compilers() -> CUresult {
    result::SUCCESS
}

// ---------------------------------------------------------------- tool callback hooks

/// A buffer the driver owns and tools write into.
struct ToolsBuffer<const N: usize>(std::cell::UnsafeCell<[u32; N]>);

// SAFETY: the driver only hands the address out; what the caller writes is its own affair.
unsafe impl<const N: usize> Sync for ToolsBuffer<N> {}

static TOOLS_BUFFER: ToolsBuffer<1024> = ToolsBuffer(std::cell::UnsafeCell::new([0; 1024]));
static TOOLS_SMALL_BUFFER: ToolsBuffer<14> = ToolsBuffer(std::cell::UnsafeCell::new([0; 14]));

unsafe fn hand_out<const N: usize>(buffer: &'static ToolsBuffer<N>, pointer: *mut *mut c_void, size: *mut usize) {
    // SAFETY: the caller passes two output pointers; null ones are skipped.
    unsafe {
        if !pointer.is_null() {
            pointer.write(buffer.0.get() as *mut c_void);
        }
        if !size.is_null() {
            size.write(N);
        }
    }
}

unsafe extern "C" fn tools_buffer(pointer: *mut *mut c_void, size: *mut usize) {
    unsafe { hand_out(&TOOLS_BUFFER, pointer, size) }
}

unsafe extern "C" fn tools_small_buffer(pointer: *mut *mut c_void, size: *mut usize) {
    unsafe { hand_out(&TOOLS_SMALL_BUFFER, pointer, size) }
}

// ---------------------------------------------------------------- context-local storage

type Destructor = Option<unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void)>;

/// Values stored per (context, key).
fn storage() -> &'static Mutex<HashMap<(usize, usize), usize>> {
    static STORAGE: OnceLock<Mutex<HashMap<(usize, usize), usize>>> = OnceLock::new();
    STORAGE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The context a storage call names: the given one, or the current one for null.
fn storage_context(context: CUcontext) -> Result<usize, CUresult> {
    if context.is_null() {
        Ok(context_handle(current_device()?) as usize)
    } else {
        context_device(context).map(|_| context as usize)
    }
}

unsafe extern "C" fn storage_put(context: CUcontext, key: *mut c_void, value: *mut c_void, _destructor: Destructor) -> CUresult {
    entry("cuGetExportTable.storage_put", true, || {
        let context = storage_context(context)?;
        storage().lock().unwrap().insert((context, key as usize), value as usize);
        Ok(())
    })
}

unsafe extern "C" fn storage_delete(context: CUcontext, key: *mut c_void) -> CUresult {
    entry("cuGetExportTable.storage_delete", true, || {
        let context = storage_context(context)?;
        storage().lock().unwrap().remove(&(context, key as usize));
        Ok(())
    })
}

unsafe extern "C" fn storage_get(value: *mut *mut c_void, context: CUcontext, key: *mut c_void) -> CUresult {
    entry("cuGetExportTable.storage_get", true, || {
        let context = storage_context(context)?;
        let found = storage().lock().unwrap().get(&(context, key as usize)).copied();
        unsafe { out(value, found.ok_or(result::INVALID_HANDLE)? as *mut c_void) }
    })
}

// ---------------------------------------------------------------- context checks

unsafe extern "C" fn context_flags(_context: CUcontext, flags: *mut c_uint, _detail: *mut *const c_void) -> CUresult {
    unsafe { out(flags, 0).err().unwrap_or(result::SUCCESS) }
}

unsafe extern "C" fn global_flag() -> c_uint {
    0
}

// ---------------------------------------------------------------- context identity

unsafe extern "C" fn context_number(context: CUcontext, number: *mut u64) -> CUresult {
    let value = if context.is_null() {
        Ok(0)
    } else {
        context_device(context).map(|device| device as u64 + 1)
    };
    match value {
        Ok(value) => unsafe { out(number, value).err().unwrap_or(result::SUCCESS) },
        Err(code) => code,
    }
}

/// Says once that a slot of the context-identity table the fake does not implement was
/// called, and refuses it.
fn refuse_slot(slot: usize) -> CUresult {
    static SAID: [AtomicBool; CONTEXT_IDENTITY_SLOTS] = [const { AtomicBool::new(false) }; CONTEXT_IDENTITY_SLOTS];
    if !SAID[slot].swap(true, Ordering::Relaxed) {
        eprintln!("fakecuda: export table {{{}}} slot {slot} is not implemented; it returns CUDA_ERROR_NOT_SUPPORTED", format_uuid(&CONTEXT_IDENTITY));
    }
    result::NOT_SUPPORTED
}

macro_rules! refusals {
    ($($slot:literal)*) => {
        /// One refusing function per slot, so each can say which slot was called.
        const CONTEXT_IDENTITY_REFUSALS: [unsafe extern "C" fn() -> CUresult; CONTEXT_IDENTITY_SLOTS] = [
            $({
                unsafe extern "C" fn refuse() -> CUresult {
                    refuse_slot($slot)
                }
                refuse
            }),*
        ];
    };
}

refusals!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46
    47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90
    91 92 93 94
);

// ---------------------------------------------------------------- integrity check

unsafe extern "C" fn integrity_check(version: c_uint, unix_seconds: u64, answer: *mut [u64; 2]) -> CUresult {
    entry("cuGetExportTable.integrity_check", false, || {
        let mut driver_version = 0;
        let status = unsafe { cuDriverGetVersion(&mut driver_version) };
        if status != result::SUCCESS {
            return Err(status);
        }
        let probe = Probe {
            driver_version: driver_version as u32,
            version,
            process: std::process::id(),
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() } as u32,
            runtime_table: RUNTIME_INTERFACE_TABLE.as_ptr() as usize,
            integrity_table: INTEGRITY_CHECK_TABLE.as_ptr() as usize,
            check_function: INTEGRITY_CHECK_TABLE[1].0 as usize,
            unix_seconds,
        };
        let devices: Vec<DeviceIdentity> = (0..config().devices.len()).map(device_identity).collect();
        unsafe { out(answer, crate::integrity::answer(&probe, &devices)) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_laid_out_in_written_order() {
        assert_eq!(RUNTIME_INTERFACE[..4], [0x6B, 0xD5, 0xFB, 0x6C]);
        assert_eq!(RUNTIME_INTERFACE[8..], [0x89, 0x87, 0xD9, 0x39, 0x12, 0xFD, 0x9D, 0xF9]);
        assert_eq!(format_uuid(&INTEGRITY_CHECK), "D4082055-BDE6-704B-8D34-BA123C66E1F2");
    }

    #[test]
    fn tables_that_carry_a_size_carry_their_own() {
        for id in [RUNTIME_INTERFACE, TOOLS_TLS, TOOL_CALLBACK_HOOKS, CONTEXT_CHECKS, INTEGRITY_CHECK, CONTEXT_IDENTITY] {
            let slots = table(&id).unwrap();
            assert_eq!(slots[0].0 as usize, slots.len() * 8, "{}", format_uuid(&id));
        }
        assert!(table(&[0; 16]).is_none());
    }
}
