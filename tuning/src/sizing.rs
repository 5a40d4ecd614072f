//! Pure sizing arithmetic: from a target number of connections to the value
//! each host limit needs. Nothing here reads the host; `doctor` and `apply`
//! compare these numbers with live values.

use serde::Serialize;

/// Kernel memory of one idle established TCP socket: tcp 2368 B, sock_inode
/// 832 B, filp 192 B, dentry 192 B, plus ~128 B per epoll registration, was
/// measured at 3.6–4.2 KB socket by socket; the slab of whole runs says more:
/// 9,784 B per loopback connection (both ends) at 150,000 subscribed
/// connections (`bench/scale/million.sh`), 4,892 B per socket. 4,900 B.
pub const DEFAULT_KERNEL_BYTES_PER_SOCKET: u64 = 4900;

/// The engine's own memory per subscribed connection, as measured at
/// 1,000,000 connections on one shard of 56 rings with two subscriptions each
/// over 10,001 channels, after the ramp (`bench/scale/million.sh`,
/// 2026-11-30: 124 B; 300 B was measured on 56 one-ring shards, where every
/// shard kept a registry of the 10,001 channels). An idle connection with one
/// subscription costs about 80 B (docs/benchmarks.md), a connection with a
/// backlog queued more while it lasts. Pass another figure with
/// `--engine-bytes-per-conn`.
pub const DEFAULT_ENGINE_BYTES_PER_CONN: u64 = 130;

/// Engine memory at start whatever the shards: the binary, the allocator,
/// logging, the HTTP side (measured: RSS at start with 1 and 56 shards,
/// 9,248 kB and 43,552 kB).
pub const ENGINE_BASE_BYTES: u64 = 8_620 * 1024;

/// Engine memory per shard at start with the default configuration: its ring,
/// inbox and tables; receive buffers come from a shared pool and become
/// resident as reads need them (measured: RSS at start with 56 shards less
/// with 1, ÷ 55). Pass another figure with `--engine-bytes-per-shard`.
pub const DEFAULT_ENGINE_BYTES_PER_SHARD: u64 = 624 * 1024;

/// A load generator on the same host (loopback benchmarks, `--loopback`):
/// shardcast-loadgen's user memory per client connection (RssAnon of all its
/// processes after the ramp, less their RssAnon before it, ÷ connections).
pub const DEFAULT_LOADGEN_BYTES_PER_CONN: u64 = 440;

/// shardcast-loadgen's user memory per process before any connection (RssAnon:
/// histograms, read buffer, thread stacks): 5.6 MiB measured.
pub const LOADGEN_BYTES_PER_PROCESS: u64 = 5_750 * 1024;

/// Kernel memory pinned by one unread small frame in a socket's queue
/// (measured ~1.1 KB): the extra cost per connection while a fan-out is in
/// flight and clients have not read it yet.
pub const QUEUED_FRAME_BYTES: u64 = 1100;

/// Initial receive buffer assumed per socket. Clients of a fan-out server send
/// little (subscribes, pongs) and the engine reads promptly, so one page is
/// enough; receive autotuning still grows busy sockets up to tcp_rmem[2].
pub const DEFAULT_RMEM_BYTES: u64 = 4096;

/// Initial send buffer assumed per socket: one page holds several small
/// frames; the engine keeps its own bounded per-connection queue, and send
/// autotuning grows sockets that need more, up to tcp_wmem[2].
pub const DEFAULT_WMEM_BYTES: u64 = 4096;

/// Ordinary fds a process needs besides its connections: listeners, io_uring
/// rings, eventfds, timers, log files and stdio.
pub const FD_RESERVE_PER_PROCESS: u64 = 1024;

/// Files the rest of the system keeps open, counted against fs.file-max on
/// top of our sockets (every socket is a `struct file`, direct descriptor or
/// not).
pub const FILE_MAX_SYSTEM_HEADROOM: u64 = 65_536;

/// Window in which all N clients come back after a restart or a network blip.
/// Accept and SYN queues are sized for this reconnect storm.
pub const RECONNECT_STORM_SECS: u64 = 10;

/// Longest pause of the accept path we plan for (a shard busy with a large
/// fan-out turn). The accept queue must hold the arrivals of that pause.
pub const ACCEPT_STALL_MS: u64 = 100;

/// Time a half-open connection spends in the SYN queue: one handshake round
/// trip, generous for mobile clients.
pub const HANDSHAKE_RTT_MS: u64 = 200;

