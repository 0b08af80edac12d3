//! `flux-sim VARIANT HOST_FRACTION`: one variant of the FLUX-shaped step on the fake
//! driver's timing model (see `run.sh`, which runs them all and prints the ratios).
//!
//! The model: 19 double blocks and 38 single blocks (a double block holds 2.4× the weights
//! of a single one, as in FLUX.1), four weight tensors per block; each tensor is read by
//! one `weight_sum` kernel whose compute time is proportional to its bytes (a GEMM). The
//! weights are loaded first (written from the host), then sampled for 8 steps with a
//! synchronisation at the end of each step, as a sampler does. Variants:
//!
//! * `local`: every weight on the device (no vvram): the compute time C.
//! * `zero-copy`: under libvvram.so, weights past the local budget on the host tier,
//!   streaming off: kernels read them across the link.
//! * `baseline`: no vvram; the host part in host-located memory, copied block by block into
//!   two device slots on a copy stream, block i+1 while block i computes (DisTorch2-style).
//! * `engine`: under libvvram.so with streaming on, the same budget as `zero-copy`.
//!
//! Step times are measured with events on the stream (on the fake driver, the timing
//! model's virtual clock: exact whatever the machine's load). Prints one line per step
//! (`step N ms`), then `checksum X` (the outputs, equal for every
//! variant) and `host_bytes N` (weights off the device).

use std::ffi::{CString, c_void};
use vvram_cuda::kernels as ptx;
use vvram_cuda::*;
use vvram_harness::{CallError, Cuda, Door, cu};

/// Bytes of the whole model.
pub const MODEL_BYTES: u64 = 96 << 20;
/// Compute time of one step, nanoseconds.
pub const STEP_NS: u64 = 300_000_000;
/// Steps sampled.
const STEPS: usize = 8;
const DOUBLE_BLOCKS: usize = 19;
const SINGLE_BLOCKS: usize = 38;
/// Share of a block's bytes in each of its four tensors (qkv, projection, MLP in, MLP out).
const TENSOR_SHARES: [u64; 4] = [3, 1, 4, 4];

type Checked<T = ()> = Result<T, String>;

fn fail(e: CallError) -> String {
    e.to_string()
}

/// The tensors of the model in execution order, as float counts (multiples of 128).
fn tensors() -> Vec<Vec<u64>> {
    let units = DOUBLE_BLOCKS as u64 * 24 + SINGLE_BLOCKS as u64 * 10;
    let unit = MODEL_BYTES / units;
    (0..DOUBLE_BLOCKS + SINGLE_BLOCKS)
        .map(|b| {
            let block = unit * if b < DOUBLE_BLOCKS { 24 } else { 10 };
            let share: u64 = TENSOR_SHARES.iter().sum();
            TENSOR_SHARES.iter().map(|s| (block * s / share / 4) / 128 * 128).collect()
        })
        .collect()
}

struct Sim {
    cuda: Cuda,
    weight_sum: CUfunction,
    stream: CUstream,
}

impl Sim {
    fn open() -> Checked<Sim> {
        let cuda = Cuda::load(Door::Dlsym)?;
        cu!(cuda, cuInit(0)).map_err(fail)?;
        let mut context = std::ptr::null_mut();
        cu!(cuda, cuDevicePrimaryCtxRetain(&mut context, 0)).map_err(fail)?;
        cu!(cuda, cuCtxSetCurrent(context)).map_err(fail)?;
        let mut module = std::ptr::null_mut();
        cu!(cuda, cuModuleLoadData(&mut module, ptx::MODULE.as_ptr() as *const c_void)).map_err(fail)?;
        let mut weight_sum = std::ptr::null_mut();
        let name = CString::new("weight_sum").map_err(|e| e.to_string())?;
        cu!(cuda, cuModuleGetFunction(&mut weight_sum, module, name.as_ptr())).map_err(fail)?;
        let mut stream = std::ptr::null_mut();
        cu!(cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING)).map_err(fail)?;
        Ok(Sim { cuda, weight_sum, stream })
    }

    fn alloc(&self, bytes: u64) -> Checked<u64> {
        let mut p = 0;
        cu!(self.cuda, cuMemAlloc_v2(&mut p, bytes as usize)).map_err(fail)?;
        Ok(p)
    }

    /// Host-located memory the device can read (what a pinned offload buffer is).
    fn host_located(&self, bytes: u64) -> Checked<u64> {
        let granularity = 2 << 20;
        let size = bytes.div_ceil(granularity) * granularity;
        let mut address = 0;
        cu!(self.cuda, cuMemAddressReserve(&mut address, size as usize, granularity as usize, 0, 0)).map_err(fail)?;
        let mut handle = 0;
        let prop = CUmemAllocationProp::pinned(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST_NUMA, id: 0 });
        cu!(self.cuda, cuMemCreate(&mut handle, size as usize, &prop, 0)).map_err(fail)?;
        cu!(self.cuda, cuMemMap(address, size as usize, 0, handle, 0)).map_err(fail)?;
        let access = [
            CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
            CUmemAccessDesc { location: CUmemLocation { type_: CU_MEM_LOCATION_TYPE_HOST, id: 0 }, flags: CU_MEM_ACCESS_FLAGS_PROT_READWRITE },
        ];
        cu!(self.cuda, cuMemSetAccess(address, size as usize, access.as_ptr(), access.len())).map_err(fail)?;
        Ok(address)
    }

    fn write(&self, address: u64, values: &[f32]) -> Checked {
        cu!(self.cuda, cuMemcpyHtoD_v2(address, values.as_ptr() as *const c_void, values.len() * 4)).map_err(fail)
    }

    fn weight_sum(&self, stream: CUstream, weight: u64, n: u64, out: u64, ns: u64) -> Checked {
        let (mut w, mut n, mut o, mut t) = (weight, n, out, ns);
        let mut params = [&mut w as *mut u64 as *mut c_void, &mut n as *mut u64 as *mut c_void, &mut o as *mut u64 as *mut c_void, &mut t as *mut u64 as *mut c_void];
        cu!(self.cuda, cuLaunchKernel(self.weight_sum, 64, 1, 1, 256, 1, 1, 0, stream, params.as_mut_ptr(), std::ptr::null_mut())).map_err(fail)
    }

    /// An event with timing (step times are measured on the device's clock).
    fn timing_event(&self) -> Checked<CUevent> {
        let mut event = std::ptr::null_mut();
        cu!(self.cuda, cuEventCreate(&mut event, 0)).map_err(fail)?;
        Ok(event)
    }

    fn event(&self) -> Checked<CUevent> {
        let mut event = std::ptr::null_mut();
        cu!(self.cuda, cuEventCreate(&mut event, 2)).map_err(fail)?;
        Ok(event)
    }
}

