//! The `shardcast.v1.msgpack` subprotocol, end to end, on both drivers. The
//! client side encodes and decodes with rmp-serde, independently of the engine.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use shardcast::DriverKind;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message as WsMessage;

fn connect_msgpack(addr: std::net::SocketAddr, offer: &str) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
    let (mut ws, resp) = tungstenite::connect(req).expect("upgrade succeeds");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, chosen)
}

fn send_mp(ws: &mut Ws, v: &Value) {
    let bytes = rmp_serde::to_vec_named(v).unwrap();
    ws.send(WsMessage::binary(bytes)).unwrap();
}

/// Next data message, which must be a binary MessagePack frame.
fn recv_mp(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            WsMessage::Binary(b) => return rmp_serde::from_slice(&b).expect("MessagePack"),
            WsMessage::Text(t) => panic!("a text frame on a MessagePack connection: {t}"),
            WsMessage::Close(c) => panic!("unexpected close {c:?}"),
            _ => continue,
        }
    }
}

fn pushes_and_replies_in_messagepack(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    let (mut mp, chosen) = connect_msgpack(addr, "shardcast.v1.msgpack");
    assert_eq!(chosen.as_deref(), Some("shardcast.v1.msgpack"));
    // Both shards own a channel; the MessagePack client subscribes to both.
    let a = channel_owned_by("mp", 0, 2);
    let b = channel_owned_by("mp", 1, 2);
    for (id, ch) in [(1, &a), (2, &b)] {
        send_mp(
            &mut mp,
            &json!({"id": id, "op": "subscribe", "channel": ch}),
        );
        let r = recv_mp(&mut mp);
        assert_eq!(r["id"], id);
        assert_eq!(r["ok"]["channel"], ch.as_str(), "{r}");
    }
    // A JSON subscriber next to it: the same publication in both encodings.
    let mut js = ws(addr, "/ws");
    subscribe(&mut js, 1, &a);
    let data =
        json!({"text": "hé", "n": -7, "big": 5_000_000_000u64, "f": 0.25, "list": [true, null]});
    let body = serde_json::to_vec(&json!({"channel": a, "data": data})).unwrap();
    let (st, resp) = http(addr, "POST", "/api/publish", &[], &body);
    assert_eq!(st, 200, "{resp}");
    let push = recv_mp(&mut mp);
    assert_eq!(push, recv_json(&mut js), "the same push, decoded");
    assert_eq!(push["data"], data);
    assert_eq!(push["offset"], 1);
    // A MessagePack client publishes; a JSON subscriber reads JSON.
    send_mp(
        &mut mp,
        &json!({"id": 3, "op": "publish", "channel": a, "data": {"from": "mp", "x": [1, 2.5]}}),
    );
    let got = recv_json(&mut js);
    assert_eq!(got["data"], json!({"from": "mp", "x": [1, 2.5]}));
    // The publisher gets its reply and, being subscribed, its own push (in either order).
    let (x, y) = (recv_mp(&mut mp), recv_mp(&mut mp));
    let (reply, own) = if x.get("id").is_some() {
        (x, y)
    } else {
        (y, x)
    };
    assert_eq!(reply, json!({"id": 3, "ok": {"offset": 2}}));
    assert_eq!(own, got, "its own push, decoded, equals the JSON one");
    // The other shard's channel.
    h.publish(&b, "[1,2,3]".to_string(), Duration::from_secs(5))
        .unwrap();
    let p = recv_mp(&mut mp);
    assert_eq!(
        (p["channel"].as_str(), p["data"].clone()),
        (Some(b.as_str()), json!([1, 2, 3]))
    );
    h.shutdown();
}

fn bad_messagepack_gets_error_1_and_the_connection_stays(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.message_bytes_max = 16 * 1024;
    let h = start(cfg);
    let addr = h.local_addr();
    let (mut mp, _) = connect_msgpack(addr, "shardcast.v1.msgpack");
    for bad in [
        &b"\xc1"[..],         // reserved marker
        &b"\x81\x01\x02"[..], // integer map key
        &b"\xc4\x01a"[..],    // bin
        &b"\x92\x01"[..],     // truncated
    ] {
        mp.send(WsMessage::binary(bad.to_vec())).unwrap();
        let r = recv_mp(&mut mp);
        assert_eq!(r["error"]["code"], 1, "{bad:?}: {r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MessagePack"),
            "{r}"
        );
    }
    // 4,000 control characters: under the frame limit as MessagePack, six times
    // longer as JSON escapes, so over the limit where it counts (error 113).
    let big = json!({"op": "publish", "channel": "c", "data": "\u{1}".repeat(4000)});
    send_mp(&mut mp, &big);
    let r = recv_mp(&mut mp);
    assert_eq!(r["error"]["code"], 113, "{r}");
    // Unknown op in valid MessagePack: error 2 with the id, as in JSON.
    send_mp(&mut mp, &json!({"id": 9, "op": "dance"}));
    let r = recv_mp(&mut mp);
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(9), json!(2))
    );
    // Text frames still carry JSON commands; the answer comes as MessagePack.
    mp.send(WsMessage::text(r#"{"id":10,"op":"ping"}"#))
        .unwrap();
    assert_eq!(recv_mp(&mut mp)["id"], 10);
    h.shutdown();
}

fn json_stays_the_default(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    // The client's first choice that the server speaks wins.
    let (_, chosen) = connect_msgpack(addr, "shardcast.v1.json, shardcast.v1.msgpack");
    assert_eq!(chosen.as_deref(), Some("shardcast.v1.json"));
    let (mut c, chosen) = connect_msgpack(addr, "shardcast.v1.msgpack, shardcast.v1.json");
    assert_eq!(chosen.as_deref(), Some("shardcast.v1.msgpack"));
    send_mp(&mut c, &json!({"op": "ping"}));
    assert_eq!(recv_mp(&mut c), json!({"op": "pong"}));
    h.shutdown();
}

/// A whole history (1,000 × 4 KiB) recovered by a MessagePack subscriber:
/// each replayed push converted, paced like JSON, in order.
fn a_whole_history_recovers_in_messagepack(d: DriverKind) {
    let mut cfg = config(d);
    let history = shardcast::policy::auth::Namespace {
        history_size: 1000,
        ..Default::default()
    };
    cfg.namespaces.insert(String::new(), history);
    let h = start(cfg);
    let ch = channel_owned_by("mp", 1, 2);
    let pad = "y".repeat(4096);
    let mut epoch = String::new();
    for n in 1..=1000 {
        let data = json!({"n": n, "pad": pad}).to_string();
        epoch = h
            .publish(&ch, data, Duration::from_secs(5))
            .unwrap()
            .epoch
            .to_string();
    }
    let (mut mp, _) = connect_msgpack(h.local_addr(), "shardcast.v1.msgpack");
    send_mp(
        &mut mp,
        &json!({"id": 1, "op": "subscribe", "channel": ch, "since": {"epoch": epoch, "offset": 0}}),
    );
    let r = recv_mp(&mut mp);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    for n in 1..=1000u64 {
        let p = recv_mp(&mut mp);
        assert_eq!(p["offset"], n, "in order, no gap");
        assert_eq!(p["data"]["n"], n);
        assert_eq!(p["data"]["pad"].as_str().unwrap().len(), 4096);
    }
    assert_eq!(h.stats().slow_consumer_closes, 0);
    h.shutdown();
}

both_drivers!(
    a_whole_history_recovers_in_messagepack,
    pushes_and_replies_in_messagepack,
    bad_messagepack_gets_error_1_and_the_connection_stays,
    json_stays_the_default,
);
