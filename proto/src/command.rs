//! Client → server control commands (PROTOCOL.md), parsed with simd-json in place.
//!
//! A publication's `data` is kept as the raw JSON bytes the client sent: it is
//! spliced into pushes verbatim, never parsed into a tree and re-encoded.

use std::cell::RefCell;

use bytes::Bytes;
use simd_json::prelude::*;

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
    Subscribe {
        channel: String,
        since: Option<Since>,
    },
    Unsubscribe {
        channel: String,
    },
    /// `data` is the raw JSON value as sent.
    Publish {
        channel: String,
        data: Bytes,
    },
    History {
        channel: String,
        since: Option<Since>,
        limit: Option<u32>,
    },
    Presence {
        channel: String,
    },
    Refresh {
        token: String,
    },
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

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

/// Parse one command (the payload of a text frame). `buf` is used as simd-json scratch
/// and is clobbered. Channel names are validated (error 104).
pub fn parse_command(buf: &mut [u8]) -> Result<Command, CommandError> {
    let data = raw_member(buf, "data");
    with_object(buf, "command", |root| command_from(root, data))
}

fn command_from(root: JsonValue<'_, '_>, data: Option<Bytes>) -> Result<Command, CommandError> {
    let id = match optional(root.get("id")) {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| malformed(None, "field 'id' must be an unsigned integer"))?,
        ),
    };
    let op = match root.get("op") {
        None => return Err(malformed(id, "missing field 'op'")),
        Some(v) => v
            .into_string()
            .ok_or_else(|| malformed(id, "field 'op' must be a string"))?,
    };
    let op = match op {
        "subscribe" => Op::Subscribe {
            channel: channel(root, id)?,
            since: since(root, id)?,
        },
        "unsubscribe" => Op::Unsubscribe {
            channel: channel(root, id)?,
        },
        "publish" => Op::Publish {
            channel: channel(root, id)?,
            data: data_bytes(root, data, id)?,
        },
        "history" => Op::History {
            channel: channel(root, id)?,
            since: since(root, id)?,
            limit: limit(root, id)?,
        },
        "presence" => Op::Presence {
            channel: channel(root, id)?,
        },
        "refresh" => Op::Refresh {
            token: string(root, "token", id)?.to_owned(),
        },
        "ping" => Op::Ping,
        _ => {
            return Err(CommandError {
                id,
                code: error_code::UNKNOWN_OP,
                message: "unknown op".to_owned(),
            })
        }
    };
    Ok(Command { id, op })
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
    let data = raw_member(buf, "data");
    with_object(buf, "body", |root| {
        Ok(PublishRequest {
            channel: channel(root, None)?,
            data: data_bytes(root, data, None)?,
        })
    })
}

pub fn parse_broadcast_body(buf: &mut [u8]) -> Result<BroadcastRequest, CommandError> {
    let data = raw_member(buf, "data");
    with_object(buf, "body", |root| broadcast_from(root, data))
}

fn broadcast_from(
    root: JsonValue<'_, '_>,
    data: Option<Bytes>,
) -> Result<BroadcastRequest, CommandError> {
    const NOT_A_LIST: &str = "field 'channels' must be a non-empty array of strings";
    let list = match root.get("channels") {
        None => return Err(malformed(None, "missing field 'channels'")),
        Some(v) => v.as_array().ok_or_else(|| malformed(None, NOT_A_LIST))?,
    };
    if list.is_empty() {
        return Err(malformed(None, NOT_A_LIST));
    }
    let mut channels = Vec::with_capacity(list.len());
    for v in list.iter() {
        let name = v.as_str().ok_or_else(|| malformed(None, NOT_A_LIST))?;
        channels.push(valid_channel(name, None)?);
    }
    Ok(BroadcastRequest {
        channels,
        data: data_bytes(root, data, None)?,
    })
}

/// 1–255 bytes of `[A-Za-z0-9_.:/-]`.
pub fn is_valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
}

/// The namespace: the part before the first `:` (empty when there is none).
pub fn namespace(channel: &str) -> &str {
    channel.split_once(':').map(|(ns, _)| ns).unwrap_or("")
}

type JsonValue<'t, 'i> = simd_json::tape::Value<'t, 'i>;

/// Documents up to this size reuse the thread's parse buffers; larger ones (HTTP bodies of
/// up to a MiB) get their own, so that one big body does not pin a MiB per thread forever.
const REUSED_BUFFERS_BYTES_MAX: usize = 16 * 1024;

/// Tape nodes (24 bytes each) kept between parses; a typical command needs a few dozen.
const TAPE_NODES_KEPT_MAX: usize = 1024;

