//! Watching for the peer's close frame once ours is on its way.
//!
//! A server that has sent its close frame reads nothing but the peer's close
//! (RFC 6455 §5.5.1); after it, §7.1.1 has the server close the TCP connection
//! first. [`CloseScan`] reads frame headers and skips their payloads, so a
//! closing connection holds no payload bytes, whatever the peer still sends.

use crate::frame::{FrameHeader, OpCode, Role, HEADER_BYTES_MAX};

/// Where a closing connection's input stands.
#[derive(Debug, Default, Clone)]
pub struct CloseScan {
    /// A header cut off by the end of a read.
    head: [u8; HEADER_BYTES_MAX],
    have: u8,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
}

/// What the bytes fed so far showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No close frame yet.
    More,
    /// The peer's close frame began: it sends nothing after it.
    Closed,
    /// Not WebSocket frames from a client: nothing more worth reading.
    Invalid,
}

impl CloseScan {
    /// Read `data` (client frames, masked), the next bytes after those fed before.
    pub fn feed(&mut self, mut data: &[u8]) -> Scan {
        loop {
            let n = self.skip.min(data.len() as u64) as usize;
            self.skip -= n as u64;
            data = &data[n..];
            if data.is_empty() {
                return Scan::More;
            }
            let have = usize::from(self.have);
            let n = (HEADER_BYTES_MAX - have).min(data.len());
            self.head[have..have + n].copy_from_slice(&data[..n]);
            match FrameHeader::parse(&self.head[..have + n], Role::Server) {
                Err(_) => return Scan::Invalid,
                // A whole header fits in HEADER_BYTES_MAX: all of `data` was taken.
                Ok(None) => {
                    self.have = (have + n) as u8;
                    // Its first two bytes (checked by `parse`: a masked client
                    // frame) already tell a close. The first alone does not:
                    // an unmasked frame is invalid whatever its opcode, and the
                    // outcome must not depend on where a read ended.
                    let close = matches!(OpCode::from_u8(self.head[0] & 0x0F), Ok(OpCode::Close));
                    if close && self.have >= 2 {
                        return Scan::Closed;
                    }
                    return Scan::More;
                }
                Ok(Some((h, used))) => {
                    if h.opcode == OpCode::Close {
                        return Scan::Closed;
                    }
                    data = &data[used - have..];
                    self.have = 0;
                    self.skip = h.payload_len;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn client_frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, op, true, payload, Some([1, 2, 3, 4]));
        out
    }

    #[test]
    fn finds_the_close_after_data_frames_of_every_length_class() {
        let mut wire = Vec::new();
        for len in [0, 125, 126, 65_535, 65_536, 200_000] {
            wire.extend(client_frame(OpCode::Binary, &vec![0x88; len]));
        }
        wire.extend(client_frame(OpCode::Ping, b"p"));
        let data_end = wire.len();
        wire.extend(client_frame(OpCode::Close, &[0x03, 0xe8]));
        // Whole, and cut at every split point of the last frames and a few in payloads.
        assert_eq!(CloseScan::default().feed(&wire), Scan::Closed);
        assert_eq!(CloseScan::default().feed(&wire[..data_end]), Scan::More);
        for cut in (data_end - 20..=data_end).chain([3, 200, 70_000, 140_000]) {
            let mut s = CloseScan::default();
            assert_eq!(s.feed(&wire[..cut]), Scan::More, "cut {cut}");
            assert_eq!(s.feed(&wire[cut..]), Scan::Closed, "cut {cut}");
        }
        // The close frame's first two bytes are enough; its first alone is not.
        let mut s = CloseScan::default();
        assert_eq!(s.feed(&wire[..data_end + 1]), Scan::More);
        for cut in data_end + 2..wire.len() {
            assert_eq!(
                CloseScan::default().feed(&wire[..cut]),
                Scan::Closed,
                "cut {cut}"
            );
        }
        // One byte at a time through the headers.
        let mut s = CloseScan::default();
        let mut seen = Scan::More;
        for b in &wire {
            seen = s.feed(std::slice::from_ref(b));
            if seen != Scan::More {
                break;
            }
        }
        assert_eq!(seen, Scan::Closed);
    }

    #[test]
    fn the_outcome_does_not_depend_on_the_cuts() {
        // Random client frames (and, now and then, random bytes), fed whole
        // and in random chunks: the same outcome either way.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ops = [
            OpCode::Text,
            OpCode::Binary,
            OpCode::Ping,
            OpCode::Pong,
            OpCode::Close,
        ];
        for _ in 0..2_000 {
            let mut wire = Vec::new();
            for _ in 0..next() % 6 {
                let op = ops[(next() % 5) as usize];
                let len = match next() % 4 {
                    0 => 0,
                    1 => next() % 126,
                    2 => 126 + next() % 2_000,
                    _ => next() % 70_000,
                } as usize;
                let len = if op == OpCode::Text || op == OpCode::Binary {
                    len
                } else {
                    len % 126
                };
                wire.extend(client_frame(op, &vec![b'x'; len]));
                if next() % 10 == 0 {
                    wire.extend((0..next() % 20).map(|_| next() as u8));
                }
            }
            let whole = CloseScan::default().feed(&wire);
            let mut s = CloseScan::default();
            let mut rest = &wire[..];
            let mut got = Scan::More;
            while !rest.is_empty() && got == Scan::More {
                let n = (1 + next() % 3_000) as usize;
                let n = n.min(rest.len());
                got = s.feed(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(got, whole);
        }
    }

    #[test]
    fn an_unmasked_close_is_invalid_however_it_is_cut() {
        // Found by the close_scan fuzz target: its first byte alone had said Closed.
        let wire = [0x88, 0x0a];
        assert_eq!(CloseScan::default().feed(&wire), Scan::Invalid);
        let mut s = CloseScan::default();
        assert_eq!(s.feed(&wire[..1]), Scan::More);
        assert_eq!(s.feed(&wire[1..]), Scan::Invalid);
    }

    #[test]
    fn unmasked_or_reserved_bits_are_invalid() {
        let mut unmasked = Vec::new();
        encode_frame(&mut unmasked, OpCode::Text, true, b"hi", None);
        assert_eq!(CloseScan::default().feed(&unmasked), Scan::Invalid);
        assert_eq!(CloseScan::default().feed(&[0xF1, 0x80]), Scan::Invalid);
    }
}
