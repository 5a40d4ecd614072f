//! Test helpers: an in-process shardcast engine, a tiny raw broadcast peer that
//! follows the convention in docs/loadgen.md, and running the loadgen.
#![allow(dead_code)]

pub mod sio;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardcast::{Config, DriverKind, Engine, Handle};
use shardcast_loadgen::{Opts, Report};
use shardcast_proto::frame::{encode_frame, OpCode, Role};
use shardcast_proto::handshake::{upgrade_response, validate_upgrade};
use shardcast_proto::http::{parse_request, Limits};
use shardcast_proto::{Decoder, DecoderConfig, Message};

/// Two unpinned epoll shards on an ephemeral loopback port.
pub fn engine(echo: bool) -> Handle {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        pin_cores: false,
        driver: Some(DriverKind::Epoll),
        echo,
        ..Config::default()
    };
    c.io.recv_bufs = 64;
    c.io.ring_entries = 256;
    c.limits.conns_per_shard_max = 512;
    Engine::start(c).expect("engine starts")
}

/// Parse loadgen arguments (quiet, no settle) and run in this process.
pub fn run(args: &[&str]) -> Report {
    let mut all = vec!["shardcast-loadgen"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--quiet", "--settle", "0", "--max-seconds", "60"]);
    let opts = Opts::try_parse_from(all).expect("options parse");
    let plan = opts.plan().expect("plan is valid");
    shardcast_loadgen::run(&plan, None).expect("run completes")
}

use clap::Parser as _;

/// A raw peer: upgrades every connection on any path, then broadcasts every text
/// message it receives, from any client, to all clients (publisher included).
pub struct RawPeer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

pub fn raw_peer() -> RawPeer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let flag = stop.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            let Ok(s) = s else { continue };
            let clients = clients.clone();
            std::thread::spawn(move || serve_raw(s, clients));
        }
    });
    RawPeer { addr, stop }
}

fn serve_raw(mut s: TcpStream, clients: Arc<Mutex<Vec<TcpStream>>>) {
    let Some((req, rest)) = read_request(&mut s) else {
        return;
    };
    let up = validate_upgrade(&req).expect("an upgrade");
    s.write_all(&upgrade_response(&up)).unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    clients.lock().unwrap().push(s.try_clone().unwrap());
    let cfg = DecoderConfig {
        role: Role::Server,
        message_bytes_max: 1 << 20,
    };
    let mut dec = Decoder::default();
    let mut pending = rest;
    loop {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut closed = false;
        if dec
            .feed(&cfg, &mut pending, |m| match m {
                Message::Text(t) => {
                    let mut f = Vec::new();
                    encode_frame(&mut f, OpCode::Text, true, t, None);
                    out.push(f);
                }
                Message::Close(_) => closed = true,
                _ => {}
            })
            .is_err()
        {
            return;
        }
        for f in out {
            for c in clients.lock().unwrap().iter_mut() {
                let _ = c.write_all(&f);
            }
        }
        if closed {
            return;
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => pending = chunk[..n].to_vec(),
            _ => return,
        }
    }
}

/// Read one HTTP request (a peer's upgrade); returns it and the bytes after it.
pub fn read_request(s: &mut TcpStream) -> Option<(shardcast_proto::http::Request, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some((req, used)) = parse_request(&buf, &Limits::default()).ok()? {
            return Some((req, buf.split_off(used)));
        }
    }
}
