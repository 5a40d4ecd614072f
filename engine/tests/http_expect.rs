//! `Expect: 100-continue` on the HTTP API: the client hears `100 Continue` at
//! once instead of waiting (curl waits a second) before sending its body.

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

both_drivers!(publish_with_expect_100_continue);
