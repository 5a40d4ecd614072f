//! Gauges that operators alert on must add up: what is queued is counted when it
//! is queued and uncounted when it is written, control frames included.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use shardcast::DriverKind;
use shardcast_proto::frame::OpCode;
use tungstenite::Message as WsMessage;

fn pongs_waiting_for_a_reader_count_as_queued_bytes(d: DriverKind) {
    let h = start(config(d));
    let mut c = Raw::connect(h.local_addr());
    // Ping without reading: 1,500 pongs (150 KiB) fit the control budget.
    let mut batch = Vec::new();
    for _ in 0..1500 {
        shardcast_proto::frame::encode_frame(
            &mut batch,
            OpCode::Ping,
            true,
            &[7u8; 100],
            Some([1, 2, 3, 4]),
        );
    }
    c.s.write_all(&batch).unwrap();
    eventually("pongs the client has not read are counted", || {
        h.stats().queued_bytes > 0
    });
    // Once it reads them all, the gauge is back at zero (not below it).
    c.pongs(1500);
    eventually("written pongs are uncounted", || {
        h.stats().queued_bytes == 0
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.stats().queued_bytes, 0);
    h.shutdown();
}

/// A keep-alive client with a small receive window that pipelines `/metrics`
/// requests and never reads: its answers stay queued in the engine, a nonzero
/// baseline that nothing else moves. A gauge at zero hides a frame subtracted
/// without being added (the subtraction stopped at zero); this one does not.
fn stalled_http_client(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    let reqs = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    s.write_all(&reqs).unwrap();
    s
}

/// The gauge once it has stopped moving for 300 ms.
fn settled_queued_bytes(h: &shardcast::Handle) -> u64 {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = (h.stats().queued_bytes, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = h.stats().queued_bytes;
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(300) {
            return now;
        }
        assert!(Instant::now() < deadline, "queued bytes never settled");
    }
}

/// Read an event stream until `n` heartbeat comments arrived.
fn sse_heartbeats(addr: SocketAddr, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /sse?channels=beat HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while got.windows(3).filter(|w| w == b":\n\n").count() < n {
        let k = s.read(&mut chunk).expect("heartbeats arrive");
        assert!(k > 0, "stream ended before {n} heartbeats");
        got.extend_from_slice(&chunk[..k]);
    }
    s
}

fn heartbeats_leave_queued_bytes_where_they_were(d: DriverKind) {
    let mut cfg = config(d);
    // Gauges are per shard: one shard holds the baseline under every client.
    cfg.shards = 1;
    cfg.limits.ping_interval_ms = 100;
    cfg.limits.pong_timeout_ms = 5_000;
    cfg.limits.http_write_timeout_ms = 60_000;
    // Small kernel buffers, so the stalled client's answers wait in the engine.
    cfg.io.send_buffer_bytes = 4096;
    let h = start(cfg);
    let addr = h.local_addr();
    let _stalled = stalled_http_client(addr);
    let before = settled_queued_bytes(&h);
    assert!(before > 0, "the stalled client's answers are queued");

    // A heartbeat round: pings that the client answers (tungstenite does),
    // and comments on an event stream.
    let mut w = ws(addr, "/ws");
    let mut pings = 0;
    while pings < 3 {
        if let WsMessage::Ping(_) = w.read().expect("pings arrive") {
            pings += 1;
        }
    }
    let stream = sse_heartbeats(addr, 3);
    drop(w);
    drop(stream);
    eventually("both clients are gone", || h.stats().ws_open == 0);
    eventually("the gauge is back where it was", || {
        h.stats().queued_bytes == before
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.stats().queued_bytes, before);
    h.shutdown();
}

both_drivers!(
    pongs_waiting_for_a_reader_count_as_queued_bytes,
    heartbeats_leave_queued_bytes_where_they_were
);
