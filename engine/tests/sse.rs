//! The Server-Sent Events fallback (`GET /sse`), end to end, on both drivers.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use shardcast::policy::auth::Namespace;
use shardcast::DriverKind;

/// One event as a browser's EventSource would assemble it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
    retry: Option<u64>,
    /// Comment lines seen before this event (heartbeats).
    comments: usize,
}

struct Stream {
    r: BufReader<TcpStream>,
}

impl Stream {
    /// Next event; None at the end of the stream.
    fn next(&mut self) -> Option<Event> {
        let mut e = Event::default();
        let mut data: Vec<String> = Vec::new();
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).expect("read") == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    e.data = data.join("\n");
                    return Some(e);
                }
                continue;
            }
            if line.starts_with(':') {
                e.comments += 1;
                continue;
            }
            any = true;
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => e.id = Some(value.into()),
                "event" => e.event = Some(value.into()),
                "data" => data.push(value.into()),
                "retry" => {
                    e.retry = Some(value.parse().unwrap());
                    any = false; // a retry-only block dispatches no event
                }
                other => panic!("unknown field {other}"),
            }
        }
    }

    fn json(&mut self) -> (Event, serde_json::Value) {
        let e = self.next().expect("an event");
        let v = serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("json: {e:?}"));
        (e, v)
    }
}

/// `GET path` with extra headers: the status and head, and the stream when it is 200.
fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, Option<Stream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let stream = (status == 200).then_some(Stream { r });
    (status, head, stream)
}

fn start_with_history(d: DriverKind) -> shardcast::Handle {
    let mut cfg = config(d);
    let history = Namespace {
        history_size: 100,
        ..Namespace::default()
    };
    cfg.namespaces.insert(String::new(), history.clone());
    cfg.namespaces.insert("feed".into(), history);
    start(cfg)
}

fn publish(h: &shardcast::Handle, channel: &str, n: u64) {
    h.publish(channel, format!("{{\"n\":{n}}}"), Duration::from_secs(5))
        .unwrap();
}

fn pushes_with_ids_then_resume_after_reconnect(d: DriverKind) {
    let h = start_with_history(d);
    let addr = h.local_addr();
    // One channel per owner shard (and a ':' in a name), whichever shard the stream lands on.
    let a = channel_owned_by("feed:a", 0, 2);
    let b = channel_owned_by("feed:b", 1, 2);
    let (status, head, s) = open(addr, &format!("/sse?channels={a},{b}"), &[]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    let mut s = s.unwrap();
    let mut epochs = std::collections::HashMap::new();
    for _ in 0..2 {
        let (e, v) = s.json();
        assert_eq!(e.event.as_deref(), Some("reply"), "{e:?}");
        assert_eq!(v["ok"]["offset"], 0, "{v}");
        let ch = v["ok"]["channel"].as_str().unwrap().to_string();
        epochs.insert(ch, v["ok"]["epoch"].as_str().unwrap().to_string());
    }
    // A WebSocket subscriber on the same channel: the stream carries the same JSON.
    let mut w = ws(addr, "/ws");
    subscribe(&mut w, 1, &a);
    for n in 1..=3 {
        publish(&h, &a, n);
    }
    publish(&h, &b, 1);
    let mut seen_a = 0;
    for _ in 0..4 {
        let (e, v) = s.json();
        assert_eq!(e.event, None, "pushes are default 'message' events: {e:?}");
        let ch = v["channel"].as_str().unwrap();
        let id = format!("{ch}:{}:{}", epochs[ch], v["offset"]);
        assert_eq!(e.id.as_deref(), Some(id.as_str()));
        if ch == a {
            seen_a += 1;
            assert_eq!(v["offset"], seen_a, "in order, no gap");
            assert_eq!(recv_json(&mut w), v, "same push as the WebSocket's");
        }
    }
    assert_eq!(seen_a, 3);
    drop(s);
    for n in 4..=6 {
        publish(&h, &a, n);
    }
    // Reconnect as EventSource does, with the id of the last event it saw.
    let last = format!("{a}:{}:3", epochs[&a]);
    let (status, _, s) = open(
        addr,
        &format!("/sse?channels={a}"),
        &[("Last-Event-ID", &last)],
    );
    assert_eq!(status, 200);
    let mut s = s.unwrap();
    let (e, v) = s.json();
    assert_eq!(e.event.as_deref(), Some("reply"));
    assert_eq!(v["ok"]["recovered"], true, "{v}");
    for n in 4..=6 {
        let (e, v) = s.json();
        assert_eq!(v["offset"], n, "missed push {n} replayed in order");
        assert_eq!(v["data"]["n"], n);
        assert_eq!(e.id.unwrap(), format!("{a}:{}:{n}", epochs[&a]));
    }
    // A pretty-printed publication: line breaks split the data, and rejoin to the same JSON.
    let body = format!("{{\"channel\":\"{a}\",\"data\":{{\n  \"x\": [1,\r\n 2]\n}}}}");
    let (st, resp) = http(addr, "POST", "/api/publish", &[], body.as_bytes());
    assert_eq!(st, 200, "{resp}");
    let (e, v) = s.json();
    assert!(e.data.lines().count() >= 4, "{e:?}");
    assert_eq!(v["offset"], 7);
    assert_eq!(v["data"]["x"][1], 2);
    h.shutdown();
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"sse-secret"),
    )
    .unwrap()
}

