//! HTTP/1.1 requests (plain and upgrade) from a possibly partial buffer, and responses.
//!
//! Only what one port serving `/ws`, `/sse` and a small JSON API needs: bodies by
//! `Content-Length` (no chunked encoding), hard caps on everything a client controls
//! before authentication, and responses that always carry a length.

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
        Limits {
            header_bytes_max: 8 * 1024,
            body_bytes_max: 1024 * 1024,
            headers_max: 64,
        }
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
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the header `name`, in order (a header may be sent on several lines).
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any `name` header line lists `token` in its comma-separated value
    /// (case-insensitive), as `Connection: keep-alive, Upgrade` lists `upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name).any(|v| has_token(v, token))
    }

    /// Percent-decoded value of the first query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (!pair.is_empty() && percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    /// `Upgrade: websocket` present (case-insensitive)?
    pub fn wants_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }

    /// HTTP/1.1 default keep-alive unless `Connection: close`.
    ///
    /// The request does not record its HTTP version, so an HTTP/1.0 client is treated
    /// the same way; that is harmless because every response carries a length, so such a
    /// client can close on its own once it has read the response.
    pub fn keep_alive(&self) -> bool {
        !self.header_has_token("connection", "close")
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub(crate) fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
/// A `%` not followed by two hex digits is kept as is rather than refused: query
/// strings come from browsers and hand-written URLs, and a lenient reading is harmless here.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A request that must be refused, with the status to refuse it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: &'static str,
}

impl HttpError {
    pub const fn new(status: u16, message: &'static str) -> HttpError {
        HttpError { status, message }
    }

    /// Full response (`Connection: close`, plain-text body); 426 adds `Sec-WebSocket-Version: 13`.
    pub fn response(&self) -> Vec<u8> {
        self.response_with(&[])
    }

    /// [`HttpError::response`] with extra headers, e.g. `Retry-After` on a 503.
    pub fn response_with(&self, extra_headers: &[(&str, &str)]) -> Vec<u8> {
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 1);
        if self.status == 426 {
            // RFC 6455 §4.4: tell the client which version we speak.
            headers.push(("Sec-WebSocket-Version", "13"));
        }
        headers.extend_from_slice(extra_headers);
        let mut body = Vec::with_capacity(self.message.len() + 1);
        body.extend_from_slice(self.message.as_bytes());
        body.push(b'\n');
        response(
            self.status,
            "text/plain; charset=utf-8",
            &headers,
            &body,
            false,
        )
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            reason_phrase(self.status),
            self.message
        )
    }
}

impl std::error::Error for HttpError {}

/// Header slots kept on the stack; a larger `headers_max` falls back to the heap.
const STACK_HEADERS: usize = 64;

/// Parse one request from the front of `buf`. `Ok(None)`: need more bytes.
/// `Ok(Some((req, n)))`: the request (with its body, by Content-Length) took `n` bytes.
/// Errors: 400 malformed, 431 headers too large / too many, 413 body too large,
/// 501 Transfer-Encoding (chunked not supported).
///
/// HTTP/1.0 is accepted for plain requests; an HTTP/1.0 request carrying `Upgrade` is
/// refused with 400 here, because RFC 6455 needs HTTP/1.1 and [`Request`] does not keep
/// the version for the handshake to check.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, HttpError> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let slots: &mut [httparse::Header<'_>] = if limits.headers_max <= STACK_HEADERS {
        &mut stack[..limits.headers_max]
    } else {
        heap = vec![httparse::EMPTY_HEADER; limits.headers_max];
        &mut heap
    };
    // Parsing only the first `header_bytes_max` bytes bounds the work a slow client can cause
    // by re-sending a head that never ends.
    let head_buf = &buf[..buf.len().min(limits.header_bytes_max)];
    let mut req = httparse::Request::new(slots);
    let head_len = match req.parse(head_buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            return Err(HttpError::new(431, "request header too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many headers"))
        }
        Err(_) => return Err(HttpError::new(400, "malformed request")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::new(400, "malformed request"));
    };

    let body_len = body_length(req.headers, version)?;
    if body_len > limits.body_bytes_max as u64 {
        return Err(HttpError::new(413, "request body too large"));
    }
    // Fits in usize: it is at most body_bytes_max.
    let body_len = body_len as usize;
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(None);
    }

    let request = owned_request(method, target, req.headers, buf[head_len..total].to_vec());
    Ok(Some((request, total)))
}

