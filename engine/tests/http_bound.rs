//! Memory bounds of the HTTP side: a keep-alive client that pipelines requests
//! and does not read its responses holds at most `limits.http_queue_bytes_max`
//! of them (its further requests wait: backpressure, not loss), and is closed
//! when it reads nothing for `limits.http_write_timeout_ms`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use shardcast::DriverKind;

/// A client socket with a small receive window, so unread responses pile up
/// in the engine rather than in the kernel.
fn stalled_client(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Another client is served normally: `/health`, and a WebSocket subscription
/// that receives a publication.
fn others_are_served(h: &shardcast::Handle, channel: &str) {
    let addr = h.local_addr();
    assert_eq!(http(addr, "GET", "/health", &[], b"").0, 200);
    let mut c = ws(addr, "/ws");
    subscribe(&mut c, 1, channel);
    h.publish(channel, "1", Duration::from_secs(5)).unwrap();
    assert_eq!(recv_json(&mut c)["data"], 1);
}

/// The issue's reproduction: 100,000 pipelined `GET /metrics` (3.4 MB sent)
/// queued about 550 MB of responses. Now the engine holds at most the bound
/// plus one response, and drops the client once its unhandled requests fill
/// the request buffer too.
fn pipelining_client_that_never_reads_is_bounded(d: DriverKind) {
    let h = start(config(d));
    let addr = h.local_addr();
    let bound = shardcast::Config::default().limits.http_queue_bytes_max as u64;
    let mut s = stalled_client(addr);
    let writer = std::thread::spawn(move || {
        let reqs = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100_000);
        // The engine closes the connection part-way: a write error is expected.
        let _ = s.write_all(&reqs);
        s
    });
    let mut peak = 0;
    while !writer.is_finished() {
        peak = peak.max(h.stats().queued_bytes);
        std::thread::sleep(Duration::from_millis(1));
    }
    let _s = writer.join().unwrap();
    // Left alone, the engine answers all 100,000 well within this time.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        peak = peak.max(h.stats().queued_bytes);
        std::thread::sleep(Duration::from_millis(1));
    }
    // The bound, one /metrics answer past it, and slack for the other clients.
    assert!(
        peak <= bound + 64 * 1024,
        "queued {peak} bytes for one client (bound {bound})"
    );
    eventually("the client that never reads is dropped", || {
        h.stats().http_slow_reader_closes == 1
    });
    assert!(h.stats().http_backpressured >= 1);
    others_are_served(&h, "still-up");
    eventually("nothing left queued", || h.stats().queued_bytes == 0);
    h.shutdown();
}

/// One HTTP/1.1 response off the front of `buf`: (status, body, bytes used).
fn parse_response(buf: &[u8]) -> Option<(u16, String, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let body = buf.get(end..end + len)?;
    Some((
        status,
        String::from_utf8_lossy(body).into_owned(),
        end + len,
    ))
}

/// Requests held back by the bound are answered, all of them and in order,
/// once the client reads; meanwhile other clients are served.
fn backpressured_requests_are_answered_in_order_once_read(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.http_queue_bytes_max = 16 * 1024;
    let bound = cfg.limits.http_queue_bytes_max as u64;
    let h = start(cfg);
    let addr = h.local_addr();
    let mut s = stalled_client(addr);
    const N: usize = 5_000;
    // Publishes (answered through the owner shards, with their offsets), health
    // checks and metrics (large answers), interleaved.
    let mut reqs = Vec::new();
    for i in 0..N {
        match i % 4 {
            0 | 2 => {
                let body = format!(r#"{{"channel":"ord","data":{i}}}"#);
                reqs.extend(
                    format!(
                        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .bytes(),
                );
            }
            1 => reqs.extend(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            _ => reqs.extend(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        }
    }
    s.write_all(&reqs).unwrap();
    // Left alone, the engine answers all 5,000 well within this time.
    std::thread::sleep(Duration::from_millis(500));
    let queued = h.stats().queued_bytes;
    assert!(
        queued <= bound + 16 * 1024,
        "queued {queued} bytes (bound {bound})"
    );
    assert!(h.stats().http_backpressured >= 1);
    others_are_served(&h, "meanwhile");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = 0;
    for i in 0..N {
        let (status, body) = loop {
            if let Some((status, body, used)) = parse_response(&buf) {
                buf.drain(..used);
                break (status, body);
            }
            let n = s.read(&mut chunk).expect("answers arrive");
            assert!(n > 0, "closed after {i} answers");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(status, 200, "answer {i}: {body}");
        match i % 4 {
            0 | 2 => {
                offset += 1;
                let r: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(r["offset"], offset, "answer {i} in request order: {body}");
            }
            1 => assert_eq!(body, "ok", "answer {i}"),
            _ => assert!(body.ends_with("# EOF\n"), "answer {i}: {body}"),
        }
    }
    assert!(buf.is_empty());
    assert_eq!(h.stats().http_slow_reader_closes, 0);
    // Still a working keep-alive connection.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(parse_response(&rest).map(|r| r.1), Some("ok".into()));
    h.shutdown();
}

/// A backpressured client that reads nothing is closed after `http_write_timeout_ms`.
fn client_that_never_reads_is_closed_after_the_write_timeout(d: DriverKind) {
    let mut cfg = config(d);
    cfg.limits.http_queue_bytes_max = 16 * 1024;
    cfg.limits.http_write_timeout_ms = 300;
    let h = start(cfg);
    let addr = h.local_addr();
    let mut s = stalled_client(addr);
    // Far more answers than the bound and the socket buffers hold, and few
    // enough requests to fit the request buffer (so only the timeout can act).
    let t0 = Instant::now();
    s.write_all(&b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2_000))
        .unwrap();
    eventually("the client is backpressured", || {
        h.stats().http_backpressured >= 1
    });
    eventually("the client is closed", || {
        h.stats().http_slow_reader_closes == 1
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "not before the timeout: {:?}",
        t0.elapsed()
    );
    eventually("its memory is given back", || {
        let st = h.stats();
        st.queued_bytes == 0 && st.conns_open == 0
    });
    others_are_served(&h, "after");
    h.shutdown();
}

both_drivers!(
    pipelining_client_that_never_reads_is_bounded,
    backpressured_requests_are_answered_in_order_once_read,
    client_that_never_reads_is_closed_after_the_write_timeout,
);
