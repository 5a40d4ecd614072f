//! Frame (un)masking (RFC 6455 §5.3): SIMD with a scalar reference.
//!
//! Every SIMD path uses unaligned loads and stores, so the position of `buf` in memory
//! never matters; only the payload offset decides which key byte lines up with `buf[0]`.
//! The key is rotated once so that lane `i` of a vector holds `key[(offset + i) % 4]`.
//! Vector widths are multiples of 4, so that rotated key stays in phase across every
//! whole vector, and the tail resumes scalar masking at the right offset.

/// Below this, setting up a vector costs more than it saves.
const SIMD_BYTES_MIN: usize = 16;

/// Below this, 32-byte vectors would mostly be skipped: SSE2 needs no runtime check.
#[cfg(target_arch = "x86_64")]
const AVX2_BYTES_MIN: usize = 64;

/// XOR `buf` with the 4-byte `key`, where `buf[0]` is at `offset` bytes into the payload
/// (so masking can resume mid-payload). Dispatches to AVX2/SSE2/NEON/scalar.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    if buf.len() < SIMD_BYTES_MIN {
        apply_mask_words(buf, key, offset);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // The std macro caches its CPUID probe in an atomic, so this is a load and a test.
        if buf.len() >= AVX2_BYTES_MIN && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 support was just confirmed on the running CPU.
            unsafe { x86::mask_avx2(buf, key, offset) };
        } else {
            x86::mask_sse2(buf, key, offset);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            // SAFETY: NEON support was just confirmed on the running CPU.
            unsafe { arm::mask_neon(buf, key, offset) };
        } else {
            apply_mask_words(buf, key, offset);
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    apply_mask_words(buf, key, offset);
}

/// Byte-at-a-time reference implementation.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[offset.wrapping_add(i) & 3];
    }
}

/// The key as seen from `offset`: byte `i` of the result masks payload byte `offset + i`.
fn rotated_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Rotating the little-endian word right by one byte moves key[1] into byte 0.
    let shift = 8 * (offset & 3) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

