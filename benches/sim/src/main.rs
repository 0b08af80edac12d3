//! `flux-sim VARIANT HOST_FRACTION`: one variant of the FLUX-shaped step on the fake
//! driver's timing model (see `run.sh`, which runs them all and prints the ratios).
//!
//! The model (`model.rs`): 19 double blocks of five 2 MiB weight tensors and 38 single
//! blocks of two; each tensor is read by one `weight_sum` kernel whose compute time is
//! proportional to its bytes (a GEMM). Activations: two hidden states and a workspace, and the latent, 2 MiB
//! each. A step copies the latent into the first hidden state; each block copies its
//! input into the workspace, scales it by −1, runs its GEMMs, sums the workspace and
//! copies it to the other hidden state (its output); the step ends by copying the last
//! output into the latent. So every activation is read and written many times a step and
//! the latent twice. These kernels read and write their buffers in full but take no
//! compute time of their own (`FAKECUDA_KERNEL_US` sets a floor), so the compute time C
//! is the GEMMs'. The weights are loaded first (written from the host), then sampled for
//! 8 steps with a synchronisation at the end of each step, as a sampler does. Variants:
//!
//! * `local`: everything on the device (no vvram): the compute time C.
//! * `zero-copy`: under libvvram.so, weights past the local budget on the host tier,
//!   streaming off: kernels read them across the link.
//! * `baseline`: no vvram; the host part in host-located memory, copied block by block into
//!   two device slots on a copy stream, block i+1 while block i computes (DisTorch2-style).
//! * `engine`: under libvvram.so with streaming on, the same budget as `zero-copy`.
//! * `unmodified`: what ComfyUI does, under libvvram.so with streaming on and no rules or
//!   phase: the weights are allocated and written first, the activations and the latent
//!   when sampling starts (each buffer right before the kernel that first writes it, as
//!   PyTorch allocates); each step is followed by [`STEP_WALL_TIME`] of wall time, so
//!   vvram's background thread sees the steps as it would on a GPU. The other variants place by hand: activations and latent are
//!   allocated before the weights, so local-first placement keeps them on the device.
//!
//! Step times are measured with events on the stream (on the fake driver, the timing
//! model's virtual clock: exact whatever the machine's load). Prints one line per step
//! (`step N ms`), then `checksum X` (the outputs and final activations, equal for every
//! variant), `host_bytes N` (bytes vvram, or the baseline, placed off the device) and,
//! under libvvram.so, `donor_hot_bytes N` (`?` when the library does not report it) and
//! the working set's counters, read after the last step, and the engine's counters.

/// Wall time after each step of the `unmodified` variant (see the module documentation).
const STEP_WALL_TIME: std::time::Duration = std::time::Duration::from_millis(100);

mod device;
mod model;
mod stats;

use device::{Checked, Sim};
use model::*;
use stats::Stats;

/// The activation buffers and the latent.
struct Activations {
    hidden: [u64; 2],
    workspace: u64,
    latent: u64,
}

impl Activations {
    fn allocate(sim: &Sim) -> Checked<Activations> {
        let bytes = ACTIVATION_FLOATS * 4;
        let acts = Activations { hidden: [sim.alloc(bytes)?, sim.alloc(bytes)?], workspace: sim.alloc(bytes)?, latent: sim.alloc(bytes)? };
        sim.write(acts.latent, &latent_values())?;
        Ok(acts)
    }

    /// As a framework allocates them when sampling starts: the latent from the host, then
    /// each buffer right before the kernel that first writes it.
    fn allocate_while_sampling(sim: &Sim) -> Checked<Activations> {
        let bytes = ACTIVATION_FLOATS * 4;
        let latent = sim.alloc(bytes)?;
        sim.write(latent, &latent_values())?;
        let first = sim.alloc(bytes)?;
        sim.copy(first, latent, ACTIVATION_FLOATS)?;
        let workspace = sim.alloc(bytes)?;
        sim.copy(workspace, first, ACTIVATION_FLOATS)?;
        let second = sim.alloc(bytes)?;
        sim.copy(second, workspace, ACTIVATION_FLOATS)?;
        Ok(Activations { hidden: [first, second], workspace, latent })
    }

    /// Before block `b`'s GEMMs: its input into the workspace, scaled by −1.
    fn block_in(&self, sim: &Sim, b: usize) -> Checked {
        sim.copy(self.workspace, self.hidden[b % 2], ACTIVATION_FLOATS)?;
        sim.scale(self.workspace, -1.0, ACTIVATION_FLOATS)
    }

    /// After block `b`'s GEMMs: the workspace's sum into `out`, the workspace into the
    /// block's output.
    fn block_out(&self, sim: &Sim, b: usize, out: u64) -> Checked {
        sim.sum(self.workspace, out, ACTIVATION_FLOATS)?;
        sim.copy(self.hidden[(b + 1) % 2], self.workspace, ACTIVATION_FLOATS)
    }

    /// Every buffer's contents, each float weighted by its position.
    fn checksum(&self, sim: &Sim) -> Checked<f64> {
        let mut total = 0.0;
        for (i, &buffer) in [self.hidden[0], self.hidden[1], self.workspace, self.latent].iter().enumerate() {
            let values = sim.read(buffer, ACTIVATION_FLOATS as usize)?;
            total += (i + 1) as f64 * values.iter().enumerate().map(|(k, v)| *v as f64 * (k + 1) as f64).sum::<f64>();
        }
        Ok(total)
    }
}

