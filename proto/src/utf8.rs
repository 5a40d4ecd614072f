//! Incremental UTF-8 validation across message fragments (RFC 6455 §8.1 fail-fast).

/// Validates a text message that arrives in pieces.
/// Holds at most 3 bytes of an incomplete code point between pieces.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// Feed the next piece. Err if the bytes so far can never be valid UTF-8
    /// (fails as soon as an invalid sequence is seen, even mid-message).
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), ()> {
        todo!("{piece:?} {:?} {}", self.pending, self.pending_len)
    }
    /// The message ended: Err if a code point is incomplete.
    pub fn finish(&mut self) -> Result<(), ()> {
        todo!()
    }
}

/// Validate a complete buffer.
pub fn validate(buf: &[u8]) -> bool {
    simdutf8::basic::from_utf8(buf).is_ok()
}
