//! Encode-once server frames: header and payload in one immutable, cheaply cloneable buffer.
//! Server frames are unmasked, so the same bytes suit every subscriber on every shard.

use bytes::Bytes;

use crate::frame::{FrameHeader, OpCode, HEADER_BYTES_MAX};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedFrame(Bytes);

impl PreparedFrame {
    /// One FIN frame with `payload`, built in a single allocation.
    pub fn new(opcode: OpCode, payload: &[u8]) -> PreparedFrame {
        PreparedFrame::from_parts(opcode, &[payload])
    }
    /// One FIN frame whose payload is the concatenation of `parts` (single allocation).
    pub fn from_parts(opcode: OpCode, parts: &[&[u8]]) -> PreparedFrame {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len: payload_len as u64,
        };
        // Exact capacity: `Bytes::from(Vec)` then adopts the allocation as it is.
        let mut buf = Vec::with_capacity(header.len() + payload_len);
        let mut head = [0u8; HEADER_BYTES_MAX];
        let head_len = header.encode(&mut head);
        buf.extend_from_slice(&head[..head_len]);
        for part in parts {
            buf.extend_from_slice(part);
        }
        debug_assert_eq!(buf.len(), buf.capacity());
        PreparedFrame(Bytes::from(buf))
    }
    pub fn text(payload: &[u8]) -> PreparedFrame {
        PreparedFrame::new(OpCode::Text, payload)
    }
    pub fn binary(payload: &[u8]) -> PreparedFrame {
        PreparedFrame::new(OpCode::Binary, payload)
    }
    pub fn pong(payload: &[u8]) -> PreparedFrame {
        PreparedFrame::new(OpCode::Pong, payload)
    }
    pub fn close(code: u16, reason: &str) -> PreparedFrame {
        PreparedFrame::new(OpCode::Close, &crate::close::close_payload(code, reason))
    }
    /// The whole frame, header included.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The payload of an unmasked, unfragmented server frame (what the engine
/// queues), or None when the bytes are not one.
pub fn payload_of(frame: &[u8]) -> Option<&[u8]> {
    let b1 = *frame.get(1)?;
    if b1 & 0x80 != 0 {
        return None;
    }
    let (len, at): (usize, usize) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    (frame.len() == at.checked_add(len)?).then(|| &frame[at..])
}