fn owned_request(
    method: &str,
    target: &str,
    headers: &[httparse::Header<'_>],
    body: Vec<u8>,
) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    }
}

/// Whether `buf` starts with a complete HTTP/1.1 head that announces a body
/// not received yet and carries `Expect: 100-continue`: the client waits for an
/// interim `100 Continue` before sending the body (RFC 9110 §10.1.1), so the
/// server should say it at once rather than let the client time out.
pub fn expects_continue(buf: &[u8], limits: &Limits) -> bool {
    awaiting_continue(buf, limits).is_some()
}

/// The head of the request that [`expects_continue`] sees, body left empty: a
/// server that will refuse the request whatever the body says can answer its
/// final status now instead of `100 Continue` (RFC 9110 §10.1.1).
pub fn awaiting_continue(buf: &[u8], limits: &Limits) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = &buf[..buf.len().min(limits.header_bytes_max)];
    let Ok(httparse::Status::Complete(head_len)) = req.parse(head) else {
        return None;
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return None;
    };
    let expects = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
    });
    let body_len = body_length(req.headers, 1).unwrap_or(0);
    let waiting = expects && body_len > 0 && ((buf.len() - head_len) as u64) < body_len;
    waiting.then(|| owned_request(method, target, req.headers, Vec::new()))
}

/// The interim response that tells a client to send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The body length the headers announce (0 without `Content-Length`), after refusing what
/// this server does not speak: chunked bodies, and upgrades over HTTP/1.0.
fn body_length(headers: &[httparse::Header<'_>], version: u8) -> Result<u64, HttpError> {
    let mut content_length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::new(501, "transfer-encoding not supported"));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            // Differing lengths are the classic request-smuggling shape; identical repeats
            // are allowed (RFC 9110 §8.6).
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::new(400, "conflicting content-length"));
            }
            content_length = Some(n);
        }
        if version == 0 && h.name.eq_ignore_ascii_case("upgrade") {
            return Err(HttpError::new(400, "upgrade requires HTTP/1.1"));
        }
    }
    Ok(content_length.unwrap_or(0))
}

/// `Content-Length` is `1*DIGIT` (RFC 9110 §8.6); anything else is refused rather than
/// guessed at. A syntactically valid but absurd length is "too large", not "malformed".
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::new(400, "bad content-length"));
    }
    let mut n: u64 = 0;
    for &d in v {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(n) => n,
            None => return Err(HttpError::new(413, "request body too large")),
        };
    }
    Ok(n)
}

/// A full response with Content-Length.
///
/// 1xx and 204 responses carry neither a body nor its headers (RFC 9110 §8.6, §15.3.5);
/// `body` is ignored for them. A 101 gets no `Connection` header of its own, since the
/// caller's `Connection: Upgrade` must be the only one (see [`crate::handshake::upgrade_response`]
/// for the WebSocket 101). CR and LF are dropped from header values so that a value echoing
/// client input cannot split the response.
pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let bodiless = status < 200 || status == 204;
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        push_header(&mut out, "Content-Type", content_type);
        push_header(&mut out, "Content-Length", &body.len().to_string());
    }
    if status != 101 {
        push_header(
            &mut out,
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        );
    }
    for (name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend(
        name.bytes()
            .filter(|&b| b != b'\r' && b != b'\n' && b != b':'),
    );
    out.extend_from_slice(b": ");
    out.extend(value.bytes().filter(|&b| b != b'\r' && b != b'\n'));
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase; empty for codes we never send (RFC 9112 allows an empty one).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
