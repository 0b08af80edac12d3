//! `cuTensorMapEncodeTiled` and `cuTensorMapEncodeIm2col` with the driver's argument
//! checks (rank, alignment of the address and strides, box sizes, NULL pointers), writing
//! the fake's own 128-byte encoding, which `tmap_sum` reads:
//!
//! | word | content |
//! |---|---|
//! | 0 | global address, encoded (`encode_address`: not a plain pointer, so only a new encoding moves it) |
//! | 1 | `MAGIC << 32`, kind (0 tiled, 1 im2col) `<< 24`, data type `<< 16`, rank |
//! | 2–6 | global dimensions |
//! | 7–10 | global strides (bytes, dimensions 1 on) |
//! | 11–13 | box dimensions (tiled) or lower/upper pixel-box corners (im2col), two `u32` a word |
//! | 14 | element strides (4 bits each), interleave `<< 32`, swizzle `<< 40`, L2 promotion `<< 48`, fill `<< 56` |
//! | 15 | channels per pixel, pixels per column `<< 32` (im2col) |

use super::*;

/// Marks the fake's encoding.
pub const MAGIC: u64 = 0x544d_4150;

/// The top byte of an encoded global address.
const ADDRESS_TAG: u64 = 0xA5 << 56;

/// The global address as the fake's encoding stores it (16-byte units, tagged).
fn encode_address(address: u64) -> u64 {
    address >> 4 | ADDRESS_TAG
}

/// The global address in word 0 of the fake's encoding; `None` if it is not one.
pub fn decode_address(word: u64) -> Option<u64> {
    (word & (0xFF << 56) == ADDRESS_TAG).then_some((word & !(0xFF << 56)) << 4)
}

/// Bytes of one element of a `CUtensorMapDataType`.
fn element_bytes(data_type: c_uint) -> Result<u64, CUresult> {
    match data_type {
        0 => Ok(1),
        1 | 6 | 9 => Ok(2),
        2 | 3 | 7 | 10 | 11 | 12 => Ok(4),
        4 | 5 | 8 => Ok(8),
        13..=CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B => Ok(1),
        _ => Err(result::INVALID_VALUE),
    }
}

/// The arguments both encoders share.
struct Common {
    data_type: c_uint,
    rank: u32,
    address: u64,
    dims: *const u64,
    strides: *const u64,
    element_strides: *const u32,
    interleave: c_uint,
    swizzle: c_uint,
    l2: c_uint,
    fill: c_uint,
}

/// Checks what both encoders check and fills words 0–10 and 14.
unsafe fn encode_common(map: *mut CUtensorMap, c: &Common, min_rank: u32) -> Result<[u64; 16], CUresult> {
    if map.is_null() || c.dims.is_null() || c.element_strides.is_null() || (c.rank > 1 && c.strides.is_null()) {
        return Err(result::INVALID_VALUE);
    }
    if !(map as usize).is_multiple_of(64) || c.rank < min_rank || c.rank > 5 {
        return Err(result::INVALID_VALUE);
    }
    let alignment = if c.interleave == CU_TENSOR_MAP_INTERLEAVE_32B { 32 } else { 16 };
    if c.address == 0 || !c.address.is_multiple_of(alignment) {
        return Err(result::INVALID_VALUE);
    }
    if c.interleave > CU_TENSOR_MAP_INTERLEAVE_32B || c.swizzle > CU_TENSOR_MAP_SWIZZLE_128B_ATOM_64B || c.l2 > CU_TENSOR_MAP_L2_PROMOTION_L2_256B || c.fill > CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA {
        return Err(result::INVALID_VALUE);
    }
    element_bytes(c.data_type)?;
    let rank = c.rank as usize;
    let mut words = [0u64; 16];
    words[0] = encode_address(c.address);
    for i in 0..rank {
        // SAFETY: the API's contract: `rank` dimensions and element strides, `rank - 1` strides.
        let (dim, element_stride) = unsafe { (*c.dims.add(i), *c.element_strides.add(i)) };
        if dim == 0 || dim > 1 << 32 || !(1..=8).contains(&element_stride) {
            return Err(result::INVALID_VALUE);
        }
        words[2 + i] = dim;
        words[14] |= (element_stride as u64) << (4 * i);
        if i > 0 {
            let stride = unsafe { *c.strides.add(i - 1) };
            if !stride.is_multiple_of(16) || stride >= 1 << 40 {
                return Err(result::INVALID_VALUE);
            }
            words[6 + i] = stride;
        }
    }
    words[14] |= (c.interleave as u64) << 32 | (c.swizzle as u64) << 40 | (c.l2 as u64) << 48 | (c.fill as u64) << 56;
    Ok(words)
}

fn header(kind: u64, c: &Common) -> u64 {
    MAGIC << 32 | kind << 24 | (c.data_type as u64) << 16 | c.rank as u64
}

fn pack(low: u32, high: u32) -> u64 {
    low as u64 | (high as u64) << 32
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
    l2: c_uint,
    fill: c_uint,
) -> CUresult {
    entry("cuTensorMapEncodeTiled", false, || unsafe {
        let common = Common { data_type, rank, address: address as u64, dims, strides, element_strides, interleave, swizzle, l2, fill };
        let mut words = encode_common(map, &common, 1)?;
        if box_dim.is_null() {
            return Err(result::INVALID_VALUE);
        }
        let boxes: Vec<u32> = (0..rank as usize).map(|i| *box_dim.add(i)).collect();
        if boxes.iter().any(|b| !(1..=256).contains(b)) {
            return Err(result::INVALID_VALUE);
        }
        if interleave == CU_TENSOR_MAP_INTERLEAVE_NONE && !(boxes[0] as u64 * element_bytes(data_type)?).is_multiple_of(16) {
            return Err(result::INVALID_VALUE);
        }
        let at = |i: usize| boxes.get(i).copied().unwrap_or(0);
        words[1] = header(0, &common);
        (words[11], words[12], words[13]) = (pack(at(0), at(1)), pack(at(2), at(3)), pack(at(4), 0));
        map.write(CUtensorMap { opaque: words });
        Ok(())
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
    l2: c_uint,
    fill: c_uint,
) -> CUresult {
    entry("cuTensorMapEncodeIm2col", false, || unsafe {
        let common = Common { data_type, rank, address: address as u64, dims, strides, element_strides, interleave, swizzle, l2, fill };
        let mut words = encode_common(map, &common, 3)?;
        if lower.is_null() || upper.is_null() || !(1..=256).contains(&channels) || !(1..=1024).contains(&pixels) {
            return Err(result::INVALID_VALUE);
        }
        // The corners span the spatial dimensions (rank - 2 of them).
        for i in 0..rank as usize - 2 {
            words[11 + i] = pack(*lower.add(i) as u32, *upper.add(i) as u32);
        }
        words[1] = header(1, &common);
        words[15] = pack(channels, pixels);
        map.write(CUtensorMap { opaque: words });
        Ok(())
    })
}
