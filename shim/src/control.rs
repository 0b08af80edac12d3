//! The control API (`include/vvram.h`): what the ComfyUI node and the CLI call.
//! Return codes: 0 success, 1 bad arguments, 2 invalid policy or name.

use crate::runtime::{HOOK_ERRORS, state};
use std::ffi::{CStr, c_char, c_int};
use std::sync::atomic::Ordering;
use vvram_policy::{parse_policy, policy_from_allocation};
use vvram_stats::{DeviceSnapshot, Snapshot, TierSnapshot};

/// Copies `message` into a caller's buffer of `len` bytes, truncated, NUL-terminated.
unsafe fn write_message(buffer: *mut c_char, len: usize, message: &str) {
    if buffer.is_null() || len == 0 {
        return;
    }
    let n = message.len().min(len - 1);
    // SAFETY: the caller gave a buffer of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buffer as *mut u8, n);
        *buffer.add(n) = 0;
    }
}

unsafe fn text<'a>(pointer: *const c_char) -> Option<&'a str> {
    if pointer.is_null() {
        return None;
    }
    // SAFETY: a C string from the caller.
    unsafe { CStr::from_ptr(pointer) }.to_str().ok()
}

/// The library version, a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn vvram_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Installs a parsed policy; never ends the process: a policy that does not fit the
/// machine comes back as error 2 with the checker's message.
fn install(policy: Result<vvram_policy::Policy, vvram_policy::PolicyError>, origin: &str, error: *mut c_char, error_len: usize) -> c_int {
    crate::runtime::init_driver();
    let outcome = policy.map_err(|e| e.to_string()).and_then(|p| state().set_policy(p, origin.to_string()));
    match outcome {
        Ok(()) => {
            tracing::info!(origin, "policy replaced through the control API");
            0
        }
        Err(message) => {
            unsafe { write_message(error, error_len, &message) };
            2
        }
    }
}

/// Replaces the policy with a TOML text, validated as `vvram check` does (and against the
/// machine once the driver is initialised). On error returns 2 and writes the message
/// (`<policy>:LINE:COLUMN: …`) into `error`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vvram_set_policy_toml(toml: *const c_char, error: *mut c_char, error_len: usize) -> c_int {
    let Some(toml) = (unsafe { text(toml) }) else { return 1 };
    install(parse_policy("<policy>", toml), "<policy>", error, error_len)
}

/// Replaces the policy with a TOML text as `vvram_set_policy_toml` does, under a name
/// (a preset's, say) that errors and statistics show instead of `<policy>`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vvram_set_policy_named(name: *const c_char, toml: *const c_char, error: *mut c_char, error_len: usize) -> c_int {
    let (Some(name), Some(toml)) = (unsafe { text(name) }, unsafe { text(toml) }) else { return 1 };
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return 1;
    }
    install(parse_policy(name, toml), name, error, error_len)
}

/// Replaces the policy with a DisTorch2 allocation string for compute device `device`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vvram_set_alloc(alloc: *const c_char, device: c_int, error: *mut c_char, error_len: usize) -> c_int {
    let Some(alloc) = (unsafe { text(alloc) }) else { return 1 };
    if device < 0 {
        return 1;
    }
    install(policy_from_allocation("<alloc>", alloc, device as u32), "<alloc>", error, error_len)
}

fn valid_name(name: &str) -> bool {
    name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// Sets a rule-matching name (phase or tag) from a C string; `NULL` or `""` clears it.
unsafe fn set_name(pointer: *const c_char, field: impl FnOnce(&mut crate::runtime::State) -> &mut Option<String>) -> c_int {
    let name = if pointer.is_null() { Some("") } else { unsafe { text(pointer) } };
    match name {
        Some(name) if valid_name(name) => {
            *field(&mut state()) = (!name.is_empty()).then(|| name.to_string());
            0
        }
        _ => 2,
    }
}

/// Sets the phase placement rules match on (`NULL` or `""` clears it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vvram_set_phase(phase: *const c_char) -> c_int {
    unsafe { set_name(phase, |s| &mut s.phase) }
}

/// Sets the tag placement rules match on for allocations from now on (`NULL` or `""` clears it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vvram_set_tag(tag: *const c_char) -> c_int {
    unsafe { set_name(tag, |s| &mut s.tag) }
}

/// The live state, as `vvram_stats_json` and the shared-memory region show it. Never
/// ends the process: a policy that does not fit the machine shows as `policy_error`.
pub fn snapshot() -> Snapshot {
    let mut state = state();
    // A forked child reports what it inherited: asking the driver there could hang on a
    // lock another thread of the parent held inside it at the fork.
    let forked_child = crate::runtime::forked_child();
    let policy_error = if forked_child { state.policy_error.clone() } else { match state.try_manager() {
        // Stream-ordered frees whose stream has passed them are no longer placed.
        Ok(Some(manager)) => {
            manager.reclaim();
            None
        }
        Ok(None) => None,
        Err(error) => Some(error),
    } };
    let manager = state.manager.as_ref();
    let devices: Vec<DeviceSnapshot> = manager
        .map(|m| {
            m.plan()
                .devices
                .iter()
                .filter_map(|d| m.usage(d.index))
                .map(|u| {
                    let classes = if forked_child { Vec::new() } else { crate::working_set::classes(m, u.device) };
                    let class = |tier| classes.iter().find(|(t, _, _)| *t == tier).map_or((0, 0), |(_, hot, weights)| (*hot, *weights));
                    DeviceSnapshot {
                        device: u.device,
                        reported_total: u.reported_total,
                        allocations: u.allocations,
                        tiers: u
                            .tiers
                            .iter()
                            .map(|t| {
                                let (hot, weights) = class(t.tier);
                                TierSnapshot { tier: t.tier.to_string(), used: t.used, capacity: t.capacity, hot, weights, unknown: t.used.saturating_sub(hot + weights) }
                            })
                            .collect(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let counters = manager.map(|m| m.counters()).unwrap_or_default();
    let donor_bytes = manager.map_or(0, |m| m.plan().devices.iter().flat_map(|d| m.donor_extents(d.index)).map(|(_, size, _)| size).sum());
    Snapshot {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        policy: state.policy.as_ref().map(|_| state.policy_origin.clone()),
        active: manager.is_some(),
        policy_error,
        phase: state.phase.clone(),
        tag: state.tag.clone(),
        working_set: match manager {
            Some(m) if !forked_child => crate::working_set::snapshot(m, &devices),
            _ => Default::default(),
        },
        devices,
        host_pool_bytes: manager.map_or(0, |m| m.pool_bytes()),
        allocations: counters.allocations,
        frees: counters.frees,
        out_of_memory: counters.out_of_memory,
        fast_h2d_bytes: counters.fast_h2d_bytes,
        errors: counters.errors + HOOK_ERRORS.load(Ordering::Relaxed),
        engine: vvram_stats::EngineSnapshot { donor_bytes, ..if forked_child { Default::default() } else { crate::staging::snapshot() } },
    }
}

/// Writes the live state as JSON into `buffer` (NUL-terminated, when it fits in `len`
/// bytes). Returns the bytes needed including the NUL, so a caller can retry larger.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vvram_stats_json(buffer: *mut c_char, len: usize) -> usize {
    let json = snapshot().to_json();
    if json.len() < len {
        unsafe { write_message(buffer, len, &json) };
    }
    json.len() + 1
}
