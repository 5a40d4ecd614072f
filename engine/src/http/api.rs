//! The HTTP side of the port: WebSocket upgrades and the backend API
//! (`/api/publish`, `/api/broadcast`, `/api/channels`, `/health`, `/ready`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use shardcast_proto::command::{self, CommandError};
use shardcast_proto::error::close_code;
use shardcast_proto::handshake::{self, Subprotocol};

use crate::policy::auth::AuthError;
use shardcast_proto::http::{self, HttpError, Request};

use crate::config::Limits;
use crate::conn::{Phase, Slab, Waiting};
use crate::driver::ConnKey;
use crate::payload::ConnRef;
use crate::policy::heartbeat;
use crate::policy::timer::Deadline;
use crate::shard::mesh::{owner_of, Published, ReplyTo, ShardMsg};
use crate::shard::router::Router;
use crate::shard::shared::Shared;
use crate::shard::Core;
use crate::stats::ShardStats;

/// Publishes from one connection in flight at once: pipelined requests are
/// handed to the owners without waiting for earlier answers, so a burst of
/// publications can be fanned out (and batched per socket) together. Each
/// waits about a loop turn for its owner; at a million connections a turn
/// writing its share of a fan-out lasts tens of milliseconds, and 64 in
/// flight held one keep-alive publisher to 412-452 publications a second.
const PIPELINE_MAX: usize = 256;

/// Request-buffer capacity a keep-alive connection keeps between requests (one
/// receive buffer's worth); more, left by a burst, is given back.
const HTTP_BUF_KEEP: usize = 16 * 1024;

impl Core {
    pub(crate) fn on_http_bytes(&mut self, key: ConnKey, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(h) = conn.http_mut() else { return };
        // The buffer holds every request received and not yet handled, pipelined
        // ones included, so this one cap bounds it.
        if h.buf.len() + data.len()
            > self.http_limits.header_bytes_max + self.http_limits.body_bytes_max
        {
            if h.stalled.is_some() {
                // Backpressured, and the unhandled requests fill the buffer too.
                // The drivers cannot pause a connection's (multishot) receive, so
                // a client that keeps sending without reading is dropped here.
                ShardStats::inc(&self.stats.http_slow_reader_closes);
                return self.abort(key);
            }
            self.reject(
                key,
                HttpError {
                    status: 413,
                    message: "request too large",
                },
            );
            return;
        }
        h.buf.extend_from_slice(data);
        self.process_http(key);
    }

