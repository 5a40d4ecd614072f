//! The router: how a shard hands messages to other shards (and to itself).
//!
//! A message goes straight into the destination's inbox (`shard/mesh.rs`, bounded
//! at `limits.inbox_msgs_max`); when that inbox is full it waits here, in a
//! per-destination overflow, and is retried in order at the end of each loop
//! turn. Order per destination is kept: once a destination has an overflow,
//! every later message to it queues behind.
//!
//! The overflow is bounded by `limits.router_overflow_msgs_max`, but only for
//! the messages that bring new work in and can be refused with an answer to
//! whoever asked (publications, `history` and `presence` queries: see
//! [`Router::try_send`]). Messages whose loss would break an invariant
//! (interest changes, acknowledgements, answers, presence changes, recoveries)
//! are never refused ([`Router::send`]); each is bounded by another limit, as
//! docs/ARCHITECTURE.md ("The router's overflow is bounded") explains kind by
//! kind. Refusable messages see the whole overflow, so past the bound only
//! messages of the second kind can be added.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::alloc_trim::shrink_deque;
use crate::payload::ShardId;
use crate::shard::mesh::{Peer, ShardMsg};
use crate::stats::ShardStats;

/// A burst past the bound refuses thousands of messages a second; one line a
/// second with the count says as much without flooding the log.
const LOG_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Router {
    id: ShardId,
    peers: Vec<Peer>,
    /// Messages for a shard whose inbox was full, resent in order next turn.
    overflow: Vec<VecDeque<ShardMsg>>,
    /// Messages this shard sends to itself (it owns the channel).
    local: VecDeque<ShardMsg>,
    /// Destinations written to this turn, woken once at its end.
    to_wake: u64,
    overflow_max: usize,
}

impl Router {
    pub fn new(id: ShardId, peers: Vec<Peer>, overflow_max: usize) -> Router {
        let shards = peers.len();
        Router {
            id,
            peers,
            overflow: (0..shards).map(|_| VecDeque::new()).collect(),
            local: VecDeque::new(),
            to_wake: 0,
            overflow_max,
        }
    }

    /// Queue a message that must not be lost, whatever the overflow holds.
    pub fn send(&mut self, to: ShardId, msg: ShardMsg) {
        if to == self.id {
            self.local.push_back(msg);
            return;
        }
        self.to_wake |= 1 << to;
        if !self.overflow[to].is_empty() {
            self.overflow[to].push_back(msg);
            return;
        }
        if let Err(msg) = self.peers[to].try_send(msg) {
            self.overflow[to].push_back(msg);
        }
    }

    /// Queue a message that may be refused: it comes back when shard `to`'s
    /// inbox is full and its overflow holds `router_overflow_msgs_max`.
    pub fn try_send(&mut self, to: ShardId, msg: ShardMsg) -> Result<(), ShardMsg> {
        if self.room(to) == 0 {
            return Err(msg);
        }
        self.send(to, msg);
        Ok(())
    }

    /// How many refusable messages shard `to` can still take for sure. A shard
    /// handles its own messages in this loop (`local`, drained every turn), so
    /// it always has room; for another, the inbox may have room too, but its
    /// length races with the peer, so only the overflow's room is promised.
    pub fn room(&self, to: ShardId) -> usize {
        if to == self.id {
            return usize::MAX;
        }
        self.overflow_max.saturating_sub(self.overflow[to].len())
    }

    /// Whether every shard in `bits` can take one more refusable message.
    pub fn all_have_room(&self, mut bits: u64) -> bool {
        while bits != 0 {
            let to = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if self.room(to) == 0 {
                return false;
            }
        }
        true
    }

    /// The next message this shard sent itself.
    pub fn pop_local(&mut self) -> Option<ShardMsg> {
        self.local.pop_front()
    }

    /// Whether messages wait here, so the loop must not sleep.
    pub fn has_pending(&self) -> bool {
        !self.local.is_empty() || self.overflow.iter().any(|q| !q.is_empty())
    }

    /// End of a loop turn: move what fits from each overflow into its inbox,
    /// in order, then wake the destinations that sleep.
    pub fn flush(&mut self) {
        for (to, q) in self.overflow.iter_mut().enumerate() {
            while let Some(msg) = q.pop_front() {
                if let Err(msg) = self.peers[to].try_send(msg) {
                    q.push_front(msg);
                    break;
                }
            }
        }
        let mut bits = std::mem::take(&mut self.to_wake);
        while bits != 0 {
            let to = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.peers[to].wake_if_sleeping();
        }
    }

    /// Give back what a burst left in the queues once they are mostly empty.
    pub fn trim(&mut self) {
        shrink_deque(&mut self.local);
        for q in &mut self.overflow {
            shrink_deque(q);
        }
    }
}

