//! Control commands (client → server) and replies/pushes (server → client), per PROTOCOL.md.

use proptest::prelude::*;
use shardcast_proto::command::{
    error_code, parse_broadcast_body, parse_command, parse_publish_body, BroadcastRequest, Command,
    CommandError, Op, PublishRequest, Since,
};
use shardcast_proto::reply;

fn cmd(json: &str) -> Result<Command, CommandError> {
    let mut buf = json.as_bytes().to_vec();
    parse_command(&mut buf)
}

fn ok(json: &str) -> Command {
    cmd(json).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

/// The (id, code) of a refused command.
fn refused(json: &str) -> (Option<u64>, u16) {
    let e = cmd(json).expect_err(json);
    assert!(!e.message.is_empty());
    (e.id, e.code)
}

fn since(epoch: &str, offset: u64) -> Option<Since> {
    Some(Since {
        epoch: epoch.to_owned(),
        offset,
    })
}

fn data_of(json: &str) -> Vec<u8> {
    match ok(json).op {
        Op::Publish { data, .. } => data.to_vec(),
        op => panic!("not a publish: {op:?}"),
    }
}

#[test]
fn every_op_of_the_protocol() {
    let c = |id, op| Command { id: Some(id), op };
    assert_eq!(
        ok(r#"{"id":1,"op":"subscribe","channel":"news"}"#),
        c(
            1,
            Op::Subscribe {
                channel: "news".into(),
                since: None
            }
        )
    );
    assert_eq!(
        ok(r#"{"id":2,"op":"subscribe","channel":"news","since":{"epoch":"E","offset":41}}"#),
        c(
            2,
            Op::Subscribe {
                channel: "news".into(),
                since: since("E", 41)
            }
        )
    );
    assert_eq!(
        ok(r#"{"id":3,"op":"unsubscribe","channel":"news"}"#),
        c(
            3,
            Op::Unsubscribe {
                channel: "news".into()
            }
        )
    );
    assert_eq!(
        ok(r#"{"id":4,"op":"publish","channel":"chat:7","data":{"text":"hi"}}"#),
        c(
            4,
            Op::Publish {
                channel: "chat:7".into(),
                data: br#"{"text":"hi"}"#.to_vec().into()
            }
        )
    );
    assert_eq!(
        ok(
            r#"{"id":5,"op":"history","channel":"news","since":{"epoch":"E","offset":41},"limit":100}"#
        ),
        c(
            5,
            Op::History {
                channel: "news".into(),
                since: since("E", 41),
                limit: Some(100)
            }
        )
    );
    assert_eq!(
        ok(r#"{"id":5,"op":"history","channel":"news"}"#),
        c(
            5,
            Op::History {
                channel: "news".into(),
                since: None,
                limit: None
            }
        )
    );
    assert_eq!(
        ok(r#"{"id":6,"op":"presence","channel":"chat:7"}"#),
        c(
            6,
            Op::Presence {
                channel: "chat:7".into()
            }
        )
    );
    assert_eq!(
        ok(r#"{"id":7,"op":"refresh","token":"a.b.c"}"#),
        c(
            7,
            Op::Refresh {
                token: "a.b.c".into()
            }
        )
    );
    assert_eq!(
        ok(r#"{"op":"ping"}"#),
        Command {
            id: None,
            op: Op::Ping
        }
    );
}

#[test]
fn ids_and_tolerated_extras() {
    assert_eq!(ok(r#"{"op":"ping","id":0}"#).id, Some(0));
    assert_eq!(
        ok(r#"{"op":"ping","id":18446744073709551615}"#).id,
        Some(u64::MAX)
    );
    assert_eq!(ok(r#"{"op":"ping","id":null}"#).id, None);
    // Unknown fields are ignored, whatever their type, and whitespace is free.
    let c = ok(" \n{ \"x\" : [1,{\"op\":\"nope\"}], \"op\" : \"subscribe\" ,\"channel\":\"a\",\"since\":null,\"extra\":{}}\t");
    assert_eq!(
        c.op,
        Op::Subscribe {
            channel: "a".into(),
            since: None
        }
    );
    assert_eq!(
        ok(r#"{"op":"history","channel":"a","limit":null}"#).op,
        Op::History {
            channel: "a".into(),
            since: None,
            limit: None
        }
    );
    assert_eq!(
        ok(r#"{"op":"history","channel":"a","limit":4294967295}"#).op,
        Op::History {
            channel: "a".into(),
            since: None,
            limit: Some(u32::MAX)
        }
    );
    // Escapes inside strings are decoded.
    assert_eq!(
        ok(r#"{"op":"refresh","token":"a\"b\u0041"}"#).op,
        Op::Refresh {
            token: "a\"bA".into()
        }
    );
}

#[test]
fn malformed_commands_are_error_1() {
    let m = error_code::MALFORMED;
    // Nothing readable: no id.
    assert_eq!(refused(""), (None, m));
    assert_eq!(refused("{"), (None, m));
    assert_eq!(refused(r#"{"id":1,"op":"ping"} x"#), (None, m));
    assert_eq!(refused(r#"{"id":1,"op":"ping",}"#), (None, m));
    assert_eq!(refused(r#"[{"id":1,"op":"ping"}]"#), (None, m));
    assert_eq!(refused(r#""ping""#), (None, m));
    let mut not_utf8 = b"{\"id\":1,\"op\":\"pi\xffng\"}".to_vec();
    assert_eq!(
        parse_command(&mut not_utf8).map_err(|e| (e.id, e.code)),
        Err((None, m))
    );
    // A bad id is itself unreadable.
    assert_eq!(refused(r#"{"id":-1,"op":"ping"}"#), (None, m));
    assert_eq!(refused(r#"{"id":1.5,"op":"ping"}"#), (None, m));
    assert_eq!(refused(r#"{"id":1.0,"op":"ping"}"#), (None, m));
    assert_eq!(refused(r#"{"id":"1","op":"ping"}"#), (None, m));
    // Everything after a good id keeps it.
    assert_eq!(refused(r#"{"id":8}"#), (Some(8), m));
    assert_eq!(refused(r#"{"id":8,"op":3}"#), (Some(8), m));
    assert_eq!(refused(r#"{"id":8,"op":null}"#), (Some(8), m));
    for op in ["subscribe", "unsubscribe", "publish", "history", "presence"] {
        assert_eq!(
            refused(&format!(r#"{{"id":8,"op":"{op}"}}"#)),
            (Some(8), m),
            "{op} without channel"
        );
        assert_eq!(
            refused(&format!(r#"{{"id":8,"op":"{op}","channel":7}}"#)),
            (Some(8), m),
            "{op} numeric channel"
        );
        assert_eq!(
            refused(&format!(r#"{{"id":8,"op":"{op}","channel":null}}"#)),
            (Some(8), m),
            "{op} null channel"
        );
    }
    assert_eq!(refused(r#"{"id":8,"op":"refresh"}"#), (Some(8), m));
    assert_eq!(
        refused(r#"{"id":8,"op":"refresh","token":1}"#),
        (Some(8), m)
    );
    assert_eq!(
        refused(r#"{"id":8,"op":"publish","channel":"a"}"#),
        (Some(8), m)
    );
    for bad_since in [
        r#""E:41""#,
        r#"{"epoch":"E"}"#,
        r#"{"offset":1}"#,
        r#"{"epoch":1,"offset":1}"#,
        r#"{"epoch":"E","offset":-1}"#,
        r#"{"epoch":"E","offset":1.5}"#,
        "[]",
    ] {
        let json = format!(r#"{{"id":9,"op":"subscribe","channel":"a","since":{bad_since}}}"#);
        assert_eq!(refused(&json), (Some(9), m), "{json}");
        let json = format!(r#"{{"id":9,"op":"history","channel":"a","since":{bad_since}}}"#);
        assert_eq!(refused(&json), (Some(9), m), "{json}");
    }
    for bad_limit in ["-1", "4294967296", "1.5", r#""10""#, "true"] {
        let json = format!(r#"{{"id":10,"op":"history","channel":"a","limit":{bad_limit}}}"#);
        assert_eq!(refused(&json), (Some(10), m), "{json}");
    }
}

#[test]
fn error_messages_name_the_field() {
    let message = |json: &str| cmd(json).unwrap_err().message;
    assert!(message(r#"{"op":"subscribe"}"#).contains("channel"));
    assert!(message(r#"{"id":"x","op":"ping"}"#).contains("id"));
    assert!(message(r#"{"id":1}"#).contains("op"));
    assert!(message(r#"{"op":"publish","channel":"a"}"#).contains("data"));
    assert!(message(r#"{"op":"refresh"}"#).contains("token"));
    assert!(message(r#"{"op":"history","channel":"a","limit":-1}"#).contains("limit"));
    assert!(message(r#"{"op":"history","channel":"a","since":1}"#).contains("since"));
}

#[test]
fn unknown_op_is_error_2_with_id() {
    assert_eq!(
        refused(r#"{"id":11,"op":"subscribez","channel":"a"}"#),
        (Some(11), error_code::UNKNOWN_OP)
    );
    assert_eq!(
        refused(r#"{"op":"SUBSCRIBE","channel":"a"}"#),
        (None, error_code::UNKNOWN_OP)
    );
    assert_eq!(
        refused(r#"{"id":12,"op":""}"#),
        (Some(12), error_code::UNKNOWN_OP)
    );
}

#[test]
fn bad_channel_is_error_104_with_id() {
    let long = "a".repeat(256);
    for bad in ["", "has space", "é", "a*", "a\\u0000b", long.as_str()] {
        for op in ["subscribe", "unsubscribe", "history", "presence"] {
            let json = format!(r#"{{"id":13,"op":"{op}","channel":"{bad}"}}"#);
            assert_eq!(
                refused(&json),
                (Some(13), error_code::BAD_CHANNEL),
                "{json}"
            );
        }
        let json = format!(r#"{{"id":13,"op":"publish","channel":"{bad}","data":1}}"#);
        assert_eq!(
            refused(&json),
            (Some(13), error_code::BAD_CHANNEL),
            "{json}"
        );
    }
    let max = "a".repeat(255);
    let c = ok(&format!(r#"{{"op":"subscribe","channel":"{max}"}}"#));
    assert_eq!(
        c.op,
        Op::Subscribe {
            channel: max,
            since: None
        }
    );
    let c = ok(r#"{"op":"subscribe","channel":"A-z_0.9:/x"}"#);
    assert_eq!(
        c.op,
        Op::Subscribe {
            channel: "A-z_0.9:/x".into(),
            since: None
        }
    );
}

#[test]
fn publish_data_is_kept_byte_for_byte() {
    let cases = [
        r#"{"b": [1, 2,  "x\"y"]}"#,
        "1.0e10",
        "-0.0",
        "1E+2",
        r#""a \"quoted\" ]} \\ \u00e9 string""#,
        "true",
        "null",
        "[]",
        "{}",
        r#"[{"data":1},"}",{"x":["]"]}]"#,
        "{\n  \"pretty\": [\n    1,\n    2\n  ]\n}",
        "\"caf\u{e9} \u{1f600}\"",
        "12345678901234567890",
    ];
    for data in cases {
        let json = format!("{{\"id\":1,\"op\":\"publish\",\"channel\":\"c\",\"data\":{data}}}");
        assert_eq!(data_of(&json), data.as_bytes(), "data first-level");
        // Data before other members, surrounded by whitespace, with an odd separator layout.
        let json =
            format!("{{ \"data\" :\n\t {data}  \r\n, \"op\":\"publish\",\"channel\":\"c\"}}");
        assert_eq!(data_of(&json), data.as_bytes(), "data leading");
    }
}

#[test]
fn data_lookup_is_top_level_and_decodes_keys() {
    // A nested "data" must not be taken for the command's own.
    let json = r#"{"op":"publish","meta":{"data":"inner"},"x":["data",{"data":0}],"channel":"c","data":"outer"}"#;
    assert_eq!(data_of(json), br#""outer""#);
    // A key containing escapes is still the "data" member, as it is for any JSON reader.
    assert_eq!(
        data_of(r#"{"op":"publish","channel":"c","d\u0061ta":[1]}"#),
        b"[1]"
    );
    assert_eq!(
        data_of(r#"{"op":"publish","channel":"c","da\"ta":0,"data":[2]}"#),
        b"[2]"
    );
    assert_eq!(
        data_of(r#"{"op":"publish","channel":"c","\\data":0,"data":[3]}"#),
        b"[3]"
    );
    assert_eq!(
        data_of(r#"{"op":"publish","channel":"c","dat\u00e1":0,"data":[4]}"#),
        b"[4]"
    );
    assert_eq!(
        data_of(r#"{"op":"publish","channel":"c","\u0064ata\u0000":0,"data":[5]}"#),
        b"[5]"
    );
    // The first of duplicate members is the one validated and the one kept.
    assert_eq!(
        data_of(r#"{"op":"publish","channel":"c","data":1,"data":2}"#),
        b"1"
    );
}

#[test]
fn publish_body() {
    let mut body = br#"{"channel":"news","data": {"k" : 1.50} ,"extra":1}"#.to_vec();
    assert_eq!(
        parse_publish_body(&mut body),
        Ok(PublishRequest {
            channel: "news".into(),
            data: br#"{"k" : 1.50}"#.to_vec().into()
        })
    );
    let code = |json: &str| {
        parse_publish_body(&mut json.as_bytes().to_vec())
            .unwrap_err()
            .code
    };
    assert_eq!(code(r#"{"channel":"news"}"#), error_code::MALFORMED);
    assert_eq!(code(r#"{"data":1}"#), error_code::MALFORMED);
    assert_eq!(code(r#"{"channel":1,"data":1}"#), error_code::MALFORMED);
    assert_eq!(
        code(r#"{"channel":"a b","data":1}"#),
        error_code::BAD_CHANNEL
    );
    assert_eq!(code(r#"[{"channel":"a","data":1}]"#), error_code::MALFORMED);
    assert_eq!(code(r#"{"channel":"a","data":}"#), error_code::MALFORMED);
    assert_eq!(code(""), error_code::MALFORMED);
}

#[test]
fn broadcast_body() {
    let mut body = br#"{"channels":["a","b:c"],"data":[1, 2]}"#.to_vec();
    assert_eq!(
        parse_broadcast_body(&mut body),
        Ok(BroadcastRequest {
            channels: vec!["a".into(), "b:c".into()],
            data: b"[1, 2]".to_vec().into()
        })
    );
    let code = |json: &str| {
        parse_broadcast_body(&mut json.as_bytes().to_vec())
            .unwrap_err()
            .code
    };
    assert_eq!(code(r#"{"channels":[],"data":1}"#), error_code::MALFORMED);
    assert_eq!(code(r#"{"channels":"a","data":1}"#), error_code::MALFORMED);
    assert_eq!(
        code(r#"{"channels":["a",1],"data":1}"#),
        error_code::MALFORMED
    );
    assert_eq!(code(r#"{"data":1}"#), error_code::MALFORMED);
    assert_eq!(code(r#"{"channels":["a"]}"#), error_code::MALFORMED);
    assert_eq!(
        code(r#"{"channels":["a","b c"],"data":1}"#),
        error_code::BAD_CHANNEL
    );
    assert_eq!(
        code(r#"{"channels":[""],"data":1}"#),
        error_code::BAD_CHANNEL
    );
    assert_eq!(code("nope"), error_code::MALFORMED);
}

#[test]
fn reply_shapes_are_byte_exact() {
    let s = |v: Vec<u8>| String::from_utf8(v).unwrap();
    assert_eq!(
        s(reply::ok_subscribe(Some(1), "news", "E", 41, None)),
        r#"{"id":1,"ok":{"channel":"news","epoch":"E","offset":41}}"#
    );
    assert_eq!(
        s(reply::ok_subscribe(Some(2), "news", "E", 45, Some(true))),
        r#"{"id":2,"ok":{"channel":"news","epoch":"E","offset":45,"recovered":true}}"#
    );
    assert_eq!(
        s(reply::ok_subscribe(None, "news", "E", 0, Some(false))),
        r#"{"ok":{"channel":"news","epoch":"E","offset":0,"recovered":false}}"#
    );
    assert_eq!(s(reply::ok_empty(Some(3))), r#"{"id":3,"ok":{}}"#);
    assert_eq!(s(reply::ok_empty(None)), r#"{"ok":{}}"#);
    assert_eq!(
        s(reply::ok_publish(Some(4), 12)),
        r#"{"id":4,"ok":{"offset":12}}"#
    );
    assert_eq!(
        s(reply::ok_publish(Some(u64::MAX), u64::MAX)),
        r#"{"id":18446744073709551615,"ok":{"offset":18446744073709551615}}"#
    );
    assert_eq!(
        s(reply::error(
            Some(9),
            error_code::PERMISSION_DENIED,
            "permission denied"
        )),
        r#"{"id":9,"error":{"code":103,"message":"permission denied","temporary":false}}"#
    );
    assert_eq!(
        s(reply::error(
            None,
            error_code::TOO_MANY_REQUESTS,
            "slow down"
        )),
        r#"{"error":{"code":111,"message":"slow down","temporary":true}}"#
    );
    assert_eq!(
        s(reply::error(Some(1), error_code::INTERNAL, "oops")),
        r#"{"id":1,"error":{"code":100,"message":"oops","temporary":true}}"#
    );
    assert_eq!(s(reply::pong(None)), r#"{"op":"pong"}"#);
    assert_eq!(s(reply::pong(Some(7))), r#"{"id":7,"op":"pong"}"#);
    assert_eq!(
        s(reply::push_json("news", 42, "E", br#"{"a": [1, 2.50]}"#)),
        r#"{"channel":"news","offset":42,"epoch":"E","data":{"a": [1, 2.50]}}"#
    );
}

#[test]
fn json_string_escaping() {
    let esc = |s: &str| {
        let mut out = b"x".to_vec();
        reply::write_json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(esc(""), r#"x"""#);
    assert_eq!(esc("plain"), r#"x"plain""#);
    assert_eq!(esc(r#"a"b\c"#), r#"x"a\"b\\c""#);
    assert_eq!(esc("\n\r\t\u{8}\u{c}"), r#"x"\n\r\t\b\f""#);
    assert_eq!(
        esc("\u{0}\u{1}\u{1f}\u{7f}"),
        "x\"\\u0000\\u0001\\u001f\u{7f}\""
    );
    assert_eq!(esc("é😀/"), "x\"é😀/\"");
    // An error message carrying client text stays one valid JSON string.
    let v: serde_json::Value =
        serde_json::from_slice(&reply::error(Some(1), 1, "bad \"x\"\n")).unwrap();
    assert_eq!(v["error"]["message"], "bad \"x\"\n");
}

/// Payload of a single unmasked FIN text frame, checking its header.
fn text_frame_payload(frame: &[u8]) -> &[u8] {
    assert_eq!(frame[0], 0x81, "FIN + text");
    match frame[1] {
        n @ 0..=125 => &frame[2..2 + usize::from(n)],
        126 => {
            let n = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
            assert_eq!(frame.len(), 4 + n);
            &frame[4..]
        }
        _ => {
            let n = u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize;
            assert_eq!(frame.len(), 10 + n);
            &frame[10..]
        }
    }
}

#[test]
fn push_is_one_text_frame_of_the_push_json() {
    let small = reply::push("news", 42, "E", b"{}");
    let json = br#"{"channel":"news","offset":42,"epoch":"E","data":{}}"#;
    assert_eq!(small.len(), 2 + json.len());
    assert_eq!(text_frame_payload(small.bytes()), json);

    let data = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1024));
    let big = reply::push("chat:7", 7, "ep", data.as_bytes());
    assert_eq!(
        text_frame_payload(big.bytes()),
        reply::push_json("chat:7", 7, "ep", data.as_bytes()).as_slice()
    );

    // Odd epochs take the escaping path and still match push_json.
    let odd = reply::push("c", 1, "e\"p\n", b"1");
    assert_eq!(
        text_frame_payload(odd.bytes()),
        br#"{"channel":"c","offset":1,"epoch":"e\"p\n","data":1}"#
    );
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn push_json_parses_back(
        channel in "[A-Za-z0-9_.:/-]{1,40}",
        epoch in any::<String>(),
        offset in any::<u64>(),
        data in json_value(),
    ) {
        let raw = serde_json::to_vec(&data).unwrap();
        let push = reply::push_json(&channel, offset, &epoch, &raw);
        let v: serde_json::Value = serde_json::from_slice(&push).unwrap();
        prop_assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
        prop_assert_eq!(v["offset"].as_u64(), Some(offset));
        prop_assert_eq!(v["epoch"].as_str(), Some(epoch.as_str()));
        // Compared with the data as the same parser reads it: serde_json's default float
        // parsing is not exact, so comparing with `data` itself would test serde_json.
        let reparsed: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        prop_assert_eq!(&v["data"], &reparsed);
        let tail = [b"\"data\":", raw.as_slice(), b"}"].concat();
        prop_assert!(push.ends_with(&tail), "data not spliced verbatim");
    }

    #[test]
    fn publish_data_round_trips_verbatim(data in json_value(), pretty in any::<bool>(), id in any::<u64>()) {
        let raw = if pretty { serde_json::to_vec_pretty(&data) } else { serde_json::to_vec(&data) }.unwrap();
        let mut json = format!(r#"{{"id":{id},"op":"publish","channel":"c","data":"#).into_bytes();
        json.extend_from_slice(&raw);
        json.push(b'}');
        let c = parse_command(&mut json).unwrap();
        prop_assert_eq!(c.id, Some(id));
        match c.op {
            Op::Publish { data: got, .. } => prop_assert_eq!(got.as_ref(), raw.as_slice()),
            op => prop_assert!(false, "not a publish: {:?}", op),
        }
    }

    #[test]
    fn reply_strings_parse_back(message in any::<String>(), channel in any::<String>(), epoch in any::<String>()) {
        let v: serde_json::Value = serde_json::from_slice(&reply::error(None, 1, &message)).unwrap();
        prop_assert_eq!(v["error"]["message"].as_str(), Some(message.as_str()));
        let v: serde_json::Value = serde_json::from_slice(&reply::ok_subscribe(Some(1), &channel, &epoch, 3, None)).unwrap();
        prop_assert_eq!(v["ok"]["channel"].as_str(), Some(channel.as_str()));
        prop_assert_eq!(v["ok"]["epoch"].as_str(), Some(epoch.as_str()));
    }

    #[test]
    fn parse_command_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_command(&mut bytes.clone());
        let _ = parse_publish_body(&mut bytes.clone());
        let _ = parse_broadcast_body(&mut bytes.clone());
    }
}

#[test]
fn large_documents_and_reuse_after_failures() {
    // Bigger than the reused per-thread buffers: parsed with buffers of its own.
    let data = format!(r#"{{"blob":"{}","n":[1,2,3]}}"#, "y".repeat(40_000));
    let json = format!(r#"{{"op":"publish","channel":"big","data":{data}}}"#);
    assert_eq!(data_of(&json), data.as_bytes());
    let mut body = format!(r#"{{"channel":"big","data":{data}}}"#).into_bytes();
    assert_eq!(
        parse_publish_body(&mut body).unwrap().data.as_ref(),
        data.as_bytes()
    );
    // Many small values in a small document: a long tape, dropped after use.
    let many = format!("[{}0]", "0,".repeat(5000));
    let json_many = format!(r#"{{"op":"publish","channel":"c","data":{many}}}"#);
    assert_eq!(data_of(&json_many), many.as_bytes());
    // A failed parse leaves nothing behind for the next one on this thread.
    for _ in 0..3 {
        assert_eq!(
            refused(r#"{"id":1,"op":"subscribe","channel":"#),
            (None, error_code::MALFORMED)
        );
        assert_eq!(refused("[1,2,3]"), (None, error_code::MALFORMED));
        assert_eq!(
            ok(r#"{"id":2,"op":"unsubscribe","channel":"x"}"#).op,
            Op::Unsubscribe {
                channel: "x".into()
            }
        );
        assert_eq!(data_of(&json), data.as_bytes());
    }
}

/// `data` is kept raw, so numbers JSON allows but 64 bits cannot hold are fine;
/// only a magnitude past float64's is refused, with a message naming the limit.
#[test]
fn big_numbers_in_data_are_kept_raw_and_the_float64_limit_is_named() {
    for n in [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1e308",
        "1e-400",
        "[1.5e300,-18446744073709551616]",
    ] {
        let json = format!(r#"{{"op":"publish","channel":"c","data":{n}}}"#);
        assert_eq!(data_of(&json), n.as_bytes(), "{json}");
        let mut body = format!(r#"{{"channel":"c","data":{n}}}"#).into_bytes();
        assert_eq!(
            &parse_publish_body(&mut body).unwrap().data[..],
            n.as_bytes()
        );
    }
    for n in ["1e400", "-1e309", "{\"x\":[2e999]}"] {
        let json = format!(r#"{{"id":3,"op":"publish","channel":"c","data":{n}}}"#);
        let e = cmd(&json).expect_err(&json);
        assert_eq!(e.code, error_code::MALFORMED);
        assert!(e.message.contains("float64 range"), "{}", e.message);
    }
    // Other syntax errors keep the plain message.
    let e = cmd(r#"{"op":"ping""#).unwrap_err();
    assert_eq!(e.message, "malformed JSON");
}

#[test]
fn history_presence_and_api_bodies_are_exact() {
    use shardcast_proto::reply;
    let items = [(42u64, &br#"{"a":1}"#[..]), (43, &b"2"[..])];
    assert_eq!(
        reply::ok_history(Some(5), items, None, "E", 45),
        br#"{"id":5,"ok":{"publications":[{"offset":42,"data":{"a":1}},{"offset":43,"data":2}],"epoch":"E","offset":45}}"#
    );
    assert_eq!(
        reply::ok_history(None, [(1u64, &b"1"[..])], Some(1), "E", 9),
        br#"{"ok":{"publications":[{"offset":1,"data":1}],"next":{"epoch":"E","offset":1},"epoch":"E","offset":9}}"#
    );
    assert_eq!(
        reply::ok_presence(Some(6), [("u1", "c9")]),
        br#"{"id":6,"ok":{"members":[{"user":"u1","conn":"c9"}]}}"#
    );
    assert_eq!(
        reply::presence_event("chat:7", false, "u\"1", "c9"),
        br#"{"channel":"chat:7","leave":{"user":"u\"1","conn":"c9"}}"#
    );
    assert_eq!(
        reply::api_published(12, "E"),
        br#"{"offset":12,"epoch":"E"}"#
    );
    assert_eq!(
        reply::api_broadcast([("a", 1, "E"), ("b", 2, "F")]),
        br#"{"results":[{"channel":"a","offset":1,"epoch":"E"},{"channel":"b","offset":2,"epoch":"F"}]}"#
    );
    assert_eq!(
        reply::api_channels([("news", 3)]),
        br#"{"channels":[{"channel":"news","subscribers":3}]}"#
    );
}
