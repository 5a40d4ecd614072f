//! RFC 6455 framing: byte-exact vectors, every rejection path with its close code, and
//! round trips through the decoder under arbitrary fragmentation and input splits.

use proptest::prelude::*;
use shardcast_proto::close::close_payload;
use shardcast_proto::frame::{encode_frame, HEADER_BYTES_MAX};
use shardcast_proto::{
    Decoder, DecoderConfig, FrameHeader, Message, OpCode, PreparedFrame, ProtoError, Role,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn owned(m: Message<'_>) -> Owned {
    match m {
        Message::Text(b) => Owned::Text(b.to_vec()),
        Message::Binary(b) => Owned::Binary(b.to_vec()),
        Message::Ping(b) => Owned::Ping(b.to_vec()),
        Message::Pong(b) => Owned::Pong(b.to_vec()),
        Message::Close(c) => Owned::Close(c.map(|(code, r)| (code, r.to_owned()))),
    }
}

fn cfg(role: Role, message_bytes_max: usize) -> DecoderConfig {
    DecoderConfig {
        role,
        message_bytes_max,
    }
}

/// Feed `bytes` cut at `cuts` (sorted offsets); stops at the first error or Close, as
/// the decoder's contract asks of its caller.
fn decode_cut(
    cfg: &DecoderConfig,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Owned>, Result<(), ProtoError>) {
    let mut input = bytes.to_vec();
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let end = end.clamp(start, input.len());
        if let Err(e) = decoder.feed(cfg, &mut input[start..end], |m| out.push(owned(m))) {
            return (out, Err(e));
        }
        if matches!(out.last(), Some(Owned::Close(_))) {
            break;
        }
        start = end;
    }
    (out, Ok(()))
}

fn decode(cfg: &DecoderConfig, bytes: &[u8]) -> (Vec<Owned>, Result<(), ProtoError>) {
    decode_cut(cfg, bytes, &[])
}

/// Decoding must give the same result fed whole and fed one byte at a time.
fn decode_both_ways(cfg: &DecoderConfig, bytes: &[u8]) -> (Vec<Owned>, Result<(), ProtoError>) {
    let whole = decode(cfg, bytes);
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(
        decode_cut(cfg, bytes, &every_byte),
        whole,
        "byte-by-byte differs from whole"
    );
    whole
}

fn expect_err(cfg: &DecoderConfig, bytes: &[u8], err: ProtoError, close_code: u16) {
    let (_, result) = decode_both_ways(cfg, bytes);
    assert_eq!(result, Err(err.clone()), "bytes {bytes:02x?}");
    assert_eq!(err.close_code(), close_code);
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const MASKED_HELLO: [u8; 11] = [
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];

fn server() -> DecoderConfig {
    cfg(Role::Server, 1 << 20)
}

fn client() -> DecoderConfig {
    cfg(Role::Client, 1 << 20)
}

fn masked(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, opcode, fin, payload, Some(KEY));
    out
}

// ---- RFC 6455 §5.7 examples ----

#[test]
fn rfc_single_frame_unmasked_text() {
    let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        decode_both_ways(&client(), &bytes),
        (vec![Owned::Text(b"Hello".to_vec())], Ok(()))
    );
    let mut encoded = Vec::new();
    encode_frame(&mut encoded, OpCode::Text, true, b"Hello", None);
    assert_eq!(encoded, bytes);
    assert_eq!(PreparedFrame::text(b"Hello").bytes().as_ref(), &bytes);
}

#[test]
fn rfc_single_frame_masked_text() {
    assert_eq!(
        decode_both_ways(&server(), &MASKED_HELLO),
        (vec![Owned::Text(b"Hello".to_vec())], Ok(()))
    );
    assert_eq!(masked(OpCode::Text, true, b"Hello"), MASKED_HELLO);
}

#[test]
fn rfc_fragmented_unmasked_text() {
    let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    assert_eq!(
        decode_both_ways(&client(), &bytes),
        (vec![Owned::Text(b"Hello".to_vec())], Ok(()))
    );
    let mut encoded = Vec::new();
    encode_frame(&mut encoded, OpCode::Text, false, b"Hel", None);
    encode_frame(&mut encoded, OpCode::Continuation, true, b"lo", None);
    assert_eq!(encoded, bytes);
}

