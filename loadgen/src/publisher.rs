//! The fanout publisher: one connection, paced at `--rate` publications per second,
//! each payload stamped with its send time.
//!
//! - shardcast: `POST /api/publish` on one keep-alive HTTP connection, pipelined up
//!   to `--publish-window` requests; each answer's offset tells what subscribers are owed.
//! - raw: one extra WebSocket connection sending masked text frames; the peer
//!   broadcasts each to every client (docs/loadgen.md). Sequence numbers stand in
//!   for offsets.
//! - socketio: the same, after engine.io's open and the namespace connect, each
//!   payload sent as a `42["m",…]` event; the server's pings are answered.
//!
//! It is a single connection, so plain blocking sockets and two threads suffice.
//! The WebSocket publisher keeps its connection open, still reading, until the
//! coordinator has waited for the last deliveries ([`Publisher::close`]): a peer
//! may still be reading publications from that socket, and closing it with unread
//! data in it would make the kernel reset the connection and discard them.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use shardcast_proto::frame::{encode_frame, OpCode};
use shardcast_proto::handshake::{client_key, client_request, verify_response};
use shardcast_proto::{Decoder, DecoderConfig, Message, Role};

use crate::cli::{Plan, Protocol};
use crate::push::payload;
use crate::sio::{self, Packet};
use crate::sys::unix_ns;

/// How long to wait for outstanding answers after the last publication.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Publications sent.
    pub sent: u64,
    /// Publications acknowledged (HTTP 200 with an offset; raw: every frame written).
    pub acknowledged: u64,
    /// Per channel: last offset acknowledged (raw: last sequence number sent).
    pub finals: Vec<u64>,
    /// Per channel: publications acknowledged.
    pub per_channel: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Unix ns of the first and last publication sent.
    pub first_ns: u64,
    pub last_ns: u64,
    /// How far behind its schedule the publisher fell at worst, ms.
    pub lag_max_ms: f64,
}

impl Outcome {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

#[derive(Default)]
struct Window {
    /// Channel index of each request awaiting its answer, in order.
    pending: VecDeque<u16>,
    dead: bool,
}

struct State {
    window: Mutex<Window>,
    cv: Condvar,
    out: Mutex<Outcome>,
}

pub struct Publisher {
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    outcome: mpsc::Receiver<Outcome>,
    handle: JoinHandle<()>,
}

impl Publisher {
    /// Start publishing now, for `duration` at most.
    pub fn start(plan: &Plan, duration: Duration) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (tx, outcome) = mpsc::channel();
        let plan = plan.clone();
        let (flag, held) = (stop.clone(), release.clone());
        let handle = std::thread::spawn(move || match plan.opts.protocol {
            Protocol::Shardcast | Protocol::Sse => {
                let _ = tx.send(run_http_parts(&plan, duration, &flag));
            }
            Protocol::Raw | Protocol::Socketio => {
                let (out, link) = run_ws(&plan, duration, &flag);
                let _ = tx.send(out);
                // Hold the connection (its reader keeps draining) until released.
                while !held.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if let Some(link) = link {
                    link.close();
                }
            }
        });
        Publisher {
            stop,
            release,
            outcome,
            handle,
        }
    }

    /// Stop publishing (if still running) and collect the outcome; a WebSocket
    /// publisher's connection stays open until [`Publisher::close`].
    pub fn finish(&mut self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        self.outcome.recv().unwrap_or_default()
    }

