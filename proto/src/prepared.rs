//! Encode-once server frames: header and payload in one immutable, cheaply cloneable buffer.
//! Server frames are unmasked, so the same bytes suit every subscriber on every shard.

use bytes::Bytes;

use crate::frame::OpCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedFrame(Bytes);

impl PreparedFrame {
    /// One FIN frame with `payload`, built in a single allocation.
    pub fn new(opcode: OpCode, payload: &[u8]) -> PreparedFrame {
        PreparedFrame::from_parts(opcode, &[payload])
    }
    /// One FIN frame whose payload is the concatenation of `parts` (single allocation).
    pub fn from_parts(opcode: OpCode, parts: &[&[u8]]) -> PreparedFrame {
        todo!("{opcode:?} {parts:?}")
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
