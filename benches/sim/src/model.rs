//! The shape of the simulated FLUX-like model: its weight tensors and its activations.
//!
//! 19 double blocks of five weight tensors (attention qkv, projection, MLP in, MLP out,
//! modulation) and 38 single blocks of two (linear1, linear2): a double block holds 2.5×
//! a single one's weights (FLUX.1: 2.4×). Every tensor is 2 MiB, one vvram chunk: like
//! FLUX's tensors (9 to 113 MB) each is an extent of its own under vvram (requests below
//! 1 MiB share slabs, which are never moved), and budgets in whole tensors are exact.

/// Floats in each weight tensor (2 MiB).
pub const TENSOR_FLOATS: u64 = 512 << 10;
const DOUBLE_BLOCKS: usize = 19;
const SINGLE_BLOCKS: usize = 38;
const DOUBLE_TENSORS: usize = 5;
const SINGLE_TENSORS: usize = 2;
/// Compute time of one step's GEMMs, nanoseconds.
pub const STEP_NS: u64 = 300_000_000;
/// Steps sampled.
pub const STEPS: usize = 8;
/// Floats in each activation buffer and in the latent: 2 MiB, so each is an extent of its
/// own under vvram.
pub const ACTIVATION_FLOATS: u64 = 512 << 10;
/// Activation buffers: two hidden states used in turn (a block reads one and writes the
/// other) and a workspace every block writes and reads.
pub const ACTIVATIONS: usize = 3;
/// Bytes of the activations and the latent together.
pub const ACTIVATION_BYTES: u64 = (ACTIVATIONS as u64 + 1) * ACTIVATION_FLOATS * 4;

/// The weight tensors of each block in execution order, as float counts.
pub fn tensors() -> Vec<Vec<u64>> {
    (0..DOUBLE_BLOCKS + SINGLE_BLOCKS)
        .map(|b| vec![TENSOR_FLOATS; if b < DOUBLE_BLOCKS { DOUBLE_TENSORS } else { SINGLE_TENSORS }])
        .collect()
}

/// Bytes of every weight.
pub fn weight_bytes() -> u64 {
    tensors().iter().flatten().sum::<u64>() * 4
}

/// Weight values: small integers, so every sum is exact in f32 whatever the order.
pub fn weight_values(tensor: usize, n: u64) -> Vec<f32> {
    // Value i is (7 i + 13 tensor) mod 5: a pattern of period 5.
    let pattern: Vec<f32> = (0..5).map(|i| ((i * 7 + tensor * 13) % 5) as f32).collect();
    let mut values = pattern.repeat((n as usize).div_ceil(5));
    values.truncate(n as usize);
    values
}

/// The latent's starting values (small integers: every activation stays exact in f32).
pub fn latent_values() -> Vec<f32> {
    let pattern: Vec<f32> = (0..7).map(|i| ((i * 3) % 7) as f32 - 2.0).collect();
    let mut values = pattern.repeat((ACTIVATION_FLOATS as usize).div_ceil(7));
    values.truncate(ACTIVATION_FLOATS as usize);
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_flux_shaped_and_its_sums_stay_exact_in_f32() {
        let blocks = tensors();
        assert_eq!(blocks.len(), 57);
        let block_bytes = |b: &Vec<u64>| b.iter().sum::<u64>() * 4;
        assert_eq!(block_bytes(&blocks[0]) * 2, block_bytes(&blocks[56]) * 5, "a double block holds 2.5x a single block's weights");
        assert_eq!(weight_bytes(), 342 << 20);
        assert!(blocks.iter().flatten().all(|&n| n * 4 == 2 << 20), "every weight is one 2 MiB chunk");
        assert_eq!(weight_values(3, 12), (0..12).map(|i| ((i * 7 + 39) % 5) as f32).collect::<Vec<_>>());
        // A weight's sum over every step, and the latent's, stay below 2^24.
        let largest: f32 = weight_values(0, TENSOR_FLOATS).iter().sum();
        assert!(largest as u64 * STEPS as u64 <= 1 << 24);
        let latent = latent_values();
        assert_eq!(latent.len() as u64, ACTIVATION_FLOATS);
        let (signed, absolute): (f32, f32) = (latent.iter().sum(), latent.iter().map(|v| v.abs()).sum());
        assert!(signed > 0.0, "a lost write to an activation changes its sum");
        assert!(absolute as u64 * STEPS as u64 <= 1 << 24);
        assert!(ACTIVATION_FLOATS * 4 >= 2 << 20, "each activation is its own vvram extent");
    }
}
