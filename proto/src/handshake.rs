//! The RFC 6455 opening handshake (§4), server and client side.

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use crate::http::{has_token, HttpError, Request};

pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    /// `shardcast.v1.json` (default)
    Json,
    /// `shardcast.v1.msgpack`
    Msgpack,
}

impl Subprotocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Subprotocol::Json => "shardcast.v1.json",
            Subprotocol::Msgpack => "shardcast.v1.msgpack",
        }
    }

    /// The subprotocol named exactly `name` (subprotocol names are case-sensitive, RFC 6455 §4.1).
    pub fn from_name(name: &str) -> Option<Subprotocol> {
        [Subprotocol::Json, Subprotocol::Msgpack]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// A validated upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// Protocol to echo back; None when the client offered none we speak (JSON is then used).
    pub protocol: Option<Subprotocol>,
}

/// `base64(sha1(key + GUID))`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Validate per RFC 6455 §4.2.1. 400 bad request (method, version, Host, Upgrade, Connection, key),
/// 426 wrong `Sec-WebSocket-Version`.
///
/// The HTTP/1.1 requirement is enforced by [`crate::http::parse_request`], which refuses an
/// HTTP/1.0 request that carries `Upgrade`.
pub fn validate_upgrade(req: &Request) -> Result<Upgrade, HttpError> {
    if req.method != "GET" {
        return Err(HttpError::new(400, "websocket upgrade must use GET"));
    }
    if req.header("host").is_none() {
        return Err(HttpError::new(400, "missing Host"));
    }
    if !req.wants_upgrade() {
        return Err(HttpError::new(400, "missing Upgrade: websocket"));
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(HttpError::new(400, "missing Connection: Upgrade"));
    }
    // Checked before the key so that a client speaking an older draft learns, through the
    // 426 and its Sec-WebSocket-Version header, which version to retry with.
    match req.header("sec-websocket-version") {
        None => return Err(HttpError::new(400, "missing Sec-WebSocket-Version")),
        Some("13") => {}
        Some(_) => return Err(HttpError::new(426, "unsupported Sec-WebSocket-Version")),
    }
    let mut keys = req.header_all("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if is_valid_key(k) => k,
        _ => return Err(HttpError::new(400, "bad Sec-WebSocket-Key")),
    };
    Ok(Upgrade {
        accept: accept_key(key),
        protocol: choose_protocol(req),
    })
}

/// A key is the base64 of 16 bytes (RFC 6455 §4.1), so 24 characters with padding.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// The first protocol in the client's order that we speak. The list may be split over
/// several header lines; together they form one comma-separated list (RFC 9110 §5.3).
fn choose_protocol(req: &Request) -> Option<Subprotocol> {
    req.header_all("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .find_map(|name| Subprotocol::from_name(name.trim()))
}

/// `101 Switching Protocols` response.
pub fn upgrade_response(up: &Upgrade) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(up.accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = up.protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `Sec-WebSocket-Key` from 16 caller-supplied random bytes (no RNG here: sans-IO).
pub fn client_key(nonce: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// A client upgrade request for `path_and_query` on `host`.
pub fn client_request(
    host: &str,
    path_and_query: &str,
    key: &str,
    protocols: &[&str],
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192 + path_and_query.len());
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut header = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    header("Host", host);
    header("Upgrade", "websocket");
    header("Connection", "Upgrade");
    header("Sec-WebSocket-Key", key);
    header("Sec-WebSocket-Version", "13");
    if !protocols.is_empty() {
        header("Sec-WebSocket-Protocol", &protocols.join(", "));
    }
    for (name, value) in extra_headers {
        header(name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the server agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    pub protocol: Option<String>,
}

/// Why a server's handshake response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// Malformed response or headers too large.
    Malformed,
    /// Server answered with this status instead of 101.
    Status(u16),
    /// Missing/wrong Upgrade, Connection or Sec-WebSocket-Accept.
    BadHeaders(&'static str),
}

impl std::fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientHandshakeError::Malformed => f.write_str("malformed handshake response"),
            ClientHandshakeError::Status(s) => write!(f, "handshake refused with status {s}"),
            ClientHandshakeError::BadHeaders(h) => write!(f, "bad {h} in handshake response"),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// A response head longer than this is refused as malformed instead of buffered forever.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
const RESPONSE_HEADERS_MAX: usize = 64;

/// Parse and verify the server's response. `Ok(None)`: need more bytes.
/// `Ok(Some((hs, n)))`: the head took `n` bytes; anything after it is already frame data.
pub fn verify_response(
    buf: &[u8],
    key: &str,
) -> Result<Option<(ClientHandshake, usize)>, ClientHandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut res = httparse::Response::new(&mut slots);
    let head = &buf[..buf.len().min(RESPONSE_HEAD_BYTES_MAX)];
    let n = match res.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= RESPONSE_HEAD_BYTES_MAX => {
            return Err(ClientHandshakeError::Malformed)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ClientHandshakeError::Malformed),
    };
    match res.code {
        Some(101) => {}
        Some(code) => return Err(ClientHandshakeError::Status(code)),
        None => return Err(ClientHandshakeError::Malformed),
    }
    let values = |name: &'static str| {
        res.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or(""))
    };
    if !values("upgrade").any(|v| has_token(v, "websocket")) {
        return Err(ClientHandshakeError::BadHeaders("Upgrade"));
    }
    if !values("connection").any(|v| has_token(v, "upgrade")) {
        return Err(ClientHandshakeError::BadHeaders("Connection"));
    }
    let expected = accept_key(key);
    let mut accepts = values("sec-websocket-accept");
    match (accepts.next(), accepts.next()) {
        (Some(a), None) if a.trim() == expected => {}
        _ => return Err(ClientHandshakeError::BadHeaders("Sec-WebSocket-Accept")),
    }
    let protocol = values("sec-websocket-protocol")
        .next()
        .map(|p| p.trim().to_owned());
    Ok(Some((ClientHandshake { protocol }, n)))
}
