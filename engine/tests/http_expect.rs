//! `Expect: 100-continue` on the HTTP API: the client hears `100 Continue` at
//! once instead of waiting (curl waits a second) before sending its body, or
//! the final status at once when the request is refused before its body.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use shardcast::DriverKind;

fn publish_with_expect_100_continue(d: DriverKind) {
    let h = start(config(d));
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = br#"{"channel":"news","data":{"text":"hello"}}"#;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let t = Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).expect("100 Continue before the body");
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    s.write_all(body).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    got.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&got);
    let final_part = &text["HTTP/1.1 100 Continue\r\n\r\n".len()..];
    assert!(final_part.starts_with("HTTP/1.1 200"), "{text}");
    assert!(final_part.contains("\"offset\":1"), "{text}");
    h.shutdown();
}

/// Send a head announcing `body_len` bytes with `Expect: 100-continue`, and
/// nothing more: the whole answer (the engine closes after it), and how long
/// it took to come.
fn answer_without_body(
    h: &shardcast::Handle,
    extra_headers: &str,
    body_len: usize,
) -> (String, Duration) {
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\n{extra_headers}Content-Length: {body_len}\r\nExpect: 100-continue\r\n\r\n"
    );
    let t = Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the final status, then the close, without the body");
    (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
}

fn refused_before_the_body_gets_the_final_status_at_once(d: DriverKind) {
    let mut cfg = config(d);
    cfg.api_key = Some("k".into());
    let h = start(cfg);
    // No API key: 401, no 100 Continue, the body never asked for.
    let (text, took) = answer_without_body(&h, "", 42);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("\"code\":101"), "{text}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    // A body past http_body_bytes_max: 413 from the head alone.
    let too_big = shardcast::Config::default().limits.http_body_bytes_max + 1;
    let (text, took) = answer_without_body(&h, "Authorization: Bearer k\r\n", too_big);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!(h.stats().publications, 0);
    h.shutdown();
}

both_drivers!(
    publish_with_expect_100_continue,
    refused_before_the_body_gets_the_final_status_at_once
);
