//! Close frames (RFC 6455 §5.5.1, §7.4).

use crate::error::ProtoError;

/// Whether `code` may appear in a close frame on the wire.
pub fn is_valid_close_code(code: u16) -> bool {
    todo!("{code}")
}

/// Parse a close payload: empty → None; otherwise code + UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtoError> {
    todo!("{payload:?}")
}

/// Build a close payload (code + reason, reason truncated to fit 125 bytes on a char boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    todo!("{code} {reason}")
}
