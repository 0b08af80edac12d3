//! Built-in "kernels", found by name in any module image that declares them
//! (`.entry fill_f32` in PTX), so the same test program runs on a real GPU with real PTX.
//!
//! Parameters are laid out as the CUDA ABI does (each aligned to its size):
//!
//! | kernel | parameters (offset: type) |
//! |---|---|
//! | `fill_f32` | 0: `float*` p, 8: `float` value, 16: `u64` n |
//! | `scale_f32` | 0: `float*` p, 8: `float` factor, 16: `u64` n |
//! | `sum_f32` | 0: `const float*` input, 8: `float*` out (adds the sum to `*out`), 16: `u64` n |
//! | `copy` | 0: `void*` dst, 8: `const void*` src, 16: `u64` bytes |
//! | `struct_copy` | 0: `struct { const float* src; float* dst; u64 n; }` (24 bytes, pointers embedded) |
//! | `weight_sum` | 0: `const float*` w, 8: `u64` n, 16: `float*` out (adds the sum), 24: `u64` run time in ns |
//! | `packed_sum` | 0: a 1720-byte struct: `const float*` at 0, 200, 512, 1000 and 1712, `u64` n at 8, `float*` out at 16 |
//! | `tmap_sum` | 0: a `CUtensorMap` (128 bytes, the fake's encoding: see `tensor_map`), 128: `float*` out (adds the sum), 136: `u32` box elements |

/// A built-in kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `p[i] = value` for i < n.
    FillF32,
    /// `p[i] *= factor` for i < n.
    ScaleF32,
    /// `*out += sum(input[0..n])`.
    SumF32,
    /// `memcpy(dst, src, bytes)`.
    Copy,
    /// `dst[i] = src[i]` for i < n, all three in one struct parameter.
    StructCopy,
    /// `*out += sum(w[0..n])`, lasting a given time (a GEMM's stand-in for the timing model).
    WeightSum,
    /// `*out += ` the sums of `n` floats through five pointers of one packed parameter.
    PackedSum,
    /// `*out += ` the sum of the first box of a rank-1 `f32` tensor map.
    TmapSum,
}

/// How a kernel crosses the bytes of one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read once.
    Read,
    /// Written once.
    Write,
    /// Read, then written.
    ReadWrite,
    /// Read again for every tile of the output (a GEMM's weight).
    Tiled,
}

