//! One client connection: connect, upgrade, subscribe, then read deliveries or echoes.
//!
//! A connection never blocks: every method reacts to what the socket has, queues
//! what it could not write, and returns what the event loop must do next.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use shardcast_proto::frame::{encode_frame, OpCode};
use shardcast_proto::handshake::{
    client_key, client_request, verify_response, ClientHandshakeError,
};
use shardcast_proto::{Decoder, DecoderConfig, Message};
use socket2::Socket;

use crate::cli::{Protocol, Scenario};
use crate::push::{parse_push, parse_stamp};
use crate::sio::{self, Packet};
use crate::sse;
use crate::stats::{Hist, Totals};
use crate::sys;
use crate::track::{epoch_hash, Track};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for 101.
    Handshake,
    /// Subscribe commands sent, waiting for their replies (Socket.IO: waiting for the
    /// open packet, then for the namespace connect).
    Subscribing,
    /// Ready: counted as up.
    Up,
}

/// What the loop must do after a connection handled an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// The connection just became up (count it, start its scenario).
    BecameUp,
    /// Close it; the string is the error kind to count (None: closed on purpose).
    Close(Option<String>),
}

/// Per-thread context a connection needs to handle its bytes.
pub struct Ctx {
    pub scenario: Scenario,
    pub protocol: Protocol,
    pub channels: Vec<String>,
    pub path: String,
    pub message_bytes: usize,
    pub inflight: usize,
    pub dec_cfg: DecoderConfig,
    pub totals: Totals,
    /// Latencies since the last snapshot (the live progress line).
    pub interval: Hist,
    pub measuring: bool,
    pub rng: u64,
}

impl Ctx {
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*: masks and nonces only need to vary, not to be secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    fn record(&mut self, ns: u64, now_ns: u64) {
        self.totals.latency.record(ns);
        self.interval.record(ns);
        if self.totals.first_delivery_ns == 0 {
            self.totals.first_delivery_ns = now_ns;
        }
        self.totals.last_delivery_ns = now_ns;
    }
}

pub struct Conn {
    pub sock: Socket,
    pub gen: u32,
    /// Global connection index: picks the target and source address.
    pub global: u64,
    pub phase: Phase,
    pub started: Instant,
    /// Counted in the initial ramp (as opposed to a churn reconnect).
    pub planned: bool,
    /// Counted as up (and in the open gauge) by the loop.
    pub counted: bool,
    key: String,
    hs_buf: Vec<u8>,
    dec: Decoder,
    out: Vec<u8>,
    pub wants_write: bool,
    /// Channel indices (into `Ctx::channels`) and their trackers.
    pub subs: Vec<(u16, Option<Track>)>,
    pending_replies: usize,
    echo_sent: VecDeque<Instant>,
    /// Socket.IO: the engine.io open packet has arrived (and `40` went out).
    sio_opened: bool,
}

/// A subscription's tracker, starting at the position its subscribe reply gave.
fn track_from(ok: &serde_json::Value) -> Track {
    let offset = ok.get("offset").and_then(|o| o.as_u64()).unwrap_or(0);
    let epoch = ok
        .get("epoch")
        .and_then(|e| e.as_str())
        .map(|e| epoch_hash(e.as_bytes()))
        .unwrap_or(0);
    Track::new(offset, epoch)
}

/// One echo message as sent on the wire: `--message-bytes` of `x` (raw, shardcast), or
/// an `m` event whose data is a JSON string of that many bytes (Socket.IO).
fn echo_message(ctx: &Ctx) -> Vec<u8> {
    match ctx.protocol {
        Protocol::Socketio => sio::event(&sio::echo_data(ctx.message_bytes)),
        _ => vec![b'x'; ctx.message_bytes],
    }
}

