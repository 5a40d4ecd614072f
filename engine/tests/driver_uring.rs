//! The io_uring driver, driven directly with std TcpStream clients on loopback.
//!
//! io_uring works on every machine this project builds and tests on, so a ring
//! that cannot be set up fails these tests rather than skipping them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast::driver::uring::UringDriver;
use shardcast::driver::{Completion, ConnKey, Driver, DriverConfig, Sock, Waker};
use socket2::{Domain, Protocol, Socket, Type};

/// Every wait in these tests gives up (and fails) after this long.
const DEADLINE: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_millis(20);

fn listener() -> (Socket, SocketAddr) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_tcp_nodelay(true).unwrap();
    s.set_nonblocking(true).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(1024).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (s, addr)
}

fn config(conns_max: u32, recv_bufs: u16, recv_buf_bytes: u32) -> DriverConfig {
    DriverConfig {
        conns_max,
        recv_bufs,
        recv_buf_bytes,
        // These tests count whole buffers; `reads_share_a_buffer_when_incremental` covers the other mode.
        recv_incremental: false,
        ring_entries: 256,
        cq_entries: 0,
    }
}

/// A driver on a fresh listener. Field order matters: the driver polls the
/// waker's eventfd, so it is dropped first.
struct Harness {
    d: UringDriver,
    waker: Waker,
    addr: SocketAddr,
    until: Instant,
}

impl Harness {
    fn new(cfg: DriverConfig) -> Harness {
        let (l, addr) = listener();
        let waker = Waker::new().unwrap();
        let d = match UringDriver::new(l, waker.fd(), &cfg) {
            Ok(d) => d,
            Err(e) => panic!("io_uring driver setup failed on a machine that supports it: {e}"),
        };
        Harness {
            d,
            waker,
            addr,
            until: Instant::now() + DEADLINE,
        }
    }

    /// One poll; fails the test once the deadline has passed.
    fn poll(&mut self, what: &str) -> Vec<Completion> {
        assert!(Instant::now() < self.until, "timed out waiting for {what}");
        let mut out = Vec::new();
        self.d.poll(Some(TICK), &mut out).unwrap();
        out
    }

    fn connect(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c
    }

    /// Wait for `n` accepts (nothing else may happen meanwhile).
    fn accept(&mut self, n: usize) -> Vec<Sock> {
        let mut socks = Vec::new();
        while socks.len() < n {
            for c in self.poll("accepts") {
                match c {
                    Completion::Accepted { sock } => socks.push(sock),
                    other => panic!("unexpected {other:?} while accepting"),
                }
            }
        }
        socks
    }

    /// Collect `len` received bytes for `conn`, releasing each buffer.
    fn recv_exact(&mut self, conn: ConnKey, len: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < len {
            for c in self.poll("data") {
                match c {
                    Completion::Recv { conn: k, buf, len } => {
                        assert_eq!(k, conn);
                        got.extend_from_slice(self.d.recv_buf(buf, len));
                        self.d.release(buf);
                    }
                    other => panic!("unexpected {other:?} while receiving"),
                }
            }
        }
        got
    }

    /// Wait for the `Sent` of the one send in flight.
    fn sent(&mut self, conn: ConnKey) -> Result<usize, i32> {
        loop {
            match self.poll("Sent").as_slice() {
                [] => {}
                [Completion::Sent { conn: k, result }] if *k == conn => return *result,
                other => panic!("unexpected {other:?} while sending"),
            }
        }
    }

    /// Close every socket, each under the key of its position (as the tests start them).
    fn close_all(&mut self, socks: Vec<Sock>) {
        for (key, sock) in socks.into_iter().enumerate() {
            self.close(sock, key as ConnKey);
        }
    }

    /// Close and return every completion up to and including `Closed`.
    fn close(&mut self, sock: Sock, conn: ConnKey) -> Vec<Completion> {
        self.d.close(sock, conn);
        let mut seen = Vec::new();
        loop {
            for c in self.poll("Closed") {
                let last = matches!(c, Completion::Closed { conn: k } if k == conn);
                seen.push(c);
                if last {
                    return seen;
                }
            }
        }
    }
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((seed * 31 + i) % 251) as u8).collect()
}

