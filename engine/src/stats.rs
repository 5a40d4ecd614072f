//! Per-shard counters. Each shard writes only its own (relaxed atomics on its
//! own cache line), so counting costs no cross-core traffic; readers sum.
//! Increments are a relaxed load plus store, not a read-modify-write: there is
//! exactly one writer per counter, so no update can be lost.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Counters of one shard.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct ShardStats {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            pub latency: LatencyHistogram,
            /// 1 when this shard runs io_uring, 0 for epoll.
            pub uring: AtomicU64,
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
    ws_open: "Open subscriber connections: WebSockets and SSE streams.",
    sse_open: "Open SSE streams (also counted in ws_open).",
    upgrades: "Successful WebSocket upgrades.",
    rejected_full: "Upgrades refused with 503 because the shard was full.",
    rejected_bad_request: "Requests refused with a 4xx status.",
    msgs_in: "WebSocket messages received.",
    bytes_in: "Bytes read from sockets.",
    rejected_overloaded: "Publications refused because an inbox was full.",
    rejected_accept_rate: "Connections closed at accept by the accept-rate limit.",
    rate_limited: "Commands refused with error 111.",
    frames_out: "Frames queued to clients (pushes, replies, control).",
    bytes_out: "Bytes written to sockets.",
    publications: "Publications assigned an offset by this shard as owner.",
    slow_consumer_closes: "Connections closed with 4008.",
    heartbeat_closes: "Connections closed with 4009: no pong (nor any byte) in time, or no message within idle_timeout_ms.",
    protocol_closes: "Connections closed for a protocol violation (1002/1007/1009).",
    queued_bytes: "Bytes waiting in outbound queues (gauge).",
    replays_active: "Recoveries being replayed to their subscribers, or asked of an owner (gauge).",
    replays_waiting: "Recoveries waiting for a free replay slot (gauge).",
    replays_done: "Recoveries replayed in full.",
    partial_bytes: "Bytes held for incomplete WebSocket messages (gauge).",
    frame_timeout_closes: "Connections closed (1008) for not finishing a message within frame_timeout_ms.",
    partial_budget_closes: "Connections closed (1008) for passing partial_bytes_per_shard_max.",
    http_backpressured: "Times an HTTP connection's unsent responses reached http_queue_bytes_max (its requests wait).",
    http_slow_reader_closes: "HTTP connections closed for not reading their responses.",
    router_refused_publish: "Publications refused at the publisher's shard: the owner's inbox and router overflow were full.",
    router_refused_fanout: "Publications refused at their owner: a shard they fan out to had a full inbox and overflow.",
    router_refused_request: "history and presence queries refused: the owner's inbox and overflow were full.",
    router_refused_event: "Presence events not sent to a shard whose inbox and overflow were full.",
}

/// Upper bounds (seconds) of the publish-to-write latency histogram buckets.
pub const LATENCY_BOUNDS_S: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Publish-to-write latency of one shard: from the owner assigning the offset
/// to this shard submitting the write. Single writer, like the counters.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One count per bound, plus the overflow (+Inf) bucket; not cumulative.
    pub buckets: [AtomicU64; LATENCY_BOUNDS_S.len() + 1],
    pub sum_ns: AtomicU64,
    pub count: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BOUNDS_S.len());
        ShardStats::inc(&self.buckets[i]);
        ShardStats::add(&self.sum_ns, d.as_nanos() as u64);
        ShardStats::inc(&self.count);
    }
}

impl ShardStats {
    pub fn inc(c: &AtomicU64) {
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    pub fn sub(c: &AtomicU64, n: u64) {
        let v = c.load(Ordering::Relaxed);
        // A gauge going below zero means something was subtracted that was never
        // added: debug builds fail here, and release builds wrap to a value no
        // operator can miss instead of clamping at zero, which hid the drift.
        debug_assert!(v >= n, "gauge below zero: {v} - {n}");
        c.store(v.wrapping_sub(n), Ordering::Relaxed);
    }
}
