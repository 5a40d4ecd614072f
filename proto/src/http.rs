//! HTTP/1.1 requests (plain and upgrade) from a possibly partial buffer, and responses.

/// Caps on what a client may send before its request is parsed.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line + headers; past it → 431.
    pub header_bytes_max: usize,
    /// Content-Length cap; past it → 413.
    pub body_bytes_max: usize,
    /// Number of headers; past it → 431.
    pub headers_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_bytes_max: 8 * 1024, body_bytes_max: 1024 * 1024, headers_max: 64 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path without the query string, e.g. `/ws`.
    pub path: String,
    /// Raw query string without `?` (may be empty).
    pub query: String,
    /// Header names as sent; values lossily decoded.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        todo!("{name}")
    }
    /// Percent-decoded value of the first query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<String> {
        todo!("{key}")
    }
    /// `Upgrade: websocket` present (case-insensitive)?
    pub fn wants_upgrade(&self) -> bool {
        todo!()
    }
    /// HTTP/1.1 default keep-alive unless `Connection: close`.
    pub fn keep_alive(&self) -> bool {
        todo!()
    }
}

/// A request that must be refused, with the status to refuse it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: &'static str,
}

impl HttpError {
    /// Full response (`Connection: close`, plain-text body); 426 adds `Sec-WebSocket-Version: 13`.
    pub fn response(&self) -> Vec<u8> {
        todo!()
    }
}

/// Parse one request from the front of `buf`. `Ok(None)`: need more bytes.
/// `Ok(Some((req, n)))`: the request (with its body, by Content-Length) took `n` bytes.
/// Errors: 400 malformed, 431 headers too large / too many, 413 body too large,
/// 501 Transfer-Encoding (chunked not supported).
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, HttpError> {
    todo!("{buf:?} {limits:?}")
}

/// A full response with Content-Length.
pub fn response(status: u16, content_type: &str, extra_headers: &[(&str, &str)], body: &[u8], keep_alive: bool) -> Vec<u8> {
    todo!("{status} {content_type} {extra_headers:?} {body:?} {keep_alive}")
}

pub fn reason_phrase(status: u16) -> &'static str {
    todo!("{status}")
}
