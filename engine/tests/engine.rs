//! End-to-end tests: a real engine on loopback driven by real clients.
//! Every scenario runs on both drivers (see the `both_drivers!` list at the end).

mod common;

use std::time::Duration;

use common::*;
use shardcast::{Config, DriverKind};
use shardcast_proto::frame::OpCode;

fn pub_cross_shard(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    // One channel per owner shard: whichever shard a client lands on, one is remote.
    let chans = [channel_owned_by("x", 0, 2), channel_owned_by("x", 1, 2)];
    let mut subs: Vec<Ws> = (0..4).map(|_| ws(addr, "/ws")).collect();
    for s in subs.iter_mut() {
        for (i, c) in chans.iter().enumerate() {
            subscribe(s, i as u64 + 1, c);
        }
    }
    let mut publisher = ws(addr, "/ws");
    const N: u64 = 50;
    for n in 0..N {
        for (i, c) in chans.iter().enumerate() {
            send(
                &mut publisher,
                &format!(
                    r#"{{"id":{},"op":"publish","channel":"{c}","data":{{"n":{n}}}}}"#,
                    n * 2 + i as u64
                ),
            );
        }
    }
    let mut acks = 0;
    while acks < 2 * N {
        let r = recv_json(&mut publisher);
        assert!(r["ok"]["offset"].as_u64().unwrap() >= 1, "{r}");
        acks += 1;
    }
    for s in subs.iter_mut() {
        let mut last = [0u64; 2];
        for _ in 0..2 * N {
            let p = recv_json(s);
            let i = chans
                .iter()
                .position(|c| p["channel"] == c.as_str())
                .expect("known channel");
            let off = p["offset"].as_u64().unwrap();
            assert_eq!(off, last[i] + 1, "offsets rise by exactly one: {p}");
            assert_eq!(p["data"]["n"], off - 1);
            last[i] = off;
        }
        assert_eq!(last, [N, N]);
    }
    h.shutdown();
}

