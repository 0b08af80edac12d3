//! Scenarios for automatic placement (under libvvram.so with streaming on and no phase
//! set): what ComfyUI does — load every weight first, then sample with activations
//! allocated afterwards — and what the working set makes of it.
//!
//! The model: 14 weights of 4 MiB (a pattern per weight), two 4 MiB activation buffers
//! and a 2 MiB latent. A step runs one `sum_f32` per weight (reading its first 256
//! floats), each followed by a `scale_f32` on one activation (by 2, ½, 2, ½, 2, ½, 1:
//! their values stay exact), and writes and reads the latent; a weight is used once per step,
//! an activation seven times. Modes:
//!
//! * `steady`: sample until the engine has settled and classified every extent.
//! * `refill`: sample until weights kept on the host at load came back to the card.
//! * `pressure`: as `steady`, then a second thread allocates buffers that do not fit on
//!   the card while the first keeps sampling on its stream: weights are demoted to make
//!   room; every weight keeps its contents byte for byte.
//! * `pressure-new-stream`: as `pressure`, but the stream sampling ran on is destroyed
//!   first (sampling goes on on a new one).
//! * `capture`: as `steady`, then a buffer that does not fit is allocated while a stream
//!   captures: nothing is demoted for it.
//! * `fixed`: a fixed number of steps (`WS_STEPS`, default 12), whatever happens.
//!
//! Prints `stats: JSON` at the end, and `ok:` lines for what held.

use super::shim::Control;
use super::{Checked, Failure, Session, ensure};
use std::ffi::c_void;
use std::time::{Duration, Instant};
use vvram_cuda::*;
use vvram_harness::cu;

const WEIGHTS: usize = 14;
const WEIGHT_FLOATS: usize = 1 << 20;
const ACTIVATION_FLOATS: usize = 1 << 20;
const LATENT_FLOATS: usize = 1 << 19;
const READ: usize = 256;

fn pattern(weight: usize) -> Vec<f32> {
    (0..WEIGHT_FLOATS).map(|i| ((i * 7 + weight * 13) % 11) as f32).collect()
}

fn alloc(s: &Session, bytes: usize) -> Checked<u64> {
    let mut p = 0;
    cu!(s.cuda, cuMemAlloc_v2(&mut p, bytes))?;
    Ok(p)
}

fn stream(s: &Session) -> Checked<CUstream> {
    let mut stream = std::ptr::null_mut();
    cu!(s.cuda, cuStreamCreate(&mut stream, CU_STREAM_NON_BLOCKING))?;
    Ok(stream)
}

struct Model {
    weights: Vec<u64>,
    activations: [u64; 2],
    latent: u64,
    out: u64,
    stream: CUstream,
}

impl Model {
    /// Loads the weights (allocated and written first, back to back), then allocates what
    /// sampling uses the way a framework does: each buffer as its first kernel needs it.
    fn load(s: &Session) -> Checked<Model> {
        let mut weights = Vec::new();
        for i in 0..WEIGHTS {
            let w = alloc(s, WEIGHT_FLOATS * 4)?;
            s.write_f32(w, &pattern(i))?;
            weights.push(w);
        }
        let stream = stream(s)?;
        let out = alloc(s, WEIGHTS * 4)?;
        s.fill(stream, out, 0.0, WEIGHTS)?;
        let latent = alloc(s, LATENT_FLOATS * 4)?;
        s.fill(stream, latent, 1.0, READ)?;
        let mut activations = [0; 2];
        for a in &mut activations {
            *a = alloc(s, ACTIVATION_FLOATS * 4)?;
            s.fill(stream, *a, 3.0, READ)?;
        }
        Ok(Model { weights, activations, latent, out, stream })
    }

    fn step(&self, s: &Session) -> Checked {
        let stream = self.stream;
        s.fill(stream, self.latent, 1.0, READ)?;
        for (i, &w) in self.weights.iter().enumerate() {
            let out = self.out + i as u64 * 4;
            s.launch("sum_f32", stream, &mut [&mut w.to_ne_bytes(), &mut out.to_ne_bytes(), &mut (READ as u64).to_ne_bytes()], READ)?;
            let factor: f32 = match i {
                12.. => 1.0,
                _ if (i / 2) % 2 == 0 => 2.0,
                _ => 0.5,
            };
            let a = self.activations[i % 2];
            s.launch("scale_f32", stream, &mut [&mut a.to_ne_bytes(), &mut factor.to_ne_bytes(), &mut (READ as u64).to_ne_bytes()], READ)?;
        }
        s.launch("sum_f32", stream, &mut [&mut self.latent.to_ne_bytes(), &mut self.out.to_ne_bytes(), &mut (READ as u64).to_ne_bytes()], READ)?;
        cu!(s.cuda, cuStreamSynchronize(stream))?;
        Ok(())
    }

