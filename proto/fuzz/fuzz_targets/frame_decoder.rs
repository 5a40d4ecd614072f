//! Arbitrary bytes into a server-side decoder, cut into arbitrary chunks.
//!
//! Input layout: byte 0 picks `message_bytes_max` (0..=1020), bytes 1 and 2 are two chunk
//! sizes used in turn (0 means "all that is left"), the rest is the byte stream.
//! Besides "never panics", it checks that the messages and the outcome do not depend on
//! how the stream was cut, and that held memory stays within the documented bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_proto::{Decoder, DecoderConfig, Message, ProtoError, Role};

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn record(cfg: &DecoderConfig, out: &mut Vec<Owned>, m: Message<'_>) {
    let owned = match m {
        Message::Text(b) => {
            assert!(std::str::from_utf8(b).is_ok(), "text message is not UTF-8");
            assert!(b.len() <= cfg.message_bytes_max);
            Owned::Text(b.to_vec())
        }
        Message::Binary(b) => {
            assert!(b.len() <= cfg.message_bytes_max);
            Owned::Binary(b.to_vec())
        }
        Message::Ping(b) => {
            assert!(b.len() <= 125);
            Owned::Ping(b.to_vec())
        }
        Message::Pong(b) => {
            assert!(b.len() <= 125);
            Owned::Pong(b.to_vec())
        }
        Message::Close(c) => Owned::Close(c.map(|(code, reason)| (code, reason.to_owned()))),
    };
    out.push(owned);
}

fn run(
    cfg: &DecoderConfig,
    stream: &[u8],
    sizes: [usize; 2],
) -> (Vec<Owned>, Result<(), ProtoError>) {
    let mut input = stream.to_vec();
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut start = 0;
    let mut turn = 0;
    while start < input.len() {
        let size = match sizes[turn % 2] {
            0 => input.len() - start,
            n => n.min(input.len() - start),
        };
        turn += 1;
        let end = start + size;
        if let Err(e) = decoder.feed(cfg, &mut input[start..end], |m| record(cfg, &mut out, m)) {
            assert_eq!(decoder.buffered_bytes(), 0, "state kept after an error");
            return (out, Err(e));
        }
        assert!(decoder.buffered_bytes() <= cfg.message_bytes_max + 124);
        if matches!(out.last(), Some(Owned::Close(_))) {
            break;
        }
        start = end;
    }
    (out, Ok(()))
}

fuzz_target!(|data: &[u8]| {
    let [max, a, b, stream @ ..] = data else {
        return;
    };
    let cfg = DecoderConfig {
        role: Role::Server,
        message_bytes_max: usize::from(*max) * 4,
    };
    let cut = run(&cfg, stream, [usize::from(*a), usize::from(*b)]);
    let whole = run(&cfg, stream, [0, 0]);
    assert_eq!(cut, whole, "outcome depends on how the input was cut");
});