/// Packets per new connection that reach the per-CPU input queue during a
/// storm: SYN, ACK, HTTP upgrade request, first frame.
pub const PACKETS_PER_HANDSHAKE: u64 = 4;

/// Longest delay before softirq drains the per-CPU input queue on a busy core.
pub const SOFTIRQ_STALL_MS: u64 = 10;

/// Upper bound for listen backlogs: older kernels keep the backlog in 16 bits.
pub const BACKLOG_MAX: u64 = 65_535;

/// Widest usable ephemeral range: 1024..=65535 (below 1024 are privileged ports).
pub const PORT_RANGE_LOW_MIN: u64 = 1024;
pub const PORT_RANGE_HIGH_MAX: u64 = 65_535;

/// Kernel default of fs.nr_open, the ceiling for RLIMIT_NOFILE.
pub const NR_OPEN_DEFAULT: u64 = 1_048_576;

/// Kernel default of vm.max_map_count.
pub const MAX_MAP_COUNT_DEFAULT: u64 = 65_530;

/// Worst-case granularity of the allocator's mappings when the heap grows
/// (slab chunks of 64 KiB); every chunk may cost a mapping plus a split.
pub const MAP_GRANULARITY_BYTES: u64 = 64 * 1024;

/// Mappings every process has regardless of connections: libraries, thread
/// stacks and guard pages, ring mmaps.
pub const MAP_BASELINE: u64 = 4096;

/// Keepalive policy: 300 s is below common NAT and load-balancer idle timeouts
/// (~350 s), so idle WebSocket peers keep their mappings; 30 s × 4 probes
/// then release a dead peer's socket in 7 minutes instead of the kernel
/// default 2 h 11 min (7200 s + 9 × 75 s).
pub const KEEPALIVE_TIME_SECS: u64 = 300;
pub const KEEPALIVE_INTVL_SECS: u64 = 30;
pub const KEEPALIVE_PROBES: u64 = 4;

/// Maximum receive/send buffer autotuning may reach; the kernel's own
/// defaults, kept so busy sockets (publishers, large frames) are not slowed.
pub const RMEM_MAX_BYTES: u64 = 6 * 1024 * 1024;
pub const WMEM_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Smallest buffer a socket keeps under memory pressure (kernel default).
pub const BUF_MIN_BYTES: u64 = 4096;

/// Threads and processes of the service unit: one thread per core plus
/// io_uring io-wq workers (bounded workers are capped at 4 per CPU per ring).
pub const TASKS_MAX: u64 = 4096;

/// What the host is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the engine: accepts N connections.
    Server,
    /// Runs a load generator: opens N connections.
    Loadgen,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "server" => Some(Role::Server),
            "loadgen" => Some(Role::Loadgen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Loadgen => "loadgen",
        }
    }
}

/// Everything the sizing depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub connections: u64,
    pub role: Role,
    /// Engine shards, one io_uring ring each (server).
    pub shards: u32,
    /// Load generator processes the connections are split over (loadgen).
    pub processes: u32,
    pub kernel_bytes_per_socket: u64,
    pub engine_bytes_per_conn: u64,
    pub rmem_default_bytes: u64,
    pub wmem_default_bytes: u64,
    /// Local addresses the load generator binds to (loadgen).
    pub source_ips: u32,
    /// Distinct server ip:port pairs the load generator connects to (loadgen).
    pub dest_endpoints: u32,
    pub page_size: u64,
    /// The load generator runs on this host too (loopback benchmark): every
    /// connection is two sockets here, and the client side's memory counts.
    pub loopback: bool,
    /// Engine memory per shard at start.
    pub engine_bytes_per_shard: u64,
    /// Load generator user memory per connection (with `loopback`).
    pub loadgen_bytes_per_conn: u64,
}

impl Target {
    /// A target with the documented defaults, one shard and 4 KiB pages.
    pub fn new(connections: u64, role: Role) -> Target {
        Target {
            connections,
            role,
            shards: 1,
            processes: 1,
            kernel_bytes_per_socket: DEFAULT_KERNEL_BYTES_PER_SOCKET,
            engine_bytes_per_conn: DEFAULT_ENGINE_BYTES_PER_CONN,
            rmem_default_bytes: DEFAULT_RMEM_BYTES,
            wmem_default_bytes: DEFAULT_WMEM_BYTES,
            source_ips: 1,
            dest_endpoints: 1,
            page_size: 4096,
            loopback: false,
            engine_bytes_per_shard: DEFAULT_ENGINE_BYTES_PER_SHARD,
            loadgen_bytes_per_conn: DEFAULT_LOADGEN_BYTES_PER_CONN,
        }
    }
}

