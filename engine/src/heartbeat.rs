//! Heartbeats: ping connections that went quiet, close (4009) the ones that do
//! not answer, and optionally the ones that send no messages at all.
//!
//! Pings and closes are control frames and jump the data queue, so a busy
//! connection's pong is never mistaken for silence; any received byte counts
//! as life, since a client streaming data to us is evidently there.

use std::time::Duration;

use bytes::Bytes;
use shardcast_proto::error::close_code;
use shardcast_proto::sse;

use crate::auth::unix_now;
use crate::conn::{flag, Phase};
use crate::driver::ConnKey;
use crate::shard::Core;

/// An empty unmasked ping frame, shared by every connection.
static PING_FRAME: [u8; 2] = [0x89, 0x00];

/// Heartbeat settings in wheel ticks, derived once from the config.
#[derive(Debug, Clone, Copy)]
pub struct Beats {
    pub ping: u64,
    pub pong: u64,
    /// 0: no idle timeout.
    pub idle: u64,
}

impl Core {
    fn tick_now(&self) -> u32 {
        self.wheel.tick_of(self.now) as u32
    }

    /// A connection became a WebSocket: first visit at the earliest of a ping
    /// interval, the idle timeout and its token's expiry.
    pub(crate) fn heartbeat_start(&mut self, key: ConnKey) {
        let t = self.tick_now();
        let b = self.beats;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_rx_tick = t;
        conn.last_msg_tick = t;
        let gen = conn.gen;
        let mut first = t as u64
            + if b.idle > 0 {
                b.ping.min(b.idle)
            } else {
                b.ping
            };
        if let Some(exp) = self.expiry_tick(key) {
            first = first.min(exp);
        }
        self.wheel.schedule(first, (key, gen));
    }

    /// The wheel tick at which the connection's token expires, if it has one.
    fn expiry_tick(&self, key: ConnKey) -> Option<u64> {
        let exp = self.conns.get(key)?.claims()?.exp?;
        let left = Duration::from_secs(exp.saturating_sub(unix_now()));
        Some(self.wheel.tick_of(self.now) + self.wheel.ticks(left))
    }

    /// Bytes arrived: the connection is alive.
    pub(crate) fn heartbeat_rx(&mut self, key: ConnKey) {
        let t = self.tick_now();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.last_rx_tick = t;
            conn.set(flag::PING_OUTSTANDING, false);
        }
    }

    /// A data message arrived (for the idle timeout).
    pub(crate) fn heartbeat_msg(&mut self, key: ConnKey) {
        let t = self.tick_now();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.last_msg_tick = t;
        }
    }

    pub(crate) fn heartbeat_due(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(self.now, &mut due);
        for (key, gen) in due.drain(..) {
            self.heartbeat_visit(key, gen);
        }
        self.due = due;
    }

    fn heartbeat_visit(&mut self, key: ConnKey, gen: u32) {
        let t = self.wheel.tick_of(self.now);
        let b = self.beats;
        let Some(conn) = self.conns.get_gen(key, gen) else {
            return;
        };
        if conn.phase != Phase::Ws {
            return;
        }
        // Idle connections give their queue's memory back between bursts, and
        // again once the ping below has gone out.
        if !conn.has(flag::SENDING) {
            conn.out.release_if_empty();
        }
        if conn.out.is_empty() {
            conn.set(flag::RELEASE_WHEN_DRAINED, true);
        }
        if conn
            .claims()
            .and_then(|c| c.exp)
            .is_some_and(|exp| exp <= unix_now())
        {
            return self.close_ws(key, close_code::TOKEN_EXPIRED, "token expired");
        }
        if conn.has(flag::SSE) {
            // A stream's client never answers: a comment every interval keeps proxies
            // from timing it out, and a dead peer shows up as a failed write.
            if !self.send_control(key, Bytes::from_static(sse::HEARTBEAT)) {
                return;
            }
            let next = t + b.ping;
            let next = self.expiry_tick(key).map_or(next, |exp| next.min(exp));
            return self.wheel.schedule(next, (key, gen));
        }
        let idle_at = conn.last_msg_tick as u64 + b.idle;
        if b.idle > 0 && t >= idle_at {
            return self.close_ws(key, close_code::IDLE_TIMEOUT, "idle timeout");
        }
        let next = if conn.has(flag::PING_OUTSTANDING) {
            return self.close_ws(key, close_code::IDLE_TIMEOUT, "heartbeat timeout");
        } else if t >= conn.last_rx_tick as u64 + b.ping {
            conn.set(flag::PING_OUTSTANDING, true);
            if !self.send_control(key, Bytes::from_static(&PING_FRAME)) {
                return;
            }
            t + b.pong
        } else {
            conn.last_rx_tick as u64 + b.ping
        };
        let next = if b.idle > 0 { next.min(idle_at) } else { next };
        let next = self.expiry_tick(key).map_or(next, |exp| next.min(exp));
        self.wheel.schedule(next, (key, gen));
    }
}

/// Wheel resolution: a tenth of the shortest heartbeat period, 10 ms to 1 s.
pub fn wheel_tick(ping_ms: u64, pong_ms: u64, idle_ms: u64) -> Duration {
    let shortest = [ping_ms, pong_ms, idle_ms]
        .into_iter()
        .filter(|&v| v > 0)
        .min()
        .unwrap_or(1000);
    Duration::from_millis((shortest / 10).clamp(10, 1000))
}
