//! Every limit and knob in one place, with its default and why.
//! Loaded from TOML (`--config`), then overridden by command-line flags.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::driver::{DriverConfig, DriverKind};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard binds with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// Shard threads; 0 means one per CPU.
    pub shards: usize,
    /// `uring`, `epoll`, or absent for io_uring with automatic epoll fallback.
    pub driver: Option<DriverKind>,
    /// Pin shard i to core i (off when shards exceed cores, e.g. in tests).
    pub pin_cores: bool,
    /// When set, `/api/*` requires `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Echo every text/binary message back instead of reading commands (conformance testing only).
    pub echo: bool,
    pub limits: Limits,
    pub io: IoConfig,
    /// Token verification keys; none configured means anonymous connections.
    pub auth: crate::policy::auth::AuthConfig,
    /// Per-namespace options, by namespace name (`""` for channels without `:`).
    pub namespaces: std::collections::HashMap<String, crate::policy::auth::Namespace>,
    /// Cluster mode (several nodes sharing channels through Redis); off by default.
    pub cluster: ClusterConfig,
    /// How recoveries (`since`) and `history` replies are paced and bounded.
    pub recovery: RecoveryConfig,
}

/// `[recovery]`: a replay is paced by its reader, page by page, so recovering a
/// whole history never trips the slow-consumer rule (docs/operations.md,
/// "Memory bounds"). Per replaying connection the engine holds at most one page,
/// half the outbound queue, and `held_bytes_max` of live publications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Bytes of history one page holds: a replay fetches the next page from the
    /// owner shard (or Redis) when its reader drained the last one; a `history`
    /// reply holds at most this much data (and half the outbound queue) and
    /// says where to continue (`next`).
    pub page_bytes_max: usize,
    /// Live publications that arrive during a replay wait behind it, in offset
    /// order, up to this many bytes; past it the reader is not keeping up with
    /// the channel and is closed with 4008.
    pub held_bytes_max: usize,
    /// Replays one shard runs at once; further recovering subscribers wait
    /// their turn (first come, first served) before the owner is asked.
    pub replays_per_shard_max: usize,
    /// A replaying connection whose socket takes no bytes for this long has
    /// stopped reading: closed with 4008, so it cannot hold a replay slot.
    pub stall_timeout_ms: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            page_bytes_max: 256 * 1024,
            held_bytes_max: 1024 * 1024,
            replays_per_shard_max: 64,
            stall_timeout_ms: 10_000,
        }
    }
}

/// `[cluster]`: with `redis` set, offsets, epochs and history live in Redis and
/// every node sharing it sees every publication (docs/operations.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis address, `host:port` (an IP, or `localhost`); absent: single node.
    pub redis: Option<String>,
    /// Prefix of every key and pub/sub channel, so several deployments can share a Redis.
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            key_prefix: "shardcast:".into(),
        }
    }
}

