//! Replays in progress on one shard: what each recovering subscriber still has
//! to receive, so a recovery is paced by its reader instead of queued whole.
//!
//! A replay covers the offsets after the subscriber's `since` up to `upto`, the
//! channel's position when the owner answered (and the subscriber joined). It
//! holds one page of those pushes at a time and asks for the next when its
//! reader drained it; live publications after `upto` that arrive meanwhile are
//! held behind it, so the subscriber sees one gap-free, duplicate-free sequence.
//! How many replays run at once is capped per shard; the rest wait in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shardcast_proto::command::Since;

use crate::channel::registry::ChannelId;
use crate::driver::ConnKey;
use crate::stats::ShardStats;

#[derive(Debug)]
pub struct Replay {
    pub ch: ChannelId,
    pub gen: u32,
    pub epoch: Arc<str>,
    /// The last offset queued to the connection.
    pub cursor: u64,
    /// The last offset the replay covers; later ones are live.
    pub upto: u64,
    /// Pushes fetched and not yet queued (shared frames, not copies).
    pub page: VecDeque<Bytes>,
    /// A page request is with the owner.
    pub fetching: bool,
    /// Live publications after `upto`, in offset order, and their bytes.
    pub held: VecDeque<Bytes>,
    pub held_bytes: usize,
    /// The last time the connection's socket took bytes (or the replay began).
    pub progress_at: Instant,
}

impl Replay {
    /// Everything up to `upto` was queued.
    pub fn replayed(&self) -> bool {
        self.page.is_empty() && self.cursor >= self.upto
    }
}

/// A recovering subscriber waiting for a free replay slot.
#[derive(Debug)]
pub struct Queued {
    pub channel: Arc<str>,
    pub key: ConnKey,
    pub gen: u32,
    pub since: Since,
}

#[derive(Debug, Default)]
pub struct Replays {
    by_conn: HashMap<ConnKey, Vec<Replay>>,
    /// Recoveries asked of an owner, or replaying: each holds a slot.
    slots_used: usize,
    queue: VecDeque<Queued>,
}

impl Replays {
    /// Take a slot if one of `max` is free.
    pub fn take_slot(&mut self, max: usize) -> bool {
        if self.slots_used >= max {
            return false;
        }
        self.slots_used += 1;
        true
    }

    /// Give a slot back; the next waiting recovery (if any) may take it.
    pub fn release_slot(&mut self) {
        debug_assert!(self.slots_used > 0);
        self.slots_used = self.slots_used.saturating_sub(1);
    }

    pub fn slots_used(&self) -> usize {
        self.slots_used
    }

    pub fn enqueue(&mut self, q: Queued) {
        self.queue.push_back(q);
    }

    pub fn next_queued(&mut self) -> Option<Queued> {
        self.queue.pop_front()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Publish the slots in use and the recoveries waiting to the shard's gauges.
    pub fn gauges(&self, stats: &ShardStats) {
        use std::sync::atomic::Ordering::Relaxed;
        stats.replays_active.store(self.slots_used as u64, Relaxed);
        stats
            .replays_waiting
            .store(self.queue.len() as u64, Relaxed);
    }

    pub fn start(&mut self, key: ConnKey, r: Replay) {
        self.by_conn.entry(key).or_default().push(r);
    }

    /// Whether the connection replays anything (cheap when no replay runs).
    pub fn has(&self, key: ConnKey) -> bool {
        !self.by_conn.is_empty() && self.by_conn.contains_key(&key)
    }

    pub fn get_mut(&mut self, key: ConnKey, ch: ChannelId) -> Option<&mut Replay> {
        self.by_conn.get_mut(&key)?.iter_mut().find(|r| r.ch == ch)
    }

    /// The connection's replays, to work on them (give them back with [`Replays::put`]).
    pub fn take(&mut self, key: ConnKey) -> Vec<Replay> {
        self.by_conn.remove(&key).unwrap_or_default()
    }

    pub fn put(&mut self, key: ConnKey, rs: Vec<Replay>) {
        if !rs.is_empty() {
            self.by_conn.insert(key, rs);
        }
    }

    /// End the connection's replay of `ch` (finished, or the subscription ended).
    pub fn remove(&mut self, key: ConnKey, ch: ChannelId) -> Option<Replay> {
        let rs = self.by_conn.get_mut(&key)?;
        let i = rs.iter().position(|r| r.ch == ch)?;
        let r = rs.swap_remove(i);
        if rs.is_empty() {
            self.by_conn.remove(&key);
        }
        Some(r)
    }

    /// Connections whose replays made no progress since `before`.
    pub fn stalled(&self, before: Instant) -> Vec<ConnKey> {
        self.by_conn
            .iter()
            .filter(|(_, rs)| rs.iter().any(|r| r.progress_at < before))
            .map(|(&k, _)| k)
            .collect()
    }

    /// The connection's socket took bytes.
    pub fn progressed(&mut self, key: ConnKey, now: Instant) {
        if let Some(rs) = self.by_conn.get_mut(&key) {
            for r in rs {
                r.progress_at = now;
            }
        }
    }
}