/// The memory a run will take, part by part: what `doctor` predicts and
/// `bench/scale/million.sh` sets beside what it measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryPrediction {
    /// Engine RSS at start: base + shards × per shard.
    pub engine_fixed_bytes: u64,
    /// Engine state of the connections: N × engine bytes per connection.
    pub engine_conn_bytes: u64,
    /// TCP sockets on this host: N, or 2N when the load generator is here too.
    pub sockets: u64,
    /// Kernel memory of those sockets (slab: sock, inode, file, dentry, epoll item).
    pub kernel_bytes: u64,
    /// Load generator user memory (loopback only): processes × fixed + N × per connection.
    pub loadgen_bytes: u64,
    pub total_bytes: u64,
}

/// What a target takes in memory, idle (every connection up and subscribed).
pub fn predict_memory(t: &Target) -> MemoryPrediction {
    let n = t.connections;
    let server = t.role == Role::Server;
    let engine_fixed = if server {
        ENGINE_BASE_BYTES + u64::from(t.shards.max(1)) * t.engine_bytes_per_shard
    } else {
        0
    };
    let engine_conn = if server {
        n.saturating_mul(t.engine_bytes_per_conn)
    } else {
        0
    };
    let sockets = if t.loopback { 2 * n } else { n };
    let kernel = sockets.saturating_mul(t.kernel_bytes_per_socket);
    let loadgen = if t.loopback || !server {
        u64::from(t.processes.max(1)) * LOADGEN_BYTES_PER_PROCESS
            + n.saturating_mul(t.loadgen_bytes_per_conn)
    } else {
        0
    };
    MemoryPrediction {
        engine_fixed_bytes: engine_fixed,
        engine_conn_bytes: engine_conn,
        sockets,
        kernel_bytes: kernel,
        loadgen_bytes: loadgen,
        total_bytes: engine_fixed + engine_conn + kernel + loadgen,
    }
}

/// The value each limit needs for a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirements {
    pub target: Target,
    /// RLIMIT_NOFILE of one process using ordinary fds (epoll, or loadgen).
    pub nofile_per_process: u64,
    /// Direct-descriptor slots each io_uring ring needs (server only).
    pub nofile_per_ring: Option<u64>,
    pub nr_open: u64,
    pub file_max: u64,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub netdev_max_backlog: u64,
    /// Ephemeral ports needed per (source ip, destination) pair (loadgen).
    pub ports_per_pair: Option<u64>,
    pub ip_local_port_range: Option<[u64; 2]>,
    /// low, pressure, max in pages.
    pub tcp_mem_pages: [u64; 3],
    pub tcp_rmem: [u64; 3],
    pub tcp_wmem: [u64; 3],
    pub tcp_tw_reuse: Option<u64>,
    pub nf_conntrack_max: u64,
    pub max_map_count: u64,
    pub io_uring_disabled: Option<u64>,
    /// time, intvl, probes (server only).
    pub keepalive: Option<[u64; 3]>,
    pub memory_idle_bytes: u64,
    pub memory_loaded_bytes: u64,
    /// The memory of the run, part by part (see [`predict_memory`]).
    pub memory_prediction: MemoryPrediction,
    pub tasks_max: u64,
}

/// Ceiling division; `d` must be non-zero.
pub fn div_ceil(n: u64, d: u64) -> u64 {
    n.div_ceil(d)
}

/// Smallest power of two ≥ `n`, at least `floor`, at most `cap`.
fn pow2_clamped(n: u64, floor: u64, cap: u64) -> u64 {
    n.max(1).next_power_of_two().clamp(floor, cap)
}

/// Connections per second during a reconnect storm.
fn storm_rate(connections: u64) -> u64 {
    div_ceil(connections, RECONNECT_STORM_SECS)
}

/// Ports one (source ip, destination) pair must provide, capped at what a
/// range can hold at all.
pub fn ports_needed(t: &Target) -> u64 {
    let pairs = u64::from(t.source_ips.max(1)) * u64::from(t.dest_endpoints.max(1));
    div_ceil(t.connections, pairs)
}

/// The narrowest range ending at 65535 that holds `ports`, widened to the
/// full unprivileged range when more are needed. The low end is even so the
/// two ends differ in parity, as the kernel's ip-sysctl documentation advises.
pub fn port_range_for(ports: u64) -> [u64; 2] {
    let width = ports.min(PORT_RANGE_HIGH_MAX - PORT_RANGE_LOW_MIN + 1);
    let low = (PORT_RANGE_HIGH_MAX + 1 - width).max(PORT_RANGE_LOW_MIN);
    [low & !1, PORT_RANGE_HIGH_MAX]
}

