//! Protocol errors. Each maps to exactly one RFC 6455 / shardcast close code.

/// Close codes used by shardcast (RFC 6455 §7.4 plus the 4xxx range of PROTOCOL.md).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Server draining; reason carries `reconnect_after_ms=<n>`. Reconnect.
    pub const DRAINING: u16 = 4001;
    /// Outbound queue limit hit. Reconnect.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Idle or heartbeat timeout. Reconnect.
    pub const IDLE_TIMEOUT: u16 = 4009;
    /// Do not reconnect.
    pub const UNAUTHORIZED: u16 = 4501;
    pub const TOKEN_EXPIRED: u16 = 4503;
    pub const BANNED: u16 = 4504;
}

/// A violation of RFC 6455 by the peer (or of a configured limit).
/// The connection must be closed with [`ProtoError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// RSV bits set without a negotiated extension.
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF.
    UnknownOpcode(u8),
    /// A client frame without mask, or a server frame with one.
    BadMask,
    /// Length not minimally encoded, or 64-bit length with the top bit set.
    NonMinimalLength,
    /// Control frame with payload > 125 or without FIN.
    BadControlFrame,
    /// Continuation without a started message, or a new data frame inside one.
    BadContinuation,
    /// Message (or single frame) larger than the configured maximum.
    MessageTooBig { limit_bytes: usize },
    /// Text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// A close code not allowed on the wire (§7.4): reserved, local-only, or >= 5000.
    BadCloseCode(u16),
    /// A close payload of exactly 1 byte: too short for a code, yet not empty.
    BadClosePayload,
}

impl ProtoError {
    /// The close code to send before closing the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtoError::MessageTooBig { .. } => close_code::MESSAGE_TOO_BIG,
            ProtoError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtoError::ReservedBits => f.write_str("reserved bits set"),
            ProtoError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            ProtoError::BadMask => f.write_str("bad masking"),
            ProtoError::NonMinimalLength => f.write_str("length not minimally encoded"),
            ProtoError::BadControlFrame => f.write_str("bad control frame"),
            ProtoError::BadContinuation => f.write_str("bad continuation"),
            ProtoError::MessageTooBig { limit_bytes } => {
                write!(f, "message too big (limit {limit_bytes} bytes)")
            }
            ProtoError::InvalidUtf8 => f.write_str("invalid utf-8"),
            ProtoError::BadCloseCode(c) => write!(f, "bad close code {c}"),
            ProtoError::BadClosePayload => f.write_str("bad close payload"),
        }
    }
}

impl std::error::Error for ProtoError {}