thread_local! {
    /// simd-json's scratch buffers and tape, kept between parses: allocating them anew costs
    /// about as much as parsing a typical command. The tape is stored empty, which is what
    /// lets [`Tape::reset`](simd_json::Tape::reset) give it back a fresh lifetime.
    static SCRATCH: RefCell<(simd_json::Buffers, simd_json::Tape<'static>)> =
        RefCell::new((simd_json::Buffers::new(REUSED_BUFFERS_BYTES_MAX), simd_json::Tape(Vec::new())));
}

/// Validate `buf` as JSON with simd-json and run `f` on its top-level value, which must
/// be an object (`what` names the document in the error). Invalid JSON is error 1 with no
/// id, since none could be read.
fn with_object<R>(
    buf: &mut [u8],
    what: &str,
    f: impl FnOnce(JsonValue<'_, '_>) -> Result<R, CommandError>,
) -> Result<R, CommandError> {
    let on_tape = |tape: &simd_json::Tape<'_>| {
        let root = tape.as_value();
        if root.is_object() {
            f(root)
        } else {
            Err(malformed(None, &format!("{what} must be a JSON object")))
        }
    };
    if buf.len() > REUSED_BUFFERS_BYTES_MAX {
        let tape = simd_json::to_tape(buf).map_err(|e| json_error(&e))?;
        return on_tape(&tape);
    }
    SCRATCH.with(|scratch| {
        // Not re-entered: `f` only reads the tape.
        let mut scratch = scratch.borrow_mut();
        let (buffers, stored) = &mut *scratch;
        let mut tape = std::mem::replace(stored, simd_json::Tape(Vec::new())).reset();
        let result = match simd_json::fill_tape(buf, buffers, &mut tape) {
            Ok(()) => on_tape(&tape),
            Err(e) => Err(json_error(&e)),
        };
        // A document of many tiny values leaves a tape far bigger than a command needs;
        // let it go rather than keep it for the life of the thread.
        if tape.0.capacity() <= TAPE_NODES_KEPT_MAX {
            *stored = tape.reset();
        }
        result
    })
}

/// What is wrong with a document simd-json refused, as error 1 with no id.
fn json_error(e: &simd_json::Error) -> CommandError {
    match e.error() {
        // Integers of any size are accepted (as float64 where read); a number whose
        // magnitude overflows float64 is refused although JSON's grammar allows it.
        simd_json::ErrorType::InvalidNumber => malformed(None, NUMBER_LIMIT),
        _ => malformed(None, "malformed JSON"),
    }
}

/// The one limit on numbers, named in the error a client gets for passing it.
pub const NUMBER_LIMIT: &str = "malformed JSON: invalid number, or a number beyond the \
    float64 range (magnitude over 1.7976931348623157e308, such as 1e400)";

fn malformed(id: Option<u64>, message: &str) -> CommandError {
    CommandError {
        id,
        code: error_code::MALFORMED,
        message: message.to_owned(),
    }
}

/// An optional field: absent and `null` both mean "not given".
fn optional<'t, 'i>(v: Option<JsonValue<'t, 'i>>) -> Option<JsonValue<'t, 'i>> {
    v.filter(|v| v.as_null().is_none())
}

fn string<'i>(
    root: JsonValue<'_, 'i>,
    field: &str,
    id: Option<u64>,
) -> Result<&'i str, CommandError> {
    match root.get(field) {
        None => Err(malformed(id, &format!("missing field '{field}'"))),
        Some(v) => v
            .into_string()
            .ok_or_else(|| malformed(id, &format!("field '{field}' must be a string"))),
    }
}

fn channel(root: JsonValue<'_, '_>, id: Option<u64>) -> Result<String, CommandError> {
    valid_channel(string(root, "channel", id)?, id)
}

fn valid_channel(name: &str, id: Option<u64>) -> Result<String, CommandError> {
    if is_valid_channel(name) {
        Ok(name.to_owned())
    } else {
        Err(CommandError {
            id,
            code: error_code::BAD_CHANNEL,
            message: "bad channel name".to_owned(),
        })
    }
}

fn since(root: JsonValue<'_, '_>, id: Option<u64>) -> Result<Option<Since>, CommandError> {
    let Some(v) = optional(root.get("since")) else {
        return Ok(None);
    };
    let epoch = v.get("epoch").and_then(|e| e.into_string());
    let offset = v.get("offset").and_then(|o| o.as_u64());
    match (epoch, offset) {
        (Some(epoch), Some(offset)) => Ok(Some(Since {
            epoch: epoch.to_owned(),
            offset,
        })),
        _ => Err(malformed(
            id,
            "field 'since' must be {\"epoch\":string,\"offset\":unsigned integer}",
        )),
    }
}

