//! The fanout publisher: one connection, paced at `--rate` publications per second,
//! each payload stamped with its send time.
//!
//! - shardcast: `POST /api/publish` on one keep-alive HTTP connection, pipelined up
//!   to `--publish-window` requests; each answer's offset tells what subscribers are owed.
//! - raw: one extra WebSocket connection sending masked text frames; the peer
//!   broadcasts each to every client (docs/loadgen.md). Sequence numbers stand in
//!   for offsets.
//!
//! It is a single connection, so plain blocking sockets and two threads suffice.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use shardcast_proto::frame::{encode_frame, OpCode};
use shardcast_proto::handshake::{client_key, client_request, verify_response};

use crate::cli::{Plan, Protocol};
use crate::push::payload;
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
    handle: JoinHandle<Outcome>,
}

impl Publisher {
    /// Start publishing now, for `duration` at most.
    pub fn start(plan: &Plan, duration: Duration) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let plan = plan.clone();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || match plan.opts.protocol {
            Protocol::Shardcast => run_http(&plan, duration, &flag),
            Protocol::Raw => run_raw(&plan, duration, &flag),
        });
        Publisher { stop, handle }
    }

    /// Stop early (if still running) and collect the outcome.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
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

fn run_http(plan: &Plan, duration: Duration, stop: &AtomicBool) -> Outcome {
    let o = &plan.opts;
    let n = o.channels.len();
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
    while pace(t0, k, o.rate, end, stop, &mut lag) {
        let ch = (k % n as u64) as usize;
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
        let mut body = format!("{{\"channel\":\"{}\",\"data\":", o.channels[ch]).into_bytes();
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

/// Raw peers: a WebSocket connection sending stamped text frames.
fn run_raw(plan: &Plan, duration: Duration, stop: &AtomicBool) -> Outcome {
    let o = &plan.opts;
    let mut out = Outcome {
        finals: vec![0; o.channels.len()],
        per_channel: vec![0; o.channels.len()],
        ..Outcome::default()
    };
    let mut s = match ws_connect(plan.publish_target, &plan.opts.path) {
        Ok(s) => s,
        Err(e) => {
            out.error(format!("publish connect: {e}"));
            return out;
        }
    };
    // Drain what the peer broadcasts back to us, so it never blocks on this connection.
    if let Ok(mut r) = s.try_clone() {
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            while matches!(r.read(&mut chunk), Ok(n) if n > 0) {}
        });
    }
    let t0 = Instant::now();
    let end = t0 + duration;
    let mut lag = 0.0;
    let mut k = 0u64;
    let mut frame = Vec::new();
    while pace(t0, k, o.rate, end, stop, &mut lag) {
        k += 1;
        let ts = unix_ns();
        frame.clear();
        let mask = (ts as u32 ^ (k as u32).wrapping_mul(0x9e37_79b9)).to_ne_bytes();
        encode_frame(
            &mut frame,
            OpCode::Text,
            true,
            &payload(ts, k, o.payload_bytes),
            Some(mask),
        );
        if let Err(e) = s.write_all(&frame) {
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
    let mut close = Vec::new();
    encode_frame(
        &mut close,
        OpCode::Close,
        true,
        &1000u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    );
    let _ = s.write_all(&close);
    let _ = s.shutdown(std::net::Shutdown::Both);
    out.lag_max_ms = lag;
    out
}

fn ws_connect(addr: SocketAddr, path: &str) -> Result<TcpStream, String> {
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
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if verify_response(&buf, &key)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            break;
        }
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(s)
}