/// Weight values: small integers, so every sum is exact in f32 whatever the order.
fn values(tensor: usize, n: u64) -> Vec<f32> {
    (0..n).map(|i| ((i as usize * 7 + tensor * 13) % 5) as f32).collect()
}

fn run(variant: &str, host_fraction: f64) -> Checked {
    let sim = Sim::open()?;
    let blocks = tensors();
    let stats = Stats::find();
    let total: u64 = blocks.iter().flatten().sum::<u64>() * 4;
    let count: usize = blocks.iter().map(Vec::len).sum();
    let out = sim.alloc(count as u64 * 4)?;
    sim.write(out, &vec![0.0; count])?;
    let local_bytes = ((1.0 - host_fraction) * total as f64) as u64;

    // Load: allocate and write every weight, in order.
    let mut weights = Vec::new();
    let mut host_part: Vec<bool> = Vec::new();
    let mut placed = 0;
    for (i, &n) in blocks.iter().flatten().enumerate() {
        let on_host = variant == "baseline" && placed + n * 4 > local_bytes;
        let address = if on_host { sim.host_located(n * 4)? } else { sim.alloc(n * 4)? };
        sim.write(address, &values(i, n))?;
        placed += n * 4;
        weights.push(address);
        host_part.push(on_host);
    }
    cu!(sim.cuda, cuCtxSynchronize()).map_err(fail)?;
    let ns_per_byte = STEP_NS as f64 / total as f64;

    // The baseline's two device slots and its copy stream.
    let largest_block: u64 = blocks.iter().map(|b| b.iter().sum::<u64>() * 4).max().unwrap_or(0);
    let (slots, copy_stream) = if variant == "baseline" {
        let mut copy_stream = std::ptr::null_mut();
        cu!(sim.cuda, cuStreamCreate(&mut copy_stream, CU_STREAM_NON_BLOCKING)).map_err(fail)?;
        ([sim.alloc(largest_block)?, sim.alloc(largest_block)?], copy_stream)
    } else {
        ([0, 0], std::ptr::null_mut())
    };
    let (copied, computed) = ([sim.event()?, sim.event()?], [sim.event()?, sim.event()?]);
    let first_tensor: Vec<usize> = blocks.iter().scan(0, |start, b| {
        let first = *start;
        *start += b.len();
        Some(first)
    }).collect();
    let offloaded = |b: usize| host_part[first_tensor[b]];
    let stage = |b: usize| -> Checked {
        // Copy block b into slot b % 2 once the block that used that slot has computed.
        let slot = b % 2;
        cu!(sim.cuda, cuStreamWaitEvent(copy_stream, computed[slot], 0)).map_err(fail)?;
        let mut offset = 0;
        for (t, &n) in blocks[b].iter().enumerate() {
            let source = weights[first_tensor[b] + t];
            cu!(sim.cuda, cuMemcpyAsync(slots[slot] + offset, source, (n * 4) as usize, copy_stream)).map_err(fail)?;
            offset += n * 4;
        }
        cu!(sim.cuda, cuEventRecord(copied[slot], copy_stream)).map_err(fail)
    };

    let (step_start, step_end) = (sim.timing_event()?, sim.timing_event()?);
    for step in 0..STEPS {
        cu!(sim.cuda, cuEventRecord(step_start, sim.stream)).map_err(fail)?;
        if variant == "baseline" && offloaded(0) {
            stage(0)?;
        }
        for (b, block) in blocks.iter().enumerate() {
            let in_slot = variant == "baseline" && offloaded(b);
            if variant == "baseline" && b + 1 < blocks.len() && offloaded(b + 1) {
                stage(b + 1)?;
            }
            if in_slot {
                cu!(sim.cuda, cuStreamWaitEvent(sim.stream, copied[b % 2], 0)).map_err(fail)?;
            }
            let mut offset = 0;
            for (t, &n) in block.iter().enumerate() {
                let index = first_tensor[b] + t;
                let weight = if in_slot { slots[b % 2] + offset } else { weights[index] };
                offset += n * 4;
                sim.weight_sum(sim.stream, weight, n, out + index as u64 * 4, (n as f64 * 4.0 * ns_per_byte) as u64)?;
            }
            if in_slot {
                cu!(sim.cuda, cuEventRecord(computed[b % 2], sim.stream)).map_err(fail)?;
            }
        }
        cu!(sim.cuda, cuEventRecord(step_end, sim.stream)).map_err(fail)?;
        cu!(sim.cuda, cuStreamSynchronize(sim.stream)).map_err(fail)?;
        let mut ms = 0f32;
        cu!(sim.cuda, cuEventElapsedTime(&mut ms, step_start, step_end)).map_err(fail)?;
        println!("step {} {ms:.1} ms", step + 1);
    }
    let mut sums = vec![0f32; count];
    cu!(sim.cuda, cuMemcpyDtoH_v2(sums.as_mut_ptr() as *mut c_void, out, count * 4)).map_err(fail)?;
    let checksum: f64 = sums.iter().enumerate().map(|(i, s)| *s as f64 * (i + 1) as f64).sum();
    println!("checksum {checksum}");
    let host_bytes = match &stats {
        Some(stats) => stats.host_bytes()?,
        None => weights.iter().zip(&blocks.concat()).zip(&host_part).filter(|(_, on_host)| **on_host).map(|((_, n), _)| n * 4).sum(),
    };
    println!("host_bytes {host_bytes}");
    if let Some(stats) = &stats {
        stats.print_engine()?;
    }
    Ok(())
}

