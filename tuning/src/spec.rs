//! The sysctl keys a target needs, each with its value, the direction in
//! which it may move, how bad a shortfall is, and why. `doctor`, `apply` and
//! the profile files are all derived from this one list.

use crate::doctor::Status;
use crate::sizing::{self, Requirements, Role};
use crate::sysctl::{Direction, SysctlValue};
use serde::Serialize;

/// tcp_tw_reuse modes from weakest to strongest: off, loopback only, all.
pub const TW_REUSE_ORDER: &[u64] = &[0, 2, 1];

/// One sysctl key as a target needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SysctlSpec {
    pub key: &'static str,
    pub needed: SysctlValue,
    pub direction: Direction,
    /// How bad it is when the host falls short.
    pub severity: Status,
    /// Absent on some hosts without being a problem (a module not loaded,
    /// an older kernel).
    pub optional: bool,
    /// The kernel's compiled-in default when it does not depend on RAM; a
    /// profile leaves the key commented out when this already suffices, so
    /// the file never lowers anything.
    pub kernel_default: Option<SysctlValue>,
    pub why: String,
}

struct Builder {
    specs: Vec<SysctlSpec>,
}

impl Builder {
    fn push(
        &mut self,
        key: &'static str,
        needed: &[u64],
        direction: Direction,
        severity: Status,
    ) -> &mut SysctlSpec {
        self.specs.push(SysctlSpec {
            key,
            needed: SysctlValue(needed.to_vec()),
            direction,
            severity,
            optional: false,
            kernel_default: None,
            why: String::new(),
        });
        self.specs.last_mut().expect("just pushed")
    }
}

impl SysctlSpec {
    fn default_is(&mut self, v: &[u64]) -> &mut Self {
        self.kernel_default = Some(SysctlValue(v.to_vec()));
        self
    }

    fn because(&mut self, why: String) -> &mut Self {
        self.why = why;
        self
    }

    fn optional(&mut self) -> &mut Self {
        self.optional = true;
        self
    }
}

/// Every sysctl key `r` needs, in the order they are applied and shown.
pub fn sysctl_specs(r: &Requirements) -> Vec<SysctlSpec> {
    let mut b = Builder { specs: Vec::new() };
    fd_specs(&mut b, r);
    queue_specs(&mut b, r);
    port_specs(&mut b, r);
    buffer_specs(&mut b, r);
    table_specs(&mut b, r);
    keepalive_specs(&mut b, r);
    b.specs
}

/// File handles: system-wide and the per-process ceiling.
fn fd_specs(b: &mut Builder, r: &Requirements) {
    use Direction::*;
    use Status::*;
    let t = &r.target;
    let n = t.connections;
    b.push("fs.file-max", &[r.file_max], AtLeast, Blocker)
        .because(format!(
            "Every socket is a struct file, also when it lives only in an io_uring \
         direct-descriptor table: {n} connections + {} for the rest of the system. \
         At the limit socket() and accept() fail with ENFILE.",
            sizing::FILE_MAX_SYSTEM_HEADROOM
        ));
    let fd_users = match t.role {
        Role::Server => format!(
            "{n} connections in the epoll fallback (io_uring rings need only their share per ring)"
        ),
        Role::Loadgen => format!("{n} connections over {} process(es)", t.processes.max(1)),
    };
    b.push("fs.nr_open", &[r.nr_open], AtLeast, Blocker)
        .default_is(&[sizing::NR_OPEN_DEFAULT])
        .because(format!(
            "Ceiling for RLIMIT_NOFILE: a LimitNOFILE or setrlimit above it fails. \
             Sized for {fd_users} + {} reserved fds.",
            sizing::FD_RESERVE_PER_PROCESS
        ));
}