fn refusals_are_http_statuses(d: DriverKind) {
    let mut cfg = config(d);
    cfg.auth.hmac_secret = Some("sse-secret".into());
    cfg.limits.conns_max = 2;
    let h = start(cfg);
    let addr = h.local_addr();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let news = hs256(serde_json::json!({"sub":"u1","exp":exp,"subscribe":["news*"]}));
    let expired = hs256(serde_json::json!({"sub":"u1","exp":exp - 1200}));
    let bearer = format!("Bearer {news}");
    for (path, headers, want) in [
        ("/sse?channels=news".to_string(), vec![], 401),
        (format!("/sse?channels=news&token={expired}"), vec![], 401),
        ("/sse?channels=news&token=junk".to_string(), vec![], 401),
        (format!("/sse?token={news}"), vec![], 400),
        (
            format!("/sse?channels=news,bad%20name&token={news}"),
            vec![],
            400,
        ),
        (
            format!("/sse?channels=news,secret&token={news}"),
            vec![],
            403,
        ),
        (
            "/sse?channels=news".to_string(),
            vec![("Authorization", bearer.as_str())],
            200,
        ),
    ] {
        let (status, head, _) = open(addr, &path, &headers);
        assert_eq!(status, want, "{path}: {head}");
    }
    let (status, _) = http(addr, "POST", "/sse?channels=news", &[], b"");
    assert_eq!(status, 405);
    // Two streams fill conns_max; the third is refused with 503 and Retry-After.
    let (_, _, first) = open(addr, &format!("/sse?channels=news&token={news}"), &[]);
    let (_, _, second) = open(addr, &format!("/sse?channels=news.b&token={news}"), &[]);
    let (mut first, _second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.json().0.event.as_deref(), Some("reply"));
    let (status, head, _) = open(addr, &format!("/sse?channels=news&token={news}"), &[]);
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("Retry-After"), "{head}");
    h.shutdown();
}