#[test]
fn rfc_ping_and_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        decode_both_ways(&client(), &ping),
        (vec![Owned::Ping(b"Hello".to_vec())], Ok(()))
    );
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        decode_both_ways(&server(), &pong),
        (vec![Owned::Pong(b"Hello".to_vec())], Ok(()))
    );
    assert_eq!(masked(OpCode::Pong, true, b"Hello"), pong);
    let masked_ping = masked(OpCode::Ping, true, b"Hello");
    assert_eq!(masked_ping[..2], [0x89, 0x85]);
    assert_eq!(
        decode_both_ways(&server(), &masked_ping),
        (vec![Owned::Ping(b"Hello".to_vec())], Ok(()))
    );
    assert_eq!(
        PreparedFrame::pong(b"Hello").bytes().as_ref(),
        &[0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );
}

#[test]
fn rfc_256_byte_binary_uses_16_bit_length() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut expected = vec![0x82, 0x7E, 0x01, 0x00];
    expected.extend_from_slice(&payload);
    let mut encoded = Vec::new();
    encode_frame(&mut encoded, OpCode::Binary, true, &payload, None);
    assert_eq!(encoded, expected);
    assert_eq!(
        decode(&client(), &expected),
        (vec![Owned::Binary(payload.clone())], Ok(()))
    );
    assert_eq!(
        PreparedFrame::binary(&payload).bytes().as_ref(),
        &expected[..]
    );
}

#[test]
fn rfc_64k_binary_uses_64_bit_length() {
    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut expected = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
    expected.extend_from_slice(&payload);
    let mut encoded = Vec::new();
    encode_frame(&mut encoded, OpCode::Binary, true, &payload, None);
    assert_eq!(encoded, expected);
    assert_eq!(
        decode(&client(), &expected),
        (vec![Owned::Binary(payload.clone())], Ok(()))
    );
    let m = masked(OpCode::Binary, true, &payload);
    assert_eq!(
        m[..14],
        [0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x37, 0xfa, 0x21, 0x3d]
    );
    let cuts = [1, 5, 13, 14, 15, 4000, 65549];
    assert_eq!(
        decode_cut(&server(), &m, &cuts),
        (vec![Owned::Binary(payload)], Ok(()))
    );
}

// ---- headers ----

#[test]
fn opcodes() {
    for (byte, op) in [
        (0x0, OpCode::Continuation),
        (0x1, OpCode::Text),
        (0x2, OpCode::Binary),
        (0x8, OpCode::Close),
        (0x9, OpCode::Ping),
        (0xA, OpCode::Pong),
    ] {
        assert_eq!(OpCode::from_u8(byte), Ok(op));
        assert_eq!(op.as_u8(), byte);
        assert_eq!(op.is_control(), byte >= 8);
    }
    for byte in (0x3..=0x7).chain(0xB..=0xF).chain([0x10, 0xFF]) {
        assert_eq!(OpCode::from_u8(byte), Err(ProtoError::UnknownOpcode(byte)));
    }
}

#[test]
fn header_needs_more_bytes_for_every_proper_prefix() {
    for len in [0usize, 125, 126, 65535, 65536] {
        for mask in [None, Some(KEY)] {
            let h = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask,
                payload_len: len as u64,
            };
            let mut buf = [0u8; HEADER_BYTES_MAX];
            let n = h.encode(&mut buf);
            assert_eq!(n, h.len());
            let role = if mask.is_some() {
                Role::Server
            } else {
                Role::Client
            };
            for cut in 0..n {
                assert_eq!(
                    FrameHeader::parse(&buf[..cut], role),
                    Ok(None),
                    "len {len} cut {cut}"
                );
            }
            assert_eq!(FrameHeader::parse(&buf[..n], role), Ok(Some((h, n))));
            assert_eq!(
                FrameHeader::parse(&buf, role),
                Ok(Some((h, n))),
                "trailing bytes are not the header's"
            );
        }
    }
}

#[test]
fn header_lengths() {
    let len = |payload_len, mask| {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Text,
            mask,
            payload_len,
        }
        .len()
    };
    assert_eq!(len(0, None), 2);
    assert_eq!(len(125, None), 2);
    assert_eq!(len(126, None), 4);
    assert_eq!(len(65535, Some(KEY)), 8);
    assert_eq!(len(65536, None), 10);
    assert_eq!(len(u64::MAX >> 1, Some(KEY)), HEADER_BYTES_MAX);
}

