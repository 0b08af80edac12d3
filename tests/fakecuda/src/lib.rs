//! A fake `libcuda.so.1` for tests without a GPU.
//!
//! It implements the part of the CUDA driver API that vvram and its test programs use,
//! with the driver's names, C signatures, enum values and struct layouts, on host memory
//! (see `memory`), with asynchronous streams (see `stream`), a few built-in kernels (see
//! `kernels`), a configurable machine (see `config`) and fault injection (see `fault`).
//! The entry points are grouped by job: `device` (initialisation, devices, contexts),
//! `attributes`, `allocation`, `pools`, `vmm`, `copies`, `streams`, `stream_info`,
//! `modules`, `tensor_map`, `errors`, `export_tables` (with `integrity`), `unsupported` and `procaddress`; this file holds what every entry point shares.
//! It behaves as driver 580 does on libcudart's path: `cuLibraryGetKernel` gives
//! `CUkernel` handles, `cuFuncGetParamInfo` refuses them with `CUDA_ERROR_INVALID_HANDLE`,
//! and `cuKernelGetParamInfo` is reachable only through `cuGetProcAddress`.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod allocation;
mod capture;
mod attributes;
mod config;
mod copies;
mod device;
mod errors;
mod export_tables;
mod fault;
mod integrity;
mod kernels;
mod memory;
mod modules;
mod pools;
mod procaddress;
mod stream;
mod stream_info;
mod tensor_map;
mod timing;
mod streams;
mod unsupported;
mod vmm;

use config::config;
use kernels::Kernel;
use memory::Place;
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use stream::{Event, Registry, Stream};
use vvram_cuda::*;

use allocation::*;
use capture::*;
use attributes::*;
use copies::*;
use device::*;
use errors::*;
use export_tables::*;
use modules::*;
use pools::*;
use stream_info::*;
use tensor_map::*;
use streams::*;
use vmm::*;

static INITIALIZED: AtomicBool = AtomicBool::new(false);

type Outcome = Result<(), CUresult>;

/// Runs an entry point: fault injection, the initialisation check, no unwinding into C.
fn entry(symbol: &str, needs_init: bool, body: impl FnOnce() -> Outcome) -> CUresult {
    if let Some(code) = fault::injected(&config().faults, symbol) {
        return code;
    }
    // A host function queued on a stream must not call CUDA; the driver refuses.
    if stream::in_host_function() {
        return result::NOT_PERMITTED;
    }
    if needs_init && !INITIALIZED.load(Ordering::Acquire) {
        return result::NOT_INITIALIZED;
    }
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => result::SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => result::UNKNOWN,
    }
}

unsafe fn out<T>(pointer: *mut T, value: T) -> Outcome {
    if pointer.is_null() {
        return Err(result::INVALID_VALUE);
    }
    // SAFETY: the caller passed a non-null output pointer, as the API requires.
    unsafe { pointer.write(value) };
    Ok(())
}
