//! `/metrics` in Prometheus text format, rendered at scrape time from the
//! per-shard counters with `prometheus-client` (so the exposition format is the
//! library's, not ours). Scrapes read the counters; they never block a shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::shard::shared::Shared;
use crate::stats::{ShardStats, LATENCY_BOUNDS_S};

#[derive(Debug)]
struct EngineCollector(Arc<Shared>);

type Pick = fn(&ShardStats) -> &AtomicU64;

const COUNTERS: &[(&str, &str, Pick)] = &[
    (
        "shardcast_upgrades",
        "Successful WebSocket upgrades.",
        |s| &s.upgrades,
    ),
    (
        "shardcast_messages_in",
        "WebSocket messages received.",
        |s| &s.msgs_in,
    ),
    ("shardcast_bytes_in", "Bytes read from sockets.", |s| {
        &s.bytes_in
    }),
    ("shardcast_frames_out", "Frames queued to clients.", |s| {
        &s.frames_out
    }),
    ("shardcast_bytes_out", "Bytes written to sockets.", |s| {
        &s.bytes_out
    }),
    (
        "shardcast_publications",
        "Publications assigned an offset (by owner shard).",
        |s| &s.publications,
    ),
    (
        "shardcast_slow_consumer_closes",
        "Connections closed with 4008.",
        |s| &s.slow_consumer_closes,
    ),
    (
        "shardcast_heartbeat_closes",
        "Connections closed with 4009 (heartbeat or idle timeout).",
        |s| &s.heartbeat_closes,
    ),
    (
        "shardcast_protocol_closes",
        "Connections closed for a protocol violation.",
        |s| &s.protocol_closes,
    ),
    (
        "shardcast_replays_done",
        "Recoveries (since) replayed in full.",
        |s| &s.replays_done,
    ),
    (
        "shardcast_frame_timeout_closes",
        "Connections closed with 1008 for not finishing a message within limits.frame_timeout_ms.",
        |s| &s.frame_timeout_closes,
    ),
    (
        "shardcast_partial_budget_closes",
        "Connections closed with 1008 for passing limits.partial_bytes_per_shard_max.",
        |s| &s.partial_budget_closes,
    ),
    (
        "shardcast_http_backpressured",
        "Times an HTTP connection's unsent responses reached limits.http_queue_bytes_max.",
        |s| &s.http_backpressured,
    ),
    (
        "shardcast_http_slow_reader_closes",
        "HTTP connections closed for not reading their responses.",
        |s| &s.http_slow_reader_closes,
    ),
];

const GAUGES: &[(&str, &str, Pick)] = &[
    (
        "shardcast_replays_active",
        "Recoveries being replayed, or asked of an owner (each holds a replay slot).",
        |s| &s.replays_active,
    ),
    (
        "shardcast_replays_waiting",
        "Recoveries waiting for a free replay slot.",
        |s| &s.replays_waiting,
    ),
    (
        "shardcast_connections",
        "Open sockets (HTTP and WebSocket).",
        |s| &s.conns_open,
    ),
    (
        "shardcast_websocket_connections",
        "Open subscriber connections: WebSockets and SSE streams (capacity counts both).",
        |s| &s.ws_open,
    ),
    (
        "shardcast_sse_connections",
        "Open Server-Sent Events streams.",
        |s| &s.sse_open,
    ),
    (
        "shardcast_queued_bytes",
        "Bytes waiting in outbound queues.",
        |s| &s.queued_bytes,
    ),
    (
        "shardcast_partial_bytes",
        "Bytes held for incomplete WebSocket messages.",
        |s| &s.partial_bytes,
    ),
];

const REJECTIONS: &[(&str, Pick)] = &[
    ("full", |s| &s.rejected_full),
    ("bad_request", |s| &s.rejected_bad_request),
    ("overloaded", |s| &s.rejected_overloaded),
    ("accept_rate", |s| &s.rejected_accept_rate),
    ("rate_limited", |s| &s.rate_limited),
];