    /// Every result exact after `steps` steps, every weight intact byte for byte.
    fn check(&self, s: &Session, steps: usize) -> Checked {
        let sums = s.read_f32(self.out, WEIGHTS)?;
        for (i, got) in sums.iter().enumerate() {
            let weight: f32 = pattern(i)[..READ].iter().sum();
            let latent = if i == 0 { READ as f32 } else { 0.0 };
            let want = (weight + latent) * steps as f32;
            ensure(*got == want, || format!("weight {i}: the sum after {steps} steps is {got}, expected {want}"))?;
        }
        for (i, &a) in self.activations.iter().enumerate() {
            let values = s.read_f32(a, READ)?;
            ensure(values.iter().all(|v| *v == 3.0), || format!("activation {i} holds {:?}…, expected 3.0", &values[..4]))?;
        }
        for (i, &w) in self.weights.iter().enumerate() {
            let mut bytes = vec![0f32; WEIGHT_FLOATS];
            cu!(s.cuda, cuMemcpyDtoH_v2(bytes.as_mut_ptr() as *mut c_void, w, WEIGHT_FLOATS * 4))?;
            ensure(bytes == pattern(i), || format!("weight {i} changed"))?;
        }
        println!("ok: {steps} steps exact, every weight intact byte for byte");
        Ok(())
    }
}

/// Whether no extent known to be used many times per step lives on a donor, and the
/// activations and the latent are on the card (the local tier holds more than the cache,
/// the weights placed there and them).
fn working_set_on_card(stats: &serde_json::Value) -> bool {
    stats["working_set"]["donor_hot_bytes"] == 0 && stats["devices"][0]["tiers"][1]["used"].as_u64() == Some(4 * WEIGHT_FLOATS as u64 * 4)
}

fn settled_and_classified(stats: &serde_json::Value) -> bool {
    let w = &stats["working_set"];
    let hot = w["hot_bytes"].as_u64().unwrap_or(0);
    let weights = w["weights_bytes"].as_u64().unwrap_or(0);
    w["settled"] == 1 && hot >= 2 * (ACTIVATION_FLOATS as u64 * 4) && weights >= (WEIGHTS * WEIGHT_FLOATS * 4) as u64
}

/// Samples until `done` holds for the stats (the background thread classifies every
/// 100 ms) or 30 s pass; returns the steps run.
fn sample_until(s: &Session, model: &Model, control: &Control, mut steps: usize, done: impl Fn(&serde_json::Value) -> bool) -> Checked<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_on_card = None;
    loop {
        model.step(s)?;
        steps += 1;
        std::thread::sleep(Duration::from_millis(30));
        let stats = control.stats()?;
        if steps >= 2 {
            let donor_hot = stats["working_set"]["donor_hot_bytes"].as_u64().unwrap_or(0);
            let on_card = working_set_on_card(&stats);
            if on_card && first_on_card.is_none() {
                first_on_card = Some(steps);
            }
            if done(&stats) {
                if let Some(step) = first_on_card {
                    println!("ok: from step {step} on, everything used many times per step was on the card");
                }
                println!("ok: after {steps} steps: settled, classified, {donor_hot} hot bytes on donors");
                return Ok(steps);
            }
        }
        ensure(Instant::now() < deadline, || format!("after {steps} steps the working set is not where it should be: {stats}"))?;
    }
}

