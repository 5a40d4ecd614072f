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

use shardcast_proto::error::close_code;

use crate::conn::{flag, Phase};
use crate::driver::ConnKey;
use crate::shard::Core;
use crate::stats::ShardStats;

impl Core {
    /// The stamp the decoder keeps for a message that begins in this read.
    pub(crate) fn frame_stamp(&self) -> u32 {
        self.frame_wheel.tick_of(self.now) as u32
    }

    /// Account for a decoder's held bytes changing from `before` to `after`.
    pub(crate) fn partial_bytes_changed(&mut self, before: usize, after: usize) {
        self.partial_bytes = self.partial_bytes - before + after;
        let gauge = &self.stats.partial_bytes;
        gauge.store(
            self.partial_bytes as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// After a read: enforce the shard's budget, and arm the connection's
    /// deadline if it now holds an incomplete message.
    pub(crate) fn partial_check(&mut self, key: ConnKey) {
        let budget = self.cfg.limits.partial_bytes_per_shard_max;
        let ticks = self.frame_ticks;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase != Phase::Ws {
            return;
        }
        let Some(since) = conn.incomplete_since() else {
            return;
        };
        if self.partial_bytes > budget {
            // Every read that passed it closed its connection, so this one did.
            ShardStats::inc(&self.stats.partial_budget_closes);
            return self.close_ws(key, close_code::POLICY, "partial message budget exceeded");
        }
        if ticks > 0 && !conn.has(flag::FRAME_TIMER) {
            conn.set(flag::FRAME_TIMER, true);
            let gen = conn.gen;
            let at = self.frame_deadline(since);
            self.frame_wheel.schedule(at, (key, gen));
        }
    }

    /// The tick by which a message begun at `since` must be complete.
    fn frame_deadline(&self, since: u32) -> u64 {
        let now = self.frame_wheel.tick_of(self.now);
        // The stamp is a u32 of the same ticks; its age survives a wrap.
        let age = (now as u32).wrapping_sub(since) as u64;
        // One tick more: the first byte came somewhere inside tick `since`, and
        // the client gets the whole timeout (closed up to two ticks late, never early).
        (now + self.frame_ticks + 1).saturating_sub(age)
    }

    /// Visit the connections whose message deadline came: close the ones still
    /// holding the same incomplete message, re-arm those holding a newer one.
    pub(crate) fn frame_deadlines_due(&mut self) {
        if self.frame_ticks == 0 {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        self.frame_wheel.advance(self.now, &mut due);
        let now = self.frame_wheel.tick_of(self.now);
        for (key, gen) in due.drain(..) {
            let Some(conn) = self.conns.get_gen(key, gen) else {
                continue;
            };
            conn.set(flag::FRAME_TIMER, false);
            if conn.phase != Phase::Ws {
                continue;
            }
            let Some(since) = conn.incomplete_since() else {
                continue;
            };
            let at = self.frame_deadline(since);
            if at <= now {
                ShardStats::inc(&self.stats.frame_timeout_closes);
                self.close_ws(key, close_code::POLICY, "frame timeout");
            } else if let Some(conn) = self.conns.get_mut(key) {
                conn.set(flag::FRAME_TIMER, true);
                self.frame_wheel.schedule(at, (key, gen));
            }
        }
        self.due = due;
    }
}
