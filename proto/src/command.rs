//! Client → server control commands (PROTOCOL.md), parsed with simd-json in place.
//!
//! A publication's `data` is kept as the raw JSON bytes the client sent: it is
//! spliced into pushes verbatim, never parsed into a tree and re-encoded.

use bytes::Bytes;

/// Error codes of PROTOCOL.md.
pub mod error_code {
    pub const MALFORMED: u16 = 1;
    pub const UNKNOWN_OP: u16 = 2;
    pub const INTERNAL: u16 = 100;
    pub const UNAUTHORIZED: u16 = 101;
    pub const PERMISSION_DENIED: u16 = 103;
    pub const BAD_CHANNEL: u16 = 104;
    pub const ALREADY_SUBSCRIBED: u16 = 105;
    pub const TOKEN_EXPIRED: u16 = 109;
    pub const TOO_MANY_REQUESTS: u16 = 111;
    pub const NOT_RECOVERABLE: u16 = 112;
    pub const LIMIT_EXCEEDED: u16 = 113;

    /// Whether a client may retry the same command later.
    pub fn is_temporary(code: u16) -> bool {
        matches!(code, INTERNAL | TOO_MANY_REQUESTS)
    }
}

/// A stream position: `{"epoch":"E","offset":41}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Subscribe { channel: String, since: Option<Since> },
    Unsubscribe { channel: String },
    /// `data` is the raw JSON value as sent.
    Publish { channel: String, data: Bytes },
    History { channel: String, since: Option<Since>, limit: Option<u32> },
    Presence { channel: String },
    Refresh { token: String },
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: Option<u64>,
    pub op: Op,
}

/// A command that cannot be executed; reply with [`crate::reply::error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command's id when it could be read.
    pub id: Option<u64>,
    pub code: u16,
    pub message: String,
}

/// Parse one command (the payload of a text frame). `buf` is used as simd-json scratch
/// and is clobbered. Channel names are validated (error 104).
pub fn parse_command(buf: &mut [u8]) -> Result<Command, CommandError> {
    todo!("{buf:?}")
}

/// `POST /api/publish` body: `{"channel":"c","data":<any JSON>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    pub channel: String,
    pub data: Bytes,
}

/// `POST /api/broadcast` body: `{"channels":["a","b"],"data":<any JSON>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastRequest {
    pub channels: Vec<String>,
    pub data: Bytes,
}

pub fn parse_publish_body(buf: &mut [u8]) -> Result<PublishRequest, CommandError> {
    todo!("{buf:?}")
}

pub fn parse_broadcast_body(buf: &mut [u8]) -> Result<BroadcastRequest, CommandError> {
    todo!("{buf:?}")
}

/// 1–255 bytes of `[A-Za-z0-9_.:/-]`.
pub fn is_valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
}

/// The namespace: the part before the first `:` (empty when there is none).
pub fn namespace(channel: &str) -> &str {
    channel.split_once(':').map(|(ns, _)| ns).unwrap_or("")
}