impl Conn {
    pub fn new(sock: Socket, gen: u32, global: u64, planned: bool, subs: Vec<u16>) -> Conn {
        Conn {
            sock,
            gen,
            global,
            phase: Phase::Connecting,
            started: Instant::now(),
            planned,
            counted: false,
            key: String::new(),
            hs_buf: Vec::new(),
            dec: Decoder::default(),
            out: Vec::new(),
            wants_write: true,
            subs: subs.into_iter().map(|c| (c, None)).collect(),
            pending_replies: 0,
            echo_sent: VecDeque::new(),
            sio_opened: false,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Interest bits the loop should register for this connection.
    pub fn interest(&self) -> u32 {
        if self.wants_write {
            sys::READ | sys::WRITE
        } else {
            sys::READ
        }
    }

    /// Queue `bytes`, writing at once what the socket takes.
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.out.is_empty() {
            match sys::write(self.fd(), bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => self.out.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.out.extend_from_slice(bytes)
                }
                Err(e) => return Err(sys::error_kind(&e)),
            }
        } else {
            self.out.extend_from_slice(bytes);
        }
        self.wants_write = true;
        Ok(())
    }

    fn send_frame(&mut self, ctx: &mut Ctx, op: OpCode, payload: &[u8]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        encode_frame(&mut frame, op, true, payload, Some(ctx.mask()));
        ctx.totals.counters.sent += u64::from(matches!(op, OpCode::Text | OpCode::Binary));
        self.send(&frame)
    }

    /// A best-effort close frame before the socket is dropped.
    pub fn send_close(&mut self, ctx: &mut Ctx, code: u16) {
        let _ = self.send_frame(ctx, OpCode::Close, &code.to_be_bytes());
    }

