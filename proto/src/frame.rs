//! Frame headers (RFC 6455 §5.2): parse, encode, opcodes.

use crate::error::ProtoError;

/// Which side of the connection we are; decides which mask rule applies to frames we *receive*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We are the server: received frames must be masked.
    Server,
    /// We are the client: received frames must not be masked.
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn from_u8(b: u8) -> Result<OpCode, ProtoError> {
        todo!("{b}")
    }
    pub fn as_u8(self) -> u8 {
        todo!()
    }
    pub fn is_control(self) -> bool {
        todo!()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..3 as the low 3 bits.
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Longest possible header: 2 + 8 (length) + 4 (mask).
pub const HEADER_BYTES_MAX: usize = 14;

impl FrameHeader {
    /// Parse a header from the front of `buf`, as received by `role`.
    /// `Ok(None)` means more bytes are needed; `Ok(Some((h, n)))` means the header took `n` bytes.
    /// Validates RSV (must be 0), opcode, masking for the role, minimal length, control-frame rules.
    pub fn parse(buf: &[u8], role: Role) -> Result<Option<(FrameHeader, usize)>, ProtoError> {
        todo!("{buf:?} {role:?}")
    }

    /// Encoded size of this header.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// Write the header into `out` (at least [`HEADER_BYTES_MAX`] bytes); returns bytes written.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        todo!("{out:?}")
    }
}

/// Append a complete frame (header, then payload masked with `mask` if given) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) {
    todo!("{out:?} {opcode:?} {fin} {payload:?} {mask:?}")
}
