//! Rewriting a parameter buffer: every 8-byte word inside a translated extent becomes the
//! same offset in its staged copy.

use crate::engine::Translation;

/// Rewrites `bytes` (a kernel parameter or a packed `extra` buffer, scanned as 8-aligned
/// words) for `translations`; references read in place stay. Returns the words rewritten.
pub fn rewrite(bytes: &mut [u8], translations: &[Translation]) -> usize {
    let mut rewritten = 0;
    for word in bytes.chunks_exact_mut(8) {
        let value = u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        let target = translations.iter().find(|t| t.base <= value && value < t.end).and_then(|t| t.copy.map(|c| c + (value - t.base)));
        if let Some(target) = target {
            word.copy_from_slice(&target.to_ne_bytes());
            rewritten += 1;
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_rewritten_to_the_same_offset_in_the_copy() {
        // A 1720-byte packed buffer (cuBLAS's) with the weight at five offsets.
        let mut buffer = vec![0u8; 1720];
        let offsets = [8, 200, 512, 1000, 1712];
        for (i, &o) in offsets.iter().enumerate() {
            buffer[o..o + 8].copy_from_slice(&(0x10_0000u64 + i as u64 * 64).to_ne_bytes());
        }
        buffer[16..24].copy_from_slice(&0x20_0000u64.to_ne_bytes());
        let translations = [
            Translation { base: 0x10_0000, end: 0x11_0000, copy: Some(0x90_0000) },
            Translation { base: 0x20_0000, end: 0x21_0000, copy: None },
        ];
        assert_eq!(rewrite(&mut buffer, &translations), 5);
        for (i, &o) in offsets.iter().enumerate() {
            assert_eq!(u64::from_ne_bytes(buffer[o..o + 8].try_into().unwrap()), 0x90_0000 + i as u64 * 64);
        }
        assert_eq!(u64::from_ne_bytes(buffer[16..24].try_into().unwrap()), 0x20_0000, "read in place");
    }
}