/// Short buffers, and targets without a SIMD path: eight bytes per step, no `unsafe`.
fn apply_mask_words(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k4 = rotated_key(key, offset);
    let k8 = u64::from_ne_bytes([k4[0], k4[1], k4[2], k4[3], k4[0], k4[1], k4[2], k4[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ k8).to_ne_bytes());
    }
    let done = buf.len() - buf.len() % 8;
    apply_mask_scalar(&mut buf[done..], key, offset.wrapping_add(done));
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_storeu_si256,
        _mm256_xor_si256, _mm_loadu_si128, _mm_set1_epi32, _mm_storeu_si128, _mm_xor_si128,
    };

    use super::{apply_mask_scalar, rotated_key};

    /// 32 bytes per step, then one 16-byte step, then the scalar tail.
    #[target_feature(enable = "avx2")]
    pub(super) fn mask_avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
        let k = i32::from_ne_bytes(rotated_key(key, offset));
        let k256 = _mm256_set1_epi32(k);
        let mut chunks = buf.chunks_exact_mut(32);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr().cast::<__m256i>();
            // SAFETY: `chunk` is exactly 32 writable bytes, and loadu/storeu accept any alignment.
            unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), k256)) };
        }
        let done = buf.len() - buf.len() % 32;
        // `done` is a multiple of 4, so the SSE2 pass sees the same key phase.
        mask_sse2(&mut buf[done..], key, offset.wrapping_add(done));
    }

    /// SSE2 is part of the x86_64 baseline, so this needs no runtime check.
    #[inline]
    pub(super) fn mask_sse2(buf: &mut [u8], key: [u8; 4], offset: usize) {
        let k = i32::from_ne_bytes(rotated_key(key, offset));
        let mut chunks = buf.chunks_exact_mut(16);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr().cast::<__m128i>();
            // SAFETY: SSE2 is in the x86_64 baseline; `chunk` is exactly 16 writable bytes,
            // and loadu/storeu accept any alignment. The splat is loop-invariant and hoisted.
            unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), _mm_set1_epi32(k))) };
        }
        let done = buf.len() - buf.len() % 16;
        apply_mask_scalar(&mut buf[done..], key, offset.wrapping_add(done));
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::{vdupq_n_u32, veorq_u8, vld1q_u8, vreinterpretq_u8_u32, vst1q_u8};

    use super::{apply_mask_scalar, rotated_key};

    #[target_feature(enable = "neon")]
    pub(super) fn mask_neon(buf: &mut [u8], key: [u8; 4], offset: usize) {
        let k = u32::from_ne_bytes(rotated_key(key, offset));
        let mut chunks = buf.chunks_exact_mut(16);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: `chunk` is exactly 16 writable bytes; vld1q/vst1q have no alignment requirement.
            unsafe {
                vst1q_u8(
                    p,
                    veorq_u8(vld1q_u8(p), vreinterpretq_u8_u32(vdupq_n_u32(k))),
                )
            };
        }
        let done = buf.len() - buf.len() % 16;
        apply_mask_scalar(&mut buf[done..], key, offset.wrapping_add(done));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type MaskFn = fn(&mut [u8], [u8; 4], usize);

    /// Every implementation reachable on this CPU, by name, including the dispatcher.
    fn implementations() -> Vec<(&'static str, MaskFn)> {
        let mut v: Vec<(&'static str, MaskFn)> =
            vec![("dispatch", apply_mask), ("words", apply_mask_words)];
        #[cfg(target_arch = "x86_64")]
        {
            v.push(("sse2", x86::mask_sse2));
            if std::is_x86_feature_detected!("avx2") {
                fn avx2(buf: &mut [u8], key: [u8; 4], offset: usize) {
                    // SAFETY: only registered after AVX2 was detected on this CPU.
                    unsafe { x86::mask_avx2(buf, key, offset) }
                }
                v.push(("avx2", avx2));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            fn neon(buf: &mut [u8], key: [u8; 4], offset: usize) {
                // SAFETY: only registered after NEON was detected on this CPU.
                unsafe { arm::mask_neon(buf, key, offset) }
            }
            v.push(("neon", neon));
        }
        v
    }

    /// Runs `f` on `len` bytes starting `align` bytes into a guarded buffer and checks the
    /// result against the reference, and that the guard bytes on both sides are untouched.
    fn check(name: &str, f: MaskFn, data: &[u8], align: usize, key: [u8; 4], offset: usize) {
        const GUARD: u8 = 0xA5;
        let mut storage = vec![GUARD; data.len() + align + 64];
        storage[align..align + data.len()].copy_from_slice(data);
        f(&mut storage[align..align + data.len()], key, offset);
        let mut expected = data.to_vec();
        apply_mask_scalar(&mut expected, key, offset);
        assert_eq!(
            &storage[align..align + data.len()],
            &expected[..],
            "{name} len={} align={align}",
            data.len()
        );
        assert!(
            storage[..align].iter().all(|&b| b == GUARD),
            "{name} wrote before the buffer"
        );
        assert!(
            storage[align + data.len()..].iter().all(|&b| b == GUARD),
            "{name} wrote past the buffer"
        );
    }

    #[test]
    fn reference_matches_rfc_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = *b"Hello";
        apply_mask_scalar(&mut buf, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn resuming_at_an_offset_equals_one_pass() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for split in [1, 3, 17, 33, 100] {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(parts, whole, "split {split}");
        }
    }

    #[test]
    fn every_length_and_alignment_matches_reference() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for (name, f) in implementations() {
            for len in 0..=300usize {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                for align in 0..4 {
                    for offset in 0..4 {
                        check(name, f, &data, align, key, offset);
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn simd_equals_scalar(
            data in proptest::collection::vec(any::<u8>(), 0..=300),
            align in 0usize..4,
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            for (name, f) in implementations() {
                check(name, f, &data, align, key, offset);
            }
        }
    }
}
