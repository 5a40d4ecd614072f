//! Socket.IO v4 on engine.io v4, as far as the loadgen needs it (`--protocol socketio`).
//!
//! On the WebSocket transport every WebSocket text message is one engine.io packet,
//! whose first byte is its type; a Socket.IO packet rides in engine.io's `4`
//! (message) with its own type byte after it:
//!
//! | packet | direction | meaning |
//! |---|---|---|
//! | `0{"sid":…,"pingInterval":…}` | server → client | engine.io open |
//! | `40` | client → server | connect to the default namespace |
//! | `40{"sid":…}` | server → client | connected: the client is up |
//! | `44{"message":…}` | server → client | connect refused |
//! | `2` / `3` | server → client / back | heartbeat; unanswered, the server closes |
//! | `42["m",<data>]` | both | the event the peers broadcast (or echo) |
//! | `41`, `1` | either | namespace disconnect, engine.io close |
//!
//! The loadgen's payloads are JSON objects, so the data of an event is the payload
//! itself; the stamp parser finds `"ts":` and `"seq":` 7 bytes further in.

/// The event name the peers broadcast (`bench/peers/socketio.js`).
const EVENT_PREFIX: &[u8] = br#"42["m","#;

/// Namespace connect, sent after the open packet.
pub const CONNECT: &[u8] = b"40";
/// Answer to the server's ping.
pub const PONG: &[u8] = b"3";

/// One packet as the loadgen sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Open,
    Connected,
    ConnectError(&'a [u8]),
    Ping,
    /// The data of an `m` event.
    Event(&'a [u8]),
    /// The server ended the namespace (`41`) or the engine.io session (`1`).
    Disconnect,
    /// Anything else (another event name, acks, binary placeholders, noop).
    Other,
}

/// Classify one WebSocket text message.
pub fn parse(msg: &[u8]) -> Packet<'_> {
    if let Some(data) = event_data(msg) {
        return Packet::Event(data);
    }
    match msg {
        [b'0', b'{', ..] => Packet::Open,
        [b'4', b'0', ..] => Packet::Connected,
        [b'4', b'4', rest @ ..] => Packet::ConnectError(rest),
        [b'2'] => Packet::Ping,
        [b'4', b'1', ..] | [b'1'] => Packet::Disconnect,
        _ => Packet::Other,
    }
}

/// The data of `42["m",<data>]`, or None for any other packet.
fn event_data(msg: &[u8]) -> Option<&[u8]> {
    msg.strip_prefix(EVENT_PREFIX)?.strip_suffix(b"]")
}

/// `42["m",<data>]`; `data` must be one JSON value.
pub fn event(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EVENT_PREFIX.len() + data.len() + 1);
    out.extend_from_slice(EVENT_PREFIX);
    out.extend_from_slice(data);
    out.push(b']');
    out
}

/// Echo data of exactly `bytes` bytes: a JSON string `"xx…x"` (at least `""`).
pub fn echo_data(bytes: usize) -> Vec<u8> {
    let mut out = vec![b'x'; bytes.max(2)];
    out[0] = b'"';
    *out.last_mut().expect("at least two bytes") = b'"';
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{parse_stamp, payload, Stamp};

    #[test]
    fn packets_of_a_session() {
        let open = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(parse(open), Packet::Open);
        assert_eq!(
            parse(br#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            Packet::Connected
        );
        assert_eq!(
            parse(br#"44{"message":"Not authorized"}"#),
            Packet::ConnectError(br#"{"message":"Not authorized"}"#)
        );
        assert_eq!(parse(b"2"), Packet::Ping);
        assert_eq!(parse(b"41"), Packet::Disconnect);
        assert_eq!(parse(b"1"), Packet::Disconnect);
        assert_eq!(parse(b"6"), Packet::Other);
        assert_eq!(parse(br#"42["other",1]"#), Packet::Other);
        // A "2" that is the start of something longer is not a ping.
        assert_eq!(parse(b"2probe"), Packet::Other);
    }

    #[test]
    fn events_carry_the_stamped_payload() {
        let p = payload(1_700_000_000_123_456_789, 41, 1024);
        let e = event(&p);
        assert_eq!(e.len(), 1024 + 8);
        assert_eq!(&e[..7], br#"42["m","#);
        let Packet::Event(data) = parse(&e) else {
            panic!("an event")
        };
        assert_eq!(data, &p[..]);
        // The stamp is found in the whole packet too (what the subscribers scan).
        assert_eq!(
            parse_stamp(&e),
            Some(Stamp {
                ts: 1_700_000_000_123_456_789,
                seq: 41
            })
        );
    }

    #[test]
    fn echo_data_is_a_json_string_of_the_asked_size() {
        for n in [0, 1, 2, 3, 20, 100] {
            let d = echo_data(n);
            assert_eq!(d.len(), n.max(2));
            let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
            assert!(v.is_string());
            assert_eq!(parse(&event(&d)), Packet::Event(&d[..]));
        }
    }
}