#[test]
fn first_byte_fails_before_the_rest_arrives() {
    assert_eq!(
        FrameHeader::parse(&[0xC1], Role::Server),
        Err(ProtoError::ReservedBits)
    );
    assert_eq!(
        FrameHeader::parse(&[0x83], Role::Server),
        Err(ProtoError::UnknownOpcode(3))
    );
    assert_eq!(
        FrameHeader::parse(&[0x09], Role::Server),
        Err(ProtoError::BadControlFrame)
    );
    assert_eq!(FrameHeader::parse(&[0x81], Role::Server), Ok(None));
}

// ---- rejections, each with its close code ----

#[test]
fn reserved_bits() {
    for b0 in [0xC1, 0xA1, 0x91, 0xF1] {
        let mut bytes = MASKED_HELLO;
        bytes[0] = b0;
        expect_err(&server(), &bytes, ProtoError::ReservedBits, 1002);
    }
}

#[test]
fn unknown_opcodes() {
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        let mut bytes = MASKED_HELLO;
        bytes[0] = 0x80 | op;
        expect_err(&server(), &bytes, ProtoError::UnknownOpcode(op), 1002);
    }
}

#[test]
fn masking_rules_by_role() {
    expect_err(
        &server(),
        &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        ProtoError::BadMask,
        1002,
    );
    expect_err(&client(), &MASKED_HELLO, ProtoError::BadMask, 1002);
}

#[test]
fn non_minimal_lengths() {
    // 16-bit form carrying 125, and 64-bit forms carrying 126 and 65535.
    let mut short16 = vec![0x82, 0xFE, 0x00, 0x7D];
    short16.extend_from_slice(&KEY);
    short16.extend_from_slice(&[0; 125]);
    expect_err(&server(), &short16, ProtoError::NonMinimalLength, 1002);
    for len in [0u64, 126, 65535] {
        let mut bytes = vec![0x82, 0xFF];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&KEY);
        expect_err(&server(), &bytes, ProtoError::NonMinimalLength, 1002);
    }
    let mut top_bit = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    top_bit.extend_from_slice(&KEY);
    expect_err(&server(), &top_bit, ProtoError::NonMinimalLength, 1002);
    // The smallest lengths each form may carry are accepted.
    let ok16 = masked(OpCode::Binary, true, &[7; 126]);
    assert_eq!(ok16[1], 0xFE);
    assert_eq!(
        decode(&server(), &ok16),
        (vec![Owned::Binary(vec![7; 126])], Ok(()))
    );
}

#[test]
fn control_frame_rules() {
    // Ping with a 126-byte payload (16-bit length form).
    let mut long_ping = vec![0x89, 0xFE, 0x00, 0x7E];
    long_ping.extend_from_slice(&KEY);
    long_ping.extend_from_slice(&[0; 126]);
    expect_err(&server(), &long_ping, ProtoError::BadControlFrame, 1002);
    // Without FIN: ping, pong, close.
    for op in [0x09, 0x0A, 0x08] {
        let mut bytes = MASKED_HELLO;
        bytes[0] = op;
        expect_err(&server(), &bytes, ProtoError::BadControlFrame, 1002);
    }
    // 125 bytes is the largest allowed.
    let max_ping = masked(OpCode::Ping, true, &[1; 125]);
    assert_eq!(
        decode_both_ways(&server(), &max_ping),
        (vec![Owned::Ping(vec![1; 125])], Ok(()))
    );
}

#[test]
fn continuation_rules() {
    let lone_continuation = masked(OpCode::Continuation, true, b"x");
    expect_err(
        &server(),
        &lone_continuation,
        ProtoError::BadContinuation,
        1002,
    );

    for second in [OpCode::Text, OpCode::Binary] {
        let mut bytes = masked(OpCode::Text, false, b"a");
        bytes.extend(masked(second, true, b"b"));
        expect_err(&server(), &bytes, ProtoError::BadContinuation, 1002);
    }
    // A finished message closes the sequence: a continuation after it is an error.
    let mut bytes = masked(OpCode::Binary, false, b"a");
    bytes.extend(masked(OpCode::Continuation, true, b"b"));
    bytes.extend(masked(OpCode::Continuation, true, b"c"));
    let (out, result) = decode_both_ways(&server(), &bytes);
    assert_eq!(out, vec![Owned::Binary(b"ab".to_vec())]);
    assert_eq!(result, Err(ProtoError::BadContinuation));
}