fn run(variant: &str, host_fraction: f64) -> Checked {
    let sim = Sim::open()?;
    let blocks = tensors();
    let stats = Stats::find();
    let total = weight_bytes();
    let count: usize = blocks.iter().map(Vec::len).sum();
    // One sum per weight tensor, then one per block (its workspace).
    let out = sim.alloc((count + blocks.len()) as u64 * 4)?;
    sim.write(out, &vec![0.0; count + blocks.len()])?;
    let local_bytes = ((1.0 - host_fraction) * total as f64) as u64;
    let hand_placed = variant != "unmodified";
    let mut acts = if hand_placed { Some(Activations::allocate(&sim)?) } else { None };

    // Load: allocate and write every weight, in order.
    let mut weights = Vec::new();
    let mut host_part: Vec<bool> = Vec::new();
    let mut placed = 0;
    for (i, &n) in blocks.iter().flatten().enumerate() {
        let on_host = variant == "baseline" && placed + n * 4 > local_bytes;
        let address = if on_host { sim.host_located(n * 4)? } else { sim.alloc(n * 4)? };
        sim.write(address, &weight_values(i, n))?;
        placed += n * 4;
        weights.push(address);
        host_part.push(on_host);
    }
    sim.synchronize()?;
    let ns_per_byte = STEP_NS as f64 / total as f64;
    // Sampling starts: ComfyUI's activations and latent come now.
    let acts = match acts.take() {
        Some(acts) => acts,
        None => Activations::allocate_while_sampling(&sim)?,
    };

    // The baseline's two device slots and its copy stream.
    let largest_block: u64 = blocks.iter().map(|b| b.iter().sum::<u64>() * 4).max().unwrap_or(0);
    let (slots, copy_stream) = if variant == "baseline" { ([sim.alloc(largest_block)?, sim.alloc(largest_block)?], sim.new_stream()?) } else { ([0, 0], std::ptr::null_mut()) };
    let (copied, computed) = ([sim.event()?, sim.event()?], [sim.event()?, sim.event()?]);
    let first_tensor: Vec<usize> = blocks
        .iter()
        .scan(0, |start, b| {
            let first = *start;
            *start += b.len();
            Some(first)
        })
        .collect();
    let offloaded = |b: usize| variant == "baseline" && host_part[first_tensor[b]];
    let stage = |b: usize| -> Checked {
        // Copy block b into slot b % 2 once the block that used that slot has computed.
        let slot = b % 2;
        sim.wait(copy_stream, computed[slot])?;
        let mut offset = 0;
        for (t, &n) in blocks[b].iter().enumerate() {
            sim.copy_async(slots[slot] + offset, weights[first_tensor[b] + t], n * 4, copy_stream)?;
            offset += n * 4;
        }
        sim.record(copied[slot], copy_stream)
    };

    let (step_start, step_end) = (sim.timing_event()?, sim.timing_event()?);
    for step in 0..STEPS {
        sim.record(step_start, sim.stream)?;
        sim.copy(acts.hidden[0], acts.latent, ACTIVATION_FLOATS)?;
        if offloaded(0) {
            stage(0)?;
        }
        for (b, block) in blocks.iter().enumerate() {
            let in_slot = offloaded(b);
            if b + 1 < blocks.len() && offloaded(b + 1) {
                stage(b + 1)?;
            }
            acts.block_in(&sim, b)?;
            if in_slot {
                sim.wait(sim.stream, copied[b % 2])?;
            }
            let mut offset = 0;
            for (t, &n) in block.iter().enumerate() {
                let index = first_tensor[b] + t;
                let weight = if in_slot { slots[b % 2] + offset } else { weights[index] };
                offset += n * 4;
                sim.weight_sum(sim.stream, weight, n, out + index as u64 * 4, (n as f64 * 4.0 * ns_per_byte) as u64)?;
            }
            if in_slot {
                sim.record(computed[b % 2], sim.stream)?;
            }
            acts.block_out(&sim, b, out + (count + b) as u64 * 4)?;
        }
        sim.copy(acts.latent, acts.hidden[blocks.len() % 2], ACTIVATION_FLOATS)?;
        sim.record(step_end, sim.stream)?;
        println!("step {} {:.1} ms", step + 1, sim.finish(step_start, step_end)?);
        if !hand_placed {
            // A real step takes about a second; here a few milliseconds of wall time.
            // vvram's background thread (a turn every 50 ms) gets the turns it would get.
            std::thread::sleep(STEP_WALL_TIME);
        }
    }
    let working_set = stats.as_ref().map(Stats::working_set).transpose()?;
    let sums = sim.read(out, count + blocks.len())?;
    let checksum = sums.iter().enumerate().map(|(i, s)| *s as f64 * (i + 1) as f64).sum::<f64>() + acts.checksum(&sim)?;
    println!("checksum {checksum}");
    let host_bytes = match &stats {
        Some(stats) => stats.donor_bytes()?,
        None => blocks.iter().flatten().zip(&host_part).filter(|(_, on_host)| **on_host).map(|(n, _)| n * 4).sum(),
    };
    println!("host_bytes {host_bytes}");
    if let Some(text) = working_set {
        println!("{text}");
    }
    if let Some(stats) = &stats {
        stats.print_engine()?;
    }
    Ok(())
}

const VARIANTS: [&str; 5] = ["local", "zero-copy", "baseline", "engine", "unmodified"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("info") {
        println!("{} {STEP_NS} {ACTIVATION_BYTES}", weight_bytes());
        return;
    }
    let (Some(variant), Some(fraction)) = (args.first().filter(|v| VARIANTS.contains(&v.as_str())), args.get(1).and_then(|f| f.parse::<f64>().ok())) else {
        eprintln!("usage: flux-sim local|zero-copy|baseline|engine|unmodified HOST_FRACTION, or flux-sim info (weight bytes, step ns, activation bytes)");
        std::process::exit(2);
    };
    if let Err(message) = run(variant, fraction) {
        eprintln!("flux-sim {variant}: {message}");
        std::process::exit(1);
    }
}
