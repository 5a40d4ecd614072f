//! The RFC 6455 opening handshake (§4), server and client side.

use crate::http::{HttpError, Request};

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
    todo!("{key}")
}

/// Validate per RFC 6455 §4.2.1. 400 bad request (method, version, Host, Upgrade, Connection, key),
/// 426 wrong `Sec-WebSocket-Version`.
pub fn validate_upgrade(req: &Request) -> Result<Upgrade, HttpError> {
    todo!("{req:?}")
}

/// `101 Switching Protocols` response.
pub fn upgrade_response(up: &Upgrade) -> Vec<u8> {
    todo!("{up:?}")
}

/// `Sec-WebSocket-Key` from 16 caller-supplied random bytes (no RNG here: sans-IO).
pub fn client_key(nonce: [u8; 16]) -> String {
    todo!("{nonce:?}")
}

/// A client upgrade request for `path_and_query` on `host`.
pub fn client_request(host: &str, path_and_query: &str, key: &str, protocols: &[&str], extra_headers: &[(&str, &str)]) -> Vec<u8> {
    todo!("{host} {path_and_query} {key} {protocols:?} {extra_headers:?}")
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

/// Parse and verify the server's response. `Ok(None)`: need more bytes.
pub fn verify_response(buf: &[u8], key: &str) -> Result<Option<(ClientHandshake, usize)>, ClientHandshakeError> {
    todo!("{buf:?} {key}")
}