#[test]
fn message_too_big_single_frame_is_refused_from_the_header() {
    let limit = 100;
    let cfg = cfg(Role::Server, limit);
    let at_limit = masked(OpCode::Binary, true, &[0; 100]);
    assert_eq!(
        decode_both_ways(&cfg, &at_limit),
        (vec![Owned::Binary(vec![0; 100])], Ok(()))
    );

    let over = masked(OpCode::Binary, true, &[0; 101]);
    expect_err(
        &cfg,
        &over,
        ProtoError::MessageTooBig { limit_bytes: 100 },
        1009,
    );
    // The header alone is enough: nothing of the payload is needed, or kept.
    let mut decoder = Decoder::default();
    let mut header = over[..8].to_vec();
    assert_eq!(
        decoder.feed(&cfg, &mut header, |_| panic!("no message")),
        Err(ProtoError::MessageTooBig { limit_bytes: 100 })
    );
    assert_eq!(decoder.buffered_bytes(), 0);

    // A 64-bit length far past any buffer.
    let mut huge = vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    huge.extend_from_slice(&KEY);
    expect_err(
        &cfg,
        &huge,
        ProtoError::MessageTooBig { limit_bytes: 100 },
        1009,
    );
}

#[test]
fn message_too_big_counts_all_fragments() {
    let cfg = cfg(Role::Server, 10);
    let mut ok = masked(OpCode::Text, false, b"12345");
    ok.extend(masked(OpCode::Continuation, true, b"67890"));
    assert_eq!(
        decode_both_ways(&cfg, &ok),
        (vec![Owned::Text(b"1234567890".to_vec())], Ok(()))
    );

    let mut over = masked(OpCode::Text, false, b"12345");
    over.extend(masked(OpCode::Continuation, false, b"6789"));
    over.extend(masked(OpCode::Continuation, true, b"01"));
    expect_err(
        &cfg,
        &over,
        ProtoError::MessageTooBig { limit_bytes: 10 },
        1009,
    );
}

#[test]
fn invalid_utf8_in_text() {
    let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";
    expect_err(
        &server(),
        &masked(OpCode::Text, true, bad),
        ProtoError::InvalidUtf8,
        1007,
    );
    // Binary is not validated.
    assert_eq!(
        decode(&server(), &masked(OpCode::Binary, true, bad)).1,
        Ok(())
    );
    // Truncated code point at the end of the message.
    let mut truncated = masked(OpCode::Text, false, b"ok");
    truncated.extend(masked(OpCode::Continuation, true, b"\xe2\x82"));
    expect_err(&server(), &truncated, ProtoError::InvalidUtf8, 1007);
    // A code point split between fragments is fine.
    let mut split = masked(OpCode::Text, false, b"\xe2");
    split.extend(masked(OpCode::Continuation, false, b"\x82"));
    split.extend(masked(OpCode::Continuation, true, b"\xac"));
    assert_eq!(
        decode_both_ways(&server(), &split),
        (vec![Owned::Text("€".as_bytes().to_vec())], Ok(()))
    );
}

#[test]
fn invalid_utf8_fails_fast_before_the_message_ends() {
    // First fragment already invalid, message not finished: fail on that fragment.
    let first = masked(OpCode::Text, false, b"ab\xff");
    expect_err(&server(), &first, ProtoError::InvalidUtf8, 1007);
    // Invalid byte early in a single frame whose rest has not arrived yet.
    let frame = masked(
        OpCode::Text,
        true,
        &[b"\xc0".as_slice(), &[b'x'; 1000]].concat(),
    );
    let mut decoder = Decoder::default();
    let mut head_and_some = frame[..20].to_vec();
    assert_eq!(
        decoder.feed(&server(), &mut head_and_some, |_| panic!("no message")),
        Err(ProtoError::InvalidUtf8)
    );
}

#[test]
fn close_frames() {
    let close = |payload: &[u8]| masked(OpCode::Close, true, payload);
    assert_eq!(
        decode_both_ways(&server(), &close(b"")),
        (vec![Owned::Close(None)], Ok(()))
    );
    assert_eq!(
        decode_both_ways(&server(), &close(&close_payload(1000, "bye"))),
        (vec![Owned::Close(Some((1000, "bye".to_owned())))], Ok(()))
    );
    assert_eq!(
        decode_both_ways(&server(), &close(&close_payload(4999, ""))),
        (vec![Owned::Close(Some((4999, String::new())))], Ok(()))
    );
    expect_err(
        &server(),
        &close(b"\x03"),
        ProtoError::BadClosePayload,
        1002,
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        expect_err(
            &server(),
            &close(&code.to_be_bytes()),
            ProtoError::BadCloseCode(code),
            1002,
        );
    }
    expect_err(
        &server(),
        &close(b"\x03\xe8\xff"),
        ProtoError::InvalidUtf8,
        1007,
    );
}