/// What was refused because a destination's overflow was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A client's or the HTTP API's publication, at the publisher's shard.
    Publish,
    /// A publication at its owner: a shard it fans out to had no room.
    Fanout,
    /// A client's `history` or `presence` query.
    Request,
    /// A presence event not sent to a shard with no room (members stay right).
    Event,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Publish => "publish",
            Refused::Fanout => "fanout",
            Refused::Request => "request",
            Refused::Event => "event",
        }
    }

    fn counter(self, s: &ShardStats) -> &std::sync::atomic::AtomicU64 {
        match self {
            Refused::Publish => &s.router_refused_publish,
            Refused::Fanout => &s.router_refused_fanout,
            Refused::Request => &s.router_refused_request,
            Refused::Event => &s.router_refused_event,
        }
    }
}

/// Refusals counted since the last log line.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Count one refusal in the shard's metrics; log at most once a second.
    pub fn record(&mut self, stats: &ShardStats, shard: ShardId, kind: Refused, now: Instant) {
        ShardStats::inc(kind.counter(stats));
        self.unlogged += 1;
        if self
            .logged_at
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            shard,
            kind = kind.as_str(),
            refused = self.unlogged,
            "a shard's inbox and router overflow are full (limits.router_overflow_msgs_max): \
             refusing new work; see shardcast_router_refused_total"
        );
        self.logged_at = Some(now);
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::mesh::inbox;

    fn msg(n: u64) -> ShardMsg {
        ShardMsg::InterestAck {
            channel: "c".into(),
            epoch: "e".into(),
            offset: n,
        }
    }

    fn offset(m: ShardMsg) -> u64 {
        match m {
            ShardMsg::InterestAck { offset, .. } => offset,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Shard 0's router to a shard 1 whose inbox holds one message.
    fn pair(overflow_max: usize) -> (Router, crate::shard::mesh::Inbox) {
        let (p0, _i0) = inbox(1).unwrap();
        let (p1, i1) = inbox(1).unwrap();
        (Router::new(0, vec![p0, p1], overflow_max), i1)
    }

    #[test]
    fn refusable_messages_stop_at_the_bound_and_others_do_not() {
        let (mut r, inbox1) = pair(2);
        // One fits in the inbox, two in the overflow, the fourth is refused.
        for n in 1..=3 {
            assert!(r.try_send(1, msg(n)).is_ok(), "message {n}");
        }
        assert_eq!(r.room(1), 0);
        assert!(!r.all_have_room(0b10));
        assert!(r.all_have_room(0b01), "a shard always has room for itself");
        let back = r.try_send(1, msg(4)).expect_err("refused past the bound");
        assert_eq!(offset(back), 4);
        // Messages that must not be lost still queue, behind the others.
        r.send(1, msg(5));
        let mut got = Vec::new();
        for _ in 0..8 {
            while let Ok(m) = inbox1.rx.try_recv() {
                got.push(offset(m));
            }
            r.flush();
        }
        assert_eq!(got, vec![1, 2, 3, 5], "in order, nothing lost");
        assert_eq!(r.room(1), 2, "room comes back as the inbox drains");
        assert!(!r.has_pending());
    }

    #[test]
    fn messages_to_itself_are_never_refused() {
        let (mut r, _inbox1) = pair(1);
        for n in 1..=2 {
            assert!(r.try_send(1, msg(n)).is_ok(), "inbox, then overflow");
        }
        assert!(r.try_send(1, msg(3)).is_err());
        for n in 1..=100 {
            assert!(r.try_send(0, msg(n)).is_ok());
        }
        assert!(r.has_pending());
        assert_eq!(r.pop_local().map(offset), Some(1));
    }

    #[test]
    fn a_message_is_small_enough_for_the_default_bound() {
        // limits.router_overflow_msgs_max's default is sized on this: 8,192
        // messages of 96 bytes are 0.75 MiB per destination (payloads shared).
        assert!(std::mem::size_of::<ShardMsg>() <= 96);
    }

    #[test]
    fn refusals_are_counted_each_and_logged_once_a_second() {
        let stats = ShardStats::default();
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        log.record(&stats, 0, Refused::Publish, t0);
        assert_eq!(log.unlogged, 0, "the first is logged at once");
        log.record(&stats, 0, Refused::Publish, t0 + Duration::from_millis(10));
        log.record(&stats, 0, Refused::Fanout, t0 + Duration::from_millis(20));
        assert_eq!(log.unlogged, 2, "held back within the second");
        log.record(&stats, 0, Refused::Event, t0 + Duration::from_secs(1));
        assert_eq!(log.unlogged, 0);
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(load(&stats.router_refused_publish), 2);
        assert_eq!(load(&stats.router_refused_fanout), 1);
        assert_eq!(load(&stats.router_refused_event), 1);
    }
}
