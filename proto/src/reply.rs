//! Server → client JSON: replies to commands, and pushes (serialized once per publication).
//!
//! Everything is written by hand into one buffer: the shapes are fixed by PROTOCOL.md, and
//! a publication's `data` must be spliced in verbatim, which a generic serializer cannot do.

use crate::command::error_code;
use crate::frame::OpCode;
use crate::prepared::PreparedFrame;

/// The push frame for one publication, byte-identical for every subscriber:
/// `{"channel":"news","offset":42,"epoch":"E","data":<raw data>}` in one text frame.
pub fn push(channel: &str, offset: u64, epoch: &str, data: &[u8]) -> PreparedFrame {
    let mut digits = [0u8; U64_DIGITS_MAX];
    let offset = format_u64(offset, &mut digits);
    // Channel names are validated to need no escaping, and epochs are server-made, so the
    // common case splices the caller's strings straight in; only odd input costs a copy.
    if !needs_escape(channel) && !needs_escape(epoch) {
        return PreparedFrame::from_parts(
            OpCode::Text,
            &[
                b"{\"channel\":\"",
                channel.as_bytes(),
                b"\",\"offset\":",
                offset,
                b",\"epoch\":\"",
                epoch.as_bytes(),
                b"\",\"data\":",
                data,
                b"}",
            ],
        );
    }
    let mut head = Vec::with_capacity(48 + channel.len() + epoch.len());
    push_head(&mut head, channel, offset, epoch);
    PreparedFrame::from_parts(OpCode::Text, &[&head, data, b"}"])
}

/// The JSON text of a push (no frame header), for SSE and tests.
pub fn push_json(channel: &str, offset: u64, epoch: &str, data: &[u8]) -> Vec<u8> {
    let mut digits = [0u8; U64_DIGITS_MAX];
    let offset = format_u64(offset, &mut digits);
    let mut out = Vec::with_capacity(48 + channel.len() + epoch.len() + data.len());
    push_head(&mut out, channel, offset, epoch);
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// Everything of a push before the data: `{"channel":…,"offset":…,"epoch":…,"data":`.
fn push_head(out: &mut Vec<u8>, channel: &str, offset: &[u8], epoch: &str) {
    out.extend_from_slice(b"{\"channel\":");
    write_json_str(out, channel);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(offset);
    out.extend_from_slice(b",\"epoch\":");
    write_json_str(out, epoch);
    out.extend_from_slice(b",\"data\":");
}

/// `{"id":1,"ok":{"channel":"news","epoch":"E","offset":41}}`; with `recovered` when given.
pub fn ok_subscribe(
    id: Option<u64>,
    channel: &str,
    epoch: &str,
    offset: u64,
    recovered: Option<bool>,
) -> Vec<u8> {
    let mut out = open_reply(id, 64 + channel.len() + epoch.len());
    out.extend_from_slice(b"\"ok\":{\"channel\":");
    write_json_str(&mut out, channel);
    out.extend_from_slice(b",\"epoch\":");
    write_json_str(&mut out, epoch);
    out.extend_from_slice(b",\"offset\":");
    write_u64(&mut out, offset);
    match recovered {
        Some(true) => out.extend_from_slice(b",\"recovered\":true"),
        Some(false) => out.extend_from_slice(b",\"recovered\":false"),
        None => {}
    }
    out.extend_from_slice(b"}}");
    out
}

/// `{"id":3,"ok":{}}`.
pub fn ok_empty(id: Option<u64>) -> Vec<u8> {
    let mut out = open_reply(id, 8);
    out.extend_from_slice(b"\"ok\":{}}");
    out
}

/// `{"id":4,"ok":{"offset":12}}`.
pub fn ok_publish(id: Option<u64>, offset: u64) -> Vec<u8> {
    let mut out = open_reply(id, 40);
    out.extend_from_slice(b"\"ok\":{\"offset\":");
    write_u64(&mut out, offset);
    out.extend_from_slice(b"}}");
    out
}

/// `{"id":9,"error":{"code":103,"message":"permission denied","temporary":false}}`
/// (`temporary` from [`crate::command::error_code::is_temporary`]).
pub fn error(id: Option<u64>, code: u16, message: &str) -> Vec<u8> {
    let mut out = open_reply(id, 64 + message.len());
    out.extend_from_slice(b"\"error\":{\"code\":");
    write_u64(&mut out, u64::from(code));
    out.extend_from_slice(b",\"message\":");
    write_json_str(&mut out, message);
    if error_code::is_temporary(code) {
        out.extend_from_slice(b",\"temporary\":true}}");
    } else {
        out.extend_from_slice(b",\"temporary\":false}}");
    }
    out
}

/// `{"op":"pong"}`, or `{"id":N,"op":"pong"}` when the ping had an id.
pub fn pong(id: Option<u64>) -> Vec<u8> {
    let mut out = open_reply(id, 12);
    out.extend_from_slice(b"\"op\":\"pong\"}");
    out
}

/// `{"id":5,"ok":{"publications":[{"offset":42,"data":…},…],"next":{"epoch":"E","offset":43},"epoch":"E","offset":45}}`:
/// a page of history, `data` spliced in raw; `next` only when the page was cut.
pub fn ok_history<'a>(
    id: Option<u64>,
    items: impl IntoIterator<Item = (u64, &'a [u8])>,
    next: Option<u64>,
    epoch: &str,
    offset: u64,
) -> Vec<u8> {
    let mut out = open_reply(id, 96);
    out.extend_from_slice(b"\"ok\":{\"publications\":[");
    write_list(&mut out, items, |out, (o, data)| {
        out.extend_from_slice(b"{\"offset\":");
        write_u64(out, o);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data);
        out.push(b'}');
    });
    out.extend_from_slice(b"],");
    if let Some(next) = next {
        out.extend_from_slice(b"\"next\":{\"epoch\":");
        write_json_str(&mut out, epoch);
        out.extend_from_slice(b",\"offset\":");
        write_u64(&mut out, next);
        out.extend_from_slice(b"},");
    }
    out.extend_from_slice(b"\"epoch\":");
    write_json_str(&mut out, epoch);
    out.extend_from_slice(b",\"offset\":");
    write_u64(&mut out, offset);
    out.extend_from_slice(b"}}");
    out
}