#[test]
fn nothing_after_close_is_read() {
    let mut bytes = masked(OpCode::Close, true, &close_payload(1000, ""));
    bytes.extend(masked(OpCode::Text, true, b"late"));
    bytes.extend([0xFF; 3]);
    assert_eq!(
        decode(&server(), &bytes),
        (vec![Owned::Close(Some((1000, String::new())))], Ok(()))
    );
}

// ---- reassembly behaviour ----

#[test]
fn control_frames_interleaved_between_fragments_are_delivered_at_once() {
    let mut bytes = masked(OpCode::Text, false, b"Hel");
    bytes.extend(masked(OpCode::Ping, true, b"p1"));
    bytes.extend(masked(OpCode::Continuation, false, b"l"));
    bytes.extend(masked(OpCode::Pong, true, b""));
    bytes.extend(masked(OpCode::Continuation, true, b"o"));
    let expected = vec![
        Owned::Ping(b"p1".to_vec()),
        Owned::Pong(vec![]),
        Owned::Text(b"Hello".to_vec()),
    ];
    assert_eq!(decode_both_ways(&server(), &bytes), (expected, Ok(())));
    // Close in the middle of a message ends the connection; the message is dropped.
    let mut bytes = masked(OpCode::Binary, false, b"ab");
    bytes.extend(masked(OpCode::Close, true, b""));
    bytes.extend(masked(OpCode::Continuation, true, b"cd"));
    assert_eq!(
        decode_both_ways(&server(), &bytes),
        (vec![Owned::Close(None)], Ok(()))
    );
}

#[test]
fn whole_frames_are_delivered_from_the_input_without_copy() {
    let mut input = MASKED_HELLO.to_vec();
    input.extend(masked(OpCode::Ping, true, b"p"));
    let range = input.as_ptr_range();
    let mut seen = 0;
    Decoder::default()
        .feed(&server(), &mut input, |m| {
            let (Message::Text(b) | Message::Ping(b)) = m else {
                panic!("unexpected {m:?}")
            };
            assert!(
                range.contains(&b.as_ptr()),
                "payload not borrowed from the input"
            );
            seen += 1;
        })
        .unwrap();
    assert_eq!(seen, 2);
    // Unmasked in place.
    assert_eq!(&input[6..11], b"Hello");
}

#[test]
fn held_bytes_stay_bounded_and_are_released() {
    let limit = 1000;
    let cfg = cfg(Role::Server, limit);
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend(masked(
            if i == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            },
            i == 9,
            &[i as u8; 100],
        ));
        bytes.extend(masked(OpCode::Ping, true, &[0xEE; 125]));
    }
    let mut decoder = Decoder::default();
    let mut input = bytes.clone();
    let mut messages = 0;
    let mut high_water = 0;
    for chunk in input.chunks_mut(7) {
        decoder.feed(&cfg, chunk, |_| messages += 1).unwrap();
        high_water = high_water.max(decoder.buffered_bytes());
        assert!(
            decoder.buffered_bytes() <= limit + 124,
            "{}",
            decoder.buffered_bytes()
        );
    }
    assert_eq!(messages, 11);
    assert!(
        high_water >= 900,
        "the message really was held: {high_water}"
    );
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn client_role_accepts_unmasked_server_frames() {
    let frame = PreparedFrame::from_parts(OpCode::Text, &[b"{\"channel\":", b"\"news\"", b"}"]);
    assert_eq!(frame.bytes()[0], 0x81, "FIN set, text");
    assert_eq!(frame.bytes()[1] & 0x80, 0, "server frames are unmasked");
    assert_eq!(frame.len(), 2 + 18);
    assert_eq!(
        decode(&client(), frame.bytes()),
        (
            vec![Owned::Text(b"{\"channel\":\"news\"}".to_vec())],
            Ok(())
        )
    );
    let close = PreparedFrame::close(4001, "reconnect_after_ms=250");
    assert_eq!(
        decode(&client(), close.bytes()),
        (
            vec![Owned::Close(Some((
                4001,
                "reconnect_after_ms=250".to_owned()
            )))],
            Ok(())
        )
    );
}

#[test]
fn prepared_frames_use_every_length_form() {
    for len in [0usize, 125, 126, 65535, 65536, 70000] {
        let payload = vec![0x5A; len];
        let (a, b) = payload.split_at(len / 3);
        let frame = PreparedFrame::from_parts(OpCode::Binary, &[a, &[], b]);
        let mut expected = Vec::new();
        encode_frame(&mut expected, OpCode::Binary, true, &payload, None);
        assert_eq!(frame.bytes().as_ref(), &expected[..], "len {len}");
        assert_eq!(frame, PreparedFrame::binary(&payload));
    }
}

