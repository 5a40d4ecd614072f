//! What the node's shards share: their counters, their channel snapshots,
//! the drain flag, the token verifier, the authority and the per-user
//! connection counts. Read from any thread, never on the per-message path.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use crate::channel::authority::Authority;
use crate::stats::ShardStats;

/// Channels with their local subscriber counts, as one shard last saw them.
pub type ChannelSnapshot = Vec<(Arc<str>, u32)>;

/// State every shard can read (never on the per-message path).
#[derive(Debug)]
pub struct Shared {
    pub stats: Vec<Arc<ShardStats>>,
    /// Per shard: channels with local subscriber counts, refreshed a few times a second.
    pub channels: Vec<Mutex<ChannelSnapshot>>,
    /// Set while draining: `/ready` answers 503.
    pub draining: AtomicBool,
    /// Shards not yet stopped with every connection gone (or that never
    /// started); a stopped shard leaves its loop when this reaches 0.
    pub shards_at_work: AtomicUsize,
    /// Token verifier; None: anonymous connections.
    pub verifier: Option<crate::policy::auth::Verifier>,
    /// Who orders each channel: the owner shard, or Redis in cluster mode.
    pub authority: Authority,
    /// Open connections per authenticated user (`limits.conns_per_user_max`).
    pub users: crate::policy::users::UserConns,
}

impl Shared {
    /// What `shards` shards share at start: zeroed counters, no snapshots, not draining.
    pub fn new(
        shards: usize,
        verifier: Option<crate::policy::auth::Verifier>,
        authority: Authority,
    ) -> Shared {
        Shared {
            stats: (0..shards)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            channels: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            draining: AtomicBool::new(false),
            shards_at_work: AtomicUsize::new(shards),
            verifier,
            authority,
            users: Default::default(),
        }
    }

    pub fn ws_open_total(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.ws_open.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}
