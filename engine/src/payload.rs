//! What shards, owners and the cluster bus hand each other: identifiers and
//! the payloads of their messages. A leaf: it imports nothing else from the
//! engine, so `mesh` (which carries these), `fanout` (which makes most of
//! them) and `cluster` (which reads them from Redis) can each use them
//! without importing one another.

use std::sync::Arc;

use bytes::Bytes;
use shardcast_proto::command::Since;
use shardcast_proto::PreparedFrame;

/// Shard-chosen connection key (slab index).
pub type ConnKey = u32;

/// Index of a shard.
pub type ShardId = usize;

/// A connection on a given shard, with the generation that guards slot reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub shard: ShardId,
    pub key: ConnKey,
    pub gen: u32,
}

/// A presence member of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: Arc<str>,
    pub conn: Arc<str>,
}

/// The answer to a subscriber's `since`: whether what it missed can be told,
/// the position it joins at, and the first page of the missed pushes (the
/// rest is fetched page by page as the subscriber reads, see `channel/replay.rs`).
#[derive(Debug)]
pub struct Recovery {
    pub epoch: Arc<str>,
    pub offset: u64,
    pub recovered: bool,
    pub frames: Vec<PreparedFrame>,
}

/// A page of history.
#[derive(Debug)]
pub struct Page {
    pub epoch: Arc<str>,
    pub offset: u64,
    pub items: Vec<(u64, Bytes)>,
    /// More of the requested window remains after the last item: its offset is
    /// where the next `history` call starts (`since`).
    pub next: Option<u64>,
}

/// Which publications a read wants: those after `after` (or, without it, the
/// newest `count`), at most `count` of them, cut to about `page_bytes` (at
/// least one is always included, so every page makes progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: Option<u64>,
    pub count: usize,
    pub page_bytes: usize,
}

impl Window {
    /// The index range wanted of `len` publications with consecutive offsets
    /// from `oldest` on.
    pub(crate) fn range(&self, oldest: u64, len: usize) -> std::ops::Range<usize> {
        let start = match self.after {
            Some(a) => usize::try_from((a + 1).saturating_sub(oldest))
                .unwrap_or(usize::MAX)
                .min(len),
            None => len.saturating_sub(self.count),
        };
        start..len.min(start.saturating_add(self.count))
    }
}

/// Why history was read; the answer goes back through the owner shard.
#[derive(Debug, Clone)]
pub enum ReadFor {
    Recover {
        since: Since,
        conn: ConnRef,
    },
    /// The next page of a replay, up to offset `upto`.
    Replay {
        since: Since,
        upto: u64,
        conn: ConnRef,
    },
    History {
        since: Option<Since>,
        limit: usize,
        conn: ConnRef,
        id: Option<u64>,
    },
}

/// A channel's position and history as read from Redis (oldest first).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub epoch: Arc<str>,
    pub offset: u64,
    /// The oldest offset history holds (offset + 1 when it holds none).
    pub oldest: u64,
    /// The window was cut by its byte budget after the last item.
    pub more: bool,
    pub items: Vec<(u64, Bytes)>,
}

/// What the owner shard hears from the bus.
#[derive(Debug)]
pub enum BusEvent {
    /// A publication, in Redis's order.
    Message {
        epoch: Arc<str>,
        offset: u64,
        data: Bytes,
    },
    /// The position after a subscribe: later messages follow it.
    Watched {
        epoch: Arc<str>,
        offset: u64,
        seq: u64,
    },
    /// A history read.
    Read { snapshot: Snapshot, then: ReadFor },
    /// A read failed (the bus went down).
    ReadFailed { then: ReadFor },
}