/// Accept, SYN and input queues, sized for a reconnect storm.
fn queue_specs(b: &mut Builder, r: &Requirements) {
    use Direction::*;
    use Status::*;
    let t = &r.target;
    let n = t.connections;
    let rate = n.div_ceil(sizing::RECONNECT_STORM_SECS);
    if let Some(v) = r.somaxconn {
        b.push("net.core.somaxconn", &[v], AtLeast, Warn)
            .default_is(&[4096])
            .because(format!(
            "Caps every listen() backlog. A reconnect storm of {n} clients in {} s is {rate}/s; \
             a listener whose shard pauses {} ms queues that many. Sized as if one of the \
             SO_REUSEPORT listeners took them all, since the hash spreads unevenly. Overflow drops \
             handshakes and clients back off 1 s, 3 s, 7 s.",
            sizing::RECONNECT_STORM_SECS,
            sizing::ACCEPT_STALL_MS
        ));
    }
    if let Some(v) = r.tcp_max_syn_backlog {
        b.push("net.ipv4.tcp_max_syn_backlog", &[v], AtLeast, Warn)
            .because(format!(
            "Half-open connections: {rate}/s for a {} ms handshake round trip. With syncookies \
             the overflow still connects, but without TCP options (window scaling).",
            sizing::HANDSHAKE_RTT_MS
        ));
    }
    b.push(
        "net.core.netdev_max_backlog",
        &[r.netdev_max_backlog],
        AtLeast,
        Warn,
    )
    .default_is(&[1000])
    .because(format!(
        "Per-CPU input queue: {rate}/s x {} packets each, waiting up to {} ms for softirq; \
             without RPS one CPU takes them all. Drops show in /proc/net/softnet_stat column 2.",
        sizing::PACKETS_PER_HANDSHAKE,
        sizing::SOFTIRQ_STALL_MS
    ));
}

/// Outgoing connections: ephemeral ports and TIME_WAIT reuse (load generators).
fn port_specs(b: &mut Builder, r: &Requirements) {
    use Direction::*;
    use Status::*;
    let t = &r.target;
    let n = t.connections;
    if let (Some(range), Some(ports)) = (r.ip_local_port_range, r.ports_per_pair) {
        b.push("net.ipv4.ip_local_port_range", &range, Wider, Blocker)
            .default_is(&[32_768, 60_999])
            .because(format!(
                "Each outgoing connection holds one local port per (source ip, destination) pair: \
                 {n} connections over {} source ip(s) x {} endpoint(s) need {ports} ports per pair. \
                 A range holds at most 64512; beyond that add source ips.",
                t.source_ips.max(1),
                t.dest_endpoints.max(1)
            ));
    }
    if let Some(v) = r.tcp_tw_reuse {
        b.push("net.ipv4.tcp_tw_reuse", &[v], Ranked(TW_REUSE_ORDER), Warn)
            .default_is(&[2])
            .because(
                "Lets connect() reuse a port still in TIME_WAIT (60 s) when timestamps prove it \
                 safe; without it reconnect runs exhaust ports. Only affects outgoing connections; \
                 the default 2 allows it on loopback only."
                    .to_string(),
            );
    }
}

/// TCP buffer memory: the global ceiling and the per-socket sizes.
fn buffer_specs(b: &mut Builder, r: &Requirements) {
    use Direction::*;
    use Status::*;
    let t = &r.target;
    let n = t.connections;
    let [_, _, max] = r.tcp_mem_pages;
    b.push("net.ipv4.tcp_mem", &r.tcp_mem_pages, AtLeast, Warn)
        .because(format!(
        "In pages of {} B: {n} sockets x ({} B rmem + {} B wmem default buffers) = {max} pages \
         ({}). Low and pressure keep the kernel's proportions (max/2, 2max/3). Past the max, \
         TCP refuses buffer memory: sends stall and the kernel logs 'TCP: out of memory'.",
        t.page_size,
        t.rmem_default_bytes,
        t.wmem_default_bytes,
        crate::fmt_bytes(max.saturating_mul(t.page_size))
    ));
    b.push("net.ipv4.tcp_rmem", &r.tcp_rmem, AtLeast, Warn)
        .default_is(&[4096, 131_072, 6_291_456])
        .because(format!(
            "min, default, max per socket. Clients of a fan-out send little and the engine reads \
             at once, so {} B to start; autotuning still grows busy sockets to the max.",
            t.rmem_default_bytes
        ));
    b.push("net.ipv4.tcp_wmem", &r.tcp_wmem, AtLeast, Warn)
        .default_is(&[4096, 16_384, 4_194_304])
        .because(format!(
            "min, default, max per socket. {} B holds several small frames; the engine keeps its \
             own bounded queue per connection and autotuning grows sockets that need more.",
            t.wmem_default_bytes
        ));
}

