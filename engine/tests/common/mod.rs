//! Shared helpers: start an engine on loopback, connect real clients, speak raw bytes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shardcast::{Config, DriverKind, Engine, Handle};
use shardcast_proto::frame::{encode_frame, OpCode, Role};
use shardcast_proto::{Decoder, DecoderConfig, Message};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as WsMessage, WebSocket};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

thread_local! {
    /// io_uring rings per shard for the `config` of this test's thread.
    static RINGS: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
    /// Set by `both_drivers!`'s `faults` variant: run the scenario's engine
    /// with the fault injector around its driver (`io.fault_seed`).
    pub static FAULTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Set by `both_drivers!`'s `sim` variant: run the scenario's engine on
    /// the simulation's driver in real time (`io.sim_seed`).
    pub static SIM: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A scenario's fault seed: FNV-1a of its name from `basis`, never 0 (0 is "off").
pub fn seed_of(name: &str, basis: u64) -> u64 {
    name.bytes()
        .fold(basis, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
        | 1
}

/// Run `f` with engines from `config` driving `rings` io_uring rings per shard.
pub fn with_rings(rings: u32, f: impl FnOnce()) {
    RINGS.with(|r| r.set(rings));
    f();
    RINGS.with(|r| r.set(1));
}

/// Two shards on an ephemeral loopback port, unpinned (tests run in parallel).
pub fn config(driver: DriverKind) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        pin_cores: false,
        driver: Some(driver),
        ..Config::default()
    };
    c.io.recv_bufs = 64;
    c.io.ring_entries = 256;
    c.limits.conns_per_shard_max = 512;
    c.io.rings_per_shard = RINGS.with(|r| r.get());
    c.io.fault_seed = FAULTS.with(|f| f.get());
    c.io.sim_seed = SIM.with(|f| f.get());
    c
}

pub fn start(cfg: Config) -> Handle {
    Engine::start(cfg).expect("engine starts")
}

pub fn ws(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let (mut ws, resp) = tungstenite::connect(url).expect("upgrade succeeds");
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
    }
    ws
}

pub fn send(ws: &mut Ws, text: &str) {
    ws.send(WsMessage::text(text)).expect("send");
}

/// Next text message as JSON (pings/pongs skipped).
pub fn recv_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        match ws.read().expect("read") {
            WsMessage::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
            WsMessage::Binary(b) => return serde_json::from_slice(&b).expect("json"),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
            WsMessage::Close(c) => panic!("unexpected close {c:?}"),
        }
    }
}

/// Read until a close frame arrives; returns its code. Panics on timeout.
pub fn recv_close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(WsMessage::Close(Some(f))) => return f.code.into(),
            Ok(WsMessage::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                panic!("closed without a close frame")
            }
            Err(e) => panic!("error before close frame: {e}"),
        }
    }
}

pub fn subscribe(ws: &mut Ws, id: u64, channel: &str) -> serde_json::Value {
    send(
        ws,
        &format!(r#"{{"id":{id},"op":"subscribe","channel":"{channel}"}}"#),
    );
    let r = recv_json(ws);
    assert_eq!(r["id"], id, "{r}");
    assert!(r.get("ok").is_some(), "subscribe failed: {r}");
    r
}

/// A plain HTTP/1.1 request on a fresh connection; returns (status, headers+body text).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    try_http(addr, method, path, headers, body).expect("connects")
}

/// As [`http`], but None when the connection is refused (the node is gone);
/// status 0 when the connection closed before a response.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return Some((0, String::new()));
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some((status, text))
}

pub fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// A raw client for sending frames tungstenite refuses to produce.
pub struct Raw {
    pub s: TcpStream,
    dec: Decoder,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let key = shardcast_proto::handshake::client_key([7; 16]);
        let req =
            shardcast_proto::handshake::client_request(&addr.to_string(), "/ws", &key, &[], &[]);
        s.write_all(&req).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some((_, used)) =
                shardcast_proto::handshake::verify_response(&buf, &key).expect("101")
            {
                buf.drain(..used);
                break;
            }
        }
        Raw {
            s,
            dec: Decoder::default(),
            buf,
        }
    }

    pub fn send_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) {
        let mut out = Vec::new();
        encode_frame(&mut out, opcode, fin, payload, mask);
        self.s.write_all(&out).unwrap();
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Read until `count` pong frames arrived; returns their payloads in order.
    pub fn pongs(&mut self, count: usize) -> Vec<Vec<u8>> {
        let cfg = DecoderConfig {
            role: Role::Client,
            message_bytes_max: 1 << 24,
        };
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let mut pending = std::mem::take(&mut self.buf);
            self.dec
                .feed(&cfg, &mut pending, |m| {
                    if let Message::Pong(p) = m {
                        got.push(p.to_vec());
                    }
                })
                .expect("server frames are valid");
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "pongs did not arrive in time");
            let n = self.s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed while waiting for pongs");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read frames until a close arrives; returns its code (None: EOF without close).
    pub fn close_code(&mut self) -> Option<u16> {
        let cfg = DecoderConfig {
            role: Role::Client,
            message_bytes_max: 1 << 24,
        };
        let deadline = Instant::now() + TIMEOUT;
        let mut chunk = [0u8; 8192];
        loop {
            let mut code = None;
            let mut pending = std::mem::take(&mut self.buf);
            self.dec
                .feed(&cfg, &mut pending, |m| {
                    if let Message::Close(c) = m {
                        code = Some(c.map(|(c, _)| c).unwrap_or(1005));
                    }
                })
                .expect("server frames are valid");
            if code.is_some() {
                return code;
            }
            assert!(Instant::now() < deadline, "no close frame in time");
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// Poll `f` until true or the deadline passes.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A channel name whose owner is shard `want` of `shards`.
pub fn channel_owned_by(prefix: &str, want: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|c| shardcast::shard::mesh::owner_of(c, shards) == want)
        .unwrap()
}

/// Instantiate every listed scenario as a test on each driver, on io_uring
/// with two rings per shard (`io.rings_per_shard`), and once more on io_uring
/// with the fault injector around it (`faults`: short writes, completions
/// delayed and reordered across connections; driver/faulty.rs), and once on
/// the simulation's in-memory driver in real time, bridged to the real
/// sockets (`sim`: its seeded faults; driver/sim/bridge.rs).
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod epoll {
            $(#[test] fn $name() { super::$name(shardcast::DriverKind::Epoll) })*
        }
        mod uring {
            $(#[test] fn $name() { super::$name(shardcast::DriverKind::Uring) })*
        }
        mod uring_rings {
            $(#[test] fn $name() {
                $crate::common::with_rings(2, || super::$name(shardcast::DriverKind::Uring))
            })*
        }
        mod faults {
            $(#[test] fn $name() {
                // A seed per scenario, from its name: the same faults each run.
                let seed = $crate::common::seed_of(stringify!($name), 0xcbf2_9ce4_8422_2325);
                $crate::common::FAULTS.with(|f| f.set(seed));
                super::$name(shardcast::DriverKind::Uring)
            })*
        }
        mod sim {
            $(#[test] fn $name() {
                let seed = $crate::common::seed_of(stringify!($name), 0x8422_2325_cbf2_9ce4);
                $crate::common::SIM.with(|f| f.set(seed));
                super::$name(shardcast::DriverKind::Epoll)
            })*
        }
    };
}
