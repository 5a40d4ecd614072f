//! Incremental UTF-8 validation across message fragments (RFC 6455 §8.1 fail-fast).
//!
//! `simdutf8`'s compat API tells an invalid sequence (`error_len` is `Some`) apart from a
//! code point cut off by the end of the piece (`error_len` is `None`). Only the latter may
//! be carried into the next piece; anything else fails at once, mid-message or not.

use simdutf8::compat::from_utf8;

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
    #[allow(
        clippy::result_unit_err,
        reason = "the only failure is 'not UTF-8'; callers map it to their own error"
    )]
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), ()> {
        let rest = self.complete_pending(piece)?;
        match from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(()),
            Err(e) => {
                let tail = &rest[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The message ended: Err if a code point is incomplete. Leaves the validator ready
    /// for the next message either way.
    #[allow(
        clippy::result_unit_err,
        reason = "the only failure is 'not UTF-8'; callers map it to their own error"
    )]
    pub fn finish(&mut self) -> Result<(), ()> {
        let incomplete = self.pending_len != 0;
        self.pending_len = 0;
        if incomplete {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Whether bytes of an unfinished code point are held.
    pub fn is_incomplete(&self) -> bool {
        self.pending_len != 0
    }

    /// Completes the carried-over code point with the front of `piece` and returns the
    /// rest of `piece`. The pending bytes may still be incomplete if `piece` is short.
    fn complete_pending<'p>(&mut self, piece: &'p [u8]) -> Result<&'p [u8], ()> {
        let held = usize::from(self.pending_len);
        if held == 0 {
            return Ok(piece);
        }
        // The held prefix passed validation, so its lead byte gives the code point's width.
        let width = match self.pending[0] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        let take = (width - held).min(piece.len());
        self.pending[held..held + take].copy_from_slice(&piece[..take]);
        let joined = &self.pending[..held + take];
        match from_utf8(joined) {
            Ok(_) => {
                self.pending_len = 0;
                Ok(&piece[take..])
            }
            Err(e) if e.error_len().is_some() => Err(()),
            Err(_) => {
                // Still a valid prefix: `piece` ran out before the code point did.
                self.pending_len = (held + take) as u8;
                Ok(&piece[take..])
            }
        }
    }
}

/// Validate a complete buffer.
pub fn validate(buf: &[u8]) -> bool {
    simdutf8::basic::from_utf8(buf).is_ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<(), ()> {
        let mut v = Utf8Validator::default();
        for p in pieces {
            v.feed(p)?;
        }
        v.finish()
    }

    #[test]
    fn whole_and_split_code_points() {
        let s = "aé€😀z".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(
                    feed_all(&[&s[..i], &s[i..j], &s[j..]]),
                    Ok(()),
                    "split {i} {j}"
                );
            }
        }
    }

    #[test]
    fn invalid_fails_on_the_piece_that_makes_it_invalid() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"ok \xF0\x90"), Ok(()));
        assert!(v.is_incomplete());
        // 0x41 cannot continue a 4-byte sequence: fail now, not at finish().
        assert_eq!(v.feed(b"A rest of message"), Err(()));

        let mut v = Utf8Validator::default();
        assert_eq!(
            v.feed(b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"),
            Ok(())
        );
        assert_eq!(v.feed(b"\xED\xA0\x80"), Err(()), "surrogate");

        // A lead byte that can never start a valid sequence fails even at the very end.
        assert_eq!(Utf8Validator::default().feed(b"abc\xF5"), Err(()));
        assert_eq!(Utf8Validator::default().feed(b"abc\xC0"), Err(()));
        // Overlong and out-of-range prefixes are invalid as soon as the second byte shows it.
        assert_eq!(Utf8Validator::default().feed(b"\xE0\x80"), Err(()));
        assert_eq!(Utf8Validator::default().feed(b"\xF4\x90"), Err(()));
    }

    #[test]
    fn pending_prefix_completed_byte_by_byte() {
        let mut v = Utf8Validator::default();
        for b in "😀".as_bytes() {
            assert_eq!(v.feed(std::slice::from_ref(b)), Ok(()));
        }
        assert!(!v.is_incomplete());
        assert_eq!(v.finish(), Ok(()));

        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"\xF0"), Ok(()));
        assert_eq!(v.feed(b"\x9F"), Ok(()));
        assert_eq!(v.feed(b"\x98"), Ok(()));
        assert_eq!(v.feed(b"\x41"), Err(()));
    }

    #[test]
    fn truncated_at_end_fails_at_finish() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"abc\xE2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(()));
        // finish() resets, so the next message starts clean.
        assert_eq!(v.feed(b"abc"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    /// Bytes biased towards UTF-8 structure (lead and continuation bytes, some ASCII) so
    /// that long valid prefixes and subtle invalid sequences both show up often.
    fn utf8ish() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            0x20u8..0x7F,
            0x80u8..0xC0,
            0xC0u8..0xE0,
            0xE0u8..0xF0,
            0xF0u8..0xF8,
            any::<u8>(),
        ];
        let unit = prop_oneof![
            any::<char>().prop_map(|c| c.to_string().into_bytes()),
            byte.prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(unit, 0..24).prop_map(|units| units.concat())
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_split(
            bytes in utf8ish(),
            cuts in proptest::collection::vec(0usize..96, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut v = Utf8Validator::default();
            let mut start = 0;
            let mut failed_at = None;
            for end in cuts.into_iter().chain([bytes.len()]) {
                if v.feed(&bytes[start..end]).is_err() {
                    failed_at = Some((start, end));
                    break;
                }
                start = end;
            }
            let ok = failed_at.is_none() && v.finish().is_ok();
            match std::str::from_utf8(&bytes) {
                Ok(_) => prop_assert!(ok),
                Err(e) => {
                    prop_assert!(!ok);
                    match e.error_len() {
                        // Truncated at the very end: only finish() can tell.
                        None => prop_assert_eq!(failed_at, None),
                        // Fail-fast: on the piece that holds the first byte proving the
                        // sequence at `valid_up_to` invalid, which is at most `bad` bytes on.
                        Some(bad) => {
                            let (start, end) = failed_at.expect("an invalid sequence must fail in feed()");
                            prop_assert!(end > e.valid_up_to() && start <= e.valid_up_to() + bad);
                        }
                    }
                }
            }
        }
    }
}
