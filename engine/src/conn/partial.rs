//! Incomplete messages: bounded in time and, per shard, in bytes.
//!
//! After the upgrade a client can start a message and never finish it, a byte
//! at a time if it likes: every byte counts as life for the heartbeat, and the
//! idle timeout (off by default) only sees whole messages. The decoder then
//! holds up to `message_bytes_max` for it forever. Two bounds close such a
//! connection with 1008:
//!
//! - **time**: a message must complete within `limits.frame_timeout_ms` of the
//!   read that brought its first byte. The decoder keeps that read's tick
//!   (`Decoder::incomplete_since`, in its partial-state box, so an idle
//!   connection pays nothing); a second timer wheel of the same kind as the
//!   heartbeat's holds at most one entry per connection with an incomplete
//!   message (`flag::FRAME_TIMER`), re-armed lazily at its visit;
//! - **bytes**: all the shard's decoders together hold at most
//!   `limits.partial_bytes_per_shard_max`; the connection whose read passes it
//!   is the one closed.
//!
//! [`Partials`] keeps both bounds' state; the shard closes the connections
//! it names (conn/lifecycle.rs: `partial_check` after a read,
//! `frame_deadlines_due` each turn).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alloc_trim::shrink_vec;
use crate::config::Limits;
use crate::conn::{flag, Conn, Phase, Slab};
use crate::driver::ConnKey;
use crate::policy::timer::{wheel_tick, Entry, Wheel};
use crate::stats::ShardStats;

/// A shard's incomplete messages: their deadlines and the bytes they hold.
#[derive(Debug)]
pub(crate) struct Partials {
    /// Deadlines of incomplete messages, in ticks of their own wheel.
    wheel: Wheel,
    /// `limits.frame_timeout_ms` in the wheel's ticks; 0: no deadline.
    ticks: u64,
    /// Bytes all this shard's decoders hold for incomplete messages.
    held: usize,
    /// `limits.partial_bytes_per_shard_max`.
    budget: usize,
    /// The entries a turn's visit takes from the wheel (kept for the next).
    due: Vec<Entry>,
    stats: Arc<ShardStats>,
}

/// What a read left in a connection's decoder asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Nothing, or an incomplete message within the bounds (its deadline armed).
    Fine,
    /// The shard's decoders hold more than the budget: close the connection.
    OverBudget,
}

impl Partials {
    pub(crate) fn new(l: &Limits, stats: Arc<ShardStats>, now: Instant) -> Partials {
        // A tenth of the timeout, as for heartbeats: closes come at most two ticks late.
        let frame_ms = l.frame_timeout_ms;
        let wheel = Wheel::new(
            wheel_tick(frame_ms, frame_ms, 0),
            Duration::from_millis(frame_ms.max(1)),
            now,
        );
        let ticks = if frame_ms == 0 {
            0
        } else {
            wheel.ticks(Duration::from_millis(frame_ms))
        };
        Partials {
            wheel,
            ticks,
            held: 0,
            budget: l.partial_bytes_per_shard_max,
            due: Vec::new(),
            stats,
        }
    }

    /// The stamp the decoder keeps for a message that begins in a read at `now`.
    pub(crate) fn stamp(&self, now: Instant) -> u32 {
        self.wheel.tick_of(now) as u32
    }

    /// Account for a decoder's held bytes changing from `before` to `after`.
    pub(crate) fn changed(&mut self, before: usize, after: usize) {
        self.held = self.held - before + after;
        let gauge = &self.stats.partial_bytes;
        gauge.store(self.held as u64, Ordering::Relaxed);
    }

    /// After a read: over the shard's budget, or the connection's deadline
    /// armed if it now holds an incomplete message.
    pub(crate) fn check(&mut self, conn: &mut Conn, key: ConnKey, now: Instant) -> Held {
        if conn.phase != Phase::Ws {
            return Held::Fine;
        }
        let Some(since) = conn.incomplete_since() else {
            return Held::Fine;
        };
        if self.held > self.budget {
            // Every read that passed it closed its connection, so this one did.
            return Held::OverBudget;
        }
        if self.ticks > 0 && !conn.has(flag::FRAME_TIMER) {
            conn.set(flag::FRAME_TIMER, true);
            let at = self.deadline(since, now);
            self.wheel.schedule(at, (key, conn.gen));
        }
        Held::Fine
    }

    /// The tick by which a message begun at `since` must be complete.
    fn deadline(&self, since: u32, now: Instant) -> u64 {
        let now = self.wheel.tick_of(now);
        // The stamp is a u32 of the same ticks; its age survives a wrap.
        let age = (now as u32).wrapping_sub(since) as u64;
        // One tick more: the first byte came somewhere inside tick `since`, and
        // the client gets the whole timeout (closed up to two ticks late, never early).
        (now + self.ticks + 1).saturating_sub(age)
    }

    /// Visit the connections whose message deadline came: re-arm those
    /// holding a newer incomplete message, and name those still holding the
    /// same one (to be closed).
    pub(crate) fn expired(&mut self, conns: &mut Slab, now: Instant) -> Vec<ConnKey> {
        let mut late = Vec::new();
        if self.ticks == 0 {
            return late;
        }
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        let tick = self.wheel.tick_of(now);
        for (key, gen) in due.drain(..) {
            let Some(conn) = conns.get_gen(key, gen) else {
                continue;
            };
            conn.set(flag::FRAME_TIMER, false);
            if conn.phase != Phase::Ws {
                continue;
            }
            let Some(since) = conn.incomplete_since() else {
                continue;
            };
            let at = self.deadline(since, now);
            if at <= tick {
                late.push(key);
            } else {
                conn.set(flag::FRAME_TIMER, true);
                self.wheel.schedule(at, (key, gen));
            }
        }
        self.due = due;
        late
    }

    /// When the next deadline is due, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Give back what a burst left in the visit list.
    pub(crate) fn trim(&mut self) {
        shrink_vec(&mut self.due);
    }
}