/// Another thread allocates three 4 MiB buffers (the card has room for one) and fills
/// them on its own stream while the caller keeps sampling.
fn pressure(s: &Session, model: &Model, control: &Control, steps: usize) -> Checked<usize> {
    let (steps, buffers) = std::thread::scope(|scope| {
        let other = scope.spawn(move || -> Checked<Vec<u64>> {
            let mut context = std::ptr::null_mut();
            cu!(s.cuda, cuDevicePrimaryCtxRetain(&mut context, 0))?;
            cu!(s.cuda, cuCtxSetCurrent(context))?;
            let own = stream(s)?;
            let mut buffers = Vec::new();
            for i in 0..3 {
                let b = alloc(s, ACTIVATION_FLOATS * 4)?;
                s.fill(own, b, i as f32 + 5.0, ACTIVATION_FLOATS)?;
                buffers.push(b);
            }
            cu!(s.cuda, cuStreamSynchronize(own))?;
            for (i, &b) in buffers.iter().enumerate() {
                let values = s.read_f32(b, ACTIVATION_FLOATS)?;
                ensure(values.iter().all(|v| *v == i as f32 + 5.0), || format!("buffer {i} of the other thread holds the wrong values"))?;
            }
            Ok(buffers)
        });
        let mut steps = steps;
        while !other.is_finished() {
            model.step(s)?;
            steps += 1;
        }
        let buffers = other.join().map_err(|_| Failure("the allocating thread panicked".into()))??;
        Ok::<_, Failure>((steps, buffers))
    })?;
    let stats = control.stats()?;
    let w = &stats["working_set"];
    ensure(w["demotions"].as_u64().unwrap_or(0) >= 2, || format!("no weights were demoted to make room: {stats}"))?;
    let local = &stats["devices"][0]["tiers"][0];
    ensure(local["tier"] == "local" && local["used"].as_u64() <= local["capacity"].as_u64(), || format!("{stats}"))?;
    println!("ok: {} buffers allocated by another thread fit on the card after {} demotions", buffers.len(), w["demotions"]);
    Ok(steps)
}

/// While a stream captures (relaxed mode), a buffer the card has no room for is allocated:
/// no weight is demoted for it (a move's copy would join the capture); it lands on the
/// host, and the capture ends intact.
fn captured_allocation(s: &Session, control: &Control) -> Checked {
    let capturing = stream(s)?;
    cu!(s.cuda, cuStreamBeginCapture_v2(capturing, CU_STREAM_CAPTURE_MODE_RELAXED))?;
    let buffer = alloc(s, 3 * ACTIVATION_FLOATS * 4)?;
    s.fill(capturing, buffer, 2.0, READ)?;
    let mut graph = std::ptr::null_mut();
    cu!(s.cuda, cuStreamEndCapture(capturing, &mut graph))?;
    cu!(s.cuda, cuGraphDestroy(graph))?;
    let stats = control.stats()?;
    ensure(stats["working_set"]["demotions"] == 0, || format!("weights were demoted during a capture: {stats}"))?;
    println!("ok: nothing moved while a stream captured");
    Ok(())
}

/// Runs the scenario `mode` (see the module documentation).
pub fn run(s: &Session, mode: &str) -> Checked {
    let control = Control::find()?;
    let mut model = Model::load(s)?;
    let steps = match mode {
        "steady" => sample_until(s, &model, &control, 0, |stats| settled_and_classified(stats) && stats["working_set"]["donor_hot_bytes"] == 0)?,
        "refill" => sample_until(s, &model, &control, 0, |stats| settled_and_classified(stats) && stats["working_set"]["promotions"].as_u64() >= Some(2))?,
        "pressure" => {
            let steps = sample_until(s, &model, &control, 0, settled_and_classified)?;
            pressure(s, &model, &control, steps)?
        }
        "capture" => {
            let steps = sample_until(s, &model, &control, 0, settled_and_classified)?;
            captured_allocation(s, &control)?;
            steps
        }
        "pressure-new-stream" => {
            let steps = sample_until(s, &model, &control, 0, settled_and_classified)?;
            // The stream every weight was used on goes away; sampling goes on on another.
            cu!(s.cuda, cuStreamDestroy_v2(model.stream))?;
            model.stream = stream(s)?;
            pressure(s, &model, &control, steps)?
        }
        "fixed" => {
            let steps: usize = std::env::var("WS_STEPS").ok().and_then(|n| n.parse().ok()).unwrap_or(12);
            for _ in 0..steps {
                model.step(s)?;
                std::thread::sleep(Duration::from_millis(30));
            }
            steps
        }
        other => return Err(Failure(format!("unknown working-set mode `{other}`: steady, refill, pressure, pressure-new-stream, capture, fixed"))),
    };
    model.check(s, steps)?;
    println!("stats: {}", control.stats()?);
    Ok(())
}
