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
    /// The opcode in the low nibble of a frame's first byte; any value RFC 6455 leaves
    /// reserved (3-7, 0xB-0xF), or anything wider than a nibble, is rejected.
    pub fn from_u8(b: u8) -> Result<OpCode, ProtoError> {
        match b {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            _ => Err(ProtoError::UnknownOpcode(b)),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames (§5.5) have the high bit of the opcode set.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
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
    ///
    /// Each rule is checked as soon as the bytes it depends on are present, so a bad first
    /// byte fails even when the rest of the header has not arrived yet.
    pub fn parse(buf: &[u8], role: Role) -> Result<Option<(FrameHeader, usize)>, ProtoError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        if rsv != 0 {
            return Err(ProtoError::ReservedBits);
        }
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        if opcode.is_control() && !fin {
            return Err(ProtoError::BadControlFrame);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        if masked != (role == Role::Server) {
            return Err(ProtoError::BadMask);
        }
        let len7 = b1 & 0x7F;
        if opcode.is_control() && len7 > 125 {
            return Err(ProtoError::BadControlFrame);
        }
        let (payload_len, mut at) = match len7 {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([ext[0], ext[1]]);
                if len <= 125 {
                    return Err(ProtoError::NonMinimalLength);
                }
                (u64::from(len), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                if len <= 0xFFFF || len >> 63 != 0 {
                    return Err(ProtoError::NonMinimalLength);
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            let Some(key) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, at)))
    }

    /// Encoded size of this header.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a header always has at least 2 bytes"
    )]
    pub fn len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Write the header into `out` (at least [`HEADER_BYTES_MAX`] bytes); returns bytes written.
    /// Always uses the minimal length form, so whatever we send passes our own `parse`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        debug_assert!(
            self.payload_len >> 63 == 0,
            "RFC 6455 forbids 64-bit lengths with the top bit set"
        );
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// Append a complete frame (header, then payload masked with `mask` if given) to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; HEADER_BYTES_MAX];
    let head_len = header.encode(&mut head);
    out.reserve(head_len + payload.len());
    out.extend_from_slice(&head[..head_len]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        crate::mask::apply_mask(&mut out[start..], key, 0);
    }
}