impl ClusterConfig {
    /// The Redis address, resolved (`localhost` included); None in single-node mode.
    pub fn redis_addr(&self) -> Result<Option<SocketAddr>, String> {
        let Some(r) = &self.redis else {
            return Ok(None);
        };
        use std::net::ToSocketAddrs;
        r.to_socket_addrs()
            .map_err(|e| format!("cluster.redis {r:?}: {e}"))?
            .next()
            .map(Some)
            .ok_or_else(|| format!("cluster.redis {r:?}: no address"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message accepted; past it the connection closes with 1009.
    /// 64 KiB covers control commands and typical publications.
    pub message_bytes_max: usize,
    /// Channels one connection may subscribe to; past it the command gets error 113.
    pub channels_per_conn_max: usize,
    /// Connections one shard holds; further upgrades get 503. Bounded by the
    /// descriptor table (per ring for io_uring, per process for epoll).
    pub conns_per_shard_max: u32,
    /// WebSocket connections in the whole engine (all shards); 0: only the per-shard cap.
    pub conns_max: u64,
    /// Connections (WebSocket and SSE) one authenticated user (`sub`) may hold on
    /// this node; past it, close 4504 (SSE: 429). 0: no limit.
    pub conns_per_user_max: u32,
    /// Time a new connection has to complete its HTTP request (slowloris guard).
    pub handshake_timeout_ms: u64,
    /// Bytes queued for one connection; past it the connection closes with 4008
    /// so one slow reader cannot hold unbounded memory or delay others.
    pub queue_bytes_max: usize,
    /// Frames queued for one connection; past it, like `queue_bytes_max`, close 4008.
    /// Bounds the queue's own memory when frames are tiny.
    pub queue_frames_max: usize,
    /// Commands a connection may send per second on average (token bucket refill).
    pub commands_per_sec: u32,
    /// Commands a connection may send in a burst. A command over the rate gets
    /// error 111; as many again refused before the bucket refills closes with 1008.
    pub commands_burst: u32,
    /// New connections a shard accepts per second; beyond it they are closed at
    /// once, before any work is spent on them (reconnect storms). 0: no limit.
    pub accepts_per_sec: u32,
    /// `/ready` answers 503 when open WebSockets reach this percentage of capacity
    /// (`conns_max`, or `conns_per_shard_max` x shards), so balancers steer away first.
    pub ready_high_water_pct: u32,
    /// Request line plus headers; past it → 431.
    pub header_bytes_max: usize,
    /// HTTP API request bodies; past it → 413.
    pub http_body_bytes_max: usize,
    /// Response bytes queued and unsent on one HTTP (keep-alive) connection. At
    /// the bound the engine stops answering that connection's pipelined requests
    /// until the client reads (backpressure), so a client that pipelines and
    /// never reads holds at most this plus one response, not one per request.
    pub http_queue_bytes_max: usize,
    /// How long an HTTP connection may stay at `http_queue_bytes_max` without
    /// reading any of its responses before it is closed.
    pub http_write_timeout_ms: u64,
    /// After our close frame, how long to wait for the peer's before closing the socket.
    pub close_linger_ms: u64,
    /// The server pings a connection that has sent nothing for this long (the
    /// first ping up to half of it later, spread by connection: policy/heartbeat.rs).
    pub ping_interval_ms: u64,
    /// After a ping, the time allowed for a pong (or any traffic) before closing with 4009.
    pub pong_timeout_ms: u64,
    /// Close with 4009 a connection that sent no message (pongs aside) for this long; 0: off.
    pub idle_timeout_ms: u64,
    /// Graceful drain (SIGTERM, `Handle::drain`): WebSockets are closed with 4001,
    /// paced evenly over this window, so clients reconnect elsewhere gradually.
    pub drain_window_ms: u64,
    /// Each drained client is told to wait a random 0..this before reconnecting.
    pub reconnect_spread_ms: u64,
    /// Messages waiting in one shard's inbox from other shards and API callers.
    /// External publishes beyond it are refused (HTTP 503, `PublishError::Overloaded`).
    pub inbox_msgs_max: usize,
    /// Messages one shard holds for another whose inbox is full (its router
    /// overflow, per destination). Past it, work that can be refused is:
    /// publications (error 111, HTTP 503), `history` and `presence` queries;
    /// answers, interest changes and acknowledgements never are (see
    /// docs/ARCHITECTURE.md, "The router's overflow is bounded").
    pub router_overflow_msgs_max: usize,
    /// Channels a shard keeps offsets (and history) for after their last
    /// subscriber left; past this count the least recently used idle ones are
    /// forgotten, checked every 250 ms (a new epoch tells clients so).
    pub idle_channels_max: usize,
    /// Distinct channels one shard's connections may be subscribed to (or waiting
    /// for); a subscribe that would add one more gets error 113. The per-connection
    /// cap alone lets many connections add up to millions of channels.
    pub channels_per_shard_max: usize,
    /// Time a client has to finish a WebSocket message once its first byte
    /// arrived; past it, close 1008. Without it a client trickling a frame keeps
    /// its connection and a partial buffer of up to `message_bytes_max` forever
    /// (the idle timeout is off by default). 0: off.
    pub frame_timeout_ms: u64,
    /// Bytes of incomplete messages one shard holds for all its connections;
    /// the connection whose bytes pass it is closed with 1008.
    pub partial_bytes_per_shard_max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoConfig {
    /// Receive buffers per shard, shared by all its connections (power of two);
    /// 0: derived from `recv_pool_bytes` and the shard count (see `recv_bufs_per_shard`).
    pub recv_bufs: u16,
    /// With `recv_bufs = 0`: receive-buffer memory of the whole process, divided
    /// among the shards (each gets a power of two of buffers in 64..=1024).
    /// Buffers are touched only when a read first uses them, so this bounds the
    /// pool's resident memory rather than being paid at start.
    pub recv_pool_bytes: u64,
    /// Size of each receive buffer.
    pub recv_buf_bytes: u32,
    /// io_uring: register the receive pool for incremental consumption where
    /// the kernel has it (6.12+): a read takes only the bytes it needs from a
    /// buffer, so many small reads share one, instead of each taking a whole
    /// buffer. False, or an older kernel: one buffer per read.
    pub recv_incremental: bool,
    /// io_uring submission queue entries.
    pub ring_entries: u32,
    /// io_uring completion queue entries (rounded up to a power of two by the
    /// kernel); 0: four times `ring_entries`. Every send in flight owes one
    /// completion, so the driver keeps sends in flight below this minus room
    /// for the receive pool's completions, and carries the rest to later loop
    /// turns instead of overflowing the CQ.
    pub cq_entries: u32,
    /// SO_SNDBUF of every connection (set on the listener, inherited at accept);
    /// 0 keeps the kernel's autotuning. Autotuned buffers grow to megabytes for
    /// a reader that stopped, in kernel memory the engine never sees; with many
    /// such readers the host hits TCP memory pressure and every connection
    /// stalls (measured: bench/slow/slow-readers.sh, docs/operations.md).
    pub send_buffer_bytes: u32,
    /// Let the process use transparent huge pages. Off by default: the allocator
    /// asks for them on its heap, and a 2 MiB page that backs a few live
    /// connection records is resident in full, which more than doubled the
    /// measured memory per idle connection (docs/benchmarks.md). Off means
    /// `prctl(PR_SET_THP_DISABLE)` at start, which is process-wide.
    pub huge_pages: bool,
    /// io_uring rings per shard (1..=64), each with its own listener and
    /// direct-descriptor table, all driven by the shard's one thread. A ring's
    /// table is capped by RLIMIT_NOFILE, so past that many connections per
    /// shard add rings here rather than shards beyond the cores: the shards'
    /// threads would then take turns on the cores (docs/ARCHITECTURE.md,
    /// "Many rings on few cores"). `limits.conns_per_shard_max` is the shard's
    /// total, shared evenly among its rings. Ignored by epoll.
    pub rings_per_shard: u32,
    /// Writes of fanned-out publications a shard hands to the driver per loop
    /// turn; the rest wait, oldest first, for the next turns. Control frames,
    /// replies, HTTP responses and closes are not counted: they go out in the
    /// turn they are queued. Bounds a turn (about 10 µs a write on loopback),
    /// so a publication to a million subscribers does not stop a shard's
    /// reads, pings and requests for the seconds it takes to write.
    pub sends_per_turn_max: u32,
    /// Testing only: with a seed other than 0, each shard's driver is wrapped
    /// in a fault injector (`driver/faulty.rs`: short writes, completions
    /// delayed and reordered across connections). 0, the default: no wrapper.
    pub fault_seed: u64,
    /// Testing only: with a seed other than 0, each shard runs the
    /// simulation's in-memory driver with seeded faults, in real time,
    /// bridged to the real sockets of its listener (`driver/sim/bridge.rs`).
    /// `driver`, `rings_per_shard` and `fault_seed` are then ignored.
    pub sim_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            shards: 0,
            driver: None,
            pin_cores: true,
            api_key: None,
            echo: false,
            limits: Limits::default(),
            io: IoConfig::default(),
            auth: Default::default(),
            namespaces: Default::default(),
            cluster: Default::default(),
            recovery: Default::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: 64 * 1024,
            channels_per_conn_max: 128,
            conns_per_shard_max: 20_000,
            conns_max: 0,
            conns_per_user_max: 0,
            handshake_timeout_ms: 10_000,
            queue_bytes_max: 256 * 1024,
            queue_frames_max: 4096,
            commands_per_sec: 100,
            commands_burst: 200,
            accepts_per_sec: 0,
            ready_high_water_pct: 90,
            header_bytes_max: 8 * 1024,
            http_body_bytes_max: 1024 * 1024,
            http_queue_bytes_max: 256 * 1024,
            http_write_timeout_ms: 10_000,
            close_linger_ms: 2_000,
            ping_interval_ms: 25_000,
            pong_timeout_ms: 10_000,
            idle_timeout_ms: 0,
            drain_window_ms: 10_000,
            reconnect_spread_ms: 5_000,
            inbox_msgs_max: 65_536,
            // One loop turn of the destination: a full inbox is taken 8,192
            // messages a turn (INBOX_PER_TURN), so this much waiting refills it
            // as soon as a turn's worth is taken, with no refusal while the
            // destination keeps up. More only delays the refusal of a shard
            // that does not: it is already 65,536 messages behind. At 96
            // bytes a message (payloads shared), 0.75 MiB per destination.
            router_overflow_msgs_max: 8_192,
            idle_channels_max: 100_000,
            channels_per_shard_max: 200_000,
            frame_timeout_ms: 10_000,
            partial_bytes_per_shard_max: 64 * 1024 * 1024,
        }
    }
}

/// Bounds of the automatic receive pool per shard (`io.recv_bufs = 0`).
const RECV_BUFS_AUTO_MIN: u64 = 64;
const RECV_BUFS_AUTO_MAX: u64 = 1024;

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            recv_bufs: 0,
            recv_pool_bytes: 64 * 1024 * 1024,
            recv_buf_bytes: 16 * 1024,
            recv_incremental: true,
            ring_entries: 4096,
            cq_entries: 0,
            send_buffer_bytes: 64 * 1024,
            huge_pages: false,
            rings_per_shard: 1,
            sends_per_turn_max: 4096,
            fault_seed: 0,
            sim_seed: 0,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Shards to run: the configured count, or one per CPU.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The rules of a channel's namespace (the defaults when none is configured).
    pub(crate) fn namespace_of(&self, channel: &str) -> crate::policy::auth::Namespace {
        let ns = shardcast_proto::command::namespace(channel);
        self.namespaces.get(ns).cloned().unwrap_or_default()
    }

    /// Data bytes one `history` reply holds: a page, and never more than half
    /// the outbound queue, so the reply is not mistaken for a slow consumer.
    pub(crate) fn history_page_bytes(&self) -> usize {
        self.recovery
            .page_bytes_max
            .min(self.limits.queue_bytes_max / 2)
    }

    /// Reject combinations that cannot work, with a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_cluster_io()?;
        self.validate_limits()?;
        self.validate_heartbeat()?;
        self.validate_sizes()
    }

