//! The router's overflow is bounded: with tiny inboxes and overflows, a burst
//! of publications across shards is partly refused (error 111, HTTP 503), and
//! every accepted one reaches every subscriber, in order, with no gap.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use shardcast::DriverKind;
use tungstenite::Message;

const BURST: usize = 1000;
const HTTP_BURST: usize = 300;
const SUBSCRIBERS: usize = 4;

/// A JSON object of about 1 KiB numbered `n`.
fn payload(n: usize) -> String {
    format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(1000))
}

/// What the owners accepted: per channel, offset → payload number.
type Accepted = BTreeMap<String, BTreeMap<u64, i64>>;

/// Read pushes until the `end` marker of every channel came; returns, per
/// channel, the (offset, payload number) pairs in arrival order.
fn read_until_end(mut c: Ws, channels: usize) -> BTreeMap<String, Vec<(u64, i64)>> {
    let mut got: BTreeMap<String, Vec<(u64, i64)>> = BTreeMap::new();
    let mut ended = 0;
    while ended < channels {
        let m = recv_json(&mut c);
        let ch = m["channel"].as_str().expect("a push").to_string();
        let n = m["data"]["n"].as_i64().expect("numbered");
        got.entry(ch)
            .or_default()
            .push((m["offset"].as_u64().unwrap(), n));
        if n < 0 {
            ended += 1;
        }
    }
    got
}

/// `BURST` publishes in one write, alternating between `channels`; returns
/// the refused count.
fn ws_burst(p: &mut Ws, channels: &[String], acc: &mut Accepted) -> usize {
    for i in 0..BURST {
        let ch = &channels[i % 2];
        let cmd = format!(
            r#"{{"id":{i},"op":"publish","channel":"{ch}","data":{}}}"#,
            payload(i)
        );
        p.write(Message::text(cmd)).unwrap();
    }
    p.flush().unwrap();
    let mut refused = 0;
    for _ in 0..BURST {
        let r = recv_json(p);
        let i = r["id"].as_u64().unwrap() as usize;
        match r["ok"]["offset"].as_u64() {
            Some(offset) => {
                let ch = channels[i % 2].clone();
                acc.entry(ch).or_default().insert(offset, i as i64);
            }
            None => {
                assert_eq!(r["error"]["code"], 111, "{r}");
                assert_eq!(r["error"]["temporary"], true, "{r}");
                refused += 1;
            }
        }
    }
    refused
}