    /// Handle the complete requests in the buffer, up to `PIPELINE_MAX` in
    /// flight, while the unsent responses stay under `http_queue_bytes_max`.
    /// At that bound the rest wait in the buffer (see [`Core::http_progress`]).
    fn process_http(&mut self, key: ConnKey) {
        let limit = self.cfg.limits.http_queue_bytes_max;
        // Requests are parsed at an offset and the handled prefix removed once at
        // the end: removing each one as it is handled would move the rest of the
        // buffer (up to the header + body cap) once per pipelined request.
        let mut done = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.phase != Phase::Http {
                return;
            }
            let backpressured = conn.queued_bytes() >= limit;
            let Some(h) = conn.http_mut() else { return };
            if h.waiting.len() >= PIPELINE_MAX || h.buf.len() == done {
                break;
            }
            if backpressured {
                self.http_pause(key);
                break;
            }
            let (req, used) = match http::parse_request(&h.buf[done..], &self.http_limits) {
                Ok(Some(r)) => {
                    h.continued = false;
                    r
                }
                Ok(None) => {
                    // Answered only when no earlier answer is still to come, which
                    // the interim response must not overtake.
                    let head = (!h.continued && h.waiting.is_empty())
                        .then(|| http::awaiting_continue(&h.buf[done..], &self.http_limits))
                        .flatten();
                    if let Some(head) = head {
                        h.continued = true;
                        if self.refused_before_body(key, &head) {
                            return;
                        }
                        self.send_raw(key, http::CONTINUE.to_vec());
                    }
                    break;
                }
                Err(e) => {
                    h.buf.drain(..done);
                    return self.reject(key, e);
                }
            };
            if self.stopping {
                // Handled now it could be published after its connection is
                // gone: refused, said so, and the connection closes after it.
                h.buf.clear();
                return self.shutting_down(key);
            }
            let takes_buffer = req.path == "/ws" || req.path == "/sse";
            if takes_buffer && !h.waiting.is_empty() {
                break; // the 101 (or stream head) must not overtake earlier answers
            }
            done += used;
            if takes_buffer {
                // What follows the request belongs to the WebSocket (or is ignored).
                h.buf.drain(..done);
                done = 0;
            }
            self.route(key, req);
        }
        let Some(h) = self.conns.get_mut(key).and_then(|c| c.http_mut()) else {
            return;
        };
        h.buf.drain(..done);
        // A burst of pipelined requests (or one large body) grew the buffer; a
        // keep-alive connection should not hold that memory while idle.
        if h.buf.capacity() > HTTP_BUF_KEEP && h.buf.len() * 4 <= h.buf.capacity() {
            h.buf.shrink_to(h.buf.len().max(HTTP_BUF_KEEP));
        }
    }

    /// The connection's unsent responses reached `http_queue_bytes_max`: its
    /// requests wait, and it has `http_write_timeout_ms` to read some.
    fn http_pause(&mut self, key: ConnKey) {
        let deadline = self.now + Duration::from_millis(self.cfg.limits.http_write_timeout_ms);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let gen = conn.gen;
        let Some(h) = conn.http_mut() else { return };
        if h.stalled.is_none() {
            h.stalled = Some(deadline);
            self.deadlines.push(Deadline::Stall, deadline, key, gen);
            ShardStats::inc(&self.stats.http_backpressured);
        }
    }

    /// Some responses of an HTTP-phase connection were written. A backpressured
    /// one gets its time again and, once under the bound, its waiting answers
    /// and requests are handled: backpressure delays requests, never drops them.
    pub(crate) fn http_progress(&mut self, key: ConnKey) {
        let limit = self.cfg.limits.http_queue_bytes_max;
        let (now, timeout) = (
            self.now,
            Duration::from_millis(self.cfg.limits.http_write_timeout_ms),
        );
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Http {
            return;
        }
        let (gen, still_full) = (conn.gen, conn.queued_bytes() >= limit);
        let Some(h) = conn.http_mut() else { return };
        if h.stalled.is_none() {
            return;
        }
        if still_full {
            // It reads, slowly: the timeout is for a client that reads nothing.
            h.stalled = Some(now + timeout);
            self.deadlines
                .push(Deadline::Stall, now + timeout, key, gen);
            return;
        }
        h.stalled = None;
        // The request timeout skipped this connection while its requests waited
        // on us; give it a fresh one.
        if h.deadline.is_some_and(|d| d <= now) {
            self.arm_http_deadline(key);
        }
        self.flush_answers(key);
        self.process_http(key);
    }

    /// A backpressured connection's write deadline: closed if it still read nothing.
    pub(crate) fn http_stall_passed(&mut self, key: ConnKey, gen: u32) {
        let now = self.now;
        let Some(conn) = self.conns.get_gen(key, gen) else {
            return;
        };
        if conn.phase != Phase::Http {
            return;
        }
        if conn
            .http()
            .and_then(|h| h.stalled)
            .is_some_and(|d| d <= now)
        {
            ShardStats::inc(&self.stats.http_slow_reader_closes);
            self.abort(key);
        }
    }

    fn route(&mut self, key: ConnKey, req: Request) {
        let keep_alive = req.keep_alive();
        match (req.method.as_str(), req.path.as_str()) {
            (_, "/ws") => self.upgrade(key, req),
            ("GET", "/sse") => self.sse_open(key, req),
            ("GET", "/health") => self.respond(key, 200, "text/plain", b"ok", keep_alive),
            ("GET", "/ready") => {
                if self.shared.draining.load(Ordering::Relaxed) {
                    self.respond(key, 503, "text/plain", b"draining", keep_alive)
                } else if !self.shared.authority.is_up() {
                    self.respond(key, 503, "text/plain", b"cluster bus down", keep_alive)
                } else if above_high_water(&self.cfg.limits, self.shards, &self.shared) {
                    self.respond(key, 503, "text/plain", b"overloaded", keep_alive)
                } else {
                    self.respond(key, 200, "text/plain", b"ready", keep_alive)
                }
            }
            ("GET", "/metrics") => {
                let body = crate::http::metrics::render(&self.shared);
                let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                self.respond(key, 200, ct, body.as_bytes(), keep_alive);
            }
            ("GET", "/api/channels") => {
                if self.api_authorized(key, &req) {
                    let body = channels_json(&self.shared);
                    self.respond(key, 200, "application/json", &body, keep_alive);
                }
            }
            ("POST", "/api/publish") | ("POST", "/api/broadcast") => {
                if self.api_authorized(key, &req) {
                    self.api_publish(key, req, keep_alive);
                }
            }
            (
                _,
                "/health" | "/ready" | "/metrics" | "/api/channels" | "/api/publish"
                | "/api/broadcast" | "/sse",
            ) => self.reject(
                key,
                HttpError {
                    status: 405,
                    message: "method not allowed",
                },
            ),
            _ => self.respond(key, 404, "text/plain", b"not found", keep_alive),
        }
    }

    fn upgrade(&mut self, key: ConnKey, req: Request) {
        let up = match handshake::validate_upgrade(&req) {
            Ok(up) => up,
            Err(e) => return self.reject(key, e),
        };
        let max = self.cfg.limits.channels_per_conn_max;
        let asked = req
            .query_param("subscribe")
            .map_or(0, |l| l.split(',').filter(|c| !c.is_empty()).count());
        if asked > max {
            // Refused before the 101, as SSE's `channels=` is: after it the client
            // would hold a connection with only some of the channels it asked for.
            let body = format!(
                "subscribe: at most {max} channels per connection (limits.channels_per_conn_max)"
            );
            return self.respond(key, 400, "text/plain", body.as_bytes(), false);
        }
        let msgpack = up.protocol == Some(Subprotocol::Msgpack);
        if self.over_capacity() {
            ShardStats::inc(&self.stats.rejected_full);
            let body = b"server full";
            let resp = http::response(503, "text/plain", &[("Retry-After", "5")], body, false);
            self.send_raw(key, resp);
            return self.close_after_response(key);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let leftover = conn.take_http().map(|h| h.buf).unwrap_or_default();
        conn.phase = Phase::Ws;
        conn.set(crate::conn::flag::MSGPACK, msgpack);
        ShardStats::inc(&self.stats.upgrades);
        ShardStats::inc(&self.stats.ws_open);
        self.send_raw(key, handshake::upgrade_response(&up));
        if let Some(conn) = self.conns.get_mut(key) {
            conn.set(crate::conn::flag::RELEASE_WHEN_DRAINED, true);
        }
        if !self.authenticate(key, &req) {
            return;
        }
        let users_max = self.cfg.limits.conns_per_user_max;
        let users = &self.shared.users;
        if !self
            .conns
            .get_mut(key)
            .is_none_or(|c| c.admit_user(users, users_max))
        {
            let reason = "too many connections for this user";
            return self.close_ws(key, close_code::BANNED, reason);
        }
        heartbeat::start(&mut self.conns, key, &self.beat_clock, self.now);
        if let Some(list) = req.query_param("subscribe") {
            self.subscribe_listed(key, &list);
        }
        if !leftover.is_empty() {
            // Frames sent right behind the request, in the same segment.
            let mut leftover = leftover;
            self.on_ws_bytes(key, &mut leftover);
        }
    }

    /// Subscribe a new WebSocket to the channels of its `?subscribe=a,b`; a
    /// bad name gets an error reply, the others are subscribed.
    fn subscribe_listed(&mut self, key: ConnKey, list: &str) {
        for channel in list.split(',').filter(|c| !c.is_empty()) {
            if command::is_valid_channel(channel) {
                self.subscribe(key, None, channel, None);
            } else {
                let e = shardcast_proto::reply::error(
                    None,
                    command::error_code::BAD_CHANNEL,
                    "bad channel name",
                );
                self.send_json(key, &e);
            }
        }
    }

    /// WebSocket connections this shard and the engine may still take.
    pub(crate) fn over_capacity(&self) -> bool {
        let l = &self.cfg.limits;
        if self.stopping || self.drain.is_some() {
            return true;
        }
        // Cluster mode without Redis: a subscriber could not be told what it misses.
        if !self.shared.authority.is_up() {
            return true;
        }
        if self.stats.ws_open.load(Ordering::Relaxed) >= l.conns_per_shard_max as u64 {
            return true;
        }
        // Reading the other shards' gauges happens once per upgrade, never per message.
        l.conns_max > 0 && self.shared.ws_open_total() >= l.conns_max
    }

    /// Check the token of a freshly upgraded connection; a refused one gets its
    /// close code (4501 invalid or missing, 4503 expired) as a WebSocket close.
    fn authenticate(&mut self, key: ConnKey, req: &Request) -> bool {
        let Some(verifier) = self.shared.verifier.as_ref() else {
            return true;
        };
        let token = req.query_param("token").or_else(|| {
            req.header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        });
        let result = token
            .ok_or(AuthError::Invalid)
            .and_then(|t| verifier.verify(&t));
        match result {
            Ok(claims) => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.set_claims(claims);
                }
                true
            }
            Err(AuthError::Invalid) => {
                self.close_ws(key, close_code::UNAUTHORIZED, "unauthorized");
                false
            }
            Err(AuthError::Expired) => {
                self.close_ws(key, close_code::TOKEN_EXPIRED, "token expired");
                false
            }
        }
    }

    fn api_authorized(&mut self, key: ConnKey, req: &Request) -> bool {
        if api_key_given(self.cfg.api_key.as_deref(), req) {
            return true;
        }
        self.refuse_unauthorized(key, req.keep_alive());
        false
    }

    fn refuse_unauthorized(&mut self, key: ConnKey, keep_alive: bool) {
        let body =
            shardcast_proto::reply::error(None, command::error_code::UNAUTHORIZED, "unauthorized");
        self.respond(key, 401, "application/json", &body, keep_alive);
    }

    /// A client waiting for `100 Continue` whose request the API refuses
    /// whatever its body says (no API key) gets the final status instead, so it
    /// never sends the body (RFC 9110 §10.1.1). The connection then closes: a
    /// client that sends the body anyway must not have it read as a request.
    fn refused_before_body(&mut self, key: ConnKey, head: &Request) -> bool {
        let publishes = head.method == "POST"
            && matches!(head.path.as_str(), "/api/publish" | "/api/broadcast");
        if !publishes || api_key_given(self.cfg.api_key.as_deref(), head) {
            return false;
        }
        self.refuse_unauthorized(key, false);
        true
    }

    fn api_publish(&mut self, key: ConnKey, mut req: Request, keep_alive: bool) {
        let broadcast = req.path == "/api/broadcast";
        let parsed = if broadcast {
            command::parse_broadcast_body(&mut req.body).map(|b| (b.channels, b.data))
        } else {
            command::parse_publish_body(&mut req.body).map(|p| (vec![p.channel], p.data))
        };
        let (channels, data) = match parsed {
            Ok(p) => p,
            Err(CommandError { code, message, .. }) => {
                let body = shardcast_proto::reply::error(None, code, &message);
                return self.respond(key, 400, "application/json", &body, keep_alive);
            }
        };
        if !owners_have_room(&self.router, self.shards, &channels) {
            self.refused(crate::shard::router::Refused::Publish);
            let code = command::error_code::TOO_MANY_REQUESTS;
            let body = shardcast_proto::reply::error(None, code, crate::shard::OVERLOADED);
            let answer = http::response(
                503,
                "application/json",
                &[("Retry-After", "1")],
                &body,
                keep_alive,
            );
            return self.emit(key, answer, keep_alive);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let conn_ref = ConnRef {
            shard: self.id,
            key,
            gen: conn.gen,
        };
        self.next_req = self.next_req.wrapping_add(1);
        let req_id = self.next_req;
        let channels: Vec<Arc<str>> = channels.into_iter().map(Arc::from).collect();
        let n = channels.len();
        if let Some(h) = conn.http_mut() {
            h.waiting.push_back(Waiting {
                req: req_id,
                broadcast,
                keep_alive,
                channels: channels.clone(),
                results: vec![None; n],
                ready: None,
            });
        }
        for (index, channel) in channels.into_iter().enumerate() {
            let owner = owner_of(&channel, self.shards);
            let reply = ReplyTo::Http {
                conn: conn_ref,
                req: req_id,
                index: index as u16,
            };
            self.send_to(
                owner,
                ShardMsg::Publish {
                    channel,
                    data: data.clone(),
                    reply,
                },
            );
        }
    }

    /// An owner answered one channel of a waiting API request.
    pub(crate) fn http_result(&mut self, conn: ConnRef, req: u32, index: u16, result: Published) {
        let Some(w) = waiting_request(&mut self.conns, conn, req) else {
            return;
        };
        if let Some(slot) = w.results.get_mut(index as usize) {
            *slot = Some(result);
        }
        if w.results.iter().all(Option::is_some) {
            let body = publish_response(w);
            w.ready = Some(http::response(
                200,
                "application/json",
                &[],
                &body,
                w.keep_alive,
            ));
        }
        self.flush_answers(conn.key);
        self.process_http(conn.key);
    }

    /// A channel of a waiting API request was not published (the cluster bus
    /// could not, or its owner refused it: a shard it fans out to is full); the
    /// whole request answers 503 (temporary), as none of it can be confirmed.
    pub(crate) fn http_failed(&mut self, conn: ConnRef, req: u32, code: u16, message: &str) {
        let Some(w) = waiting_request(&mut self.conns, conn, req) else {
            return;
        };
        let body = shardcast_proto::reply::error(None, code, message);
        w.ready = Some(http::response(
            503,
            "application/json",
            &[("Retry-After", "1")],
            &body,
            w.keep_alive,
        ));
        self.flush_answers(conn.key);
        self.process_http(conn.key);
    }

    /// Send the answers at the front of the queue that are ready, in order,
    /// while the unsent responses stay under `http_queue_bytes_max`.
    fn flush_answers(&mut self, key: ConnKey) {
        let limit = self.cfg.limits.http_queue_bytes_max;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let backpressured = conn.queued_bytes() >= limit;
            let Some(h) = conn.http_mut() else {
                return;
            };
            if h.waiting.front().is_none_or(|w| w.ready.is_none()) {
                return;
            }
            if backpressured {
                return self.http_pause(key);
            }
            let w = h.waiting.pop_front().expect("front exists");
            let bytes = w.ready.expect("checked ready");
            if !self.send_answer(key, bytes, w.keep_alive) {
                return;
            }
        }
    }

    /// Write one answer now; false when the connection closes after it. On a
    /// stopping shard it closes after the last answer still to come.
    fn send_answer(&mut self, key: ConnKey, bytes: Vec<u8>, keep_alive: bool) -> bool {
        self.send_raw(key, bytes);
        let last = self.stopping && !self.answers_to_come(key);
        if keep_alive && !last {
            self.arm_http_deadline(key);
        } else {
            if let Some(h) = self.conns.get_mut(key).and_then(|c| c.http_mut()) {
                h.waiting.clear();
            }
            self.close_after_response(key);
        }
        keep_alive && !last
    }

    /// Whether an HTTP connection has requests handed to the owners (or
    /// answered behind them) whose answers are not written yet.
    pub(crate) fn answers_to_come(&self, key: ConnKey) -> bool {
        self.conns
            .get(key)
            .filter(|c| c.phase == Phase::Http)
            .and_then(|c| c.http())
            .is_some_and(|h| !h.waiting.is_empty())
    }

    /// A request read after the shard began to stop: 503, and the connection
    /// closes once it and the answers before it are written.
    fn shutting_down(&mut self, key: ConnKey) {
        let body = b"shutting down: not handled\n";
        let answer = http::response(503, "text/plain", &[("Retry-After", "1")], body, false);
        self.emit(key, answer, false);
    }

    /// Answer now, or behind the pipelined requests still waiting for owners.
    fn emit(&mut self, key: ConnKey, bytes: Vec<u8>, keep_alive: bool) {
        if let Some(h) = self.conns.get_mut(key).and_then(|c| c.http_mut()) {
            if !h.waiting.is_empty() {
                h.waiting.push_back(Waiting {
                    keep_alive,
                    ready: Some(bytes),
                    ..Waiting::default()
                });
                return;
            }
        }
        self.send_answer(key, bytes, keep_alive);
    }

    fn respond(
        &mut self,
        key: ConnKey,
        status: u16,
        content_type: &str,
        body: &[u8],
        keep_alive: bool,
    ) {
        if status >= 400 {
            ShardStats::inc(&self.stats.rejected_bad_request);
        }
        self.emit(
            key,
            http::response(status, content_type, &[], body, keep_alive),
            keep_alive,
        );
    }

    /// Refuse a request with its status and close the connection.
    fn reject(&mut self, key: ConnKey, e: HttpError) {
        ShardStats::inc(&self.stats.rejected_bad_request);
        self.emit(key, e.response(), false);
    }
}