/// Kernel tables that grow with connections, and io_uring itself.
fn table_specs(b: &mut Builder, r: &Requirements) {
    use Direction::*;
    use Status::*;
    let t = &r.target;
    let n = t.connections;
    b.push("net.netfilter.nf_conntrack_max", &[r.nf_conntrack_max], AtLeast, Blocker)
        .optional()
        .because(format!(
            "Only when nf_conntrack is loaded and a rule tracks traffic. One entry per connection, \
             and a reconnect storm keeps the old ones (TIME_WAIT, CLOSE) while {n} new ones arrive. \
             When full, new connections are dropped ('nf_conntrack: table full')."
        ));
    b.push("vm.max_map_count", &[r.max_map_count], AtLeast, Warn)
        .default_is(&[sizing::MAX_MAP_COUNT_DEFAULT])
        .because(format!(
            "{n} x {} B of engine heap in 64 KiB allocator chunks (two mappings each, worst case) \
             + {} for libraries, stacks and rings. mmap fails with ENOMEM past it.",
            t.engine_bytes_per_conn,
            sizing::MAP_BASELINE
        ));
    if let Some(v) = r.io_uring_disabled {
        b.push("kernel.io_uring_disabled", &[v], AtMost, Warn)
            .optional()
            .default_is(&[0])
            .because(
                "0 lets the engine create io_uring rings; 1 allows only kernel.io_uring_group, 2 \
                 nobody. Without io_uring the engine falls back to epoll, capped at RLIMIT_NOFILE \
                 ordinary fds per process instead of per ring."
                    .to_string(),
            );
    }
}

/// Dead-peer detection for SO_KEEPALIVE sockets.
fn keepalive_specs(b: &mut Builder, r: &Requirements) {
    use Direction::*;
    use Status::*;
    if let Some([time, intvl, probes]) = r.keepalive {
        // Only sockets with SO_KEEPALIVE are probed; the engine's own WebSocket
        // pings cover the rest.
        b.push("net.ipv4.tcp_keepalive_time", &[time], AtMost, Warn)
            .default_is(&[7200])
            .because(format!(
                "Idle seconds before the first probe on SO_KEEPALIVE sockets: {time} s is below \
                 common NAT and load-balancer idle timeouts (~350 s), so idle WebSocket peers keep \
                 their mappings."
            ));
        b.push("net.ipv4.tcp_keepalive_intvl", &[intvl], AtMost, Warn)
            .default_is(&[75])
            .because(format!(
                "Seconds between probes: a dead peer is found after {time} + {probes} x {intvl} = {} s \
                 instead of the default 7200 + 9 x 75 = 7875 s, and its fd and kernel memory are freed.",
                time + intvl * probes
            ));
        b.push("net.ipv4.tcp_keepalive_probes", &[probes], AtMost, Warn)
            .default_is(&[9])
            .because(format!(
                "Unanswered probes before the socket is closed: {probes} x {intvl} s rides out a short \
                 outage without holding a dead connection for long."
            ));
    }
}

/// Keys `doctor` also reads besides the specs, for context.
pub const EXTRA_KEYS: &[&str] = &["net.netfilter.nf_conntrack_count", "fs.file-nr"];

/// Every key any role may need, for the probe to read.
pub fn all_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = [Role::Server, Role::Loadgen]
        .iter()
        .flat_map(|role| sysctl_specs(&sizing::size(&sizing::Target::new(1, *role))))
        .map(|s| s.key)
        .chain(EXTRA_KEYS.iter().copied())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizing::{size, Target};

    fn keys(role: Role) -> Vec<&'static str> {
        sysctl_specs(&size(&Target::new(1_000_000, role)))
            .iter()
            .map(|s| s.key)
            .collect()
    }

    #[test]
    fn server_covers_the_required_keys() {
        let k = keys(Role::Server);
        for key in [
            "fs.file-max",
            "fs.nr_open",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.core.netdev_max_backlog",
            "net.ipv4.tcp_mem",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "net.netfilter.nf_conntrack_max",
            "vm.max_map_count",
            "kernel.io_uring_disabled",
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ] {
            assert!(k.contains(&key), "{key} missing");
        }
        assert!(!k.contains(&"net.ipv4.ip_local_port_range"));
        assert!(!k.contains(&"net.ipv4.tcp_tw_reuse"));
    }

    #[test]
    fn loadgen_covers_ports_and_tw_reuse() {
        let k = keys(Role::Loadgen);
        assert!(k.contains(&"net.ipv4.ip_local_port_range"));
        assert!(k.contains(&"net.ipv4.tcp_tw_reuse"));
        assert!(!k.contains(&"net.core.somaxconn"));
        assert!(!k.contains(&"kernel.io_uring_disabled"));
    }

    #[test]
    fn every_spec_says_why() {
        for role in [Role::Server, Role::Loadgen] {
            for s in sysctl_specs(&size(&Target::new(100_000, role))) {
                assert!(s.why.len() > 40, "{}: {}", s.key, s.why);
            }
        }
    }

    #[test]
    fn all_keys_is_the_union() {
        let all = all_keys();
        assert!(all.contains(&"net.core.somaxconn"));
        assert!(all.contains(&"net.ipv4.ip_local_port_range"));
        assert!(all.contains(&"fs.file-nr"));
        let mut sorted = all.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
    }
}