const ROUTER_REFUSALS: &[(&str, Pick)] = &[
    ("publish", |s| &s.router_refused_publish),
    ("fanout", |s| &s.router_refused_fanout),
    ("request", |s| &s.router_refused_request),
    ("event", |s| &s.router_refused_event),
];

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = &self.0.stats;
        encode_per_shard(&mut enc, shards)?;
        let help = "Upgrades and requests refused, by reason.";
        let rejections = ("shardcast_rejections", help, "reason");
        encode_by_label(&mut enc, rejections, REJECTIONS, shards)?;
        let help = "Messages the router refused because a destination shard's inbox and \
                    overflow (limits.router_overflow_msgs_max) were full, by kind.";
        let refusals = ("shardcast_router_refused", help, "kind");
        encode_by_label(&mut enc, refusals, ROUTER_REFUSALS, shards)?;
        encode_latency(&mut enc, shards)?;
        encode_drivers(&mut enc, shards)?;
        encode_node(&mut enc, &self.0)
    }
}

/// The label of a shard's sample.
fn shard_label(i: usize) -> [(&'static str, String); 1] {
    [("shard", i.to_string())]
}

/// Every counter and gauge of [`COUNTERS`] and [`GAUGES`], one sample per shard.
fn encode_per_shard(
    enc: &mut DescriptorEncoder,
    shards: &[Arc<ShardStats>],
) -> Result<(), std::fmt::Error> {
    for (name, help, pick) in COUNTERS {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (i, s) in shards.iter().enumerate() {
            ConstCounter::new(load(pick(s))).encode(m.encode_family(&shard_label(i))?)?;
        }
    }
    for (name, help, pick) in GAUGES {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (i, s) in shards.iter().enumerate() {
            ConstGauge::new(load(pick(s)) as i64).encode(m.encode_family(&shard_label(i))?)?;
        }
    }
    Ok(())
}

/// The publish-to-write latency histogram, per shard.
fn encode_latency(
    enc: &mut DescriptorEncoder,
    shards: &[Arc<ShardStats>],
) -> Result<(), std::fmt::Error> {
    let help =
        "From the owner assigning a publication's offset to this shard submitting the write.";
    let mut m = enc.encode_descriptor(
        "shardcast_publish_to_write_seconds",
        help,
        None,
        MetricType::Histogram,
    )?;
    for (i, s) in shards.iter().enumerate() {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS_S.len() + 1);
        for (j, b) in s.latency.buckets.iter().enumerate() {
            cumulative += load(b);
            buckets.push((
                LATENCY_BOUNDS_S.get(j).copied().unwrap_or(f64::INFINITY),
                cumulative,
            ));
        }
        let sum = load(&s.latency.sum_ns) as f64 / 1e9;
        let count = load(&s.latency.count);
        m.encode_family(&shard_label(i))?
            .encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// Which driver each shard runs.
fn encode_drivers(
    enc: &mut DescriptorEncoder,
    shards: &[Arc<ShardStats>],
) -> Result<(), std::fmt::Error> {
    let help = "The I/O driver each shard runs (value 1).";
    let mut m = enc.encode_descriptor("shardcast_driver", help, None, MetricType::Gauge)?;
    for (i, s) in shards.iter().enumerate() {
        let driver = if load(&s.uring) == 1 {
            "uring"
        } else {
            "epoll"
        };
        let labels = [("shard", i.to_string()), ("driver", driver.to_string())];
        ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The node's own state: draining, and the cluster bus's link.
fn encode_node(enc: &mut DescriptorEncoder, shared: &Shared) -> Result<(), std::fmt::Error> {
    let draining = shared.draining.load(Ordering::Relaxed) as i64;
    let m = enc.encode_descriptor(
        "shardcast_draining",
        "1 while draining.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(draining).encode(m)?;
    if let Some(up) = shared.authority.link_up() {
        let m = enc.encode_descriptor(
            "shardcast_cluster_bus_up",
            "Cluster mode: 1 while the link to Redis is up.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(up as i64).encode(m)?;
    }
    Ok(())
}

/// One counter family with a label besides `shard`: `(name, help, label)`,
/// and the label's values with the counter each reads.
fn encode_by_label(
    enc: &mut DescriptorEncoder,
    (name, help, label): (&str, &str, &str),
    values: &[(&str, Pick)],
    shards: &[Arc<ShardStats>],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (i, s) in shards.iter().enumerate() {
        for (value, pick) in values {
            let labels = [("shard", i.to_string()), (label, value.to_string())];
            ConstCounter::new(load(pick(s))).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// The whole exposition, ready to serve.
pub fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(EngineCollector(shared.clone())));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}