/// libvvram.so's statistics, when the process runs under it.
struct Stats {
    json: vvram_stats::StatsJsonFn,
}

impl Stats {
    fn find() -> Option<Stats> {
        // SAFETY: a lookup in the global scope; the symbol has this signature (vvram.h).
        let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"vvram_stats_json".as_ptr()) };
        (!address.is_null()).then(|| Stats { json: unsafe { std::mem::transmute::<*mut c_void, vvram_stats::StatsJsonFn>(address) } })
    }

    fn read(&self) -> Checked<serde_json::Value> {
        // SAFETY: the preloaded libvvram.so's vvram_stats_json.
        let text = unsafe { vvram_stats::control_api_json(self.json) };
        serde_json::from_slice(&text).map_err(|e| format!("vvram_stats_json: {e}"))
    }

    /// Bytes of weights vvram placed off the device.
    fn host_bytes(&self) -> Checked<u64> {
        let stats = self.read()?;
        stats["engine"]["donor_bytes"].as_u64().ok_or_else(|| format!("no engine.donor_bytes in {stats}"))
    }

    fn print_engine(&self) -> Checked {
        let e = &self.read()?["engine"];
        if e["engines"].as_u64().unwrap_or(0) > 0 {
            println!(
                "engine translated {}/{} launches, missed {}, staged {} MiB, written back {} MiB, period {}, predicted right {}/{}, stalled {:.1} ms over {} timed waits",
                e["translated_launches"], e["donor_launches"], e["missed_launches"],
                e["staged_host_bytes"].as_u64().unwrap_or(0) >> 20, e["written_back_bytes"].as_u64().unwrap_or(0) >> 20,
                e["period"], e["predicted_right"], e["predicted"],
                e["stall_ns"].as_u64().unwrap_or(0) as f64 / 1e6, e["stall_probes"]
            );
        }
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("info") {
        let bytes: u64 = tensors().iter().flatten().sum::<u64>() * 4;
        println!("{bytes} {STEP_NS}");
        return;
    }
    let (Some(variant), Some(fraction)) = (args.first(), args.get(1).and_then(|f| f.parse::<f64>().ok())) else {
        eprintln!("usage: flux-sim local|zero-copy|baseline|engine HOST_FRACTION, or flux-sim info (model bytes, step ns)");
        std::process::exit(2);
    };
    if let Err(message) = run(variant, fraction) {
        eprintln!("flux-sim {variant}: {message}");
        std::process::exit(1);
    }
}