/// `{"id":6,"ok":{"members":[{"user":"u1","conn":"c9"},…]}}`.
pub fn ok_presence<'a>(
    id: Option<u64>,
    members: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<u8> {
    let mut out = open_reply(id, 64);
    out.extend_from_slice(b"\"ok\":{\"members\":[");
    write_list(&mut out, members, |out, (user, conn)| {
        member(out, user, conn);
    });
    out.extend_from_slice(b"]}}");
    out
}

/// `{"channel":"chat:7","join":{"user":"u1","conn":"c9"}}` (or `"leave"`).
pub fn presence_event(channel: &str, join: bool, user: &str, conn: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + channel.len() + user.len() + conn.len());
    out.extend_from_slice(b"{\"channel\":");
    write_json_str(&mut out, channel);
    out.extend_from_slice(if join { b",\"join\":" } else { b",\"leave\":" });
    member(&mut out, user, conn);
    out.push(b'}');
    out
}

/// Each item written by `write`, comma-separated (the brackets are the caller's).
fn write_list<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

fn member(out: &mut Vec<u8>, user: &str, conn: &str) {
    out.extend_from_slice(b"{\"user\":");
    write_json_str(out, user);
    out.extend_from_slice(b",\"conn\":");
    write_json_str(out, conn);
    out.push(b'}');
}

/// HTTP API: `{"offset":12,"epoch":"E"}`, the result of `/api/publish`.
pub fn api_published(offset: u64, epoch: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + epoch.len());
    out.push(b'{');
    api_position(&mut out, offset, epoch);
    out.push(b'}');
    out
}

/// HTTP API: `{"results":[{"channel":"a","offset":1,"epoch":"E"},…]}` for `/api/broadcast`.
pub fn api_broadcast<'a>(results: impl IntoIterator<Item = (&'a str, u64, &'a str)>) -> Vec<u8> {
    let mut out = b"{\"results\":[".to_vec();
    write_list(&mut out, results, |out, (channel, offset, epoch)| {
        out.extend_from_slice(b"{\"channel\":");
        write_json_str(out, channel);
        out.push(b',');
        api_position(out, offset, epoch);
        out.push(b'}');
    });
    out.extend_from_slice(b"]}");
    out
}

fn api_position(out: &mut Vec<u8>, offset: u64, epoch: &str) {
    out.extend_from_slice(b"\"offset\":");
    write_u64(out, offset);
    out.extend_from_slice(b",\"epoch\":");
    write_json_str(out, epoch);
}

/// HTTP API: `{"channels":[{"channel":"news","subscribers":3},…]}` for `/api/channels`.
pub fn api_channels<'a>(channels: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<u8> {
    let mut out = b"{\"channels\":[".to_vec();
    write_list(&mut out, channels, |out, (channel, n)| {
        out.extend_from_slice(b"{\"channel\":");
        write_json_str(out, channel);
        out.extend_from_slice(b",\"subscribers\":");
        write_u64(out, n);
        out.push(b'}');
    });
    out.extend_from_slice(b"]}");
    out
}