/// One pipelined write of `HTTP_BURST` publishes; returns the refused count.
fn http_burst(addr: std::net::SocketAddr, channels: &[String], acc: &mut Accepted) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reqs = Vec::new();
    for i in 0..HTTP_BURST {
        let ch = &channels[i % 2];
        let n = BURST + i;
        let body = format!(r#"{{"channel":"{ch}","data":{}}}"#, payload(n));
        reqs.extend_from_slice(
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    s.write_all(&reqs).unwrap();
    let mut buf = Vec::new();
    let mut refused = 0;
    for i in 0..HTTP_BURST {
        let (status, head, body) = read_response(&mut s, &mut buf);
        if status == 503 {
            assert!(head.contains("Retry-After: 1"), "{head}");
            let e: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(e["error"]["code"], 111, "{body}");
            refused += 1;
            continue;
        }
        assert_eq!(status, 200, "{head}{body}");
        let r: serde_json::Value = serde_json::from_str(&body).unwrap();
        let offset = r["offset"].as_u64().unwrap();
        let ch = channels[i % 2].clone();
        acc.entry(ch)
            .or_default()
            .insert(offset, (BURST + i) as i64);
    }
    refused
}

/// The next HTTP response on `s`: (status, head, body).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, String) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                buf.drain(..end + 4 + len);
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, head, body);
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).expect("response");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Publish `n` on `ch` until it is accepted (111 says: retry); returns its
/// offset and how many times it was refused.
fn publish_until_accepted(p: &mut Ws, id: u64, ch: &str, n: i64) -> (u64, usize) {
    let deadline = Instant::now() + TIMEOUT;
    let mut refused = 0;
    loop {
        let cmd = format!(r#"{{"id":{id},"op":"publish","channel":"{ch}","data":{{"n":{n}}}}}"#);
        send(p, &cmd);
        let r = recv_json(p);
        if let Some(offset) = r["ok"]["offset"].as_u64() {
            return (offset, refused);
        }
        assert_eq!(r["error"]["code"], 111, "{r}");
        refused += 1;
        assert!(Instant::now() < deadline, "never accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn a_full_overflow_refuses_publications_and_loses_none(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.inbox_msgs_max = 4;
    cfg.limits.router_overflow_msgs_max = 8;
    cfg.limits.commands_per_sec = 100_000;
    cfg.limits.commands_burst = 30_000;
    // Subscribers read in their own threads; a descheduled one must not be
    // mistaken for a slow consumer on this shared host.
    cfg.limits.queue_bytes_max = 64 * 1024 * 1024;
    cfg.limits.queue_frames_max = 100_000;
    let h = start(cfg);
    let addr = h.local_addr();
    // One channel owned by each shard: wherever a client lands, half of its
    // publications and deliveries cross to the other shard.
    let channels = [channel_owned_by("ra", 0, 2), channel_owned_by("rb", 1, 2)];
    let subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let mut c = ws(addr, "/ws");
            for (j, ch) in channels.iter().enumerate() {
                subscribe(&mut c, (i * 10 + j) as u64, ch);
            }
            std::thread::spawn(move || read_until_end(c, 2))
        })
        .collect();

    let mut p = ws(addr, "/ws");
    let mut acc = Accepted::new();
    let refused = ws_burst(&mut p, &channels, &mut acc);
    assert!(refused > 0, "a burst past the bound is refused in part");
    assert!(refused < BURST, "what fits is accepted");
    let http_refused = http_burst(addr, &channels, &mut acc);
    assert!(
        http_refused > 0,
        "pipelined API publishes past the bound get 503"
    );
    let mut retried = 0;
    for (j, ch) in channels.iter().enumerate() {
        let (offset, r) = publish_until_accepted(&mut p, 5000 + j as u64, ch, -1);
        acc.entry(ch.clone()).or_default().insert(offset, -1);
        retried += r;
    }

    for (ch, offsets) in &acc {
        let want: Vec<u64> = (1..=offsets.len() as u64).collect();
        let got: Vec<u64> = offsets.keys().copied().collect();
        assert_eq!(got, want, "{ch}: accepted offsets have no gap");
    }
    for s in subs {
        let got = s.join().expect("subscriber");
        for (ch, offsets) in &acc {
            let want: Vec<(u64, i64)> = offsets.iter().map(|(o, n)| (*o, *n)).collect();
            assert_eq!(got[ch], want, "{ch}: every accepted one, in order");
        }
    }
    let st = h.stats();
    let counted = st.router_refused_publish + st.router_refused_fanout;
    assert_eq!(counted as usize, refused + http_refused + retried);
    assert_eq!(st.router_refused_request + st.router_refused_event, 0);
    let (status, metrics) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(metrics.contains("shardcast_router_refused_total{shard=\"0\",kind=\"publish\"}"));
    // Still up: a new subscriber gets the next publication.
    let mut late = ws(addr, "/ws");
    subscribe(&mut late, 1, &channels[1]);
    let (offset, _) = publish_until_accepted(&mut p, 6000, &channels[1], 7);
    let m = recv_json(&mut late);
    assert_eq!(
        (m["offset"].as_u64(), m["data"]["n"].as_i64()),
        (Some(offset), Some(7))
    );
    h.shutdown();
}

both_drivers!(a_full_overflow_refuses_publications_and_loses_none);
