//! Recorded tensor-map descriptors: the arguments of each `cuTensorMapEncodeTiled` /
//! `cuTensorMapEncodeIm2col` call, keyed by the 128 bytes the driver wrote, so that a
//! launch passing a descriptor whose global address lies in a staged extent can have it
//! re-encoded for the copy. Lock-free (a sequence lock per slot), fixed capacity: a
//! record displaces an older one whose slots it hashes to, and a descriptor whose record
//! is gone is read where it points.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

/// Bytes of a `CUtensorMap`.
pub const DESCRIPTOR_BYTES: usize = 128;
/// 64-bit words of a descriptor.
const KEY_WORDS: usize = DESCRIPTOR_BYTES / 8;
/// 64-bit words of a serialised `Encoding`.
const ARG_WORDS: usize = 21;
/// Slots probed per lookup.
const PROBES: usize = 4;

/// The arguments only one of the two encoders takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `cuTensorMapEncodeTiled`: the box, per dimension.
    Tiled {
        /// `boxDim`, `rank` entries.
        boxes: [u32; 5],
    },
    /// `cuTensorMapEncodeIm2col`: the pixel box over the spatial dimensions.
    Im2col {
        /// `pixelBoxLowerCorner`, `rank - 2` entries.
        lower: [i32; 3],
        /// `pixelBoxUpperCorner`, `rank - 2` entries.
        upper: [i32; 3],
        /// `channelsPerPixel`.
        channels: u32,
        /// `pixelsPerColumn`.
        pixels: u32,
    },
}

/// One encoder call's arguments, copied (arrays by rank, unused entries zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// `CUtensorMapDataType`.
    pub data_type: u32,
    /// `tensorRank`.
    pub rank: u32,
    /// `globalAddress`.
    pub address: u64,
    /// `globalDim`, `rank` entries.
    pub dims: [u64; 5],
    /// `globalStrides`, `rank - 1` entries.
    pub strides: [u64; 4],
    /// `elementStrides`, `rank` entries.
    pub element_strides: [u32; 5],
    /// `CUtensorMapInterleave`.
    pub interleave: u32,
    /// `CUtensorMapSwizzle`.
    pub swizzle: u32,
    /// `CUtensorMapL2promotion`.
    pub l2_promotion: u32,
    /// `CUtensorMapFloatOOBfill`.
    pub oob_fill: u32,
    /// The encoder and its own arguments.
    pub shape: Shape,
}

fn pair(low: u32, high: u32) -> u64 {
    low as u64 | (high as u64) << 32
}