fn limit(root: JsonValue<'_, '_>, id: Option<u64>) -> Result<Option<u32>, CommandError> {
    let Some(v) = optional(root.get("limit")) else {
        return Ok(None);
    };
    let n = v.as_u64().and_then(|n| u32::try_from(n).ok());
    n.map(Some)
        .ok_or_else(|| malformed(id, "field 'limit' must be an unsigned 32-bit integer"))
}

/// The raw bytes of `data`, located by [`raw_member`] before simd-json touched the buffer.
fn data_bytes(
    root: JsonValue<'_, '_>,
    raw: Option<Bytes>,
    id: Option<u64>,
) -> Result<Bytes, CommandError> {
    match (root.get("data"), raw) {
        (Some(_), Some(raw)) => Ok(raw),
        (None, _) => Err(malformed(id, "missing field 'data'")),
        // simd-json found a member the scanner missed. Refusing is the safe answer: the
        // bytes we would splice into pushes would not be the ones that were validated.
        (Some(_), None) => Err(malformed(id, "malformed field 'data'")),
    }
}

// The raw-span scanner. It runs on the pristine buffer before simd-json validates (and
// clobbers) it, so it only has to be right on valid JSON: on anything else it may return
// any answer, because the document is then refused as a whole.

/// The raw bytes of the first top-level member named `key`, copied out of `buf`. Surrounding
/// whitespace is excluded. `None` when absent (or when `buf` is not a JSON object).
fn raw_member(buf: &[u8], key: &str) -> Option<Bytes> {
    let mut i = skip_ws(buf, 0);
    if buf.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(buf, i);
        if buf.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(buf, i)?;
        let name = &buf[i + 1..key_end - 1];
        i = skip_ws(buf, key_end);
        if buf.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(buf, i + 1);
        let end = skip_value(buf, start)?;
        if key_matches(name, key.as_bytes()) {
            return Some(Bytes::copy_from_slice(&buf[start..end]));
        }
        i = skip_ws(buf, end);
        if buf.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn skip_ws(buf: &[u8], mut i: usize) -> usize {
    while matches!(buf.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `buf[i]` is an opening quote; returns the index just past the closing one.
fn skip_string(buf: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match buf.get(j)? {
            b'"' => return Some(j + 1),
            // An escape's second byte is never a closing quote, whatever it is.
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Returns the index just past the value starting at `buf[i]`.
fn skip_value(buf: &[u8], i: usize) -> Option<usize> {
    match buf.get(i)? {
        b'"' => skip_string(buf, i),
        b'{' | b'[' => {
            // Brackets are counted without matching kinds; a mismatch is invalid JSON,
            // which simd-json refuses afterwards.
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match buf.get(j)? {
                    b'"' => {
                        j = skip_string(buf, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            // A number, `true`, `false` or `null`: runs to the next delimiter.
            let len = buf[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(buf.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// Whether the raw (still escaped) key text `raw` decodes to the ASCII `key`.
/// `{"d\u0061ta":1}` is a `data` member to simd-json, so it must be one here too.
fn key_matches(raw: &[u8], key: &[u8]) -> bool {
    if !raw.contains(&b'\\') {
        return raw == key;
    }
    let mut k = key.iter();
    let mut j = 0;
    while j < raw.len() {
        let c = match raw[j] {
            b'\\' => {
                let (c, len) = unescape_ascii(&raw[j..]);
                j += len;
                c
            }
            c => {
                j += 1;
                Some(c)
            }
        };
        // Anything that does not decode to one ASCII byte cannot equal an ASCII key.
        match (c, k.next()) {
            (Some(c), Some(&want)) if c == want => {}
            _ => return false,
        }
    }
    k.next().is_none()
}

/// Decode the escape at the start of `s` (`s[0]` is a backslash): the byte when it is
/// ASCII (`None` otherwise), and how many input bytes the escape took.
fn unescape_ascii(s: &[u8]) -> (Option<u8>, usize) {
    match s.get(1) {
        Some(b'"') => (Some(b'"'), 2),
        Some(b'\\') => (Some(b'\\'), 2),
        Some(b'/') => (Some(b'/'), 2),
        Some(b'b') => (Some(0x08), 2),
        Some(b'f') => (Some(0x0c), 2),
        Some(b'n') => (Some(b'\n'), 2),
        Some(b'r') => (Some(b'\r'), 2),
        Some(b't') => (Some(b'\t'), 2),
        Some(b'u') => {
            let code = s
                .get(2..6)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            match code {
                Some(c) if c < 0x80 => (Some(c as u8), 6),
                _ => (None, 6),
            }
        }
        _ => (None, 2),
    }
}