    /// Close the publisher's connection (after the drain).
    pub fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.release.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// Sleep until publication `k` is due; false when the run is over instead.
fn pace(
    t0: Instant,
    k: u64,
    rate: f64,
    end: Instant,
    stop: &AtomicBool,
    lag_max_ms: &mut f64,
) -> bool {
    let due = t0 + Duration::from_secs_f64(k as f64 / rate);
    if due >= end {
        return false;
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            *lag_max_ms = lag_max_ms.max(now.duration_since(due).as_secs_f64() * 1e3);
            return true;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}

fn http_connect(addr: SocketAddr, state: &Arc<State>) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    let r = s.try_clone()?;
    let st = state.clone();
    std::thread::spawn(move || read_answers(r, &st));
    Ok(s)
}

/// Keep-alive connections a steady HTTP publisher spreads its publications
/// over, each with its own share of the channels (so each channel's sequence
/// stays on one connection, in order) and of the rate. The engine holds up
/// to 256 publishes of one connection in flight, each about a loop turn; at a
/// million connections, where a turn lasts tens of milliseconds, one
/// connection carried 397-452 of 500 a second, and four 357.7-500.1 (three
/// runs); eight carried 500.3 (docs/benchmarks.md, "The million, run by run").
const HTTP_PUBLISHERS: usize = 8;

/// Run the steady publisher over `HTTP_PUBLISHERS` connections (one when the
/// channels do not split evenly) and add up what they did.
fn run_http_parts(plan: &Plan, duration: Duration, stop: &AtomicBool) -> Outcome {
    let len = plan.publish_channels.len();
    let parts = if len >= HTTP_PUBLISHERS && len.is_multiple_of(HTTP_PUBLISHERS) {
        HTTP_PUBLISHERS
    } else {
        1
    };
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parts)
            .map(|part| s.spawn(move || run_http(plan, duration, stop, part, parts)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut all = Outcome {
        finals: vec![0; plan.channels.len()],
        per_channel: vec![0; plan.channels.len()],
        ..Outcome::default()
    };
    for o in outs {
        all.sent += o.sent;
        all.acknowledged += o.acknowledged;
        for (a, b) in all.finals.iter_mut().zip(&o.finals) {
            *a = (*a).max(*b);
        }
        for (a, b) in all.per_channel.iter_mut().zip(&o.per_channel) {
            *a += *b;
        }
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
        if o.first_ns != 0 && (all.first_ns == 0 || o.first_ns < all.first_ns) {
            all.first_ns = o.first_ns;
        }
        all.last_ns = all.last_ns.max(o.last_ns);
        all.lag_max_ms = all.lag_max_ms.max(o.lag_max_ms);
    }
    all
}

/// Publisher `part` of `parts`: channels `part`, `part + parts`, ... of the
/// publish range, at `rate / parts`.
fn run_http(
    plan: &Plan,
    duration: Duration,
    stop: &AtomicBool,
    part: usize,
    parts: usize,
) -> Outcome {
    crate::sys::raise_thread_priority();
    let o = &plan.opts;
    let n = plan.channels.len();
    let range = plan.publish_channels.clone();
    let state = Arc::new(State {
        window: Mutex::new(Window::default()),
        cv: Condvar::new(),
        out: Mutex::new(Outcome {
            finals: vec![0; n],
            per_channel: vec![0; n],
            ..Outcome::default()
        }),
    });
    let auth = o
        .api_key
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut lag = 0.0;
    let mut stream: Option<TcpStream> = None;
    let mut seq = vec![0u64; n];
    let mut k = 0u64;
    let rate = o.rate / parts as f64;
    while pace(t0, k, rate, end, stop, &mut lag) {
        let slot = (k * parts as u64 + part as u64) % range.len().max(1) as u64;
        let ch = range.start + slot as usize;
        k += 1;
        if !wait_window(&state, o.publish_window, stop) {
            break;
        }
        if stream.is_none() || state.window.lock().map(|w| w.dead).unwrap_or(true) {
            *state.window.lock().unwrap_or_else(|e| e.into_inner()) = Window::default();
            match http_connect(plan.publish_target, &state) {
                Ok(s) => stream = Some(s),
                Err(e) => {
                    state
                        .out
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .error(format!("publish connect: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        seq[ch] += 1;
        let ts = unix_ns();
        let data = payload(ts, seq[ch], o.payload_bytes);
        let mut body = format!("{{\"channel\":\"{}\",\"data\":", plan.channels[ch]).into_bytes();
        body.extend_from_slice(&data);
        body.push(b'}');
        let head = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            plan.publish_target,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(&body);
        state
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .push_back(ch as u16);
        let s = stream.as_mut().expect("connected above");
        if let Err(e) = s.write_all(&req) {
            state
                .out
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .error(format!("publish write: {e}"));
            let _ = s.shutdown(std::net::Shutdown::Both);
            stream = None;
            continue;
        }
        let mut out = state.out.lock().unwrap_or_else(|e| e.into_inner());
        out.sent += 1;
        if out.first_ns == 0 {
            out.first_ns = ts;
        }
        out.last_ns = ts;
    }
    // Let the last answers arrive.
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut w = state.window.lock().unwrap_or_else(|e| e.into_inner());
    while !w.pending.is_empty() && !w.dead && Instant::now() < deadline {
        w = state
            .cv
            .wait_timeout(w, Duration::from_millis(50))
            .map(|r| r.0)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    let unanswered = w.pending.len() as u64;
    drop(w);
    if let Some(s) = stream {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    let mut out = state.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if unanswered > 0 {
        *out.errors.entry("publish: no answer".into()).or_default() += unanswered;
    }
    out.lag_max_ms = lag;
    out
}

/// Block while the window is full; false if told to stop.
fn wait_window(state: &State, window: usize, stop: &AtomicBool) -> bool {
    let mut w = state.window.lock().unwrap_or_else(|e| e.into_inner());
    while w.pending.len() >= window && !w.dead {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        w = state
            .cv
            .wait_timeout(w, Duration::from_millis(20))
            .map(|r| r.0)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    true
}

/// Read HTTP answers in order and credit each to its channel.
fn read_answers(mut s: TcpStream, state: &State) {
    crate::sys::raise_thread_priority();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut slots);
            let head = match res.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return mark_dead(state, "publish: malformed answer"),
            };
            let len = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            if buf.len() < head + len {
                break;
            }
            let status = res.code.unwrap_or(0);
            let body = buf[head..head + len].to_vec();
            buf.drain(..head + len);
            answer(state, status, &body);
        }
        match s.read(&mut chunk) {
            Ok(0) => return mark_dead(state, "publish: connection closed"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return mark_dead(state, "publish: connection closed"),
        }
    }
}

fn answer(state: &State, status: u16, body: &[u8]) {
    let offset = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("offset")?.as_u64());
    // Pop and count under the window lock (order: window, then out), so the writer
    // never sees an empty window before the answer is counted.
    let mut w = state.window.lock().unwrap_or_else(|e| e.into_inner());
    let ch = w.pending.pop_front();
    let mut out = state.out.lock().unwrap_or_else(|e| e.into_inner());
    match (status, ch, offset) {
        (200, Some(ch), Some(off)) => {
            let ch = ch as usize;
            out.acknowledged += 1;
            out.per_channel[ch] += 1;
            out.finals[ch] = out.finals[ch].max(off);
        }
        (200, _, _) => out.error("publish: answer without offset"),
        (s, _, _) => out.error(format!("publish: status {s}")),
    }
    drop(out);
    state.cv.notify_all();
    drop(w);
}

fn mark_dead(state: &State, why: &str) {
    let mut w = state.window.lock().unwrap_or_else(|e| e.into_inner());
    let lost = w.pending.len() as u64;
    w.pending.clear();
    w.dead = true;
    if lost > 0 {
        let mut out = state.out.lock().unwrap_or_else(|e| e.into_inner());
        *out.errors.entry(why.into()).or_default() += lost;
    }
    state.cv.notify_all();
}

/// A publishing WebSocket connection: writes from the publishing thread, reads (and
/// Socket.IO pongs) from a reader thread, so the writer lock is all they share.
struct WsLink {
    w: Arc<Mutex<TcpStream>>,
    mask_seed: u32,
}

impl WsLink {
    fn send(&mut self, op: OpCode, payload: &[u8]) -> std::io::Result<()> {
        self.mask_seed = self.mask_seed.wrapping_mul(0x9e37_79b9).wrapping_add(1);
        let mut frame = Vec::with_capacity(payload.len() + 14);
        encode_frame(
            &mut frame,
            op,
            true,
            payload,
            Some(self.mask_seed.to_ne_bytes()),
        );
        write_locked(&self.w, &frame)
    }

    /// A close frame, then both directions shut (the reader thread sees the end).
    fn close(mut self) {
        let _ = self.send(OpCode::Close, &1000u16.to_be_bytes());
        if let Ok(s) = self.w.lock() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn write_locked(w: &Mutex<TcpStream>, bytes: &[u8]) -> std::io::Result<()> {
    w.lock().unwrap_or_else(|e| e.into_inner()).write_all(bytes)
}

/// Raw and Socket.IO peers: one WebSocket connection sending stamped payloads.
fn run_ws(plan: &Plan, duration: Duration, stop: &AtomicBool) -> (Outcome, Option<WsLink>) {
    let o = &plan.opts;
    let mut out = Outcome {
        finals: vec![0; plan.channels.len()],
        per_channel: vec![0; plan.channels.len()],
        ..Outcome::default()
    };
    let socketio = o.protocol == Protocol::Socketio;
    let (s, rest) = match ws_connect(plan.publish_target, &plan.path) {
        Ok(s) => s,
        Err(e) => {
            out.error(format!("publish connect: {e}"));
            return (out, None);
        }
    };
    let w = match s.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            out.error(format!("publish connect: {e}"));
            return (out, None);
        }
    };
    let mut link = WsLink {
        w: w.clone(),
        mask_seed: unix_ns() as u32,
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || read_ws(s, rest, w, socketio, ready_tx));
    if socketio {
        // The reader sends `40` on the open packet and reports the namespace connect.
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                out.error(format!("publish connect: {e}"));
                return (out, Some(link));
            }
            Err(_) => {
                out.error("publish connect: no socket.io connect within 5 s");
                return (out, Some(link));
            }
        }
    }
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut lag = 0.0;
    let mut k = 0u64;
    while pace(t0, k, o.rate, end, stop, &mut lag) {
        k += 1;
        let ts = unix_ns();
        let data = payload(ts, k, o.payload_bytes);
        let msg = if socketio { sio::event(&data) } else { data };
        if let Err(e) = link.send(OpCode::Text, &msg) {
            out.error(format!("publish write: {e}"));
            break;
        }
        out.sent += 1;
        out.acknowledged += 1;
        out.finals[0] = k;
        out.per_channel[0] += 1;
        if out.first_ns == 0 {
            out.first_ns = ts;
        }
        out.last_ns = ts;
    }
    out.lag_max_ms = lag;
    (out, Some(link))
}

/// Read what the peer sends the publisher until the connection ends, so the peer
/// never blocks on it; for Socket.IO also complete the session set-up (reported on
/// `ready`) and answer pings.
fn read_ws(
    mut s: TcpStream,
    mut pending: Vec<u8>,
    w: Arc<Mutex<TcpStream>>,
    socketio: bool,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let cfg = DecoderConfig {
        role: Role::Client,
        message_bytes_max: 16 << 20,
    };
    let mut dec = Decoder::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut mask = 0x5bd1_e995u32;
    let mut frame = Vec::new();
    loop {
        let mut replies: Vec<&[u8]> = Vec::new();
        let mut pongs: Vec<Vec<u8>> = Vec::new();
        let res = dec.feed(&cfg, &mut pending, |m| match m {
            Message::Text(t) if socketio => match sio::parse(t) {
                Packet::Open => replies.push(sio::CONNECT),
                Packet::Connected => {
                    let _ = ready.send(Ok(()));
                }
                Packet::ConnectError(why) => {
                    let _ = ready.send(Err(format!(
                        "socket.io connect refused: {}",
                        String::from_utf8_lossy(why)
                    )));
                }
                Packet::Ping => replies.push(sio::PONG),
                _ => {}
            },
            Message::Ping(p) => pongs.push(p.to_vec()),
            _ => {}
        });
        if res.is_err() {
            return;
        }
        for (op, p) in replies
            .into_iter()
            .map(|r| (OpCode::Text, r.to_vec()))
            .chain(pongs.into_iter().map(|p| (OpCode::Pong, p)))
        {
            mask = mask.wrapping_mul(0x9e37_79b9).wrapping_add(7);
            frame.clear();
            encode_frame(&mut frame, op, true, &p, Some(mask.to_ne_bytes()));
            if write_locked(&w, &frame).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => pending = chunk[..n].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => pending = Vec::new(),
            _ => return,
        }
    }
}

/// Connect and upgrade; returns the stream and any bytes that followed the 101.
fn ws_connect(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let key = client_key(
        unix_ns()
            .to_ne_bytes()
            .repeat(2)
            .try_into()
            .unwrap_or([7; 16]),
    );
    s.write_all(&client_request(&addr.to_string(), path, &key, &[], &[]))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let used = loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((_, used)) = verify_response(&buf, &key).map_err(|e| e.to_string())? {
            break used;
        }
    };
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok((s, buf.split_off(used)))
}

/// One blocking HTTP keep-alive connection for publications that must be timed one
/// by one (the suite's broadcasts): send one or a burst, then wait for the answers.
pub struct SyncPublisher {
    stream: TcpStream,
    host: String,
    auth: String,
    buf: Vec<u8>,
}

impl SyncPublisher {
    pub fn connect(plan: &Plan, timeout: Duration) -> Result<SyncPublisher, String> {
        let s = TcpStream::connect_timeout(&plan.publish_target, Duration::from_secs(5))
            .map_err(|e| format!("publish connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        Ok(SyncPublisher {
            stream: s,
            host: plan.publish_target.to_string(),
            auth: plan
                .opts
                .api_key
                .as_ref()
                .map(|k| format!("Authorization: Bearer {k}\r\n"))
                .unwrap_or_default(),
            buf: Vec::new(),
        })
    }

    /// Send one stamped publication per entry of `items` (channel name, sequence
    /// number) back to back, then read every answer. Returns the Unix ns of the first
    /// and last send, and each answer's offset (None: not a 200 with an offset).
    pub fn publish(
        &mut self,
        items: &[(&str, u64)],
        payload_bytes: usize,
    ) -> Result<(u64, u64, Vec<Option<u64>>), String> {
        let (mut first, mut last) = (0, 0);
        for (channel, seq) in items {
            let ts = unix_ns();
            if first == 0 {
                first = ts;
            }
            last = ts;
            let data = payload(ts, *seq, payload_bytes);
            let mut body = format!("{{\"channel\":\"{channel}\",\"data\":").into_bytes();
            body.extend_from_slice(&data);
            body.push(b'}');
            let mut req = format!(
                "POST /api/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n",
                self.host,
                self.auth,
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body);
            self.stream
                .write_all(&req)
                .map_err(|e| format!("publish write: {e}"))?;
        }
        let mut offsets = Vec::with_capacity(items.len());
        let mut chunk = vec![0u8; 16 * 1024];
        while offsets.len() < items.len() {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut slots);
            let parsed = res
                .parse(&self.buf)
                .map_err(|_| "publish: malformed answer".to_string())?;
            if let httparse::Status::Complete(head) = parsed {
                let len = res
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                if self.buf.len() >= head + len {
                    let ok = res.code == Some(200);
                    let off =
                        serde_json::from_slice::<serde_json::Value>(&self.buf[head..head + len])
                            .ok()
                            .and_then(|v| v.get("offset")?.as_u64());
                    offsets.push(off.filter(|_| ok));
                    self.buf.drain(..head + len);
                    continue;
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("publish: connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("publish: no answer ({e})")),
            }
        }
        Ok((first, last, offsets))
    }
}