    /// Cluster settings and the receive pool.
    fn validate_cluster_io(&self) -> Result<(), String> {
        self.cluster.redis_addr()?;
        if self
            .cluster
            .key_prefix
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("cluster.key_prefix must not hold spaces or control bytes".into());
        }
        if self.io.recv_bufs != 0 && !self.io.recv_bufs.is_power_of_two() {
            return Err(format!(
                "io.recv_bufs must be 0 (auto) or a power of two, got {}",
                self.io.recv_bufs
            ));
        }
        Ok(())
    }

    /// Message, queue and command limits.
    fn validate_limits(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.message_bytes_max < 125 {
            return Err("limits.message_bytes_max must be at least 125".into());
        }
        if l.queue_bytes_max < l.message_bytes_max {
            return Err("limits.queue_bytes_max must be at least limits.message_bytes_max".into());
        }
        if l.commands_per_sec == 0 || l.commands_burst == 0 || l.commands_burst > i16::MAX as u32 {
            return Err(
                "limits.commands_per_sec must be positive and limits.commands_burst in 1..=32767"
                    .into(),
            );
        }
        if l.queue_frames_max == 0 || l.ready_high_water_pct == 0 {
            return Err(
                "limits.queue_frames_max and limits.ready_high_water_pct must be positive".into(),
            );
        }
        if l.ping_interval_ms == 0 || l.pong_timeout_ms == 0 {
            return Err(
                "limits.ping_interval_ms and limits.pong_timeout_ms must be positive".into(),
            );
        }
        Ok(())
    }

    /// Heartbeat periods fit the connections' 16-bit tick stamps.
    fn validate_heartbeat(&self) -> Result<(), String> {
        let l = &self.limits;
        // Connections stamp heartbeat ticks in 16 bits (conn/mod.rs): every period
        // must stay well inside that.
        let tick_ms = crate::policy::timer::wheel_tick(
            l.ping_interval_ms,
            l.pong_timeout_ms,
            l.idle_timeout_ms,
        )
        .as_millis() as u64;
        // A pong may be waited for twice its timeout while the shard is
        // behind on its reads (policy/heartbeat.rs).
        let longest = (l.ping_interval_ms + l.pong_timeout_ms)
            .max(2 * l.pong_timeout_ms)
            .max(l.idle_timeout_ms);
        if longest / tick_ms > crate::policy::timer::PERIOD_TICKS_MAX {
            return Err(format!(
                "heartbeat periods reach {longest} ms: at most {} ticks of {tick_ms} ms \
                 (a tenth of the shortest of limits.ping_interval_ms, pong_timeout_ms and \
                 idle_timeout_ms, at most 1 s) fit, i.e. {} ms",
                crate::policy::timer::PERIOD_TICKS_MAX,
                crate::policy::timer::PERIOD_TICKS_MAX * tick_ms
            ));
        }
        Ok(())
    }

    /// Table sizes, recovery, HTTP bounds, rings and shards.
    fn validate_sizes(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.conns_per_shard_max == 0 || l.inbox_msgs_max == 0 || l.router_overflow_msgs_max == 0 {
            return Err("limits.conns_per_shard_max, limits.inbox_msgs_max and \
                 limits.router_overflow_msgs_max must be positive"
                .into());
        }
        let r = &self.recovery;
        if r.page_bytes_max == 0 || r.replays_per_shard_max == 0 || r.stall_timeout_ms == 0 {
            return Err(
                "recovery.page_bytes_max, recovery.replays_per_shard_max and \
                 recovery.stall_timeout_ms must be positive"
                    .into(),
            );
        }
        if r.held_bytes_max < l.message_bytes_max {
            return Err("recovery.held_bytes_max must be at least limits.message_bytes_max".into());
        }
        if l.channels_per_conn_max > u16::MAX as usize || l.channels_per_shard_max == 0 {
            return Err(
                "limits.channels_per_conn_max must be at most 65535 and limits.channels_per_shard_max positive"
                    .into(),
            );
        }
        if l.partial_bytes_per_shard_max < l.message_bytes_max {
            // Else one message of the allowed size could never be received.
            return Err(
                "limits.partial_bytes_per_shard_max must be at least limits.message_bytes_max"
                    .into(),
            );
        }
        if l.http_queue_bytes_max == 0 || l.http_write_timeout_ms == 0 {
            return Err(
                "limits.http_queue_bytes_max and limits.http_write_timeout_ms must be positive"
                    .into(),
            );
        }
        if self.io.sends_per_turn_max == 0 {
            return Err("io.sends_per_turn_max must be positive".into());
        }
        if !(1..=crate::driver::rings::RINGS_MAX as u32).contains(&self.io.rings_per_shard) {
            return Err(format!(
                "io.rings_per_shard must be 1..={}",
                crate::driver::rings::RINGS_MAX
            ));
        }
        if self.shard_count() > 64 {
            return Err("at most 64 shards are supported".into());
        }
        Ok(())
    }

    /// Receive buffers each shard gets: `io.recv_bufs`, or with 0 the largest
    /// power of two that keeps all shards' pools within `io.recv_pool_bytes`,
    /// at most 1024 (enough for one core's reads per loop turn) and at least 64.
    /// One shard per core on a small host keeps 1024 (16 MiB of 16 KiB buffers);
    /// 50 shards get 64 each (1 MiB).
    pub fn recv_bufs_per_shard(&self) -> u16 {
        if self.io.recv_bufs != 0 {
            return self.io.recv_bufs;
        }
        let per_shard = self.io.recv_pool_bytes
            / (self.shard_count().max(1) as u64 * u64::from(self.rings_per_shard()))
            / u64::from(self.io.recv_buf_bytes.max(1));
        let n = per_shard.clamp(RECV_BUFS_AUTO_MIN, RECV_BUFS_AUTO_MAX);
        // Round down to a power of two (the provided-buffer ring needs one).
        (1u64 << (63 - n.leading_zeros())) as u16
    }

    /// Rings each shard drives: `io.rings_per_shard`, 1 on epoll.
    pub fn rings_per_shard(&self) -> u32 {
        if self.driver == Some(crate::DriverKind::Epoll) {
            1
        } else {
            self.io.rings_per_shard.max(1)
        }
    }

    /// What each driver (each ring, with several per shard) is sized for.
    pub(crate) fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            conns_max: self
                .limits
                .conns_per_shard_max
                .div_ceil(self.rings_per_shard()),
            recv_bufs: self.recv_bufs_per_shard(),
            recv_buf_bytes: self.io.recv_buf_bytes,
            recv_incremental: self.io.recv_incremental,
            ring_entries: self.io.ring_entries,
            cq_entries: self.io.cq_entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/configuration.md must stay a valid config.
    #[test]
    fn documented_example_parses() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("toml block") + 8;
        let end = start + doc[start..].find("```").expect("closed block");
        let cfg = Config::from_toml(&doc[start..end]).expect("documented config parses");
        cfg.validate().expect("documented config is valid");
        assert_eq!(
            cfg.limits.queue_bytes_max,
            Limits::default().queue_bytes_max
        );
        assert!(cfg.namespaces.contains_key("chat"));
    }

    #[test]
    fn the_receive_pool_is_shared_out_among_shards() {
        let mut cfg = Config::default();
        let per = |cfg: &mut Config, shards| {
            cfg.shards = shards;
            cfg.recv_bufs_per_shard()
        };
        assert_eq!(per(&mut cfg, 1), 1024);
        assert_eq!(per(&mut cfg, 4), 1024);
        assert_eq!(per(&mut cfg, 12), 256);
        assert_eq!(per(&mut cfg, 50), 64);
        assert_eq!(per(&mut cfg, 64), 64);
        cfg.io.recv_bufs = 512;
        assert_eq!(per(&mut cfg, 64), 512, "an explicit count wins");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_toml("[limits]\nqueue_bytes_maxx = 1\n").unwrap_err();
        assert!(err.contains("queue_bytes_maxx"), "{err}");
    }

    #[test]
    fn heartbeat_periods_must_fit_the_16_bit_stamps() {
        let mut c = Config::default();
        c.limits.idle_timeout_ms = 10 * 3600 * 1000;
        assert!(c.validate().is_ok(), "10 h with 1 s ticks");
        c.limits.idle_timeout_ms = 24 * 3600 * 1000;
        let e = c.validate().unwrap_err();
        assert!(e.contains("60000 ticks of 1000 ms"), "{e}");
        c.limits.idle_timeout_ms = 0;
        c.limits.pong_timeout_ms = 100;
        c.limits.ping_interval_ms = 3600 * 1000;
        assert!(c.validate().is_err(), "an hour of 10 ms ticks");
    }
}
