//! Per-shard counters. Each shard writes only its own (relaxed atomics on its
//! own cache line), so counting costs no cross-core traffic; readers sum.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Counters of one shard.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct ShardStats {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        /// A snapshot summed over shards.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: u64,)*
        }

        impl Stats {
            pub fn add(&mut self, s: &ShardStats) {
                $(self.$name += s.$name.load(Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    conns_open: "Sockets open (HTTP and WebSocket).",
    ws_open: "Open WebSocket connections.",
    upgrades: "Successful WebSocket upgrades.",
    rejected_full: "Upgrades refused with 503 because the shard was full.",
    rejected_bad_request: "Requests refused with a 4xx status.",
    msgs_in: "WebSocket messages received.",
    frames_out: "Frames queued to clients (pushes, replies, control).",
    bytes_out: "Bytes written to sockets.",
    publications: "Publications assigned an offset by this shard as owner.",
    slow_consumer_closes: "Connections closed with 4008.",
    protocol_closes: "Connections closed for a protocol violation (1002/1007/1009).",
    queued_bytes: "Bytes waiting in outbound queues (gauge).",
}

impl ShardStats {
    pub fn inc(c: &AtomicU64) {
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    pub fn sub(c: &AtomicU64, n: u64) {
        c.store(
            c.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }
}