fn halves(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

impl Encoding {
    fn to_words(self) -> [u64; ARG_WORDS] {
        let mut w = [0u64; ARG_WORDS];
        w[0] = self.address;
        w[1] = pair(self.data_type, self.rank);
        w[2..7].copy_from_slice(&self.dims);
        w[7..11].copy_from_slice(&self.strides);
        let e = self.element_strides;
        (w[11], w[12], w[13]) = (pair(e[0], e[1]), pair(e[2], e[3]), pair(e[4], 0));
        w[14] = pair(self.interleave, self.swizzle);
        w[15] = pair(self.l2_promotion, self.oob_fill);
        match self.shape {
            Shape::Tiled { boxes: b } => (w[16], w[17], w[18], w[19]) = (0, pair(b[0], b[1]), pair(b[2], b[3]), pair(b[4], 0)),
            Shape::Im2col { lower: l, upper: u, channels, pixels } => {
                w[16] = 1;
                (w[17], w[18], w[19]) = (pair(l[0] as u32, u[0] as u32), pair(l[1] as u32, u[1] as u32), pair(l[2] as u32, u[2] as u32));
                w[20] = pair(channels, pixels);
            }
        }
        w
    }

    fn from_words(w: &[u64; ARG_WORDS]) -> Encoding {
        let (data_type, rank) = halves(w[1]);
        let (e0, e1) = halves(w[11]);
        let (e2, e3) = halves(w[12]);
        let (interleave, swizzle) = halves(w[14]);
        let (l2_promotion, oob_fill) = halves(w[15]);
        let (a, b, c) = (halves(w[17]), halves(w[18]), halves(w[19]));
        let shape = if w[16] == 0 {
            Shape::Tiled { boxes: [a.0, a.1, b.0, b.1, c.0] }
        } else {
            let (channels, pixels) = halves(w[20]);
            Shape::Im2col { lower: [a.0 as i32, b.0 as i32, c.0 as i32], upper: [a.1 as i32, b.1 as i32, c.1 as i32], channels, pixels }
        };
        Encoding {
            data_type,
            rank,
            address: w[0],
            dims: w[2..7].try_into().unwrap_or_default(),
            strides: w[7..11].try_into().unwrap_or_default(),
            element_strides: [e0, e1, e2, e3, halves(w[13]).0],
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
            shape,
        }
    }
}

struct Slot {
    /// Even: stable (0: never written); odd: being written.
    sequence: AtomicU64,
    key: [AtomicU64; KEY_WORDS],
    args: [AtomicU64; ARG_WORDS],
}

/// The recorded descriptors.
pub struct TensorMaps {
    slots: Box<[Slot]>,
    any: AtomicBool,
}

/// A descriptor's 16 words, read from any byte alignment.
fn words_of(descriptor: &[u8; DESCRIPTOR_BYTES]) -> [u64; KEY_WORDS] {
    std::array::from_fn(|i| u64::from_ne_bytes(descriptor[i * 8..i * 8 + 8].try_into().unwrap_or_default()))
}

impl TensorMaps {
    /// An empty record of `capacity` slots (rounded up to a power of two).
    pub fn new(capacity: usize) -> TensorMaps {
        let slots = (0..capacity.next_power_of_two())
            .map(|_| Slot { sequence: AtomicU64::new(0), key: Default::default(), args: Default::default() })
            .collect();
        TensorMaps { slots, any: AtomicBool::new(false) }
    }

    /// Whether any descriptor was ever recorded (one relaxed load: launches check it
    /// before looking at 128-byte parameters).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    fn home(&self, key: &[u64; KEY_WORDS]) -> usize {
        let folded = key.iter().fold(0u64, |h, w| (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (folded >> 32) as usize & (self.slots.len() - 1)
    }

    /// Records the encoding that produced `descriptor`: in a free slot or the one already
    /// holding this descriptor among its probes, else over the first probed slot.
    pub fn record(&self, descriptor: &[u8; DESCRIPTOR_BYTES], encoding: &Encoding) {
        let key = words_of(descriptor);
        let home = self.home(&key);
        let mask = self.slots.len() - 1;
        let chosen = (0..PROBES)
            .map(|p| (home + p) & mask)
            .find(|&i| {
                let slot = &self.slots[i];
                slot.sequence.load(Ordering::Acquire) == 0 || slot.key.iter().zip(&key).all(|(a, b)| a.load(Ordering::Relaxed) == *b)
            })
            .unwrap_or(home);
        let slot = &self.slots[chosen];
        let mut sequence = slot.sequence.load(Ordering::Relaxed);
        loop {
            if sequence & 1 == 1 {
                // Another thread is writing this slot: its record wins.
                return;
            }
            match slot.sequence.compare_exchange_weak(sequence, sequence + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => sequence = now,
            }
        }
        fence(Ordering::Release);
        for (to, from) in slot.key.iter().zip(key) {
            to.store(from, Ordering::Relaxed);
        }
        for (to, from) in slot.args.iter().zip(encoding.to_words()) {
            to.store(from, Ordering::Relaxed);
        }
        slot.sequence.store(sequence + 2, Ordering::Release);
        self.any.store(true, Ordering::Relaxed);
    }

    /// The encoding recorded for `descriptor`, if it is still recorded. Lock-free, no
    /// allocation.
    pub fn find(&self, descriptor: &[u8; DESCRIPTOR_BYTES]) -> Option<Encoding> {
        let key = words_of(descriptor);
        let home = self.home(&key);
        let mask = self.slots.len() - 1;
        for probe in 0..PROBES {
            let slot = &self.slots[(home + probe) & mask];
            let before = slot.sequence.load(Ordering::Acquire);
            if before == 0 || before & 1 == 1 || !slot.key.iter().zip(&key).all(|(a, b)| a.load(Ordering::Relaxed) == *b) {
                continue;
            }
            let args: [u64; ARG_WORDS] = std::array::from_fn(|i| slot.args[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if slot.sequence.load(Ordering::Relaxed) == before {
                return Some(Encoding::from_words(&args));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiled(address: u64) -> Encoding {
        Encoding {
            data_type: 7,
            rank: 2,
            address,
            dims: [64, 32, 0, 0, 0],
            strides: [256, 0, 0, 0],
            element_strides: [1, 1, 0, 0, 0],
            interleave: 0,
            swizzle: 3,
            l2_promotion: 2,
            oob_fill: 1,
            shape: Shape::Tiled { boxes: [32, 16, 0, 0, 0] },
        }
    }

    fn descriptor(seed: u64) -> [u8; DESCRIPTOR_BYTES] {
        let mut bytes = [0u8; DESCRIPTOR_BYTES];
        for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&(seed.wrapping_mul(31) + i as u64).to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn recorded_encodings_are_found_by_descriptor_content() {
        let maps = TensorMaps::new(16);
        assert!(!maps.any());
        let im2col = Encoding {
            rank: 5,
            shape: Shape::Im2col { lower: [-1, -2, -3], upper: [1, 2, 3], channels: 64, pixels: 128 },
            ..tiled(0x2000)
        };
        maps.record(&descriptor(1), &tiled(0x1000));
        maps.record(&descriptor(2), &im2col);
        assert!(maps.any());
        assert_eq!(maps.find(&descriptor(1)), Some(tiled(0x1000)));
        assert_eq!(maps.find(&descriptor(2)), Some(im2col));
        assert_eq!(maps.find(&descriptor(3)), None);
        maps.record(&descriptor(1), &tiled(0x3000));
        assert_eq!(maps.find(&descriptor(1)), Some(tiled(0x3000)), "re-recording a descriptor replaces its encoding");
    }

    #[test]
    fn a_full_record_displaces_older_descriptors_and_stays_bounded() {
        let maps = TensorMaps::new(4);
        for seed in 0..100 {
            maps.record(&descriptor(seed), &tiled(seed << 4));
        }
        assert_eq!(maps.find(&descriptor(99)), Some(tiled(99 << 4)));
        let kept = (0..100).filter(|s| maps.find(&descriptor(*s)).is_some()).count();
        assert!(kept <= 4, "{kept} records in 4 slots");
        for seed in 0..100 {
            if let Some(found) = maps.find(&descriptor(seed)) {
                assert_eq!(found, tiled(seed << 4), "a found record is the one made for that descriptor");
            }
        }
    }

    #[test]
    fn concurrent_records_and_lookups_never_mix_two_encodings() {
        let maps = std::sync::Arc::new(TensorMaps::new(2));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let maps = maps.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let seed = i % 8 + t * 8;
                        maps.record(&descriptor(seed), &tiled(seed << 4));
                    }
                })
            })
            .collect();
        for i in 0..40_000u64 {
            let seed = i % 16;
            if let Some(found) = maps.find(&descriptor(seed)) {
                assert_eq!(found, tiled(seed << 4));
            }
        }
        for writer in writers {
            writer.join().unwrap();
        }
    }
}