#[test]
fn accepts_several_connections() {
    let mut h = Harness::new(config(64, 16, 4096));
    let clients: Vec<TcpStream> = (0..6).map(|_| h.connect()).collect();
    let socks = h.accept(clients.len());
    assert_eq!(h.d.open_sockets(), 6);
    let mut distinct = socks.clone();
    distinct.sort_by_key(|s| s.0);
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        6,
        "each connection gets its own slot: {socks:?}"
    );
    // Closing without ever receiving must work too.
    h.close_all(socks);
    assert_eq!(h.d.open_sockets(), 0);
    // The peers see the close.
    for mut c in clients {
        let mut b = [0u8; 1];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    }
}

#[test]
fn receives_bytes_in_order() {
    let mut h = Harness::new(config(16, 16, 256));
    let mut c = h.connect();
    let sock = h.accept(1)[0];
    h.d.start_recv(sock, 7);
    let msg = pattern(1, 5000);
    c.write_all(&msg).unwrap();
    assert_eq!(h.recv_exact(7, msg.len()), msg);
    // Buffers can be written in place (frames are unmasked there).
    c.write_all(b"abc").unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        for comp in h.poll("data") {
            let Completion::Recv { buf, len, .. } = comp else {
                panic!("unexpected {comp:?}")
            };
            let slice = h.d.recv_buf(buf, len);
            slice.make_ascii_uppercase();
            got.extend_from_slice(slice);
            h.d.release(buf);
        }
    }
    assert_eq!(got, b"ABC");
    h.close(sock, 7);
}

#[test]
fn vectored_send_arrives_in_order() {
    let mut h = Harness::new(config(16, 16, 4096));
    let mut c = h.connect();
    let sock = h.accept(1)[0];
    let parts = [
        Bytes::from_static(b"first,"),
        Bytes::new(),
        Bytes::from_static(b"second,"),
        Bytes::from(pattern(3, 3000)),
        Bytes::from_static(b"last"),
    ];
    let total: usize = parts.iter().map(Bytes::len).sum();
    h.d.send(sock, 1, &parts);
    assert_eq!(h.sent(1), Ok(total));
    let mut got = vec![0u8; total];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, parts.concat());
    h.close(sock, 1);
}

#[test]
fn large_send_reports_short_writes() {
    let mut h = Harness::new(config(16, 16, 4096));
    let c = h.connect();
    let sock = h.accept(1)[0];
    let data = Bytes::from(pattern(5, 4 << 20));
    let expect = data.clone();
    // A slow reader: the socket buffers fill, so writes come back short.
    let reader = std::thread::spawn(move || {
        let mut c = c;
        let mut got = Vec::with_capacity(expect.len());
        let mut chunk = vec![0u8; 64 << 10];
        while got.len() < expect.len() {
            std::thread::sleep(Duration::from_millis(2));
            let n = c.read(&mut chunk).unwrap();
            assert!(n > 0, "early EOF");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == expect[..], "stream corrupted");
    });
    let (mut off, mut short) = (0, 0);
    while off < data.len() {
        h.d.send(sock, 2, &[data.slice(off..)]);
        let n = h.sent(2).expect("send failed");
        assert!(n > 0 && off + n <= data.len());
        if off + n < data.len() {
            short += 1;
        }
        off += n;
    }
    reader.join().unwrap();
    assert!(
        short > 0,
        "4 MiB to a slow reader should take more than one write"
    );
    h.close(sock, 2);
}

