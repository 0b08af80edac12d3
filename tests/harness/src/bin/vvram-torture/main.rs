//! `vvram-torture SCENARIO [ARGS]`: hostile workloads for libvvram.so on the fake driver
//! (or a GPU): many threads of mixed operations with content checks, a copy racing a
//! free, forks while other threads allocate, a workload that tolerates injected driver
//! faults, and replays of crash classes seen in other CUDA interposers.
//!
//! Prints one `name: key=value ...` line of figures on stdout and exits 0 when the
//! scenario's invariants hold; prints the failure on stderr and exits 1 otherwise.

use std::ffi::{CString, c_char, c_int, c_void};
use vvram_cuda::*;
use vvram_harness::{Cuda, Door, cu};

mod faults;
mod replay;
mod stress;

const MIB: u64 = 1 << 20;

/// The driver, initialised, with the primary context of device 0 current.
pub struct Env {
    cuda: Cuda,
    context: usize,
}

// SAFETY: driver entry points and contexts may be used from any thread.
unsafe impl Sync for Env {}

impl Env {
    fn open() -> Result<Env, String> {
        let cuda = Cuda::load(Door::Dlsym)?;
        cu!(cuda, cuInit(0)).map_err(|e| e.to_string())?;
        let mut context = std::ptr::null_mut();
        cu!(cuda, cuDevicePrimaryCtxRetain(&mut context, 0)).map_err(|e| e.to_string())?;
        cu!(cuda, cuCtxSetCurrent(context)).map_err(|e| e.to_string())?;
        Ok(Env { cuda, context: context as usize })
    }

    /// Makes the context current on the calling thread.
    fn enter(&self) -> Result<(), String> {
        cu!(self.cuda, cuCtxSetCurrent(self.context as CUcontext)).map_err(|e| e.to_string())
    }

    /// A raw call's code (`NOT_FOUND` when the driver lacks the entry point).
    fn alloc(&self, size: u64) -> Result<u64, CUresult> {
        let mut p = 0;
        match self.cuda.api.cuMemAlloc_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, size as usize) }) {
            result::SUCCESS => Ok(p),
            code => Err(code),
        }
    }

    fn free(&self, p: u64) -> CUresult {
        self.cuda.api.cuMemFree_v2.map_or(result::NOT_FOUND, |f| unsafe { f(p) })
    }

    fn write(&self, p: u64, data: &[u8]) -> CUresult {
        self.cuda.api.cuMemcpyHtoD_v2.map_or(result::NOT_FOUND, |f| unsafe { f(p, data.as_ptr() as *const c_void, data.len()) })
    }

    fn read(&self, p: u64, len: usize) -> Result<Vec<u8>, CUresult> {
        let mut data = vec![0u8; len];
        match self.cuda.api.cuMemcpyDtoH_v2.map_or(result::NOT_FOUND, |f| unsafe { f(data.as_mut_ptr() as *mut c_void, p, len) }) {
            result::SUCCESS => Ok(data),
            code => Err(code),
        }
    }
}

/// The control API of the preloaded libvvram.so.
pub struct Control {
    stats_json: vvram_stats::StatsJsonFn,
    set_phase: unsafe extern "C" fn(*const c_char) -> c_int,
    set_policy_toml: unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> c_int,
}

impl Control {
    fn find() -> Result<Control, String> {
        let symbol = |name: &std::ffi::CStr| {
            // SAFETY: a lookup in the global scope.
            let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if address.is_null() { Err(format!("{} not found: is libvvram.so preloaded?", name.to_string_lossy())) } else { Ok(address) }
        };
        // SAFETY: the control API's documented signatures (include/vvram.h).
        unsafe {
            Ok(Control {
                stats_json: std::mem::transmute::<*mut c_void, vvram_stats::StatsJsonFn>(symbol(c"vvram_stats_json")?),
                set_phase: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*const c_char) -> c_int>(symbol(c"vvram_set_phase")?),
                set_policy_toml: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> c_int>(symbol(
                    c"vvram_set_policy_toml",
                )?),
            })
        }
    }

    fn stats(&self) -> Result<serde_json::Value, String> {
        // SAFETY: the preloaded libvvram.so's vvram_stats_json.
        let json = unsafe { vvram_stats::control_api_json(self.stats_json) };
        serde_json::from_slice(&json).map_err(|e| format!("stats are not JSON: {e}"))
    }

    /// Bytes placed on every tier of every device.
    fn placed(&self) -> Result<u64, String> {
        let stats = self.stats()?;
        let tiers = stats["devices"].as_array().into_iter().flatten().flat_map(|d| d["tiers"].as_array().into_iter().flatten());
        Ok(tiers.filter_map(|t| t["used"].as_u64()).sum())
    }

    fn phase(&self, phase: Option<&str>) -> c_int {
        let text = phase.map(|p| CString::new(p).unwrap_or_default());
        // SAFETY: a NUL-terminated name or NULL.
        unsafe { (self.set_phase)(text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr())) }
    }

    fn policy(&self, toml: &str) -> c_int {
        let text = CString::new(toml).unwrap_or_default();
        let mut error = [0 as c_char; 512];
        // SAFETY: a NUL-terminated text and a buffer of the given length.
        unsafe { (self.set_policy_toml)(text.as_ptr(), error.as_mut_ptr(), error.len()) }
    }
}

/// A small, fast, seeded generator (xorshift64*): the same seed gives the same run.
pub struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn number(args: &[String], index: usize, default: u64) -> Result<u64, String> {
    args.get(index).map_or(Ok(default), |a| a.parse().map_err(|_| format!("`{a}`: expected a number")))
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("stress") => stress::stress(number(args, 1, 8)?, number(args, 2, 10_000)?, number(args, 3, 1)?),
        Some("race") => stress::copy_racing_free(number(args, 1, 200)?),
        Some("fork") => stress::fork_while_allocating(number(args, 1, 100)?),
        Some("faults") => faults::workload(),
        Some("replay") => replay::replay(args.get(1).map(String::as_str).unwrap_or("")),
        _ => Err("usage: vvram-torture stress THREADS OPS SEED | race ROUNDS | fork ROUNDS | faults | replay NAME".into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(message) = run(&args) {
        eprintln!("vvram-torture: {message}");
        std::process::exit(1);
    }
}
