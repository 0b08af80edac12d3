//! libvvram.so: preloaded into an unmodified CUDA application, it interposes the
//! driver's allocation, copy and memory-query calls through all three doors (exported
//! symbols, `dlsym`, `cuGetProcAddress`) and places memory on the compute GPU, peer GPUs
//! and pinned host RAM as the policy says. Decisions live in `vvram-allocator`; this
//! crate is the C ABI around them.

mod coherence;
mod control;
mod copy;
mod doors;
mod hooks;
mod launch;
mod log;
mod ops;
mod probe;
mod real;
mod runtime;
mod staging;
mod tensor_map;
mod working_set;

/// Runs before `main`: reads the policy from the environment (see `runtime::start`).
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = runtime::start;