    /// The socket is writable: finish the connect, or flush queued bytes.
    pub fn on_writable(&mut self, ctx: &mut Ctx, host: &str) -> Next {
        if self.phase == Phase::Connecting {
            if let Some(e) = sys::take_socket_error(&self.sock) {
                return Next::Close(Some(sys::error_kind(&e)));
            }
            self.phase = Phase::Handshake;
            if ctx.protocol == Protocol::Sse {
                let chans: Vec<&str> = self
                    .subs
                    .iter()
                    .map(|(c, _)| ctx.channels[*c as usize].as_str())
                    .collect();
                let req = sse::request(host, &ctx.path, &chans);
                self.wants_write = false;
                return match self.send(&req) {
                    Ok(()) => Next::Continue,
                    Err(kind) => Next::Close(Some(kind)),
                };
            }
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&ctx.next_u64().to_ne_bytes());
            nonce[8..].copy_from_slice(&ctx.next_u64().to_ne_bytes());
            self.key = client_key(nonce);
            let req = client_request(host, &ctx.path, &self.key, &[], &[]);
            self.wants_write = false;
            if let Err(kind) = self.send(&req) {
                return Next::Close(Some(kind));
            }
            return Next::Continue;
        }
        while !self.out.is_empty() {
            match sys::write(self.fd(), &self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Continue,
                Err(e) => return Next::Close(Some(sys::error_kind(&e))),
            }
        }
        self.wants_write = false;
        Next::Continue
    }

    /// Bytes arrived (`data` may be unmasked in place).
    pub fn on_bytes(&mut self, ctx: &mut Ctx, data: &mut [u8], now_ns: u64) -> Next {
        ctx.totals.counters.bytes_in += data.len() as u64;
        if ctx.protocol == Protocol::Sse {
            return self.on_sse_bytes(ctx, data, now_ns);
        }
        if self.phase == Phase::Handshake {
            self.hs_buf.extend_from_slice(data);
            let used = match verify_response(&self.hs_buf, &self.key) {
                Ok(None) => return Next::Continue,
                Ok(Some((_, used))) => used,
                Err(ClientHandshakeError::Status(s)) => {
                    return Next::Close(Some(format!("handshake status {s}")))
                }
                Err(e) => return Next::Close(Some(format!("bad handshake: {e}"))),
            };
            let mut rest = self.hs_buf.split_off(used);
            self.hs_buf = Vec::new();
            let next = self.after_upgrade(ctx);
            if next != Next::Continue || rest.is_empty() {
                return next;
            }
            let more = self.feed(ctx, &mut rest, now_ns);
            return if more == Next::Continue { next } else { more };
        }
        self.feed(ctx, data, now_ns)
    }

    fn after_upgrade(&mut self, ctx: &mut Ctx) -> Next {
        if ctx.protocol == Protocol::Socketio {
            // Up once engine.io has opened and the default namespace has connected.
            self.phase = Phase::Subscribing;
            return Next::Continue;
        }
        let subscribe = ctx.protocol == Protocol::Shardcast
            && ctx.scenario != Scenario::Echo
            && !self.subs.is_empty();
        if !subscribe {
            return self.become_up(ctx);
        }
        self.phase = Phase::Subscribing;
        self.pending_replies = self.subs.len();
        // Every subscribe in one write: one segment, one wake-up of the server.
        let mut frames = Vec::with_capacity(64 * self.subs.len());
        for i in 0..self.subs.len() {
            let channel = &ctx.channels[self.subs[i].0 as usize];
            let cmd = format!(
                r#"{{"id":{},"op":"subscribe","channel":"{channel}"}}"#,
                i + 1
            );
            let mask = ctx.mask();
            encode_frame(&mut frames, OpCode::Text, true, cmd.as_bytes(), Some(mask));
            ctx.totals.counters.sent += 1;
        }
        match self.send(&frames) {
            Ok(()) => Next::Continue,
            Err(kind) => Next::Close(Some(kind)),
        }
    }

    fn become_up(&mut self, ctx: &mut Ctx) -> Next {
        self.phase = Phase::Up;
        if ctx.scenario == Scenario::Echo {
            let msg = echo_message(ctx);
            for _ in 0..ctx.inflight {
                self.echo_sent.push_back(Instant::now());
                if let Err(kind) = self.send_frame(ctx, OpCode::Text, &msg) {
                    return Next::Close(Some(kind));
                }
            }
        }
        if matches!(ctx.protocol, Protocol::Raw | Protocol::Socketio)
            && ctx.scenario != Scenario::Echo
        {
            // Raw and Socket.IO peers have no subscriptions: one stream, sequence numbers from 0.
            for (_, t) in self.subs.iter_mut() {
                *t = Some(Track::new(0, 0));
            }
        }
        Next::BecameUp
    }

    fn feed(&mut self, ctx: &mut Ctx, data: &mut [u8], now_ns: u64) -> Next {
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut next = Next::Continue;
        let mut dec = std::mem::take(&mut self.dec);
        let cfg = ctx.dec_cfg.clone();
        let res = dec.feed(&cfg, data, |m| match m {
            Message::Text(b) | Message::Binary(b) => {
                if let Some(n) = self.on_message(ctx, b, now_ns) {
                    if next == Next::Continue || matches!(n, Next::Close(_)) {
                        next = n;
                    }
                }
            }
            Message::Ping(p) => {
                ctx.totals.counters.pings += 1;
                replies.push(p.to_vec());
            }
            Message::Pong(_) => {}
            Message::Close(c) => {
                let code = c.map(|(c, _)| c).unwrap_or(1005);
                next = Next::Close(Some(format!("closed with code {code}")));
            }
        });
        self.dec = dec;
        if let Err(e) = res {
            return Next::Close(Some(format!("protocol error: {e}")));
        }
        for p in replies {
            if let Err(kind) = self.send_frame(ctx, OpCode::Pong, &p) {
                return Next::Close(Some(kind));
            }
        }
        next
    }

    /// One text/binary message; Some when the loop has something to do.
    fn on_message(&mut self, ctx: &mut Ctx, msg: &[u8], now_ns: u64) -> Option<Next> {
        if ctx.protocol == Protocol::Socketio {
            return self.on_socketio(ctx, msg, now_ns);
        }
        if ctx.scenario == Scenario::Echo {
            return self.on_echo(ctx, msg);
        }
        if ctx.protocol == Protocol::Raw {
            match parse_stamp(msg) {
                Some(s) => self.deliver(ctx, 0, s.seq, 0, Some(s.ts), now_ns),
                None => ctx.totals.counters.bad_messages += 1,
            }
            return None;
        }
        if let Some(p) = parse_push(msg) {
            self.deliver_push(ctx, &p, now_ns);
            return None;
        }
        self.on_reply(ctx, msg)
    }

    /// A shardcast push (over WebSocket or SSE): account it to its subscription.
    fn deliver_push(&mut self, ctx: &mut Ctx, p: &crate::push::Push<'_>, now_ns: u64) {
        let idx = self
            .subs
            .iter()
            .position(|(c, _)| ctx.channels[*c as usize].as_bytes() == p.channel);
        match idx {
            Some(i) => self.deliver(ctx, i, p.offset, epoch_hash(p.epoch), p.ts, now_ns),
            None => ctx.totals.counters.bad_messages += 1,
        }
    }

    /// An event stream: the response head, then events (`hs_buf` keeps a partial one).
    fn on_sse_bytes(&mut self, ctx: &mut Ctx, data: &[u8], now_ns: u64) -> Next {
        let mut data = data;
        if self.phase == Phase::Handshake {
            self.hs_buf.extend_from_slice(data);
            let used = match sse::response_head(&self.hs_buf) {
                Ok(None) => return Next::Continue,
                Ok(Some((200, used))) => used,
                Ok(Some((status, _))) => {
                    return Next::Close(Some(format!("handshake status {status}")))
                }
                Err(e) => return Next::Close(Some(e)),
            };
            self.hs_buf.drain(..used);
            self.phase = Phase::Subscribing;
            self.pending_replies = self.subs.len();
            data = &[];
        }
        // Parse straight from the read buffer unless part of an event is pending.
        let held = std::mem::take(&mut self.hs_buf);
        let joined;
        let buf: &[u8] = if held.is_empty() {
            data
        } else {
            joined = [held.as_slice(), data].concat();
            &joined
        };
        let (events, used) = sse::events(buf);
        self.hs_buf = held;
        self.hs_buf.clear();
        self.hs_buf.extend_from_slice(&buf[used..]);
        let mut next = Next::Continue;
        for ev in events {
            let n = match ev.kind {
                None => {
                    match parse_push(&ev.data) {
                        Some(p) => self.deliver_push(ctx, &p, now_ns),
                        None => ctx.totals.counters.bad_messages += 1,
                    }
                    None
                }
                Some(b"reply") => self.on_sse_reply(ctx, &ev.data),
                Some(b"close") => {
                    let code = serde_json::from_slice::<serde_json::Value>(&ev.data)
                        .ok()
                        .and_then(|v| v.get("code")?.as_u64())
                        .unwrap_or(0);
                    Some(Next::Close(Some(format!("closed with code {code}"))))
                }
                Some(_) => None, // presence
            };
            if let Some(n) = n {
                if next == Next::Continue || matches!(n, Next::Close(_)) {
                    next = n;
                }
            }
        }
        next
    }

    /// A stream's subscribe result (`event: reply`, no id): find the channel it names.
    fn on_sse_reply(&mut self, ctx: &mut Ctx, json: &[u8]) -> Option<Next> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
            ctx.totals.counters.bad_messages += 1;
            return None;
        };
        let Some(ok) = v.get("ok") else {
            let code = v
                .pointer("/error/code")
                .and_then(|c| c.as_u64())
                .unwrap_or(0);
            ctx.totals.counters.subscribe_errors += 1;
            ctx.totals.error(format!("subscribe error {code}"));
            return Some(Next::Close(None));
        };
        let channel = ok.get("channel").and_then(|c| c.as_str()).unwrap_or("");
        let Some(i) = self
            .subs
            .iter()
            .position(|(c, t)| t.is_none() && ctx.channels[*c as usize] == channel)
        else {
            ctx.totals.counters.bad_messages += 1;
            return None;
        };
        self.subs[i].1 = Some(track_from(ok));
        self.pending_replies -= 1;
        (self.pending_replies == 0).then(|| self.become_up(ctx))
    }

    /// One engine.io packet: the session's set-up, heartbeats, and `m` events.
    fn on_socketio(&mut self, ctx: &mut Ctx, msg: &[u8], now_ns: u64) -> Option<Next> {
        let setting_up = self.phase == Phase::Subscribing;
        match sio::parse(msg) {
            Packet::Open if setting_up && !self.sio_opened => {
                self.sio_opened = true;
                let r = self.send_frame(ctx, OpCode::Text, sio::CONNECT);
                return r.err().map(|k| Next::Close(Some(k)));
            }
            Packet::Connected if setting_up && self.sio_opened => {
                return Some(self.become_up(ctx));
            }
            Packet::Ping => {
                let r = self.send_frame(ctx, OpCode::Text, sio::PONG);
                return r.err().map(|k| Next::Close(Some(k)));
            }
            Packet::ConnectError(_) => {
                ctx.totals.counters.subscribe_errors += 1;
                return Some(Next::Close(Some("socket.io connect refused".into())));
            }
            Packet::Disconnect => {
                return Some(Next::Close(Some("socket.io disconnect".into())));
            }
            Packet::Event(data) if self.phase == Phase::Up => {
                if ctx.scenario == Scenario::Echo {
                    return self.on_echo(ctx, data);
                }
                match parse_stamp(data) {
                    Some(s) => self.deliver(ctx, 0, s.seq, 0, Some(s.ts), now_ns),
                    None => ctx.totals.counters.bad_messages += 1,
                }
            }
            _ => ctx.totals.counters.bad_messages += 1,
        }
        None
    }

    fn deliver(
        &mut self,
        ctx: &mut Ctx,
        sub: usize,
        offset: u64,
        epoch: u64,
        ts: Option<u64>,
        now_ns: u64,
    ) {
        ctx.totals.counters.deliveries += 1;
        if let Some(ts) = ts {
            ctx.record(now_ns.saturating_sub(ts), now_ns);
        }
        match self.subs.get_mut(sub).and_then(|(_, t)| t.as_mut()) {
            Some(t) => {
                let (d, o) = (t.duplicate, t.out_of_order);
                t.see(offset, epoch);
                let c = &mut ctx.totals.counters;
                c.live_duplicate += t.duplicate - d;
                c.live_out_of_order += t.out_of_order - o;
            }
            // A push before the subscribe reply: the engine promises replies come first.
            None => ctx.totals.counters.bad_messages += 1,
        }
    }

    fn on_reply(&mut self, ctx: &mut Ctx, msg: &[u8]) -> Option<Next> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(msg) else {
            ctx.totals.counters.bad_messages += 1;
            return None;
        };
        let Some(id) = v.get("id").and_then(|i| i.as_u64()) else {
            // Pongs, presence events: nothing to count.
            return None;
        };
        let i = (id as usize).wrapping_sub(1);
        if self.phase != Phase::Subscribing || i >= self.subs.len() || self.subs[i].1.is_some() {
            ctx.totals.counters.bad_messages += 1;
            return None;
        }
        if let Some(ok) = v.get("ok") {
            self.subs[i].1 = Some(track_from(ok));
        } else {
            let code = v
                .pointer("/error/code")
                .and_then(|c| c.as_u64())
                .unwrap_or(0);
            ctx.totals.counters.subscribe_errors += 1;
            ctx.totals.error(format!("subscribe error {code}"));
            return Some(Next::Close(None));
        }
        self.pending_replies -= 1;
        if self.pending_replies == 0 {
            return Some(self.become_up(ctx));
        }
        None
    }

    fn on_echo(&mut self, ctx: &mut Ctx, msg: &[u8]) -> Option<Next> {
        let Some(sent) = self.echo_sent.pop_front() else {
            ctx.totals.counters.bad_messages += 1;
            return None;
        };
        ctx.totals.counters.echoes += 1;
        // `msg` is what was sent: the whole message (raw) or the event's data (Socket.IO).
        let sent_bytes = match ctx.protocol {
            Protocol::Socketio => ctx.message_bytes.max(2),
            _ => ctx.message_bytes,
        };
        if msg.len() != sent_bytes {
            ctx.totals.counters.bad_messages += 1;
        }
        if ctx.measuring {
            let now = Instant::now();
            ctx.record(now.duration_since(sent).as_nanos() as u64, sys::unix_ns());
        }
        self.echo_sent.push_back(Instant::now());
        let out = echo_message(ctx);
        self.send_frame(ctx, OpCode::Text, &out)
            .err()
            .map(|k| Next::Close(Some(k)))
    }

    /// At the end of the run: count what each subscription is still owed, and its anomalies.
    pub fn finish(&mut self, ctx: &mut Ctx, finals: &[u64]) {
        for (c, t) in self.subs.iter_mut() {
            let Some(t) = t.as_mut() else { continue };
            if let Some(&last) = finals.get(*c as usize) {
                t.finish(last);
            }
            if let Some(s) = ctx.totals.subscribers.get_mut(*c as usize) {
                *s += 1;
            }
        }
        self.account(ctx);
    }

    /// Add the trackers' counts to the totals (once, when the connection goes away).
    pub fn account(&mut self, ctx: &mut Ctx) {
        let c = &mut ctx.totals.counters;
        for (_, t) in self.subs.iter_mut() {
            if let Some(t) = t.take() {
                c.missing += t.missing;
                c.duplicate += t.duplicate;
                c.out_of_order += t.out_of_order;
                c.epoch_changes += t.epoch_changes;
            }
        }
    }
}