// ---- round trips ----

#[derive(Debug, Clone)]
struct Msg {
    opcode: OpCode,
    payload: Vec<u8>,
    /// Fragment boundaries inside the payload (data messages only).
    cuts: Vec<usize>,
    /// Control frames to slip in after each fragment but the last.
    interleave: Vec<Option<(OpCode, Vec<u8>)>>,
}

fn control_frame() -> impl Strategy<Value = (OpCode, Vec<u8>)> {
    (
        prop_oneof![Just(OpCode::Ping), Just(OpCode::Pong)],
        proptest::collection::vec(any::<u8>(), 0..=125),
    )
}

fn message() -> impl Strategy<Value = Msg> {
    let text = any::<String>().prop_map(|s| (OpCode::Text, s.into_bytes()));
    let binary = proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| (OpCode::Binary, b));
    let control = control_frame();
    let data = (
        prop_oneof![text, binary],
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_flat_map(|((opcode, payload), idx)| {
            let mut cuts: Vec<usize> = idx.iter().map(|i| i.index(payload.len() + 1)).collect();
            cuts.sort_unstable();
            let n = cuts.len();
            (
                Just(opcode),
                Just(payload),
                Just(cuts),
                proptest::collection::vec(proptest::option::of(control_frame()), n),
            )
        })
        .prop_map(|(opcode, payload, cuts, interleave)| Msg {
            opcode,
            payload,
            cuts,
            interleave,
        });
    prop_oneof![
        4 => data,
        1 => control.prop_map(|(opcode, payload)| Msg { opcode, payload, cuts: vec![], interleave: vec![] }),
    ]
}

fn encode_messages(
    msgs: &[Msg],
    keys: &mut impl Iterator<Item = Option<[u8; 4]>>,
) -> (Vec<u8>, Vec<Owned>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for m in msgs {
        if m.opcode.is_control() {
            encode_frame(&mut wire, m.opcode, true, &m.payload, keys.next().unwrap());
            expected.push(control_owned(m.opcode, &m.payload));
            continue;
        }
        let bounds: Vec<usize> = [0]
            .into_iter()
            .chain(m.cuts.iter().copied())
            .chain([m.payload.len()])
            .collect();
        for (i, w) in bounds.windows(2).enumerate() {
            let opcode = if i == 0 {
                m.opcode
            } else {
                OpCode::Continuation
            };
            let fin = i == bounds.len() - 2;
            encode_frame(
                &mut wire,
                opcode,
                fin,
                &m.payload[w[0]..w[1]],
                keys.next().unwrap(),
            );
            if let Some(Some((op, p))) = m.interleave.get(i).filter(|_| !fin) {
                encode_frame(&mut wire, *op, true, p, keys.next().unwrap());
                expected.push(control_owned(*op, p));
            }
        }
        expected.push(match m.opcode {
            OpCode::Text => Owned::Text(m.payload.clone()),
            _ => Owned::Binary(m.payload.clone()),
        });
    }
    (wire, expected)
}

fn control_owned(opcode: OpCode, payload: &[u8]) -> Owned {
    match opcode {
        OpCode::Ping => Owned::Ping(payload.to_vec()),
        _ => Owned::Pong(payload.to_vec()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_round_trips(
        msgs in proptest::collection::vec(message(), 0..8),
        keys in proptest::collection::vec(any::<[u8; 4]>(), 64),
        server_role in any::<bool>(),
        split in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut key_iter = keys.iter().cycle().map(|k| server_role.then_some(*k));
        let (wire, expected) = encode_messages(&msgs, &mut key_iter);
        let mut cuts: Vec<usize> = split.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        let role = if server_role { Role::Server } else { Role::Client };
        let (got, result) = decode_cut(&cfg(role, 4096), &wire, &cuts);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_overrun_the_bound(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        chunk in 1usize..64,
        limit in 0usize..512,
    ) {
        let cfg = cfg(Role::Server, limit);
        let mut input = bytes;
        let mut decoder = Decoder::default();
        for piece in input.chunks_mut(chunk) {
            if decoder.feed(&cfg, piece, |_| {}).is_err() {
                prop_assert_eq!(decoder.buffered_bytes(), 0);
                break;
            }
            prop_assert!(decoder.buffered_bytes() <= limit + 124);
        }
    }
}
