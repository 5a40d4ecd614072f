//! Heartbeats: ping connections that went quiet, close (4009) the ones that do
//! not answer, and optionally the ones that send no messages at all.
//!
//! Pings and closes are control frames and jump the data queue, so a busy
//! connection's pong is never mistaken for silence; any received byte counts
//! as life, since a client streaming data to us is evidently there.

use std::time::Duration;

use bytes::Bytes;
use shardcast_proto::error::close_code;

use crate::conn::Phase;
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

    /// A connection became a WebSocket: first visit one ping interval from now.
    pub(crate) fn heartbeat_start(&mut self, key: ConnKey) {
        let t = self.tick_now();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_rx_tick = t;
        conn.last_msg_tick = t;
        let gen = conn.gen;
        let b = self.beats;
        let first = if b.idle > 0 {
            b.ping.min(b.idle)
        } else {
            b.ping
        };
        self.wheel.schedule(t as u64 + first, (key, gen));
    }

    /// Bytes arrived: the connection is alive.
    pub(crate) fn heartbeat_rx(&mut self, key: ConnKey) {
        let t = self.tick_now();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.last_rx_tick = t;
            conn.ping_outstanding = false;
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
        let idle_at = conn.last_msg_tick as u64 + b.idle;
        if b.idle > 0 && t >= idle_at {
            return self.close_ws(key, close_code::IDLE_TIMEOUT, "idle timeout");
        }
        let next = if conn.ping_outstanding {
            return self.close_ws(key, close_code::IDLE_TIMEOUT, "heartbeat timeout");
        } else if t >= conn.last_rx_tick as u64 + b.ping {
            conn.ping_outstanding = true;
            conn.enqueue_control(Bytes::from_static(&PING_FRAME));
            self.mark_dirty(key);
            t + b.pong
        } else {
            conn.last_rx_tick as u64 + b.ping
        };
        let next = if b.idle > 0 { next.min(idle_at) } else { next };
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
