//! A connection's life on its shard: bytes in, writes finished, closing.
//!
//! Closing is always orderly when the peer is still there: our close frame (or
//! final HTTP response) is queued behind what is being written. A WebSocket's
//! socket is closed when the peer's close frame (or its EOF) arrives after it;
//! an HTTP response's or event stream's write side is shut once it drains, and
//! the socket closed when the peer closes too. Either way `close_linger_ms`
//! bounds the wait. Only a dead peer gets an immediate close.

use std::time::Duration;

use bytes::Bytes;
use shardcast_proto::error::close_code;
use shardcast_proto::PreparedFrame;

use crate::conn::partial::Held;
use crate::conn::{flag, Enqueue, Phase};
use crate::driver::ConnKey;
use crate::policy::timer::Deadline;
use crate::shard::Core;
use crate::stats::ShardStats;

impl Core {
    pub(crate) fn on_data(&mut self, key: ConnKey, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Http => self.on_http_bytes(key, data),
            // An event stream is one-way: what its client sends after the request is ignored.
            Phase::Ws if conn.has(flag::SSE) => {}
            Phase::Ws => self.on_ws_bytes(key, data),
            // The peer's reply to our close, or data we no longer read.
            Phase::Closing => {
                if self.out.peer_closed(key, data) {
                    // Nothing more comes: close once our own close frame is out.
                    self.on_read_closed(key);
                }
            }
            Phase::Dead => {}
        }
    }

    pub(crate) fn on_read_closed(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.set(flag::READ_CLOSED, true);
        match conn.phase {
            Phase::Closing if !conn.out.is_empty() => {}
            Phase::Dead => {}
            _ => self.abort(key),
        }
    }

    pub(crate) fn on_sent(&mut self, key: ConnKey, result: Result<usize, i32>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match result {
            Ok(n) => {
                self.out.written(conn, n);
                if self.replays.has(key) {
                    // A replay is paced by its reader: refill as the queue drains.
                    self.replays.progressed(key, self.now);
                    self.pump_replays(key);
                }
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let http = conn.phase == Phase::Http;
                if !conn.out.is_empty() {
                    self.out.mark_more(conn, key);
                } else if conn.has(flag::CLOSE_AFTER_FLUSH) {
                    self.flushed_before_close(key);
                } else if conn.has(flag::RELEASE_WHEN_DRAINED) {
                    // An idle connection holds no queue memory (about 160 bytes otherwise).
                    conn.set(flag::RELEASE_WHEN_DRAINED, false);
                    conn.out.release_if_empty();
                }
                if http {
                    // Requests held back by `http_queue_bytes_max` resume here.
                    self.http_progress(key);
                }
            }
            Err(_) => {
                conn.set(flag::SENDING, false);
                self.abort(key);
            }
        }
    }

    pub(crate) fn on_closed(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.remove(key) else {
            return;
        };
        ShardStats::sub(&self.stats.conns_open, 1);
        self.out.dropped(&conn);
        debug_assert!(self.subs.of(&conn).is_empty());
    }

    /// Queue a data frame; a connection past its byte budget is closed with 4008.
    pub(crate) fn send_frame(&mut self, key: ConnKey, frame: Bytes) {
        if self.send_frame_no_close(key, frame) == Enqueue::Backpressure {
            self.slow_consumer(key);
        }
    }

    /// Queue a data frame, reporting backpressure to the caller, who must then
    /// call [`Core::slow_consumer`] (done later when the caller is iterating a channel).
    #[inline]
    pub(crate) fn send_frame_no_close(&mut self, key: ConnKey, frame: Bytes) -> Enqueue {
        self.out.queue_frame(&mut self.conns, key, frame)
    }

    /// Queue a control frame (ping, pong, SSE heartbeat) ahead of queued data,
    /// counted like data; past `control_bytes_max` the connection is a slow
    /// consumer. False when it was closed for that (or is gone).
    pub(crate) fn send_control(&mut self, key: ConnKey, frame: Bytes) -> bool {
        match self.out.queue_control(&mut self.conns, key, frame) {
            Some(Enqueue::Ok) => true,
            Some(Enqueue::Backpressure) => {
                self.slow_consumer(key);
                false
            }
            None => false,
        }
    }

    /// Queue a reply (JSON text) for a WebSocket client.
    pub(crate) fn send_json(&mut self, key: ConnKey, json: &[u8]) {
        // A reply (to a subscribe, say) that finds the queue empty is a one-off
        // like the upgrade's: the queue's memory (about 160 bytes) goes once it
        // drains, not at the next heartbeat 25 s later.
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.out.is_empty() {
                conn.set(flag::RELEASE_WHEN_DRAINED, true);
            }
        }
        // A reply is awaited: urgent, not behind a fan-out.
        let frame = PreparedFrame::text(json).into_bytes();
        if self.out.queue_reply(&mut self.conns, key, frame) == Enqueue::Backpressure {
            self.slow_consumer(key);
        }
    }

    /// Queue raw bytes (HTTP responses); not subject to the WebSocket budget.
    /// Bounded by the callers instead: in the HTTP phase no request is handled
    /// while `http_queue_bytes_max` bytes are unsent (`process_http`), and the
    /// others (101, SSE head, 408, 503) are one-off replies that end the phase.
    pub(crate) fn send_raw(&mut self, key: ConnKey, bytes: Vec<u8>) {
        self.out.queue_raw(&mut self.conns, key, Bytes::from(bytes));
    }

    pub(crate) fn slow_consumer(&mut self, key: ConnKey) {
        ShardStats::inc(&self.stats.slow_consumer_closes);
        if let Some(conn) = self.conns.get_mut(key) {
            self.out.discard_unsent(conn);
        }
        self.close_ws(
            key,
            shardcast_proto::error::close_code::SLOW_CONSUMER,
            "slow consumer",
        );
    }

    /// Close a WebSocket with `code`: leave every channel, queue the close frame
    /// behind data already queued, and close the socket once the peer answers
    /// it (an event stream: shut down once it is written).
    pub(crate) fn close_ws(&mut self, key: ConnKey, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Ws => {}
            Phase::Http => return self.close_after_response(key),
            Phase::Closing | Phase::Dead => return,
        }
        let frame = if conn.has(flag::SSE) {
            crate::conn::sse::close_event(code, reason)
        } else {
            PreparedFrame::close(code, reason).into_bytes()
        };
        let sse = conn.has(flag::SSE);
        self.out.queue_last(conn, frame);
        if !sse {
            // An event stream's client reads until EOF: it gets the shutdown.
            self.out.await_peer_close(key);
        }
        self.leave_ws(key);
        self.close_after_response(key);
    }

    /// The peer closed the WebSocket (its close frame): echo it and close the
    /// socket once the echo is written (RFC 6455 §7.1.1: the server closes first).
    pub(crate) fn close_ws_echo(&mut self, key: ConnKey, code: u16) {
        self.close_ws(key, code, "");
        if let Some(conn) = self.conns.get_mut(key) {
            // Nothing more is coming from a peer that sent its close frame.
            conn.set(flag::READ_CLOSED, true);
        }
    }

    /// The connection stops being a WebSocket: unsubscribe and count it out.
    fn leave_ws(&mut self, key: ConnKey) {
        self.unsubscribe_all(key);
        // A closing connection reads no more: its incomplete message goes now.
        if let Some(c) = self.conns.get_mut(key) {
            let held = c.take_decoder().buffered_bytes();
            self.partials.changed(held, 0);
        }
        if let Some(e) = self.conns.get_mut(key).and_then(|c| c.extra.as_mut()) {
            if std::mem::take(&mut e.user_counted) {
                if let Some(c) = &e.claims {
                    self.shared.users.release(&c.sub);
                }
            }
        }
        ShardStats::sub(&self.stats.ws_open, 1);
        if self.conns.get(key).is_some_and(|c| c.has(flag::SSE)) {
            ShardStats::sub(&self.stats.sse_open, 1);
        }
    }

    /// Finish writing what is queued, then shut down the write side. The whole
    /// close is bounded by `close_linger_ms`: a peer that stopped reading would
    /// otherwise hold the connection (and a shutdown or drain) forever.
    pub(crate) fn close_after_response(&mut self, key: ConnKey) {
        let deadline = self.now + Duration::from_millis(self.cfg.limits.close_linger_ms);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Closing {
            self.deadlines
                .push(Deadline::Linger, deadline, key, conn.gen);
        }
        conn.phase = Phase::Closing;
        conn.set(flag::CLOSE_AFTER_FLUSH, true);
        if conn.out.is_empty() && !conn.has(flag::SENDING) {
            self.flushed_before_close(key);
        } else {
            // The close goes out this turn, with what is queued before it.
            self.out.mark_urgent(conn, key);
        }
    }

    fn flushed_before_close(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Dead {
            // Aborted while its last write was in flight: the socket is being
            // closed, and its key may be reused by an accept in this same turn
            // (its `Closed` can follow this `Sent` in one batch). A shutdown
            // queued now would cut the new connection's write side (found by
            // the simulation, seed 10971).
            return;
        }
        if conn.has(flag::READ_CLOSED) {
            return self.abort(key);
        }
        conn.set(flag::CLOSE_AFTER_FLUSH, false);
        let gen = conn.gen;
        if !self.out.awaits_peer_close(key) {
            self.out.shutdown_write(key);
        }
        let deadline = self.now + Duration::from_millis(self.cfg.limits.close_linger_ms);
        self.deadlines.push(Deadline::Linger, deadline, key, gen);
    }

    /// Close the socket now (peer gone, write failed, linger over).
    pub(crate) fn abort(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Dead => return,
            Phase::Ws => {
                conn.phase = Phase::Dead;
                self.leave_ws(key);
            }
            _ => conn.phase = Phase::Dead,
        }
        self.out.close(key);
    }

    /// (Re)start the time a connection has to send a complete HTTP request.
    pub(crate) fn arm_http_deadline(&mut self, key: ConnKey) {
        let deadline = self.now + Duration::from_millis(self.cfg.limits.handshake_timeout_ms);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let gen = conn.gen;
        if let Some(h) = conn.http_mut() {
            h.deadline = Some(deadline);
        }
        self.deadlines.push(Deadline::Handshake, deadline, key, gen);
    }

    pub(crate) fn http_deadline_passed(&mut self, key: ConnKey, gen: u32) {
        let now = self.now;
        let Some(conn) = self.conns.get_gen(key, gen) else {
            return;
        };
        if conn.phase != Phase::Http {
            return;
        }
        let expired = conn.http().is_some_and(|h| {
            // A backpressured connection's requests wait on us, not on it
            // (its timeout is `http_write_timeout_ms`).
            h.waiting.is_empty() && h.stalled.is_none() && h.deadline.is_some_and(|d| d <= now)
        });
        if expired {
            // Slowloris guard: a request that never completes holds nothing for long.
            self.send_raw(
                key,
                shardcast_proto::http::HttpError {
                    status: 408,
                    message: "request timeout",
                }
                .response(),
            );
            self.close_after_response(key);
        }
    }
}

/// Incomplete messages past their bounds (conn/partial.rs) are closed with 1008.
impl Core {
    /// After a read: enforce the shard's budget, and arm the connection's
    /// deadline if it now holds an incomplete message.
    pub(crate) fn partial_check(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if self.partials.check(conn, key, self.now) == Held::OverBudget {
            ShardStats::inc(&self.stats.partial_budget_closes);
            self.close_ws(key, close_code::POLICY, "partial message budget exceeded");
        }
    }

    /// Close the connections still holding the incomplete message whose
    /// deadline came.
    pub(crate) fn frame_deadlines_due(&mut self) {
        for key in self.partials.expired(&mut self.conns, self.now) {
            ShardStats::inc(&self.stats.frame_timeout_closes);
            self.close_ws(key, close_code::POLICY, "frame timeout");
        }
    }
}
