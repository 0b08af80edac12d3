//! The tensor-map hooks: `cuTensorMapEncodeTiled` and `cuTensorMapEncodeIm2col` call the
//! real encoder, then record its arguments keyed by the 128 bytes it wrote (lock-free,
//! bounded: `vvram_engine::TensorMaps`). A launch that passes a recorded descriptor whose
//! global address lies in a staged extent gets it re-encoded, by the real encoder, for
//! the same offset in the copy (see `launch`).

#![allow(non_snake_case, clippy::missing_safety_doc)]

use crate::real_call;
use crate::staging::count_error;
use std::ffi::{c_int, c_uint, c_void};
use crate::hooks::guard;
use std::sync::OnceLock;
use vvram_cuda::*;
use vvram_engine::{DESCRIPTOR_BYTES, Encoding, Shape, TensorMaps};

/// Descriptors recorded at most; a newer one displaces an older one it hashes with.
const RECORDED: usize = 4096;

static MAPS: OnceLock<TensorMaps> = OnceLock::new();

/// The recorded descriptors, created by the first encoder call.
fn maps() -> &'static TensorMaps {
    MAPS.get_or_init(|| TensorMaps::new(RECORDED))
}

/// The recorded descriptors, if any was ever recorded (no allocation: launches ask).
pub fn recorded() -> Option<&'static TensorMaps> {
    MAPS.get().filter(|maps| maps.any())
}

/// The first `len` entries of a C array (of at most `N`), the rest zero.
unsafe fn array<T: Copy + Default, const N: usize>(pointer: *const T, len: usize) -> [T; N] {
    // SAFETY: the encoder accepted the call, so the array holds `len` entries.
    std::array::from_fn(|i| if i < len && !pointer.is_null() { unsafe { *pointer.add(i) } } else { T::default() })
}

/// What both encoders take, as the application passed it.
struct Given {
    data_type: c_uint,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    element_strides: *const u32,
    interleave: c_uint,
    swizzle: c_uint,
    l2_promotion: c_uint,
    oob_fill: c_uint,
}

/// Records a descriptor the real encoder just wrote.
unsafe fn record(map: *const CUtensorMap, given: &Given, shape: Shape) {
    if map.is_null() || !(1..=5).contains(&given.rank) {
        return;
    }
    let rank = given.rank as usize;
    let encoding = unsafe {
        Encoding {
            data_type: given.data_type,
            rank: given.rank,
            address: given.address as u64,
            dims: array(given.dims, rank),
            strides: array(given.strides, rank - 1),
            element_strides: array(given.element_strides, rank),
            interleave: given.interleave,
            swizzle: given.swizzle,
            l2_promotion: given.l2_promotion,
            oob_fill: given.oob_fill,
            shape,
        }
    };
    // SAFETY: the encoder wrote the 128 bytes.
    let bytes = unsafe { &*(map as *const [u8; DESCRIPTOR_BYTES]) };
    maps().record(bytes, &encoding);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuTensorMapEncodeTiled(
    map: *mut CUtensorMap,
    data_type: c_uint,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    box_dim: *const u32,
    element_strides: *const u32,
    interleave: c_uint,
    swizzle: c_uint,
    l2_promotion: c_uint,
    oob_fill: c_uint,
) -> CUresult {
    guard("cuTensorMapEncodeTiled", || unsafe {
        let code = real_call!(cuTensorMapEncodeTiled(map, data_type, rank, address, dims, strides, box_dim, element_strides, interleave, swizzle, l2_promotion, oob_fill));
        if code == result::SUCCESS {
            let given = Given { data_type, rank, address, dims, strides, element_strides, interleave, swizzle, l2_promotion, oob_fill };
            record(map, &given, Shape::Tiled { boxes: array(box_dim, rank as usize) });
        }
        code
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuTensorMapEncodeIm2col(
    map: *mut CUtensorMap,
    data_type: c_uint,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    lower: *const c_int,
    upper: *const c_int,
    channels: u32,
    pixels: u32,
    element_strides: *const u32,
    interleave: c_uint,
    swizzle: c_uint,
    l2_promotion: c_uint,
    oob_fill: c_uint,
) -> CUresult {
    guard("cuTensorMapEncodeIm2col", || unsafe {
        let code = real_call!(cuTensorMapEncodeIm2col(
            map, data_type, rank, address, dims, strides, lower, upper, channels, pixels, element_strides, interleave, swizzle, l2_promotion, oob_fill
        ));
        if code == result::SUCCESS {
            let given = Given { data_type, rank, address, dims, strides, element_strides, interleave, swizzle, l2_promotion, oob_fill };
            let spatial = (rank as usize).saturating_sub(2);
            record(map, &given, Shape::Im2col { lower: array(lower, spatial), upper: array(upper, spatial), channels, pixels });
        }
        code
    })
}

/// Encodes `encoding` again with its global address moved to `address`, with the real
/// encoder, into `out` (the 128 bytes of a kernel parameter). `false` if the driver
/// refuses (the parameter is then left as it was).
pub fn reencode(encoding: &Encoding, address: u64, out: &mut [u8]) -> bool {
    if out.len() != DESCRIPTOR_BYTES {
        return false;
    }
    let mut map = CUtensorMap { opaque: [0; CU_TENSOR_MAP_NUM_QWORDS] };
    let e = encoding;
    let target = address as *mut c_void;
    let code = match e.shape {
        Shape::Tiled { boxes } => real_call!(cuTensorMapEncodeTiled(
            &mut map, e.data_type, e.rank, target, e.dims.as_ptr(), e.strides.as_ptr(), boxes.as_ptr(), e.element_strides.as_ptr(),
            e.interleave, e.swizzle, e.l2_promotion, e.oob_fill
        )),
        Shape::Im2col { lower, upper, channels, pixels } => real_call!(cuTensorMapEncodeIm2col(
            &mut map, e.data_type, e.rank, target, e.dims.as_ptr(), e.strides.as_ptr(), lower.as_ptr(), upper.as_ptr(), channels, pixels,
            e.element_strides.as_ptr(), e.interleave, e.swizzle, e.l2_promotion, e.oob_fill
        )),
    };
    if code != result::SUCCESS {
        count_error("tensor-map re-encode", code);
        return false;
    }
    for (chunk, word) in out.chunks_exact_mut(8).zip(map.opaque) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    true
}