fn http_publish_reaches_subscribers(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    let mut a = ws(addr, "/ws?subscribe=news,sport");
    let first = recv_json(&mut a);
    let second = recv_json(&mut a);
    assert!(first["ok"].is_object() && second["ok"].is_object());
    let data = r#"{"b": [1, 2,  "x\"y"], "f": 1.0e10}"#;
    let body = format!(r#"{{"channel":"news","data":{data}}}"#);
    let (status, resp) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{resp}");
    let r: serde_json::Value = serde_json::from_str(body_of(&resp)).unwrap();
    assert_eq!(r["offset"], 1);
    let epoch = r["epoch"].as_str().unwrap().to_string();
    // The push carries the published JSON byte for byte.
    let push = match a.read().unwrap() {
        tungstenite::Message::Text(t) => t.to_string(),
        m => panic!("{m:?}"),
    };
    assert_eq!(
        push,
        format!(r#"{{"channel":"news","offset":1,"epoch":"{epoch}","data":{data}}}"#)
    );

    let body = br#"{"channels":["news","sport"],"data":"hi"}"#;
    let (status, resp) = http(addr, "POST", "/api/broadcast", &[], body);
    assert_eq!(status, 200, "{resp}");
    let r: serde_json::Value = serde_json::from_str(body_of(&resp)).unwrap();
    assert_eq!(r["results"][0]["channel"], "news");
    assert_eq!(r["results"][0]["offset"], 2);
    assert_eq!(r["results"][1]["offset"], 1);
    let got: Vec<String> = (0..2)
        .map(|_| recv_json(&mut a)["channel"].as_str().unwrap().to_string())
        .collect();
    assert!(got.contains(&"news".into()) && got.contains(&"sport".into()));

    eventually("channel snapshot", || {
        let (_, resp) = http(addr, "GET", "/api/channels", &[], b"");
        body_of(&resp).contains(r#"{"channel":"news","subscribers":1}"#)
    });
    let (status, resp) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        br#"{"channel":"bad channel","data":1}"#,
    );
    assert_eq!(status, 400);
    assert!(body_of(&resp).contains(r#""code":104"#), "{resp}");
    let (status, _) = http(addr, "POST", "/api/publish", &[], b"{not json");
    assert_eq!(status, 400);
    h.shutdown();
}

fn slow_consumer_closed_others_unaffected(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.queue_bytes_max = 64 * 1024;
    let h = start(cfg);
    let addr = h.local_addr();
    // The slow client advertises a tiny receive window and never reads.
    let slow_sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow_sock.set_recv_buffer_size(4096).unwrap();
    slow_sock.connect(&addr.into()).unwrap();
    let slow_stream: std::net::TcpStream = slow_sock.into();
    let (mut slow, _) = tungstenite::client(
        format!("ws://{addr}/ws"),
        tungstenite::stream::MaybeTlsStream::Plain(slow_stream),
    )
    .unwrap();
    send(
        &mut slow,
        r#"{"id":1,"op":"subscribe","channel":"firehose"}"#,
    );
    assert!(recv_json(&mut slow)["ok"].is_object());
    let mut fast = ws(addr, "/ws");
    subscribe(&mut fast, 1, "firehose");

    let payload = format!("\"{}\"", "x".repeat(1024));
    let mut published = 0u64;
    let mut last = 0u64;
    while h.stats().slow_consumer_closes == 0 {
        assert!(published < 100_000, "slow consumer never detected");
        for _ in 0..16 {
            h.publish_nowait("firehose", payload.clone()).unwrap();
            published += 1;
        }
        // Keep the fast reader current (well inside its budget), checking order as we go.
        while last < published {
            let p = recv_json(&mut fast);
            assert_eq!(p["offset"].as_u64().unwrap(), last + 1);
            last += 1;
        }
    }
    for _ in 0..10 {
        h.publish_nowait("firehose", payload.clone()).unwrap();
        published += 1;
    }
    while last < published {
        let p = recv_json(&mut fast);
        assert_eq!(
            p["offset"].as_u64().unwrap(),
            last + 1,
            "fast subscriber misses nothing"
        );
        last += 1;
    }
    // The slow one, once it reads, finds its backlog then a 4008 close.
    assert_eq!(recv_close_code(&mut slow), 4008);
    assert_eq!(h.stats().slow_consumer_closes, 1);
    h.shutdown();
}

fn protocol_violations_get_their_close_codes(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.message_bytes_max = 1024;
    let h = start(cfg);
    let addr = h.local_addr();
    let key = Some([1, 2, 3, 4]);

    let mut r = Raw::connect(addr);
    r.send_frame(OpCode::Text, true, &vec![b'a'; 2000], key);
    assert_eq!(r.close_code(), Some(1009), "oversized message");

    let mut r = Raw::connect(addr);
    r.send_frame(OpCode::Text, true, &[0xff, 0xfe, 0x41], key);
    assert_eq!(r.close_code(), Some(1007), "invalid UTF-8");

    let mut r = Raw::connect(addr);
    r.send_frame(OpCode::Text, true, br#"{"op":"ping"}"#, None);
    assert_eq!(r.close_code(), Some(1002), "unmasked client frame");

    let mut r = Raw::connect(addr);
    r.send_bytes(&[0x83, 0x80, 0, 0, 0, 0]);
    assert_eq!(r.close_code(), Some(1002), "reserved opcode");

    let mut r = Raw::connect(addr);
    r.send_frame(OpCode::Close, true, &1000u16.to_be_bytes(), key);
    assert_eq!(
        r.close_code(),
        Some(1000),
        "close handshake echoes the code"
    );

    let (status, _) = http(
        addr,
        "GET",
        "/ws",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        b"",
    );
    assert_eq!(status, 400, "upgrade without a key");
    let hdrs = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "8"),
    ];
    let (status, resp) = http(addr, "GET", "/ws", &hdrs, b"");
    assert_eq!(status, 426);
    assert!(resp.contains("Sec-WebSocket-Version: 13"));
    // The engine is still serving after all of that.
    let mut ok = ws(addr, "/ws");
    subscribe(&mut ok, 1, "still-up");
    h.shutdown();
}

fn commands_and_errors(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.channels_per_conn_max = 2;
    let h = start(cfg);
    let mut c = ws(h.local_addr(), "/ws");
    send(&mut c, r#"{"op":"ping"}"#);
    assert_eq!(recv_json(&mut c), serde_json::json!({"op":"pong"}));
    send(&mut c, r#"{"id":3,"op":"dance"}"#);
    assert_eq!(recv_json(&mut c)["error"]["code"], 2);
    send(&mut c, r#"{"id":4,"op":"subscribe","channel":"no spaces"}"#);
    let r = recv_json(&mut c);
    assert_eq!(
        (r["id"].as_u64(), r["error"]["code"].as_u64()),
        (Some(4), Some(104))
    );
    send(&mut c, r#"{"id":5,"op":"subscribe""#);
    assert_eq!(recv_json(&mut c)["error"]["code"], 1);
    subscribe(&mut c, 6, "a");
    send(&mut c, r#"{"id":7,"op":"subscribe","channel":"a"}"#);
    assert_eq!(recv_json(&mut c)["error"]["code"], 105);
    subscribe(&mut c, 8, "b");
    send(&mut c, r#"{"id":9,"op":"subscribe","channel":"c"}"#);
    let r = recv_json(&mut c);
    assert_eq!(r["error"]["code"], 113, "{r}");
    send(&mut c, r#"{"id":10,"op":"unsubscribe","channel":"a"}"#);
    assert_eq!(recv_json(&mut c), serde_json::json!({"id":10,"ok":{}}));
    send(&mut c, r#"{"id":11,"op":"unsubscribe","channel":"a"}"#);
    assert_eq!(recv_json(&mut c)["error"]["code"], 105);
    // WebSocket-level ping gets a pong.
    c.send(tungstenite::Message::Ping(b"hb".to_vec().into()))
        .unwrap();
    match c.read().unwrap() {
        tungstenite::Message::Pong(p) => assert_eq!(&p[..], b"hb"),
        m => panic!("expected pong, got {m:?}"),
    }
    // Resubscribing after leaving reports the current position.
    h.publish("a", "1", Duration::from_secs(5)).unwrap();
    let r = subscribe(&mut c, 12, "a");
    assert_eq!(r["ok"]["offset"], 1);
    h.shutdown();
}

fn limits_refuse_with_503_and_time_out_handshakes(d: DriverKind) {
    let mut cfg = config(d);
    cfg.shards = 1;
    cfg.limits.conns_per_shard_max = 2;
    cfg.limits.handshake_timeout_ms = 200;
    let h = start(cfg);
    let addr = h.local_addr();
    let _a = ws(addr, "/ws");
    let _b = ws(addr, "/ws");
    let hdrs = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let (status, resp) = http(addr, "GET", "/ws", &hdrs, b"");
    assert_eq!(status, 503, "{resp}");
    assert!(resp.contains("Retry-After"));
    assert_eq!(h.stats().rejected_full, 1);
    // A request that never completes is cut off.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    h.shutdown();
}

fn health_ready_and_api_key(d: DriverKind) {
    let mut cfg: Config = config(d);
    cfg.api_key = Some("s3cret".into());
    let h = start(cfg);
    let addr = h.local_addr();
    assert_eq!(http(addr, "GET", "/health", &[], b"").0, 200);
    assert_eq!(http(addr, "GET", "/ready", &[], b"").0, 200);
    assert_eq!(http(addr, "GET", "/nope", &[], b"").0, 404);
    let body = br#"{"channel":"a","data":1}"#;
    let (status, resp) = http(addr, "POST", "/api/publish", &[], body);
    assert_eq!(status, 401);
    assert!(body_of(&resp).contains(r#""code":101"#));
    let (status, _) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer s3cret")],
        body,
    );
    assert_eq!(status, 200);
    assert_eq!(http(addr, "GET", "/api/publish", &[], b"").0, 405);
    h.shutdown();
}

fn shutdown_closes_clients_with_1001(d: DriverKind) {
    let h = start(config(d));
    let mut c = ws(h.local_addr(), "/ws");
    subscribe(&mut c, 1, "x");
    let t = std::thread::spawn(move || h.shutdown());
    assert_eq!(recv_close_code(&mut c), 1001);
    drop(c);
    t.join().unwrap();
}

fn heartbeat_closes_silent_clients_only(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.ping_interval_ms = 100;
    cfg.limits.pong_timeout_ms = 150;
    let h = start(cfg);
    let addr = h.local_addr();
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(addr); // reads, but never answers pings
    let mut live = ws(addr, "/ws"); // tungstenite answers pings while reading
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = live.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    }
    let silent = std::thread::spawn(move || {
        let code = silent.close_code();
        (code, started.elapsed())
    });
    let until = std::time::Instant::now() + Duration::from_millis(600);
    while std::time::Instant::now() < until {
        match live.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("live client dropped: {e}"),
        }
    }
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = live.get_mut() {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
    subscribe(&mut live, 1, "alive");
    let (code, after) = silent.join().unwrap();
    assert_eq!(code, Some(4009));
    assert_eq!(
        h.stats().heartbeat_closes,
        1,
        "counted, the live client not"
    );
    assert!(
        after >= Duration::from_millis(250),
        "not before ping + pong timeout: {after:?}"
    );
    h.shutdown();
}

fn idle_timeout_closes_connections_without_messages(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.idle_timeout_ms = 200;
    let h = start(cfg);
    let mut c = ws(h.local_addr(), "/ws");
    assert_eq!(recv_close_code(&mut c), 4009);
    h.shutdown();
}

fn pongs_come_back_in_ping_order(d: DriverKind) {
    let h = start(config(d));
    let mut r = Raw::connect(h.local_addr());
    // Ten pings in one write, then ten sent one byte at a time.
    let mut burst = Vec::new();
    for i in 0..10u8 {
        shardcast_proto::frame::encode_frame(
            &mut burst,
            OpCode::Ping,
            true,
            &[b'a' + i],
            Some([9, 8, 7, 6]),
        );
    }
    r.send_bytes(&burst);
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'a' + i]).collect();
    assert_eq!(r.pongs(10), want);
    for b in &burst {
        r.send_bytes(&[*b]);
    }
    assert_eq!(r.pongs(10), want);
    h.shutdown();
}

fn pipelined_api_requests_are_answered_in_order(d: DriverKind) {
    use std::io::{Read, Write};
    let h = start(config(d));
    let addr = h.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reqs = Vec::new();
    for i in 0..50 {
        // Channels on both owner shards, a health check in the middle, then a bad body.
        let body = format!(r#"{{"channel":"p{}","data":{i}}}"#, i % 2);
        reqs.extend(
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .bytes(),
        );
        if i == 25 {
            reqs.extend(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        }
    }
    reqs.extend(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    s.write_all(&reqs).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let bodies: Vec<&str> = out
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    assert_eq!(bodies.len(), 52, "{out}");
    let mut next = [1u64, 1];
    for (i, b) in bodies.iter().enumerate() {
        if i == 26 {
            assert_eq!(*b, "ok", "the health answer keeps its place");
            continue;
        }
        if i == 51 {
            assert!(
                b.contains(r#""code":1"#),
                "the bad body is answered last: {b}"
            );
            continue;
        }
        let n = if i < 26 { i } else { i - 1 };
        let r: serde_json::Value = serde_json::from_str(b).unwrap();
        assert_eq!(r["offset"], next[n % 2], "answer {i} in request order: {b}");
        next[n % 2] += 1;
    }
    h.shutdown();
}

/// Sum of one metric's samples over its label sets, from OpenMetrics text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn metrics_are_valid_prometheus_text(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    let mut c = ws(addr, "/ws?subscribe=m");
    recv_json(&mut c);
    for i in 0..5 {
        h.publish("m", format!("{i}"), Duration::from_secs(5))
            .unwrap();
        recv_json(&mut c);
    }
    let (status, resp) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        resp.contains("Content-Type: application/openmetrics-text"),
        "{resp}"
    );
    let text = body_of(&resp);
    assert_eq!(text.lines().last(), Some("# EOF"));
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| *l != "# EOF") {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            typed.insert(it.next().unwrap().to_string());
            let kind = it.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        // name{labels} value
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "sample before its TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
    assert_eq!(metric_sum(text, "shardcast_publications_total"), 5.0);
    assert_eq!(metric_sum(text, "shardcast_websocket_connections"), 1.0);
    assert_eq!(metric_sum(text, "shardcast_upgrades_total"), 1.0);
    assert_eq!(
        metric_sum(text, "shardcast_publish_to_write_seconds_count"),
        5.0
    );
    let driver = format!("driver=\"{}\"", d.as_str());
    assert!(
        text.lines()
            .any(|l| l.starts_with("shardcast_driver{") && l.contains(&driver)),
        "{text}"
    );
    h.shutdown();
}

fn drain_paces_4001_closes_over_the_window(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.reconnect_spread_ms = 3000;
    let h = start(cfg);
    let addr = h.local_addr();
    let t0 = std::time::Instant::now();
    let readers: Vec<_> = (0..20)
        .map(|i| {
            let mut c = ws(addr, "/ws");
            subscribe(&mut c, 1, &format!("d{i}"));
            std::thread::spawn(move || loop {
                match c.read() {
                    Ok(tungstenite::Message::Close(Some(f))) => {
                        return (u16::from(f.code), f.reason.to_string(), t0.elapsed())
                    }
                    Ok(_) => continue,
                    Err(e) => panic!("dropped without a close frame: {e}"),
                }
            })
        })
        .collect();
    let window = Duration::from_millis(800);
    let started = t0.elapsed();
    let drainer = std::thread::spawn(move || h.drain(window));
    eventually("ready turns 503", || {
        http(addr, "GET", "/ready", &[], b"").0 == 503
    });
    let hdrs = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    assert_eq!(
        http(addr, "GET", "/ws", &hdrs, b"").0,
        503,
        "no new upgrades while draining"
    );
    let mut times = Vec::new();
    for r in readers {
        let (code, reason, at) = r.join().unwrap();
        assert_eq!(code, 4001);
        let ms: u64 = reason
            .strip_prefix("reconnect_after_ms=")
            .expect(&reason)
            .parse()
            .unwrap();
        assert!(ms < 3000, "{reason}");
        times.push(at - started);
    }
    drainer.join().unwrap();
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        last - first >= Duration::from_millis(400),
        "spread over the window: {times:?}"
    );
    assert!(
        last <= window + Duration::from_millis(700),
        "done by the window's end: {times:?}"
    );
}

fn command_rate_limit_then_policy_close(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.commands_per_sec = 1;
    cfg.limits.commands_burst = 5;
    let h = start(cfg);
    let mut c = ws(h.local_addr(), "/ws");
    for i in 0..10 {
        send(&mut c, &format!(r#"{{"id":{i},"op":"ping"}}"#));
    }
    for i in 0..5 {
        assert_eq!(recv_json(&mut c), serde_json::json!({"id":i,"op":"pong"}));
    }
    for i in 5..9 {
        let r = recv_json(&mut c);
        assert_eq!(
            (r["id"].as_u64(), r["error"]["code"].as_u64()),
            (Some(i), Some(111)),
            "{r}"
        );
        assert_eq!(r["error"]["temporary"], true);
    }
    // The fifth refusal in a row is sustained abuse.
    assert_eq!(recv_close_code(&mut c), 1008);
    assert!(h.stats().rate_limited >= 5);
    h.shutdown();
}

fn shedding_ready_high_water_and_accept_rate(d: DriverKind) {
    let mut cfg = config(d);
    cfg.shards = 1;
    cfg.limits.conns_per_shard_max = 4;
    cfg.limits.ready_high_water_pct = 50;
    cfg.limits.accepts_per_sec = 5;
    let h = start(cfg);
    let addr = h.local_addr();
    assert_eq!(http(addr, "GET", "/ready", &[], b"").0, 200);
    let _a = ws(addr, "/ws");
    let _b = ws(addr, "/ws");
    let (status, resp) = http(addr, "GET", "/ready", &[], b"");
    assert_eq!(status, 503, "at 50% of capacity");
    assert!(body_of(&resp).contains("overloaded"));
    // A burst of connects past the accept budget: the excess is closed unserved.
    std::thread::sleep(Duration::from_millis(1200));
    let socks: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    eventually("accept-rate shedding", || {
        h.stats().rejected_accept_rate >= 10
    });
    drop(socks);
    h.shutdown();
}

/// A client that stops reading cannot hold a closing connection, and with it a
/// shutdown, for longer than `close_linger_ms`.
fn shutdown_is_bounded_by_a_client_that_never_reads(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.close_linger_ms = 500;
    cfg.io.send_buffer_bytes = 16 * 1024;
    let h = start(cfg);
    let addr = h.local_addr();
    let mut stuck = Raw::connect(addr);
    stuck.send_frame(
        OpCode::Text,
        true,
        br#"{"id":1,"op":"subscribe","channel":"flood"}"#,
        Some([1, 2, 3, 4]),
    );
    let mut w = ws(addr, "/ws");
    subscribe(&mut w, 1, "flood");
    let pad = "x".repeat(30_000);
    // Far more than the stuck client's queue and socket buffers hold.
    for _ in 0..100 {
        h.publish(
            "flood",
            format!("{{\"p\":\"{pad}\"}}"),
            Duration::from_secs(5),
        )
        .unwrap();
    }
    eventually("the stuck client is a slow consumer", || {
        h.stats().slow_consumer_closes >= 1
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        h.shutdown();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(8))
        .expect("shutdown finishes although a client never reads");
    drop(stuck);
}

/// After the closing handshake the server closes the TCP connection itself
/// (RFC 6455 §7.1.1), at once rather than at `close_linger_ms`: when it began
/// the close (a protocol error here), as soon as the client's close frame
/// arrives, even behind a large data frame still in flight; when the client
/// began it, as soon as the echo is written. The clients never close their side.
fn the_server_closes_tcp_after_the_closing_handshake(d: DriverKind) {
    use std::io::Read;
    let mut cfg = config(d);
    cfg.limits.close_linger_ms = 30_000;
    let h = start(cfg);
    let addr = h.local_addr();
    let eof_in_time = |raw: &mut Raw| {
        let t0 = std::time::Instant::now();
        let mut chunk = [0u8; 4096];
        loop {
            match raw.s.read(&mut chunk) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => panic!("read after the closing handshake: {e}"),
            }
        }
        // The linger is 30 s: an EOF this early is the server's own close.
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "EOF after {:?}",
            t0.elapsed()
        );
    };
    // The server begins: an unmasked frame is a protocol error (1002).
    let mut a = Raw::connect(addr);
    a.send_frame(OpCode::Text, true, b"{}", None);
    assert_eq!(a.close_code(), Some(1002));
    a.send_frame(
        OpCode::Binary,
        true,
        &vec![7u8; 100_000],
        Some([9, 8, 7, 6]),
    );
    a.send_frame(
        OpCode::Close,
        true,
        &1002u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    );
    eof_in_time(&mut a);
    // The client begins, and waits for the server's close.
    let mut b = Raw::connect(addr);
    b.send_frame(
        OpCode::Close,
        true,
        &1000u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    );
    assert_eq!(b.close_code(), Some(1000));
    eof_in_time(&mut b);
    eventually("both are gone", || h.stats().conns_open == 0);
    h.shutdown();
}

both_drivers!(
    the_server_closes_tcp_after_the_closing_handshake,
    shutdown_is_bounded_by_a_client_that_never_reads,
    pub_cross_shard,
    http_publish_reaches_subscribers,
    slow_consumer_closed_others_unaffected,
    protocol_violations_get_their_close_codes,
    commands_and_errors,
    limits_refuse_with_503_and_time_out_handshakes,
    health_ready_and_api_key,
    shutdown_closes_clients_with_1001,
    heartbeat_closes_silent_clients_only,
    idle_timeout_closes_connections_without_messages,
    metrics_are_valid_prometheus_text,
    drain_paces_4001_closes_over_the_window,
    command_rate_limit_then_policy_close,
    shedding_ready_high_water_and_accept_rate,
    pongs_come_back_in_ping_order,
    pipelined_api_requests_are_answered_in_order,
);
