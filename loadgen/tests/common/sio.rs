//! A small Socket.IO v4 peer, strict where the real one is: it sends the engine.io
//! open packet, creates the client only on `40`, pings every `ping_ms` and drops a
//! client that has not answered the previous ping by the next one, drops a client
//! on any packet it does not know, and broadcasts every `m` event to every other
//! connected client (or echoes it back to its sender).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardcast_proto::frame::{encode_frame, OpCode, Role};
use shardcast_proto::handshake::{upgrade_response, validate_upgrade};
use shardcast_proto::{Decoder, DecoderConfig, Message};

struct Client {
    w: TcpStream,
    /// A ping went out and its `3` has not come back.
    ping_owed: bool,
}

#[derive(Default)]
struct State {
    clients: Mutex<HashMap<u64, Client>>,
    next_id: AtomicU64,
    /// Pongs received, and clients dropped for not answering a ping.
    pongs: AtomicU64,
    ping_timeouts: AtomicU64,
    /// Clients dropped for a packet the peer does not know.
    bad_packets: AtomicU64,
}

pub struct SioPeer {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl SioPeer {
    pub fn pongs(&self) -> u64 {
        self.state.pongs.load(Ordering::Relaxed)
    }
    pub fn ping_timeouts(&self) -> u64 {
        self.state.ping_timeouts.load(Ordering::Relaxed)
    }
    pub fn bad_packets(&self) -> u64 {
        self.state.bad_packets.load(Ordering::Relaxed)
    }
}

impl Drop for SioPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn frame(text: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    encode_frame(&mut f, OpCode::Text, true, text, None);
    f
}

pub fn sio_peer(echo: bool, ping_ms: u64) -> SioPeer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let state = Arc::new(State::default());
    let (st, flag) = (state.clone(), stop.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            let Ok(s) = s else { continue };
            let st = st.clone();
            std::thread::spawn(move || serve(s, st, echo, ping_ms));
        }
    });
    let (st, flag) = (state.clone(), stop.clone());
    std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(ping_ms));
            let mut clients = st.clients.lock().unwrap();
            clients.retain(|_, c| {
                if c.ping_owed {
                    st.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                    let _ = c.w.shutdown(std::net::Shutdown::Both);
                    return false;
                }
                c.ping_owed = true;
                c.w.write_all(&frame(b"2")).is_ok()
            });
        }
    });
    SioPeer { addr, state, stop }
}

fn serve(mut s: TcpStream, st: Arc<State>, echo: bool, ping_ms: u64) {
    let Some((req, rest)) = super::read_request(&mut s) else {
        return;
    };
    // Engine.io refuses anything but its path and protocol 4 over WebSocket.
    if req.path != "/socket.io/" || req.query != "EIO=4&transport=websocket" {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let up = validate_upgrade(&req).expect("an upgrade");
    s.write_all(&upgrade_response(&up)).unwrap();
    let mut chunk = vec![0u8; 64 * 1024];
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let open = format!(
        r#"0{{"sid":"s{id}","upgrades":[],"pingInterval":{ping_ms},"pingTimeout":{ping_ms},"maxPayload":1000000}}"#
    );
    s.write_all(&frame(open.as_bytes())).unwrap();
    let cfg = DecoderConfig {
        role: Role::Server,
        message_bytes_max: 1 << 20,
    };
    let mut dec = Decoder::default();
    let mut pending = rest;
    let drop_client = |st: &State| {
        st.clients.lock().unwrap().remove(&id);
    };
    loop {
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let mut closed = false;
        let fed = dec.feed(&cfg, &mut pending, |m| match m {
            Message::Text(t) => packets.push(t.to_vec()),
            Message::Close(_) => closed = true,
            _ => {}
        });
        if fed.is_err() {
            return drop_client(&st);
        }
        for p in packets {
            if p == b"40" {
                let w = s.try_clone().unwrap();
                let mut clients = st.clients.lock().unwrap();
                let _ = s.write_all(&frame(format!(r#"40{{"sid":"n{id}"}}"#).as_bytes()));
                clients.insert(
                    id,
                    Client {
                        w,
                        ping_owed: false,
                    },
                );
            } else if p == b"3" {
                st.pongs.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = st.clients.lock().unwrap().get_mut(&id) {
                    c.ping_owed = false;
                }
            } else if p.starts_with(br#"42["m","#) && p.ends_with(b"]") {
                let f = frame(&p);
                let mut clients = st.clients.lock().unwrap();
                for (cid, c) in clients.iter_mut() {
                    if (*cid == id) == echo {
                        let _ = c.w.write_all(&f);
                    }
                }
            } else {
                st.bad_packets.fetch_add(1, Ordering::Relaxed);
                let _ = s.shutdown(std::net::Shutdown::Both);
                return drop_client(&st);
            }
        }
        if closed {
            return drop_client(&st);
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => pending = chunk[..n].to_vec(),
            _ => return drop_client(&st),
        }
    }
}