/// tcp_mem in pages: the max lets every socket fill its default receive and
/// send buffers at once; low and pressure keep the kernel's own boot-time
/// proportions (max/2 and 2·max/3), so throttling starts before the ceiling.
pub fn tcp_mem_pages(t: &Target) -> [u64; 3] {
    let per_socket = t.rmem_default_bytes + t.wmem_default_bytes;
    let max = div_ceil(t.connections.saturating_mul(per_socket), t.page_size.max(1));
    // u128: 2 × max cannot overflow, and floor(2max/3) ≥ floor(max/2) keeps the order.
    let pressure = (u128::from(max) * 2 / 3) as u64;
    [max / 2, pressure, max]
}

/// Size every limit for `t`.
pub fn size(t: &Target) -> Requirements {
    let n = t.connections;
    let server = t.role == Role::Server;
    let processes = u64::from(t.processes.max(1));
    let nofile_per_process = if server {
        n + FD_RESERVE_PER_PROCESS
    } else {
        div_ceil(n, processes) + FD_RESERVE_PER_PROCESS
    };
    let rate = storm_rate(n);
    let somaxconn = pow2_clamped(rate * ACCEPT_STALL_MS / 1000, 4096, BACKLOG_MAX);
    let syn_backlog = pow2_clamped(rate * HANDSHAKE_RTT_MS / 1000, 4096, BACKLOG_MAX);
    let netdev = pow2_clamped(
        rate * PACKETS_PER_HANDSHAKE * SOFTIRQ_STALL_MS / 1000,
        1000,
        u64::MAX,
    );
    let heap = n.saturating_mul(t.engine_bytes_per_conn);
    let maps = 2 * div_ceil(heap, MAP_GRANULARITY_BYTES) + MAP_BASELINE;
    let per_conn_idle = t.kernel_bytes_per_socket + t.engine_bytes_per_conn;
    let ports = (!server).then(|| ports_needed(t));
    Requirements {
        nofile_per_process,
        nofile_per_ring: server.then(|| div_ceil(n, u64::from(t.shards.max(1)))),
        nr_open: nofile_per_process,
        // Every socket on this host is a `struct file`: both ends on loopback.
        file_max: if t.loopback { 2 * n } else { n } + FILE_MAX_SYSTEM_HEADROOM,
        somaxconn: server.then_some(somaxconn),
        tcp_max_syn_backlog: server.then_some(syn_backlog),
        netdev_max_backlog: netdev,
        ports_per_pair: ports,
        ip_local_port_range: ports.map(port_range_for),
        tcp_mem_pages: tcp_mem_pages(t),
        tcp_rmem: [BUF_MIN_BYTES, t.rmem_default_bytes, RMEM_MAX_BYTES],
        tcp_wmem: [BUF_MIN_BYTES, t.wmem_default_bytes, WMEM_MAX_BYTES],
        tcp_tw_reuse: (!server).then_some(1),
        // A full reconnect storm keeps the old entries (TIME_WAIT, CLOSE)
        // while the new ones arrive: up to two entries per connection.
        nf_conntrack_max: n.saturating_mul(2),
        max_map_count: maps.max(MAX_MAP_COUNT_DEFAULT),
        io_uring_disabled: server.then_some(0),
        keepalive: server.then_some([KEEPALIVE_TIME_SECS, KEEPALIVE_INTVL_SECS, KEEPALIVE_PROBES]),
        memory_idle_bytes: if t.loopback {
            predict_memory(t).total_bytes
        } else {
            n.saturating_mul(per_conn_idle)
        },
        memory_loaded_bytes: if t.loopback {
            predict_memory(t).total_bytes + n.saturating_mul(QUEUED_FRAME_BYTES)
        } else {
            n.saturating_mul(per_conn_idle + QUEUED_FRAME_BYTES)
        },
        memory_prediction: predict_memory(t),
        tasks_max: TASKS_MAX,
        target: t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_million_on_two_shards() {
        let mut t = Target::new(1_000_000, Role::Server);
        t.shards = 2;
        let r = size(&t);
        assert_eq!(r.nofile_per_process, 1_001_024);
        assert_eq!(r.nofile_per_ring, Some(500_000));
        assert_eq!(r.file_max, 1_065_536);
        // 100k conn/s × 100 ms = 10,000 → 16,384.
        assert_eq!(r.somaxconn, Some(16_384));
        // 100k conn/s × 200 ms = 20,000 → 32,768.
        assert_eq!(r.tcp_max_syn_backlog, Some(32_768));
        // 100k conn/s × 4 packets × 10 ms = 4,000 → 4,096.
        assert_eq!(r.netdev_max_backlog, 4096);
        // 1M × (4096 + 4096) B / 4096 B per page.
        assert_eq!(r.tcp_mem_pages, [1_000_000, 1_333_333, 2_000_000]);
        assert_eq!(r.nf_conntrack_max, 2_000_000);
        // 4,900 B of kernel per socket + 130 B of engine per connection.
        assert_eq!(r.memory_idle_bytes, 1_000_000 * 5030);
        assert_eq!(r.memory_loaded_bytes, 1_000_000 * (5030 + 1100));
        assert_eq!(r.ip_local_port_range, None);
        assert_eq!(r.tcp_tw_reuse, None);
        assert_eq!(r.io_uring_disabled, Some(0));
    }

    #[test]
    fn per_ring_slots_round_up() {
        let mut t = Target::new(1_000_001, Role::Server);
        t.shards = 3;
        assert_eq!(size(&t).nofile_per_ring, Some(333_334));
    }

    #[test]
    fn small_targets_keep_kernel_floors() {
        let r = size(&Target::new(1000, Role::Server));
        assert_eq!(r.somaxconn, Some(4096));
        assert_eq!(r.tcp_max_syn_backlog, Some(4096));
        assert_eq!(r.netdev_max_backlog, 1000);
        assert_eq!(r.max_map_count, MAX_MAP_COUNT_DEFAULT);
    }

    #[test]
    fn huge_targets_cap_backlogs() {
        let mut t = Target::new(100_000_000, Role::Server);
        t.engine_bytes_per_conn = 300;
        let r = size(&t);
        assert_eq!(r.somaxconn, Some(BACKLOG_MAX));
        assert_eq!(r.tcp_max_syn_backlog, Some(BACKLOG_MAX));
        // 100M × 300 B = 30 GB of engine heap → 2 × 457,764 + 4,096 mappings.
        assert_eq!(r.max_map_count, 2 * 457_764 + 4096);
    }

    #[test]
    fn tcp_mem_follows_buffers_and_page_size() {
        let mut t = Target::new(100_000, Role::Server);
        t.rmem_default_bytes = 8192;
        t.wmem_default_bytes = 16384;
        t.page_size = 16384;
        // 100k × 24 KiB / 16 KiB = 150,000 pages.
        assert_eq!(tcp_mem_pages(&t), [75_000, 100_000, 150_000]);
        let r = size(&t);
        assert_eq!(r.tcp_rmem, [4096, 8192, RMEM_MAX_BYTES]);
        assert_eq!(r.tcp_wmem, [4096, 16384, WMEM_MAX_BYTES]);
    }

    #[test]
    fn tcp_mem_levels_are_ordered() {
        for n in [1, 7, 1000, 123_457, 10_000_000] {
            let [low, pressure, max] = tcp_mem_pages(&Target::new(n, Role::Server));
            assert!(
                low <= pressure && pressure <= max,
                "{n}: {low} {pressure} {max}"
            );
        }
    }

    #[test]
    fn loadgen_ports_and_processes() {
        let mut t = Target::new(1_000_000, Role::Loadgen);
        let r = size(&t);
        assert_eq!(r.ports_per_pair, Some(1_000_000));
        assert_eq!(r.ip_local_port_range, Some([1024, 65_535]));
        assert_eq!(r.tcp_tw_reuse, Some(1));
        assert_eq!(r.somaxconn, None);
        assert_eq!(r.nofile_per_ring, None);
        assert_eq!(r.keepalive, None);
        assert_eq!(r.nofile_per_process, 1_001_024);

        t.source_ips = 16;
        t.processes = 50;
        let r = size(&t);
        assert_eq!(r.ports_per_pair, Some(62_500));
        assert_eq!(r.nofile_per_process, 20_000 + 1024);
    }

    #[test]
    fn port_range_is_minimal_and_parity_split() {
        assert_eq!(port_range_for(40_000), [25_536, 65_535]);
        // 65536 - 30001 = 35535 is odd: round down to even.
        assert_eq!(port_range_for(30_001), [35_534, 65_535]);
        assert_eq!(port_range_for(10_000_000), [1024, 65_535]);
        for ports in [1, 2, 999, 28_232, 64_512] {
            let [lo, hi] = port_range_for(ports);
            assert!(hi - lo + 1 >= ports, "{ports}");
            assert_ne!(lo % 2, hi % 2);
        }
    }
}