/// The 8-byte word at `offset` of a packed parameter buffer.
fn word(params: &[u8], offset: usize) -> Option<u64> {
    params.get(offset..offset + 8).map(|b| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// Where `packed_sum` finds its five pointers.
pub const PACKED_POINTERS: [usize; 5] = [0, 200, 512, 1000, 1712];

/// Every built-in kernel.
pub const ALL: [Kernel; 8] = [
    Kernel::FillF32,
    Kernel::ScaleF32,
    Kernel::SumF32,
    Kernel::Copy,
    Kernel::StructCopy,
    Kernel::WeightSum,
    Kernel::PackedSum,
    Kernel::TmapSum,
];

impl Kernel {
    /// The entry name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::FillF32 => "fill_f32",
            Kernel::ScaleF32 => "scale_f32",
            Kernel::SumF32 => "sum_f32",
            Kernel::Copy => "copy",
            Kernel::StructCopy => "struct_copy",
            Kernel::WeightSum => "weight_sum",
            Kernel::PackedSum => "packed_sum",
            Kernel::TmapSum => "tmap_sum",
        }
    }

    /// The kernel with this entry name.
    pub fn by_name(name: &str) -> Option<Kernel> {
        ALL.into_iter().find(|k| k.name() == name)
    }

    /// (offset, size) of each parameter.
    pub fn params(self) -> &'static [(usize, usize)] {
        match self {
            Kernel::StructCopy => &[(0, 24)],
            Kernel::WeightSum => &[(0, 8), (8, 8), (16, 8), (24, 8)],
            Kernel::PackedSum => &[(0, 1720)],
            Kernel::TmapSum => &[(0, 128), (128, 8), (136, 4)],
            Kernel::FillF32 | Kernel::ScaleF32 => &[(0, 8), (8, 4), (16, 8)],
            Kernel::SumF32 | Kernel::Copy => &[(0, 8), (8, 8), (16, 8)],
        }
    }

    /// Offsets in the packed parameter buffer of the device pointers the kernel follows
    /// (also those embedded in a struct parameter).
    pub fn pointer_offsets(self) -> &'static [usize] {
        match self {
            Kernel::FillF32 | Kernel::ScaleF32 => &[0],
            Kernel::SumF32 | Kernel::Copy | Kernel::StructCopy => &[0, 8],
            Kernel::WeightSum => &[0, 16],
            Kernel::PackedSum => &[0, 200, 512, 1000, 1712, 16],
            Kernel::TmapSum => &[128],
        }
    }

    /// Offsets of the tensor-map descriptors the kernel reads through (their global
    /// address is encoded: the launch decodes it into the device view at word 0).
    pub fn tensor_map_offsets(self) -> &'static [usize] {
        match self {
            Kernel::TmapSum => &[0],
            _ => &[],
        }
    }

    /// The run time a kernel asks for (`weight_sum`'s last parameter), nanoseconds.
    pub fn run_ns(self, params: &[u8]) -> Option<u64> {
        match self {
            Kernel::WeightSum => word(params, 24),
            _ => None,
        }
    }

    /// The buffers a kernel streams through, from its packed parameters: each as its
    /// address, its bytes and how the kernel crosses them (single-float outputs and
    /// tensor maps are left out).
    pub fn operands(self, params: &[u8]) -> Vec<(u64, u64, Access)> {
        let word = |offset: usize| word(params, offset).unwrap_or(0);
        let floats = |offset: usize| word(offset).saturating_mul(4);
        match self {
            Kernel::FillF32 => vec![(word(0), floats(16), Access::Write)],
            Kernel::ScaleF32 => vec![(word(0), floats(16), Access::ReadWrite)],
            Kernel::SumF32 => vec![(word(0), floats(16), Access::Read)],
            Kernel::Copy => vec![(word(8), word(16), Access::Read), (word(0), word(16), Access::Write)],
            Kernel::StructCopy => vec![(word(0), floats(16), Access::Read), (word(8), floats(16), Access::Write)],
            Kernel::WeightSum => vec![(word(0), floats(8), Access::Tiled)],
            Kernel::PackedSum => PACKED_POINTERS.iter().map(|&offset| (word(offset), floats(8), Access::Read)).collect(),
            Kernel::TmapSum => Vec::new(),
        }
    }

    /// Bytes of the packed parameter buffer.
    pub fn param_bytes(self) -> usize {
        self.params().iter().map(|(o, s)| o + s).max().unwrap_or(0)
    }

    /// Runs the kernel on a packed parameter buffer.
    ///
    /// # Safety
    /// The pointers in `params` must be valid for what the kernel does with them, as on
    /// a GPU; if they are not, the process faults, as a GPU's MMU would.
    pub unsafe fn run(self, params: &[u8]) {
        let word = |offset: usize| u64::from_ne_bytes(params[offset..offset + 8].try_into().unwrap());
        let float = |offset: usize| f32::from_ne_bytes(params[offset..offset + 4].try_into().unwrap());
        // SAFETY: the caller vouches for the addresses, as a kernel launch does.
        unsafe {
            match self {
                Kernel::FillF32 => {
                    let p = word(0) as *mut f32;
                    for i in 0..word(16) as usize {
                        p.add(i).write_volatile(float(8));
                    }
                }
                Kernel::ScaleF32 => {
                    let p = word(0) as *mut f32;
                    for i in 0..word(16) as usize {
                        p.add(i).write_volatile(p.add(i).read_volatile() * float(8));
                    }
                }
                Kernel::SumF32 => {
                    let input = word(0) as *const f32;
                    let out = word(8) as *mut f32;
                    let mut sum = 0.0f64;
                    for i in 0..word(16) as usize {
                        sum += input.add(i).read_volatile() as f64;
                    }
                    out.write_volatile(out.read_volatile() + sum as f32);
                }
                Kernel::Copy => {
                    std::ptr::copy(word(8) as *const u8, word(0) as *mut u8, word(16) as usize);
                }
                Kernel::StructCopy => {
                    let src = word(0) as *const f32;
                    let dst = word(8) as *mut f32;
                    for i in 0..word(16) as usize {
                        dst.add(i).write_volatile(src.add(i).read_volatile());
                    }
                }
                Kernel::WeightSum => {
                    let (w, out) = (word(0) as *const f32, word(16) as *mut f32);
                    let sum: f64 = std::slice::from_raw_parts(w, word(8) as usize).iter().map(|v| *v as f64).sum();
                    out.write_volatile(out.read_volatile() + sum as f32);
                }
                Kernel::PackedSum => {
                    let out = word(16) as *mut f32;
                    let mut sum = 0.0f64;
                    for offset in PACKED_POINTERS {
                        let p = word(offset) as *const f32;
                        sum += std::slice::from_raw_parts(p, word(8) as usize).iter().map(|v| *v as f64).sum::<f64>();
                    }
                    out.write_volatile(out.read_volatile() + sum as f32);
                }
                Kernel::TmapSum => {
                    let (header, dim, boxed) = (word(8), word(16), word(88) as u32);
                    let n = u32::from_ne_bytes(params[136..140].try_into().unwrap());
                    // Anything but the fake's own rank-1 f32 tiled encoding with a box of
                    // `n` elements is a fault, as a bad descriptor is on a GPU.
                    let expected = crate::tensor_map::MAGIC << 32 | (vvram_cuda::CU_TENSOR_MAP_DATA_TYPE_FLOAT32 as u64) << 16 | 1;
                    assert!(header == expected && boxed == n, "tmap_sum: not a rank-1 f32 tiled tensor map with a box of {n} elements");
                    // Word 0 holds the decoded device view (the launch put it there).
                    let (w, out) = (word(0) as *const f32, word(128) as *mut f32);
                    // The box past the tensor's end reads as zeros (out-of-bounds fill).
                    let sum: f64 = std::slice::from_raw_parts(w, dim.min(n as u64) as usize).iter().map(|v| *v as f64).sum();
                    out.write_volatile(out.read_volatile() + sum as f32);
                }
            }
        }
    }
}

