//! Close frames (RFC 6455 §5.5.1, §7.4).

use crate::error::ProtoError;

/// Longest reason that fits a control frame (125 bytes) after the 2-byte code.
pub const CLOSE_REASON_BYTES_MAX: usize = 123;

/// Whether `code` may appear in a close frame on the wire.
///
/// 1004 is reserved, and 1005, 1006 and 1015 are for local reporting only (§7.4.1), so
/// none of them may be sent. 1012-1014 are IANA-registered after the RFC (service restart,
/// try again later, bad gateway) and peers do send them. The rest of 1000-2999 is reserved
/// for future RFCs; 3000-4999 belong to libraries and applications.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parse a close payload: empty → None; otherwise code + UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtoError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtoError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(ProtoError::BadCloseCode(code));
            }
            let reason = simdutf8::basic::from_utf8(reason).map_err(|_| ProtoError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Build a close payload (code + reason, reason truncated to fit 125 bytes on a char boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(CLOSE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ranges() {
        let valid = |c| is_valid_close_code(c);
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(valid(c), "{c}");
        }
        for c in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!valid(c), "{c}");
        }
    }

    #[test]
    fn parse() {
        assert_eq!(parse_close_payload(b""), Ok(None));
        assert_eq!(
            parse_close_payload(b"\x03"),
            Err(ProtoError::BadClosePayload)
        );
        assert_eq!(parse_close_payload(b"\x03\xe8"), Ok(Some((1000, ""))));
        assert_eq!(parse_close_payload(b"\x0f\xa0bye"), Ok(Some((4000, "bye"))));
        assert_eq!(
            parse_close_payload(b"\x03\xed"),
            Err(ProtoError::BadCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(b"\x13\x88"),
            Err(ProtoError::BadCloseCode(5000))
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xce\xba\xe1\xbd"),
            Err(ProtoError::InvalidUtf8)
        );
        assert_eq!(ProtoError::BadClosePayload.close_code(), 1002);
        assert_eq!(ProtoError::BadCloseCode(1005).close_code(), 1002);
        assert_eq!(ProtoError::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn build_truncates_on_a_char_boundary() {
        assert_eq!(close_payload(1000, ""), b"\x03\xe8");
        assert_eq!(
            close_payload(4001, "reconnect_after_ms=500"),
            b"\x0f\xa1reconnect_after_ms=500"
        );

        let ascii = "x".repeat(200);
        let p = close_payload(1001, &ascii);
        assert_eq!(p.len(), 125);
        assert_eq!(parse_close_payload(&p), Ok(Some((1001, &ascii[..123]))));

        // 61 two-byte chars = 122 bytes, then a 3-byte char that would end at byte 125.
        let mixed = format!("{}€tail", "é".repeat(61));
        let p = close_payload(1000, &mixed);
        assert_eq!(p.len(), 2 + 122);
        assert_eq!(parse_close_payload(&p), Ok(Some((1000, &mixed[..122]))));
    }
}
