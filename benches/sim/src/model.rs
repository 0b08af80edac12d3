//! The shape of the simulated FLUX-like model: its weight tensors and its activations.

/// Bytes of the whole model's weights.
pub const MODEL_BYTES: u64 = 96 << 20;
/// Compute time of one step's GEMMs, nanoseconds.
pub const STEP_NS: u64 = 300_000_000;
/// Steps sampled.
pub const STEPS: usize = 8;
const DOUBLE_BLOCKS: usize = 19;
const SINGLE_BLOCKS: usize = 38;
/// Share of a block's bytes in each of its four tensors (qkv, projection, MLP in, MLP out).
const TENSOR_SHARES: [u64; 4] = [3, 1, 4, 4];
/// Floats in each activation buffer and in the latent: 2 MiB, so each is an extent of its
/// own under vvram (smaller requests share slabs).
pub const ACTIVATION_FLOATS: u64 = 512 << 10;
/// Activation buffers: two hidden states used in turn (a block reads one and writes the
/// other) and a workspace every block writes and reads.
pub const ACTIVATIONS: usize = 3;
/// Bytes of the activations and the latent together.
pub const ACTIVATION_BYTES: u64 = (ACTIVATIONS as u64 + 1) * ACTIVATION_FLOATS * 4;

/// The weight tensors of each block in execution order, as float counts (multiples of 128).
pub fn tensors() -> Vec<Vec<u64>> {
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

/// Bytes of every weight.
pub fn weight_bytes() -> u64 {
    tensors().iter().flatten().sum::<u64>() * 4
}

/// Weight values: small integers, so every sum is exact in f32 whatever the order.
pub fn weight_values(tensor: usize, n: u64) -> Vec<f32> {
    (0..n).map(|i| ((i as usize * 7 + tensor * 13) % 5) as f32).collect()
}

/// The latent's starting values (small integers: every activation stays exact in f32).
pub fn latent_values() -> Vec<f32> {
    (0..ACTIVATION_FLOATS).map(|i| ((i * 3) % 7) as f32 - 2.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_flux_shaped_and_its_sums_stay_exact_in_f32() {
        let blocks = tensors();
        assert_eq!(blocks.len(), 57);
        assert!(weight_bytes() <= MODEL_BYTES && weight_bytes() > MODEL_BYTES * 99 / 100);
        let double: u64 = blocks[0].iter().sum();
        let single: u64 = blocks[56].iter().sum();
        assert!((double as f64 / single as f64 - 2.4).abs() < 0.01, "a double block holds 2.4x a single block's weights");
        // A weight's sum over every step, and the latent's, below 2^24.
        let largest = blocks.iter().flatten().max().copied().unwrap_or(0);
        assert!(largest * 4 * STEPS as u64 <= 1 << 24);
        let latent = latent_values();
        let (signed, absolute): (f32, f32) = (latent.iter().sum(), latent.iter().map(|v| v.abs()).sum());
        assert!(signed > 0.0, "a lost write to an activation changes its sum");
        assert!(absolute as u64 * STEPS as u64 <= 1 << 24);
        assert!(ACTIVATION_FLOATS * 4 >= 2 << 20, "each activation is its own vvram extent");
    }
}