fn publish_response(w: &Waiting) -> Vec<u8> {
    use shardcast_proto::reply;
    if !w.broadcast {
        let p = w.results[0].as_ref().expect("complete");
        return reply::api_published(p.offset, &p.epoch);
    }
    reply::api_broadcast(w.channels.iter().zip(&w.results).map(|(ch, p)| {
        let p = p.as_ref().expect("complete");
        (&**ch, p.offset, &*p.epoch)
    }))
}

/// Whether the request carries the API key (or none is configured).
fn api_key_given(api_key: Option<&str>, req: &Request) -> bool {
    let Some(want) = api_key else {
        return true;
    };
    let given = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    given.is_some_and(|g| crate::policy::auth::constant_time_eq(g.as_bytes(), want.as_bytes()))
}

/// Open WebSockets at or past `ready_high_water_pct` of the engine's capacity.
fn above_high_water(l: &Limits, shards: usize, shared: &Shared) -> bool {
    let capacity = if l.conns_max > 0 {
        l.conns_max
    } else {
        l.conns_per_shard_max as u64 * shards as u64
    };
    shared.ws_open_total() * 100 >= capacity * l.ready_high_water_pct as u64
}

/// `/api/channels`: every shard's subscriber counts (their latest snapshots), summed.
fn channels_json(shared: &Shared) -> Vec<u8> {
    let mut counts: std::collections::BTreeMap<Arc<str>, u64> = Default::default();
    for shard in shared.channels.iter() {
        for (name, n) in shard.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            *counts.entry(name.clone()).or_default() += *n as u64;
        }
    }
    shardcast_proto::reply::api_channels(counts.iter().map(|(name, n)| (&**name, *n)))
}

/// Whether every owner of `channels` can take its share of the request, so
/// that a broadcast is refused whole rather than published in part.
fn owners_have_room(router: &Router, shards: usize, channels: &[String]) -> bool {
    let mut wanted = vec![0usize; shards];
    for channel in channels {
        wanted[owner_of(channel, shards)] += 1;
    }
    wanted
        .iter()
        .enumerate()
        .all(|(to, &n)| n <= router.room(to))
}

/// The unanswered pipelined request `req` of a connection still in its HTTP phase.
fn waiting_request(conns: &mut Slab, conn: ConnRef, req: u32) -> Option<&mut Waiting> {
    let c = conns.get_gen(conn.key, conn.gen)?;
    if c.phase != Phase::Http {
        return None;
    }
    c.http_mut()?
        .waiting
        .iter_mut()
        .find(|w| w.req == req && w.ready.is_none())
}
