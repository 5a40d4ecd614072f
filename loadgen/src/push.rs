//! Reading deliveries fast, and building the payloads the publisher sends.
//!
//! Every subscriber parses every delivery, so this is the loadgen's hot path: a
//! push is scanned for the few fields needed instead of being parsed into a tree.
//! The scan looks for `"channel":"`, `"offset":`, `"epoch":"` and, inside the data,
//! `"ts":` and `"seq":`; the payloads the publisher builds contain no other keys
//! of those names, so the first match is the right one.

/// What the loadgen needs from one shardcast push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push<'a> {
    pub channel: &'a [u8],
    pub offset: u64,
    pub epoch: &'a [u8],
    /// Send timestamp (Unix ns) from the payload, when it carries one.
    pub ts: Option<u64>,
}

/// The timestamp and sequence number of a loadgen payload `{"ts":…,"seq":…,"pad":"…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub ts: u64,
    pub seq: u64,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last = hay.len().checked_sub(needle.len())?;
    (0..=last).find(|&i| hay[i] == first && &hay[i + 1..i + needle.len()] == rest)
}

/// Digits at the start of `s`, and how many bytes they took.
fn digits(s: &[u8]) -> Option<(u64, usize)> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
    Some((v, n))
}

/// Digits right after `key`.
fn num_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    digits(&hay[at..]).map(|(v, _)| v)
}

/// A string value up to its closing quote (None if it has escapes).
fn string(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let q = s.iter().position(|&b| b == b'"' || b == b'\\')?;
    (s[q] == b'"').then(|| (&s[..q], &s[q + 1..]))
}

/// The exact layout of PROTOCOL.md, `{"channel":"c","offset":N,"epoch":"E","data":…}`,
/// read left to right without searching.
fn parse_push_exact(msg: &[u8]) -> Option<Push<'_>> {
    let (channel, rest) = string(msg.strip_prefix(b"{\"channel\":\"")?)?;
    let rest = rest.strip_prefix(b",\"offset\":")?;
    let (offset, n) = digits(rest)?;
    let (epoch, rest) = string(rest[n..].strip_prefix(b",\"epoch\":\"")?)?;
    let data = rest.strip_prefix(b",\"data\":")?;
    let ts = match data.strip_prefix(b"{\"ts\":") {
        Some(d) => digits(d).map(|(v, _)| v),
        None => num_after(&data[..data.len().min(96)], b"\"ts\":"),
    };
    Some(Push {
        channel,
        offset,
        epoch,
        ts,
    })
}

/// The string value right after `key` (which ends with the opening quote); no escapes expected.
fn str_after<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(hay, key)? + key.len();
    string(&hay[at..]).map(|(v, _)| v)
}

/// A shardcast push, or None for anything else (replies, pongs, presence events).
pub fn parse_push(msg: &[u8]) -> Option<Push<'_>> {
    if msg.starts_with(b"{\"id\"") {
        return None;
    }
    if let Some(p) = parse_push_exact(msg) {
        return Some(p);
    }
    let data_at = find(msg, b"\"data\":")?;
    let channel = str_after(msg, b"\"channel\":\"")?;
    let offset = num_after(msg, b"\"offset\":")?;
    let epoch = str_after(msg, b"\"epoch\":\"")?;
    let data = &msg[data_at..];
    // The stamp sits at the start of the payload; never scan a whole large pad for it.
    let head = &data[..data.len().min(96)];
    let ts = num_after(head, b"\"ts\":");
    Some(Push {
        channel,
        offset,
        epoch,
        ts,
    })
}

/// The stamp of a raw payload (the message is the payload itself).
pub fn parse_stamp(msg: &[u8]) -> Option<Stamp> {
    let head = &msg[..msg.len().min(96)];
    Some(Stamp {
        ts: num_after(head, b"\"ts\":")?,
        seq: num_after(head, b"\"seq\":")?,
    })
}

/// `{"ts":<ts>,"seq":<seq>,"pad":"xxx…"}` padded to `bytes` long (or as short as possible).
pub fn payload(ts: u64, seq: u64, bytes: usize) -> Vec<u8> {
    let mut out = format!("{{\"ts\":{ts},\"seq\":{seq},\"pad\":\"").into_bytes();
    let pad = bytes.saturating_sub(out.len() + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_fields() {
        let m = br#"{"channel":"news","offset":42,"epoch":"AbC1","data":{"ts":1700000000000000000,"seq":7,"pad":"xx"}}"#;
        let p = parse_push(m).unwrap();
        assert_eq!(p.channel, b"news");
        assert_eq!(p.offset, 42);
        assert_eq!(p.epoch, b"AbC1");
        assert_eq!(p.ts, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn push_in_another_key_order() {
        let m = br#"{"offset":9,"data":{"seq":1,"ts":123},"epoch":"E2","channel":"a:b"}"#;
        let p = parse_push(m).unwrap();
        assert_eq!(
            (p.channel, p.offset, p.epoch, p.ts),
            (&b"a:b"[..], 9, &b"E2"[..], Some(123))
        );
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"ab", b""), None);
    }

    #[test]
    fn push_without_stamp_and_non_pushes() {
        let p = parse_push(br#"{"channel":"a","offset":1,"epoch":"E","data":{"x":1}}"#).unwrap();
        assert_eq!(p.ts, None);
        assert!(parse_push(br#"{"id":1,"ok":{"channel":"a","epoch":"E","offset":0}}"#).is_none());
        assert!(parse_push(br#"{"op":"pong"}"#).is_none());
        assert!(parse_push(br#"{"channel":"a","join":{"user":"u"}}"#).is_none());
    }

    #[test]
    fn payload_size_and_stamp() {
        for bytes in [0, 10, 40, 100, 1024, 4096] {
            let p = payload(1_700_000_000_123_456_789, 99, bytes);
            if bytes >= 60 {
                assert_eq!(p.len(), bytes);
            }
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["seq"], 99);
            assert_eq!(
                parse_stamp(&p),
                Some(Stamp {
                    ts: 1_700_000_000_123_456_789,
                    seq: 99
                })
            );
        }
    }
}