fn heartbeats_metrics_and_drain(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.ping_interval_ms = 200;
    cfg.limits.pong_timeout_ms = 200;
    cfg.limits.reconnect_spread_ms = 5000;
    let h = start(cfg);
    let addr = h.local_addr();
    let (_, _, s) = open(addr, "/sse?channels=beat", &[]);
    let mut s = s.unwrap();
    assert_eq!(s.json().0.event.as_deref(), Some("reply"));
    // Bytes from the client are ignored, and no pong is ever expected of it: after
    // several ping intervals the stream is still open and gets the next push.
    s.r.get_mut().write_all(b"junk that is no frame").unwrap();
    std::thread::sleep(Duration::from_millis(900));
    publish(&h, "beat", 1);
    let (e, v) = s.json();
    assert!(e.comments >= 2, "heartbeat comments while idle: {e:?}");
    assert_eq!(v["offset"], 1);
    let (_, m) = http(addr, "GET", "/metrics", &[], b"");
    let streams: u64 = m
        .lines()
        .filter_map(|l| l.strip_prefix("shardcast_sse_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(streams, 1, "{m}");
    let drainer = std::thread::spawn(move || h.drain(Duration::from_millis(300)));
    let e = loop {
        let e = s.next().expect("the close event before the end");
        if e.event.as_deref() == Some("close") {
            break e;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(v["code"], 4001, "{e:?}");
    let ms: u64 = v["reason"]
        .as_str()
        .unwrap()
        .strip_prefix("reconnect_after_ms=")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        e.retry,
        Some(ms),
        "retry: tells EventSource how long to wait"
    );
    assert!(s.next().is_none(), "the stream ends after the close event");
    drainer.join().unwrap();
}

fn a_stream_that_does_not_read_is_closed_alone(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.queue_bytes_max = 32 * 1024;
    cfg.limits.message_bytes_max = 16 * 1024;
    cfg.io.send_buffer_bytes = 16 * 1024;
    let h = start(cfg);
    let addr = h.local_addr();
    let (_, _, stalled) = open(addr, "/sse?channels=flood", &[]);
    let _stalled = stalled.unwrap(); // never read again
    let (_, _, reader) = open(addr, "/sse?channels=flood", &[]);
    let mut reader = reader.unwrap();
    assert_eq!(reader.json().0.event.as_deref(), Some("reply"));
    let pad = "x".repeat(4000);
    // The reader reports each offset; the publisher stays at most 4 pushes (16 KB) ahead
    // of it, so only the stalled stream can fall behind, however loaded the machine is.
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let mut offsets = Vec::new();
        while offsets.len() < 200 {
            let (_, v) = reader.json();
            if let Some(o) = v["offset"].as_u64() {
                offsets.push(o);
                let _ = tx.send(o);
            }
        }
        offsets
    });
    let mut read = 0;
    for k in 1..=200u64 {
        while read + 4 < k {
            read = rx.recv_timeout(TIMEOUT).expect("the reader keeps up");
        }
        h.publish(
            "flood",
            format!("{{\"pad\":\"{pad}\"}}"),
            Duration::from_secs(5),
        )
        .unwrap();
    }
    let offsets = r.join().unwrap();
    assert_eq!(
        offsets,
        (1..=200).collect::<Vec<_>>(),
        "the reader missed nothing"
    );
    eventually("the stalled stream is closed as a slow consumer", || {
        h.stats().slow_consumer_closes == 1
    });
    h.shutdown();
}

/// `Last-Event-ID` at the start of a 1,000 × 4 KiB history: the whole of it is
/// replayed over the stream (4 MB, 16 times the outbound queue), in order.
fn a_whole_history_resumes_over_sse(d: DriverKind) {
    let mut cfg = config(d);
    let history = Namespace {
        history_size: 1000,
        ..Namespace::default()
    };
    cfg.namespaces.insert(String::new(), history);
    let h = start(cfg);
    let ch = channel_owned_by("long", 1, 2);
    let pad = "x".repeat(4096);
    let mut epoch = String::new();
    for n in 1..=1000 {
        let p = h
            .publish(
                &ch,
                format!("{{\"n\":{n},\"pad\":\"{pad}\"}}"),
                Duration::from_secs(5),
            )
            .unwrap();
        epoch = p.epoch.to_string();
    }
    let last = format!("{ch}:{epoch}:0");
    let (status, head, s) = open(
        h.local_addr(),
        &format!("/sse?channels={ch}"),
        &[("Last-Event-ID", &last)],
    );
    assert_eq!(status, 200, "{head}");
    let mut s = s.unwrap();
    let (_, v) = s.json();
    assert_eq!(v["ok"]["recovered"], true, "{v}");
    for n in 1..=1000u64 {
        let (e, v) = s.json();
        assert_eq!(v["offset"], n, "in order, no gap");
        assert_eq!(v["data"]["pad"].as_str().unwrap().len(), 4096);
        assert_eq!(e.id.unwrap(), format!("{ch}:{epoch}:{n}"));
    }
    assert_eq!(h.stats().slow_consumer_closes, 0);
    h.shutdown();
}

both_drivers!(
    a_whole_history_resumes_over_sse,
    pushes_with_ids_then_resume_after_reconnect,
    refusals_are_http_statuses,
    heartbeats_metrics_and_drain,
    a_stream_that_does_not_read_is_closed_alone,
);