/// `{"code":4008,"reason":"slow consumer"}`: a close told as JSON, the data of
/// an event stream's `close` event (a WebSocket gets a close frame instead).
pub fn close_json(code: u16, reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + reason.len());
    out.extend_from_slice(b"{\"code\":");
    write_u64(&mut out, u64::from(code));
    out.extend_from_slice(b",\"reason\":");
    write_json_str(&mut out, reason);
    out.push(b'}');
    out
}

/// `{` plus `"id":N,` when there is an id; `extra` is the caller's size estimate for the rest.
fn open_reply(id: Option<u64>, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + extra);
    out.push(b'{');
    if let Some(id) = id {
        out.extend_from_slice(b"\"id\":");
        write_u64(&mut out, id);
        out.push(b',');
    }
    out
}

/// Append `s` as a JSON string literal (quotes and escapes) to `out`.
///
/// Only `"`, `\` and control characters are escaped (RFC 8259 §7); everything else,
/// including non-ASCII, is valid as is inside a JSON string.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `u64::MAX` has 20 decimal digits.
const U64_DIGITS_MAX: usize = 20;

/// Decimal digits of `n`, written to the end of `buf`; returns the digits.
/// Formatting by hand avoids `core::fmt`'s machinery on the per-reply path.
fn format_u64(mut n: u64, buf: &mut [u8; U64_DIGITS_MAX]) -> &[u8] {
    let mut i = U64_DIGITS_MAX;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; U64_DIGITS_MAX];
    out.extend_from_slice(format_u64(n, &mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn the_http_api_refusal_is_the_command_error_shape_without_id() {
        // `/api/*` without the API key answers 401 with this exact body.
        assert_eq!(
            s(error(None, error_code::UNAUTHORIZED, "unauthorized")),
            r#"{"error":{"code":101,"message":"unauthorized","temporary":false}}"#
        );
        assert_eq!(
            s(error(None, error_code::TOO_MANY_REQUESTS, "slow down")),
            r#"{"error":{"code":111,"message":"slow down","temporary":true}}"#
        );
    }

    #[test]
    fn empty_lists_are_empty_arrays() {
        let none: [(u64, &[u8]); 0] = [];
        assert_eq!(
            s(ok_history(Some(1), none, None, "E", 0)),
            r#"{"id":1,"ok":{"publications":[],"epoch":"E","offset":0}}"#
        );
        let no_members: [(&str, &str); 0] = [];
        assert_eq!(s(ok_presence(None, no_members)), r#"{"ok":{"members":[]}}"#);
        let no_channels: [(&str, u64); 0] = [];
        assert_eq!(s(api_channels(no_channels)), r#"{"channels":[]}"#);
        let no_results: [(&str, u64, &str); 0] = [];
        assert_eq!(s(api_broadcast(no_results)), r#"{"results":[]}"#);
    }

    #[test]
    fn lists_are_comma_separated_in_order() {
        assert_eq!(
            s(ok_presence(Some(2), [("u1", "c1"), ("u2", "c2")])),
            r#"{"id":2,"ok":{"members":[{"user":"u1","conn":"c1"},{"user":"u2","conn":"c2"}]}}"#
        );
        assert_eq!(
            s(api_channels([("a", 1), ("b\"", 20)])),
            r#"{"channels":[{"channel":"a","subscribers":1},{"channel":"b\"","subscribers":20}]}"#
        );
        assert_eq!(
            s(presence_event("c", true, "u", "0.1.2")),
            r#"{"channel":"c","join":{"user":"u","conn":"0.1.2"}}"#
        );
    }

    #[test]
    fn a_close_told_as_json() {
        assert_eq!(
            s(close_json(4008, "slow consumer")),
            r#"{"code":4008,"reason":"slow consumer"}"#
        );
        assert_eq!(
            s(close_json(1001, "a\"b")),
            r#"{"code":1001,"reason":"a\"b"}"#
        );
    }

    #[test]
    fn numbers_are_plain_decimal_at_both_ends() {
        let mut buf = [0u8; U64_DIGITS_MAX];
        assert_eq!(format_u64(0, &mut buf), b"0");
        assert_eq!(format_u64(10, &mut buf), b"10");
        assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
        assert_eq!(
            s(api_published(u64::MAX, "E")),
            r#"{"offset":18446744073709551615,"epoch":"E"}"#
        );
    }

    #[test]
    fn escaping_is_needed_only_for_quotes_backslashes_and_controls() {
        assert!(!needs_escape("chat:7/é"));
        assert!(needs_escape("a\"b") && needs_escape("a\\b") && needs_escape("a\u{1}"));
        let mut out = Vec::new();
        write_json_str(&mut out, "\u{1}\u{1f}\u{8}\u{c}é");
        assert_eq!(s(out), r#""\u0001\u001f\b\fé""#);
    }
}
