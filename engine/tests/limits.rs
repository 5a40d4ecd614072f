//! Resource limits a client must not be able to pass: channels per connection
//! and per shard, the time to finish a message, the shard's partial-message
//! budget. Every scenario runs on both drivers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shardcast::DriverKind;
use shardcast_proto::frame::OpCode;

/// Replies to `n` commands, in whatever order they come.
fn replies(c: &mut Ws, n: usize) -> Vec<serde_json::Value> {
    (0..n).map(|_| recv_json(c)).collect()
}

fn count_code(rs: &[serde_json::Value], code: u64) -> usize {
    rs.iter()
        .filter(|r| r["error"]["code"].as_u64() == Some(code))
        .count()
}

/// Subscribes sent in one write all wait for their owner shards at once; the
/// cap counts them with the joined ones, whether they recover with `since` or not.
fn pipelined_subscribes_stop_at_the_channel_cap(d: DriverKind) {
    let h = start(config(d));
    let max = shardcast::Config::default().limits.channels_per_conn_max;
    let n = max + 20;
    let mut c = ws(h.local_addr(), "/ws");
    for i in 0..n {
        // Half recover with `since`: they wait for the owner's recovery answer.
        let since = if i % 2 == 1 {
            r#","since":{"epoch":"00000000","offset":0}"#
        } else {
            ""
        };
        let cmd = format!(r#"{{"id":{i},"op":"subscribe","channel":"p{i}"{since}}}"#);
        c.write(tungstenite::Message::text(cmd)).unwrap();
    }
    c.flush().unwrap();
    let rs = replies(&mut c, n);
    let ok = rs.iter().filter(|r| r["ok"].is_object()).count();
    assert_eq!(ok, max, "accepted");
    assert_eq!(count_code(&rs, 113), n - max, "refused with 113");
    let refused = rs.iter().find(|r| r["error"]["code"] == 113).unwrap();
    let msg = refused["error"]["message"].as_str().unwrap();
    assert!(msg.contains("limits.channels_per_conn_max"), "{msg}");
    // The count follows joins and leaves: one leaves, one more fits, no more.
    let joined = rs.iter().find(|r| r["ok"].is_object()).unwrap();
    let ch = joined["ok"]["channel"].as_str().unwrap();
    send(
        &mut c,
        &format!(r#"{{"id":1000,"op":"unsubscribe","channel":"{ch}"}}"#),
    );
    assert_eq!(recv_json(&mut c)["ok"], serde_json::json!({}));
    subscribe(&mut c, 1001, "one-more");
    send(
        &mut c,
        r#"{"id":1002,"op":"subscribe","channel":"one-too-many"}"#,
    );
    assert_eq!(recv_json(&mut c)["error"]["code"], 113);
    h.shutdown();
}

/// `?subscribe=` (and SSE's `channels=`) past the cap is refused before the upgrade.
fn subscribe_list_over_the_cap_gets_400(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    let max = shardcast::Config::default().limits.channels_per_conn_max;
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("q{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let hdrs = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let (status, resp) = http(
        addr,
        "GET",
        &format!("/ws?subscribe={}", list(300)),
        &hdrs,
        b"",
    );
    assert_eq!(status, 400, "{resp}");
    assert!(
        body_of(&resp).contains("limits.channels_per_conn_max"),
        "{resp}"
    );
    let (status, resp) = http(
        addr,
        "GET",
        &format!("/sse?channels={}", list(300)),
        &[],
        b"",
    );
    assert_eq!(status, 400, "{resp}");
    assert!(
        body_of(&resp).contains("limits.channels_per_conn_max"),
        "{resp}"
    );
    // Exactly the cap is fine.
    let mut c = ws(addr, &format!("/ws?subscribe={}", list(max)));
    let rs = replies(&mut c, max);
    assert!(rs.iter().all(|r| r["ok"].is_object()));
    h.shutdown();
}

/// The shard's registry is bounded whatever the number of connections.
fn shard_channel_cap_refuses_new_channels_with_113(d: DriverKind) {
    let mut cfg = config(d);
    cfg.shards = 1;
    cfg.limits.channels_per_shard_max = 3;
    let h = start(cfg);
    let addr = h.local_addr();
    let mut a = ws(addr, "/ws");
    for (i, ch) in ["a", "b", "c"].iter().enumerate() {
        subscribe(&mut a, i as u64, ch);
    }
    let mut b = ws(addr, "/ws");
    send(&mut b, r#"{"id":1,"op":"subscribe","channel":"d"}"#);
    let r = recv_json(&mut b);
    assert_eq!(r["error"]["code"], 113, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("limits.channels_per_shard_max"), "{msg}");
    // A channel the shard already has costs nothing new.
    subscribe(&mut b, 2, "a");
    // Once a channel is gone, another fits.
    send(&mut a, r#"{"id":9,"op":"unsubscribe","channel":"c"}"#);
    assert_eq!(recv_json(&mut a)["ok"], serde_json::json!({}));
    subscribe(&mut b, 3, "d");
    h.shutdown();
}

/// A masked text frame carrying a ping command padded with spaces to `len` bytes.
fn padded_ping(len: usize) -> Vec<u8> {
    let mut payload = br#"{"op":"ping"}"#.to_vec();
    payload.resize(len, b' ');
    let mut wire = Vec::new();
    shardcast_proto::frame::encode_frame(
        &mut wire,
        OpCode::Text,
        true,
        &payload,
        Some([9, 9, 9, 9]),
    );
    wire
}

/// A client that trickles a frame a byte at a time is closed with 1008 once
/// `frame_timeout_ms` has passed since its first byte; a client whose frames
/// take a while but finish in time is not.
fn trickled_frame_is_closed_after_frame_timeout(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.frame_timeout_ms = 500;
    let h = start(cfg);
    let addr = h.local_addr();
    let mut slow = Raw::connect(addr);
    let mut writer = slow.s.try_clone().unwrap();
    let frame = padded_ping(200);
    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let trickle = std::thread::spawn(move || {
        use std::io::Write;
        for b in frame {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) || writer.write_all(&[b]).is_err()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Meanwhile a client sends a ping frame in two parts, 300 ms apart: in time.
    let mut fine = Raw::connect(addr);
    let mut ping = Vec::new();
    shardcast_proto::frame::encode_frame(
        &mut ping,
        OpCode::Ping,
        true,
        b"hello",
        Some([1, 2, 3, 4]),
    );
    for _ in 0..3 {
        fine.send_bytes(&ping[..4]);
        std::thread::sleep(Duration::from_millis(300));
        fine.send_bytes(&ping[4..]);
        assert_eq!(fine.pongs(1), vec![b"hello".to_vec()]);
    }
    let code = slow.close_code();
    let after = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(code, Some(1008), "after {after:?}");
    // Never before the timeout; the wheel's tick is a tenth of it.
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_millis(2000),
        "closed {after:?} after the first byte (200 bytes at 10/s would take 20 s)"
    );
    assert_eq!(h.stats().frame_timeout_closes, 1);
    // The well-behaved client is still served.
    fine.send_bytes(&ping);
    assert_eq!(fine.pongs(1), vec![b"hello".to_vec()]);
    trickle.join().unwrap();
    h.shutdown();
}

/// Clients that each stop 4 KiB short of a 64 KiB frame: the one whose bytes pass
/// the shard's partial budget is closed with 1008; the others go on.
fn partial_message_budget_closes_the_client_passing_it(d: DriverKind) {
    let mut cfg = config(d);
    cfg.shards = 1;
    cfg.limits.message_bytes_max = 64 * 1024;
    cfg.limits.partial_bytes_per_shard_max = 150 * 1024;
    let h = start(cfg);
    let addr = h.local_addr();
    let frame = padded_ping(64 * 1024);
    let cut = frame.len() - 4 * 1024;
    let mut held = Vec::new();
    for i in 1..=2u64 {
        let mut c = Raw::connect(addr);
        c.send_bytes(&frame[..cut]);
        eventually("the partial message is held", || {
            h.stats().partial_bytes >= i * 59 * 1024
        });
        held.push(c);
    }
    let mut third = Raw::connect(addr);
    third.send_bytes(&frame[..cut]);
    assert_eq!(third.close_code(), Some(1008));
    assert_eq!(h.stats().partial_budget_closes, 1);
    // The first two finish their messages and are answered.
    let mut ping = Vec::new();
    shardcast_proto::frame::encode_frame(&mut ping, OpCode::Ping, true, b"ok", Some([1, 2, 3, 4]));
    for c in held.iter_mut() {
        c.send_bytes(&frame[cut..]);
        c.send_bytes(&ping);
        assert_eq!(c.pongs(1), vec![b"ok".to_vec()]);
    }
    eventually("nothing held any more", || h.stats().partial_bytes == 0);
    h.shutdown();
}

/// `data` is any JSON: integers past 64 bits reach subscribers byte for byte
/// (WebSocket and HTTP publish); a magnitude past float64 is refused, naming the limit.
fn numbers_past_64_bits_are_published_raw(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    let mut sub = ws(addr, "/ws?subscribe=big");
    recv_json(&mut sub);
    let text = |c: &mut Ws| match c.read().unwrap() {
        tungstenite::Message::Text(t) => t.to_string(),
        m => panic!("{m:?}"),
    };
    let mut publisher = ws(addr, "/ws");
    let data = r#"[18446744073709551616,-99999999999999999999999,1e-400]"#;
    send(
        &mut publisher,
        &format!(r#"{{"id":1,"op":"publish","channel":"big","data":{data}}}"#),
    );
    assert_eq!(recv_json(&mut publisher)["ok"]["offset"], 1);
    assert!(text(&mut sub).ends_with(&format!(r#""data":{data}}}"#)));
    let body = r#"{"channel":"big","data":{"n":18446744073709551616}}"#;
    let (status, resp) = http(addr, "POST", "/api/publish", &[], body.as_bytes());
    assert_eq!(status, 200, "{resp}");
    assert!(text(&mut sub).ends_with(r#""data":{"n":18446744073709551616}}"#));

    send(
        &mut publisher,
        r#"{"id":2,"op":"publish","channel":"big","data":1e400}"#,
    );
    let r = recv_json(&mut publisher);
    assert_eq!(r["error"]["code"], 1, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("float64 range"),
        "{r}"
    );
    let (status, resp) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        br#"{"channel":"big","data":1e400}"#,
    );
    assert_eq!(status, 400, "{resp}");
    assert!(body_of(&resp).contains("float64 range"), "{resp}");
    h.shutdown();
}

both_drivers!(
    numbers_past_64_bits_are_published_raw,
    trickled_frame_is_closed_after_frame_timeout,
    partial_message_budget_closes_the_client_passing_it,
    pipelined_subscribes_stop_at_the_channel_cap,
    subscribe_list_over_the_cap_gets_400,
    shard_channel_cap_refuses_new_channels_with_113,
);