/// The kernels a module image declares (`.entry NAME` in PTX text).
pub fn declared_in(image: &[u8]) -> Vec<Kernel> {
    let text = String::from_utf8_lossy(image);
    text.split(".entry")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            Kernel::by_name(&name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_in_ptx_text() {
        let ptx = b".version 8.0\n.visible .entry fill_f32(\n.param .u64 a\n)\n.visible .entry copy (";
        assert_eq!(declared_in(ptx), vec![Kernel::FillF32, Kernel::Copy]);
        assert!(declared_in(b"garbage").is_empty());
    }

    #[test]
    fn operands_name_the_buffers_a_kernel_streams_through() {
        let mut params = vec![0u8; 32];
        for (offset, value) in [(0, 0x1000u64), (8, 0x2000), (16, 64), (24, 7)] {
            params[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(Kernel::Copy.operands(&params), vec![(0x2000, 64, Access::Read), (0x1000, 64, Access::Write)]);
        assert_eq!(Kernel::ScaleF32.operands(&params), vec![(0x1000, 256, Access::ReadWrite)]);
        assert_eq!(Kernel::WeightSum.operands(&params), vec![(0x1000, 0x2000 * 4, Access::Tiled)]);
        assert_eq!((Kernel::WeightSum.run_ns(&params), Kernel::Copy.run_ns(&params)), (Some(7), None));
        assert!(Kernel::TmapSum.operands(&params).is_empty());
    }

    #[test]
    fn kernels_compute_on_host_memory() {
        let mut data = vec![0f32; 8];
        let mut params = vec![0u8; 24];
        params[0..8].copy_from_slice(&(data.as_mut_ptr() as u64).to_ne_bytes());
        params[8..12].copy_from_slice(&1.5f32.to_ne_bytes());
        params[16..24].copy_from_slice(&8u64.to_ne_bytes());
        unsafe { Kernel::FillF32.run(&params) };
        params[8..12].copy_from_slice(&2f32.to_ne_bytes());
        unsafe { Kernel::ScaleF32.run(&params) };
        assert_eq!(data, vec![3.0; 8]);
        let mut out = 1f32;
        params[8..16].copy_from_slice(&(&mut out as *mut f32 as u64).to_ne_bytes());
        unsafe { Kernel::SumF32.run(&params) };
        assert_eq!(out, 25.0);
    }
}
