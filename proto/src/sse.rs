//! Server-Sent Events: the `/sse` fallback's wire format (WHATWG HTML §9.2).
//!
//! An SSE stream carries the same JSON as the WebSocket, one event per message:
//!
//! | JSON | event |
//! |---|---|
//! | push `{"channel":c,"offset":n,"epoch":e,…}` | `id: c:e:n` + `data:` (default event type `message`) |
//! | reply `{"ok":…}` / `{"error":…}` (subscribe results) | `event: reply` |
//! | presence `{"channel":c,"join":…}` / `leave` | `event: presence` |
//! | end of stream `{"code":n,"reason":r}` | `event: close` (and `retry:` when draining) |
//!
//! A `data:` field cannot hold a line break, so JSON whitespace line breaks
//! (the only ones valid JSON can hold: inside strings they are escaped) split the
//! value over several `data:` lines, which the client joins back with `\n`.

/// Response head of an event stream. It has no length: the stream ends when the
/// connection does.
pub const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-store\r\n\
X-Accel-Buffering: no\r\n\
Connection: close\r\n\r\n";

/// A comment line: keeps idle streams (and proxies) from timing out.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Where a push sits in its channel, from an event id `channel:epoch:offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId<'a> {
    pub channel: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
}

/// Parse a `Last-Event-ID`. Channel names may hold `:`, epochs and offsets never
/// do, so the id is split from the right.
pub fn parse_event_id(s: &str) -> Option<EventId<'_>> {
    let (rest, offset) = s.trim().rsplit_once(':')?;
    let (channel, epoch) = rest.rsplit_once(':')?;
    if channel.is_empty() || epoch.is_empty() || offset.is_empty() || offset.len() > 20 {
        return None;
    }
    if !offset.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(EventId {
        channel,
        epoch,
        offset: offset.parse().ok()?,
    })
}

/// The kind of a JSON message, by its first key.
fn kind(json: &[u8]) -> Kind<'_> {
    if let Some(id) = push_id(json) {
        return Kind::Push(id);
    }
    if json.starts_with(b"{\"ok\":")
        || json.starts_with(b"{\"error\":")
        || json.starts_with(b"{\"id\":")
    {
        return Kind::Event(b"reply");
    }
    if json.starts_with(b"{\"code\":") {
        return Kind::Event(b"close");
    }
    if json.starts_with(b"{\"channel\":") {
        return Kind::Event(b"presence");
    }
    Kind::Event(b"message")
}