#[test]
fn client_eof_reports_recv_closed_and_half_close_works() {
    let mut h = Harness::new(config(16, 16, 4096));
    let mut c = h.connect();
    let sock = h.accept(1)[0];
    h.d.start_recv(sock, 3);

    // Our FIN: the client reads EOF but can still write to us. Like every
    // submission, it reaches the kernel at the next poll.
    h.d.shutdown_write(sock, 3);
    assert!(h.poll("shutdown").is_empty());
    let mut b = [0u8; 8];
    assert_eq!(c.read(&mut b).unwrap(), 0);
    c.write_all(b"after").unwrap();
    assert_eq!(h.recv_exact(3, 5), b"after");

    // The client's FIN ends our read side.
    c.shutdown(Shutdown::Write).unwrap();
    let mut closed = None;
    while closed.is_none() {
        for comp in h.poll("RecvClosed") {
            match comp {
                Completion::RecvClosed { conn: 3, err } => closed = Some(err),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(closed, Some(None), "EOF is reported without an errno");
    let tail = h.close(sock, 3);
    assert!(
        matches!(tail[..], [Completion::Closed { conn: 3 }]),
        "{tail:?}"
    );
}

#[test]
fn closed_is_the_last_completion_for_its_key() {
    let mut h = Harness::new(config(16, 16, 4096));
    let mut c = h.connect();
    let sock = h.accept(1)[0];
    h.d.start_recv(sock, 4);
    // Fill the socket buffers (the client never reads) so a send stays in flight.
    let big = Bytes::from(pattern(9, 16 << 20));
    h.d.send(sock, 4, std::slice::from_ref(&big));
    let n = h.sent(4).unwrap();
    assert!(n < big.len());
    h.d.send(sock, 4, &[big.slice(n..)]);
    // Bytes racing with the close.
    c.write_all(&pattern(2, 10_000)).unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let seen = h.close(sock, 4);
    for comp in &seen {
        match comp {
            Completion::Recv { buf, .. } => h.d.release(*buf),
            Completion::Sent { conn: 4, .. } | Completion::Closed { conn: 4 } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let sent = seen
        .iter()
        .filter(|c| matches!(c, Completion::Sent { .. }))
        .count();
    assert_eq!(
        sent, 1,
        "the send in flight is reported exactly once: {seen:?}"
    );
    // Nothing more for the key afterwards.
    let quiet_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < quiet_until {
        let more = h.poll("quiet");
        assert!(more.is_empty(), "completions after Closed: {more:?}");
    }
    assert_eq!(h.d.open_sockets(), 0);
    // The key can be reused by a new connection straight away.
    let mut c2 = h.connect();
    let sock2 = h.accept(1)[0];
    h.d.start_recv(sock2, 4);
    c2.write_all(b"again").unwrap();
    assert_eq!(h.recv_exact(4, 5), b"again");
    h.close(sock2, 4);
}

#[test]
fn waker_from_another_thread_produces_wake() {
    let mut h = Harness::new(config(16, 16, 4096));
    let waker = std::sync::Arc::new(Waker::new().unwrap());
    // This test needs the waker shared with a thread: use a second driver on it.
    let (l, _) = listener();
    let mut d = UringDriver::new(l, waker.fd(), &config(16, 16, 4096)).unwrap();
    let w = waker.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    let started = Instant::now();
    let mut out = Vec::new();
    d.poll(Some(DEADLINE), &mut out).unwrap();
    t.join().unwrap();
    assert!(matches!(out[..], [Completion::Wake]), "{out:?}");
    assert!(started.elapsed() < DEADLINE);

    // Several wakes before one poll coalesce into one Wake, and the counter is
    // drained: the next poll sleeps its full timeout.
    h.waker.wake();
    h.waker.wake();
    h.waker.wake();
    let mut out = Vec::new();
    h.d.poll(Some(Duration::from_millis(200)), &mut out)
        .unwrap();
    assert!(matches!(out[..], [Completion::Wake]), "{out:?}");
    let quiet = Instant::now();
    out.clear();
    h.d.poll(Some(Duration::from_millis(100)), &mut out)
        .unwrap();
    assert!(out.is_empty(), "{out:?}");
    assert!(quiet.elapsed() >= Duration::from_millis(90));
    // And it fires again after that.
    h.waker.wake();
    h.d.poll(Some(DEADLINE), &mut out).unwrap();
    assert!(matches!(out[..], [Completion::Wake]), "{out:?}");
    drop(d);
}

#[test]
fn buffer_exhaustion_recovers_without_losing_bytes() {
    const CLIENTS: usize = 8;
    const BYTES: usize = 3000;
    const BUFS: u16 = 4;
    let mut h = Harness::new(config(16, BUFS, 64));
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| h.connect()).collect();
    let socks = h.accept(CLIENTS);
    for (key, &sock) in socks.iter().enumerate() {
        h.d.start_recv(sock, key as ConnKey);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&pattern(i, BYTES)).unwrap();
    }
    let mut got = vec![Vec::new(); CLIENTS];
    let mut held = Vec::new();
    let mut starved_rounds = 0;
    while got.iter().any(|g| g.len() < BYTES) {
        for comp in h.poll("data under buffer pressure") {
            let Completion::Recv { conn, buf, len } = comp else {
                panic!("unexpected {comp:?}")
            };
            got[conn as usize].extend_from_slice(h.d.recv_buf(buf, len));
            held.push(buf);
        }
        // Hold every buffer for a few polls: the ring is empty, recvs end with
        // ENOBUFS, and data must wait in the sockets until we give buffers back.
        if held.len() == usize::from(BUFS) {
            starved_rounds += 1;
            for _ in 0..3 {
                let none = h.poll("nothing while starved");
                assert!(none.is_empty(), "completion without buffers: {none:?}");
            }
            for buf in held.drain(..) {
                h.d.release(buf);
            }
        }
    }
    for buf in held.drain(..) {
        h.d.release(buf);
    }
    assert!(starved_rounds > 0, "the ring never ran dry");
    for (i, g) in got.iter().enumerate() {
        assert!(
            *g == pattern(i, BYTES),
            "client {i}: bytes lost or reordered"
        );
    }
    h.close_all(socks);
}

#[test]
fn accept_recovers_after_the_slot_table_fills() {
    let mut h = Harness::new(config(1, 16, 4096));
    let slots = h.d.fixed_file_slots() as usize;
    assert!(slots < 100, "test expects a small table, got {slots}");
    let mut clients: Vec<TcpStream> = (0..slots).map(|_| h.connect()).collect();
    let socks = h.accept(slots);
    // The table is full: these are accepted by the kernel and dropped (ENFILE),
    // and the driver backs off (10, 20, 40 ms) instead of spinning. Accepts
    // only happen while the driver polls.
    let extra: Vec<TcpStream> = (0..3).map(|_| h.connect()).collect();
    let quiet_until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < quiet_until {
        let none = h.poll("quiet while full");
        assert!(none.is_empty(), "{none:?}");
    }
    for mut c in extra {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = c.read(&mut b);
        let dropped = match &r {
            Ok(n) => *n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        assert!(dropped, "over-limit client not dropped: {r:?}");
    }
    // Free two slots; new clients are accepted again after the back-off.
    for (key, sock) in socks.iter().take(2).enumerate() {
        h.close(*sock, key as ConnKey);
    }
    clients.push(h.connect());
    let again = h.accept(1);
    assert_eq!(h.d.open_sockets(), slots - 1);
    for (key, sock) in socks.into_iter().skip(2).chain(again).enumerate() {
        h.close(sock, (key + 2) as ConnKey);
    }
    assert_eq!(h.d.open_sockets(), 0);
}

/// The driver relies on Linux copying TCP_NODELAY from the listener to accepted
/// sockets (direct descriptors cannot be setsockopt'd); check that it does.
#[test]
fn tcp_nodelay_is_inherited_from_the_listener() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    Socket::from(l.try_clone().unwrap())
        .set_tcp_nodelay(true)
        .unwrap();
    let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    assert!(s.nodelay().unwrap());
}

#[test]
fn rejects_a_buffer_count_that_is_not_a_power_of_two() {
    let (l, _) = listener();
    let waker = Waker::new().unwrap();
    let err = UringDriver::new(l, waker.fd(), &config(16, 12, 4096))
        .err()
        .expect("must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// A tiny ring (8 SQEs, 32 CQEs) under many connections: the SQ fills within
/// one shard turn and must be flushed, and the CQ overflows into the kernel's
/// backlog. Nothing may be lost either way.
#[test]
fn full_sq_and_overflowing_cq_lose_nothing() {
    const CLIENTS: usize = 40;
    const BYTES: usize = 6000;
    let (l, addr) = listener();
    let waker = Waker::new().unwrap();
    let cfg = DriverConfig {
        ring_entries: 8,
        ..config(64, 64, 512)
    };
    let d = UringDriver::new(l, waker.fd(), &cfg).unwrap();
    let mut h = Harness {
        d,
        waker,
        addr,
        until: Instant::now() + DEADLINE,
    };
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| h.connect()).collect();
    let socks = h.accept(CLIENTS);
    for (key, &sock) in socks.iter().enumerate() {
        h.d.start_recv(sock, key as ConnKey);
    }
    let msg = Bytes::from(pattern(7, BYTES));
    for (key, &sock) in socks.iter().enumerate() {
        h.d.send(
            sock,
            key as ConnKey,
            &[msg.slice(..BYTES / 2), msg.slice(BYTES / 2..)],
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&pattern(i, BYTES)).unwrap();
    }
    let mut got = vec![Vec::new(); CLIENTS];
    let mut sent = vec![None; CLIENTS];
    while got.iter().any(|g| g.len() < BYTES) || sent.iter().any(Option::is_none) {
        for comp in h.poll("data and sends") {
            match comp {
                Completion::Recv { conn, buf, len } => {
                    got[conn as usize].extend_from_slice(h.d.recv_buf(buf, len));
                    h.d.release(buf);
                }
                Completion::Sent { conn, result } => {
                    assert!(
                        sent[conn as usize].replace(result).is_none(),
                        "two Sent for {conn}"
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert!(
            *g == pattern(i, BYTES),
            "client {i}: bytes lost or reordered"
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        // Loopback takes 6000 bytes in one write.
        assert_eq!(sent[i], Some(Ok(BYTES)));
        let mut back = vec![0u8; BYTES];
        c.read_exact(&mut back).unwrap();
        assert!(back == msg[..]);
    }
    h.close_all(socks);
    assert_eq!(h.d.open_sockets(), 0);
}

/// A peer that resets: the read side reports the errno, and a later send
/// fails with an errno instead of raising SIGPIPE.
#[test]
fn peer_reset_reports_errnos() {
    let mut h = Harness::new(config(16, 16, 4096));
    let c = h.connect();
    let sock = h.accept(1)[0];
    h.d.start_recv(sock, 5);
    // SO_LINGER 0: close sends RST instead of FIN.
    Socket::from(c).set_linger(Some(Duration::ZERO)).unwrap();
    let err = loop {
        match h.poll("RecvClosed").as_slice() {
            [] => {}
            [Completion::RecvClosed { conn: 5, err }] => break *err,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(err, Some(libc::ECONNRESET));
    h.d.send(sock, 5, &[Bytes::from_static(b"into the void")]);
    let result = h.sent(5);
    assert!(
        matches!(result, Err(libc::EPIPE) | Err(libc::ECONNRESET)),
        "{result:?}"
    );
    let tail = h.close(sock, 5);
    assert!(
        matches!(tail[..], [Completion::Closed { conn: 5 }]),
        "{tail:?}"
    );
}

/// Dropping the driver with a recv armed and a send stuck on a full socket
/// cancels both and returns promptly; the ring's sockets close with it.
#[test]
fn drop_with_operations_in_flight() {
    let mut h = Harness::new(config(16, 16, 4096));
    let mut c = h.connect();
    let sock = h.accept(1)[0];
    h.d.start_recv(sock, 0);
    let big = Bytes::from(pattern(4, 16 << 20));
    h.d.send(sock, 0, std::slice::from_ref(&big));
    let n = h.sent(0).unwrap();
    h.d.send(sock, 0, &[big.slice(n..)]);
    assert!(h.poll("send stays in flight").is_empty());
    let started = Instant::now();
    drop(h);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        started.elapsed()
    );
    // The client sees the connection end once it drains what was sent.
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match c.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Sends beyond what the CQ can hold wait in the driver, in order, and go in
/// as completions are reaped; a connection closed while its send waits gets
/// that send's `Sent` (ECANCELED) and its `Closed` at once, not after the sends
/// ahead of it, which here are stuck on readers that do not read.
#[test]
fn sends_beyond_the_cq_budget_wait_in_order_and_close_cancels_them() {
    const STUCK: usize = 4; // the budget of a 16-entry CQ (a quarter of it)
    const QUEUED: usize = 6;
    const BIG: usize = 8 << 20;
    let (l, addr) = listener();
    let waker = Waker::new().unwrap();
    let cfg = DriverConfig {
        ring_entries: 8,
        cq_entries: 16,
        ..config(64, 64, 512)
    };
    let d = UringDriver::new(l, waker.fd(), &cfg).unwrap();
    let mut h = Harness {
        d,
        waker,
        addr,
        until: Instant::now() + DEADLINE,
    };
    let clients: Vec<TcpStream> = (0..STUCK + QUEUED).map(|_| h.connect()).collect();
    let socks = h.accept(STUCK + QUEUED);
    let big = Bytes::from(vec![7u8; BIG]);
    // The first write fills each socket and completes short; the rest then
    // waits in the kernel for a reader.
    let mut written = [0usize; STUCK];
    for (key, &sock) in socks.iter().enumerate().take(STUCK) {
        h.d.send(sock, key as ConnKey, std::slice::from_ref(&big));
    }
    let mut first = 0;
    while first < STUCK {
        for c in h.poll("first writes") {
            match c {
                Completion::Sent {
                    conn,
                    result: Ok(n),
                } if n < BIG => {
                    written[conn as usize] = n;
                    first += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    for (key, &sock) in socks.iter().enumerate().take(STUCK) {
        h.d.send(sock, key as ConnKey, &[big.slice(written[key]..)]);
    }
    let small = Bytes::from_static(b"queued");
    for (key, &sock) in socks.iter().enumerate().skip(STUCK) {
        h.d.send(sock, key as ConnKey, std::slice::from_ref(&small));
    }
    // Nothing is read yet: the big sends fill their sockets and stay in the
    // kernel, so the small ones cannot have been submitted.
    for _ in 0..10 {
        let got = h.poll("nothing");
        assert!(
            got.iter()
                .all(|c| !matches!(c, Completion::Sent { conn, .. } if *conn as usize >= STUCK)),
            "a send past the budget completed: {got:?}"
        );
    }
    let victim = STUCK as ConnKey + 1;
    let tail = h.close(socks[victim as usize], victim);
    assert!(
        matches!(
            tail[..],
            [
                Completion::Sent {
                    conn: a,
                    result: Err(libc::ECANCELED)
                },
                Completion::Closed { conn: b }
            ] if a == victim && b == victim
        ),
        "{tail:?}"
    );
    // Readers start: the stuck sends finish, then the queued ones, in order.
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let want = if i < STUCK { BIG } else { small_len(i) };
                let mut got = vec![0u8; want];
                if want > 0 {
                    c.read_exact(&mut got).unwrap();
                }
                got
            })
        })
        .collect();
    fn small_len(i: usize) -> usize {
        if i == STUCK + 1 {
            0
        } else {
            6
        }
    }
    let mut sent: Vec<Option<Result<usize, i32>>> = vec![None; STUCK + QUEUED];
    sent[victim as usize] = Some(Err(libc::ECANCELED));
    let mut order = Vec::new();
    while sent.iter().any(Option::is_none) {
        for c in h.poll("sends") {
            match c {
                Completion::Sent {
                    conn,
                    result: Ok(n),
                } if (conn as usize) < STUCK && n < BIG => {
                    // A short write: send the rest, as the shard would.
                    h.d.send(socks[conn as usize], conn, &[big.slice(n..)]);
                    sent[conn as usize] = None;
                }
                Completion::Sent { conn, result } => {
                    assert!(
                        sent[conn as usize].replace(result).is_none(),
                        "two Sent for {conn}"
                    );
                    if conn as usize >= STUCK {
                        order.push(conn);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let expect: Vec<ConnKey> = (STUCK..STUCK + QUEUED)
        .map(|k| k as ConnKey)
        .filter(|&k| k != victim)
        .collect();
    assert_eq!(order, expect, "queued sends go in the order they were made");
    for (i, r) in readers.into_iter().enumerate() {
        let got = r.join().unwrap();
        assert_eq!(got.len(), if i < STUCK { BIG } else { small_len(i) });
    }
}

/// With incremental consumption (kernel 6.12+), small reads from many
/// connections share a buffer: 300 messages of 10 bytes arrive while every one
/// is still held, in a pool of 4 buffers that one-buffer-per-read would have
/// exhausted after 4. Each read's bytes are where its completion says, and
/// the buffers come back for the next round; large writes split over buffers
/// keep their order.
#[test]
fn reads_share_a_buffer_when_incremental() {
    const CLIENTS: usize = 300;
    let mut h = Harness::new(DriverConfig {
        recv_incremental: true,
        ..config(512, 4, 4096)
    });
    if !h.d.recv_incremental() {
        eprintln!("SKIPPED: this kernel has no incremental buffer consumption");
        return;
    }
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| h.connect()).collect();
    let socks = h.accept(CLIENTS);
    for (key, &sock) in socks.iter().enumerate() {
        h.d.start_recv(sock, key as ConnKey);
    }
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("r{round}c{i:07}").as_bytes()).unwrap();
        }
        let mut got = vec![Vec::new(); CLIENTS];
        let mut held = Vec::new();
        while got.iter().any(|g| g.len() < 10) {
            for comp in h.poll("small reads, all held") {
                let Completion::Recv { conn, buf, len } = comp else {
                    panic!("unexpected {comp:?}")
                };
                got[conn as usize].extend_from_slice(h.d.recv_buf(buf, len));
                held.push(buf);
            }
        }
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g, format!("r{round}c{i:07}").as_bytes(), "client {i}");
        }
        let ids: std::collections::HashSet<u16> = held.iter().map(|b| b.id).collect();
        assert!(ids.len() <= 4, "{} buffers for 3,000 bytes", ids.len());
        for buf in held {
            h.d.release(buf);
        }
    }
    // 6,000 bytes from each of 20 clients: reads cross buffer ends.
    for (i, c) in clients.iter_mut().take(20).enumerate() {
        c.write_all(&pattern(i, 6000)).unwrap();
    }
    let mut got = vec![Vec::new(); 20];
    while got.iter().any(|g| g.len() < 6000) {
        for comp in h.poll("large reads") {
            let Completion::Recv { conn, buf, len } = comp else {
                panic!("unexpected {comp:?}")
            };
            got[conn as usize].extend_from_slice(h.d.recv_buf(buf, len));
            h.d.release(buf);
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert!(
            *g == pattern(i, 6000),
            "client {i}: bytes lost or reordered"
        );
    }
    h.close_all(socks);
}

/// A key is never used after its `Closed` (a shard bug if it were): a send on
/// it trips a debug assertion rather than reaching whatever socket now holds
/// the slot. A new connection under the same key (`start_recv`) is fine.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "after its Closed")]
fn a_send_after_closed_is_refused() {
    let mut h = Harness::new(config(16, 16, 4096));
    let _c = h.connect();
    let sock = h.accept(1)[0];
    h.d.start_recv(sock, 3);
    h.close(sock, 3);
    h.d.send(sock, 3, &[Bytes::from_static(b"late")]);
}