enum Kind<'a> {
    /// A push: `channel:epoch:offset`, as three slices of the JSON.
    Push([&'a [u8]; 3]),
    Event(&'static [u8]),
}

/// The id parts of a push in the layout [`crate::reply::push`] writes (channel and
/// epoch without escapes: channel names are validated, epochs server-made).
fn push_id(json: &[u8]) -> Option<[&[u8]; 3]> {
    let rest = json.strip_prefix(b"{\"channel\":\"")?;
    let q = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let (channel, rest) = (&rest[..q], rest[q..].strip_prefix(b"\",\"offset\":")?);
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (offset, rest) = (&rest[..n], rest[n..].strip_prefix(b",\"epoch\":\"")?);
    let q = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let epoch = &rest[..q];
    rest[q..].strip_prefix(b"\",\"data\":")?;
    // An id is one line: a control byte (never in a valid name or epoch) disqualifies.
    let clean = |s: &[u8]| s.iter().all(|&b| b >= 0x20);
    (n > 0 && clean(channel) && clean(epoch)).then_some([channel, epoch, offset])
}

/// Append one event carrying `json` to `out`.
pub fn write_event(out: &mut Vec<u8>, json: &[u8]) {
    out.reserve(json.len() + 48);
    match kind(json) {
        Kind::Push([channel, epoch, offset]) => {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(channel);
            out.push(b':');
            out.extend_from_slice(epoch);
            out.push(b':');
            out.extend_from_slice(offset);
            out.push(b'\n');
        }
        Kind::Event(b"message") => {}
        Kind::Event(name) => {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name);
            out.push(b'\n');
        }
    }
    write_data(out, json);
    out.push(b'\n');
}

/// `data: …` lines, split at line breaks (CR, LF or CRLF).
fn write_data(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"data: ");
    let mut rest = json;
    while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"\ndata: ");
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// The end of a stream: a `close` event with the WebSocket close code and reason,
/// preceded by `retry: ms` when the client should wait before reconnecting.
pub fn close_event(code: u16, reason: &str, retry_ms: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + reason.len());
    if let Some(ms) = retry_ms {
        out.extend_from_slice(format!("retry: {ms}\n\n").as_bytes());
    }
    write_event(&mut out, &crate::reply::close_json(code, reason));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepared::payload_of as frame_payload;
    use crate::reply;

    fn event(json: &[u8]) -> String {
        let mut out = Vec::new();
        write_event(&mut out, json);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pushes_carry_their_position_as_the_id() {
        let f = reply::push("chat:7", 42, "Ab9", br#"{"text":"hi"}"#);
        let json = frame_payload(f.bytes()).unwrap();
        assert_eq!(
            event(json),
            "id: chat:7:Ab9:42\ndata: {\"channel\":\"chat:7\",\"offset\":42,\"epoch\":\"Ab9\",\"data\":{\"text\":\"hi\"}}\n\n"
        );
        let id = parse_event_id("chat:7:Ab9:42").unwrap();
        assert_eq!(
            id,
            EventId {
                channel: "chat:7",
                epoch: "Ab9",
                offset: 42
            }
        );
    }

    #[test]
    fn other_messages_get_event_types() {
        let ok = reply::ok_subscribe(None, "news", "E", 3, Some(true));
        assert!(event(&ok).starts_with("event: reply\ndata: {\"ok\":"));
        let err = reply::error(None, 103, "permission denied");
        assert!(event(&err).starts_with("event: reply\ndata: {\"error\":"));
        let join = br#"{"channel":"chat:7","join":{"user":"u1","conn":"c9"}}"#;
        assert!(event(join).starts_with("event: presence\ndata: "));
        assert_eq!(
            String::from_utf8(close_event(4001, "reconnect_after_ms=250", Some(250))).unwrap(),
            "retry: 250\n\nevent: close\ndata: {\"code\":4001,\"reason\":\"reconnect_after_ms=250\"}\n\n"
        );
        assert!(!String::from_utf8(close_event(4008, "slow consumer", None))
            .unwrap()
            .contains("retry"));
    }

    #[test]
    fn line_breaks_in_json_split_the_data() {
        let f = reply::push("a", 1, "E", b"{\n  \"x\": 1,\r\n  \"y\": [\r2]\n}");
        let e = event(frame_payload(f.bytes()).unwrap());
        assert_eq!(
            e,
            "id: a:E:1\ndata: {\"channel\":\"a\",\"offset\":1,\"epoch\":\"E\",\"data\":{\ndata:   \"x\": 1,\ndata:   \"y\": [\ndata: 2]\ndata: }}\n\n"
        );
        // What a client reassembles (data lines joined with \n) is still the same JSON value.
        let joined: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        let v: serde_json::Value = serde_json::from_str(&joined.join("\n")).unwrap();
        assert_eq!(v["data"]["y"][0], 2);
    }

    #[test]
    fn bad_event_ids_are_refused() {
        for bad in [
            "",
            "a",
            "a:1",
            ":E:1",
            "a::1",
            "a:E:",
            "a:E:x1",
            "a:E:-1",
            "a:E:99999999999999999999999",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
        assert_eq!(parse_event_id(" a:b:c:E:7 ").unwrap().channel, "a:b:c");
    }

    #[test]
    fn payload_of_server_frames_of_every_length_form() {
        for n in [0usize, 125, 126, 65_535, 65_536] {
            let p = vec![b'x'; n];
            let f = crate::PreparedFrame::text(&p);
            assert_eq!(frame_payload(f.bytes()), Some(&p[..]));
            assert_eq!(frame_payload(&f.bytes()[..f.len() - 1]), None);
        }
        assert_eq!(frame_payload(&[0x81, 0x80, 0, 0, 0, 0]), None, "masked");
        assert_eq!(frame_payload(&[0x81]), None);
    }
}
