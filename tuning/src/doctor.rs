//! `doctor`: for a target, every limit with its current value, the value
//! needed, a verdict and the exact fix. Works on a [`HostProbe`], so any
//! host's numbers can be checked.

use crate::capacity::{capacity_estimate, Capacity, CapacityInput};
use crate::fmt_bytes;
use crate::probe::HostProbe;
use crate::sizing::{self, size, Requirements, Role, Target};
use crate::spec::{sysctl_specs, SysctlSpec};
use crate::sysctl::{width, SysctlValue};
use serde::Serialize;
use std::fmt::Write as _;

/// How a limit compares with the target, ordered by gravity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    /// Connections fit, but something degrades (storms, load, fallback).
    Warn,
    /// The host cannot hold the target until this is fixed.
    Blocker,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Blocker => "BLOCKER",
        }
    }
}

/// One limit checked against the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub current: String,
    pub needed: String,
    pub status: Status,
    /// The exact command or line that fixes it, or why it cannot be fixed here.
    pub fix: Option<String>,
    pub note: Option<String>,
}

impl Check {
    fn new(
        name: impl Into<String>,
        current: impl Into<String>,
        needed: impl Into<String>,
        status: Status,
    ) -> Check {
        Check {
            name: name.into(),
            current: current.into(),
            needed: needed.into(),
            status,
            fix: None,
            note: None,
        }
    }

    fn fix(mut self, fix: Option<String>) -> Check {
        self.fix = fix;
        self
    }

    fn note(mut self, note: Option<String>) -> Check {
        self.note = note;
        self
    }
}

/// Connections the host allows as it is now, per fd model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capacities {
    /// Accepting into io_uring direct descriptors (server with io_uring).
    pub io_uring: Option<Capacity>,
    /// Ordinary fds (epoll fallback, or a load generator process).
    pub ordinary_fds: Capacity,
}

/// Everything `doctor` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub requirements: Requirements,
    pub host: HostProbe,
    pub checks: Vec<Check>,
    pub capacity: Capacities,
    pub can_hold_target: bool,
    pub blockers: Vec<String>,
}

impl Report {
    /// 0 when the host can hold the target (warnings allowed), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(!self.can_hold_target)
    }
}

/// Checks `target` against the host described by `p`.
pub fn diagnose(target: &Target, p: &HostProbe) -> Report {
    let r = size(target);
    let mut checks = nofile_checks(&r, p);
    checks.extend(memory_checks(&r, p));
    if target.role == Role::Server {
        checks.push(io_uring_check(p));
    }
    for spec in sysctl_specs(&r) {
        checks.extend(sysctl_check(&spec, &r, p));
    }
    // Gravest first: the first line is what stops you first.
    checks.sort_by_key(|c| std::cmp::Reverse(c.status));
    let blockers: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Blocker)
        .map(|c| c.name.clone())
        .collect();
    Report {
        capacity: capacities(&r, p),
        can_hold_target: blockers.is_empty(),
        blockers,
        checks,
        requirements: r,
        host: p.clone(),
    }
}

fn capacities(r: &Requirements, p: &HostProbe) -> Capacities {
    let t = &r.target;
    // The engine raises soft to hard at start, so the hard limit is what counts.
    let input = |direct| CapacityInput {
        nofile: p.nofile_hard,
        direct_descriptors: direct,
        mem_bytes: p.mem_total_bytes,
        kernel_bytes_per_socket: t.kernel_bytes_per_socket,
        ..CapacityInput::from_probe(p, t.shards, direct, t.engine_bytes_per_conn)
    };
    let uring = t.role == Role::Server && p.io_uring.available();
    let mut ordinary = capacity_estimate(&input(false));
    if t.role == Role::Loadgen {
        // Each load generator process has its own RLIMIT_NOFILE.
        let by_nofile = ordinary
            .by_nofile
            .saturating_mul(u64::from(t.processes.max(1)));
        ordinary = Capacity::from_parts(by_nofile, ordinary.by_file_max, ordinary.by_memory);
    }
    Capacities {
        io_uring: uring.then(|| capacity_estimate(&input(true))),
        ordinary_fds: ordinary,
    }
}

/// The sentence that says how to get RLIMIT_NOFILE to `value`, or why that
/// cannot happen from here.
fn nofile_fix(p: &HostProbe, value: u64, role: Role) -> String {
    let nr_open = p
        .sysctl("fs.nr_open")
        .map_or(sizing::NR_OPEN_DEFAULT, |v| v.first());
    let nr_open_step = if value > nr_open {
        format!("first `sysctl -w fs.nr_open={value}` (the ceiling for any nofile limit, now {nr_open}), then ")
    } else {
        String::new()
    };
    let persist = match role {
        Role::Server => format!(
            "`LimitNOFILE={value}` in the systemd drop-in (tuning/systemd/shardcast.service.d/limits.conf), \
             or `shardcast hard nofile {value}` and `shardcast soft nofile {value}` in /etc/security/limits.d/ \
             (tuning/limits.d/), or `--ulimit nofile={value}:{value}` for a container"
        ),
        Role::Loadgen => format!(
            "`* hard nofile {value}` and `* soft nofile {value}` in /etc/security/limits.d/ \
             (tuning/limits.d/60-shardcast-loadgen.conf) for the next login, \
             or `--ulimit nofile={value}:{value}` for a container"
        ),
    };
    if p.cap_sys_resource {
        format!(
            "Raise the hard limit (this process has CAP_SYS_RESOURCE): {nr_open_step}\
             `prlimit --pid <pid> --nofile={value}:{value}` or `ulimit -Hn {value}; ulimit -n {value}` \
             in the starting shell; persist with {persist}"
        )
    } else {
        format!(
            "Cannot be raised on this host: the hard limit is {} and this process lacks \
             CAP_SYS_RESOURCE (CapEff bit 24), so setrlimit may lower it but never raise it. \
             Fix it where the process is started, as root outside this container: {nr_open_step}{persist}; \
             or grant CAP_SYS_RESOURCE",
            show_limit(p.nofile_hard)
        )
    }
}

fn show_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

fn soft_note(p: &HostProbe, needed: u64) -> Option<String> {
    (p.nofile_soft < needed && p.nofile_hard >= needed).then(|| {
        format!(
            "soft limit {} < {needed}: the engine raises soft to hard ({}) at start; for other tools `ulimit -n {}`",
            p.nofile_soft,
            show_limit(p.nofile_hard),
            show_limit(p.nofile_hard)
        )
    })
}

fn nofile_checks(r: &Requirements, p: &HostProbe) -> Vec<Check> {
    let t = &r.target;
    let hard = p.nofile_hard;
    let per_process = r.nofile_per_process;
    let mut out = Vec::new();
    let ordinary_ok = hard >= per_process;
    let Some(per_ring) = r.nofile_per_ring else {
        let procs = t.processes.max(1);
        let status = if ordinary_ok {
            Status::Ok
        } else {
            Status::Blocker
        };
        let split = (hard > sizing::FD_RESERVE_PER_PROCESS && hard != u64::MAX).then(|| {
            let n = t
                .connections
                .div_ceil(hard - sizing::FD_RESERVE_PER_PROCESS);
            format!(
                "; or split the load over {n} processes (--processes {n}), each with its own limit"
            )
        });
        let fix = (!ordinary_ok)
            .then(|| nofile_fix(p, per_process, Role::Loadgen) + &split.unwrap_or_default());
        out.push(
            Check::new(
                "RLIMIT_NOFILE per loadgen process",
                format!(
                    "{} soft / {} hard",
                    show_limit(p.nofile_soft),
                    show_limit(hard)
                ),
                format!(
                    "{per_process} ({} connections over {procs} process(es) + {} reserve)",
                    t.connections,
                    sizing::FD_RESERVE_PER_PROCESS
                ),
                status,
            )
            .fix(fix)
            .note(soft_note(p, per_process)),
        );
        return out;
    };
    let shards = u64::from(t.shards.max(1));
    let uring = p.io_uring.available();
    let ring_ok = hard >= per_ring;
    let ring_status = match (uring, ring_ok) {
        (false, _) => Status::Warn,
        (true, true) => Status::Ok,
        (true, false) => Status::Blocker,
    };
    // One limit value covers both modes, so the fix always names the larger.
    let ring_fix = (uring && !ring_ok).then(|| {
        format!(
            "io_uring alone needs a limit of {per_ring}; {per_process} also covers the epoll fallback. {}",
            nofile_fix(p, per_process, Role::Server)
        )
    });
    let ring_note = if uring {
        soft_note(p, per_ring)
    } else {
        Some("io_uring is unavailable here (see the io_uring check), so the engine uses ordinary fds".to_string())
    };
    out.push(
        Check::new(
            "RLIMIT_NOFILE per io_uring ring (direct descriptors)",
            format!(
                "{} slots per ring x {shards} rings = {} connections",
                show_limit(hard),
                show_limit(hard.saturating_mul(shards))
            ),
            format!(
                "{per_ring} slots per ring ({} connections / {shards} shards)",
                t.connections
            ),
            ring_status,
        )
        .fix(ring_fix)
        .note(ring_note),
    );
    // Ordinary fds cap the epoll fallback at one limit per process.
    let epoll_status = match (ordinary_ok, uring && ring_ok) {
        (true, _) => Status::Ok,
        (false, true) => Status::Warn,
        (false, false) => Status::Blocker,
    };
    let epoll_note = match epoll_status {
        Status::Warn => Some(
            "only matters if io_uring becomes unavailable and the engine falls back to epoll"
                .to_string(),
        ),
        _ => soft_note(p, per_process),
    };
    out.push(
        Check::new(
            "RLIMIT_NOFILE per process (ordinary fds, epoll fallback)",
            format!(
                "{} soft / {} hard",
                show_limit(p.nofile_soft),
                show_limit(hard)
            ),
            format!(
                "{per_process} ({} connections + {} reserve)",
                t.connections,
                sizing::FD_RESERVE_PER_PROCESS
            ),
            epoll_status,
        )
        .fix((!ordinary_ok).then(|| nofile_fix(p, per_process, Role::Server)))
        .note(epoll_note),
    );
    out
}

fn memory_checks(r: &Requirements, p: &HostProbe) -> Vec<Check> {
    let t = &r.target;
    let per_conn = t.kernel_bytes_per_socket + t.engine_bytes_per_conn;
    let have = format!(
        "MemTotal {}, MemAvailable {}",
        fmt_bytes(p.mem_total_bytes),
        fmt_bytes(p.mem_available_bytes)
    );
    let idle = r.memory_idle_bytes;
    let idle_status = if idle > p.mem_total_bytes {
        Status::Blocker
    } else if idle > p.mem_available_bytes {
        Status::Warn
    } else {
        Status::Ok
    };
    let fits = p.mem_total_bytes / per_conn.max(1);
    let idle_fix = match idle_status {
        Status::Blocker => Some(format!(
            "add RAM or lower the target: {} holds about {fits} connections at {per_conn} B each",
            fmt_bytes(p.mem_total_bytes)
        )),
        Status::Warn => {
            Some("free memory: other processes hold what the connections need".to_string())
        }
        Status::Ok => None,
    };
    let loaded = r.memory_loaded_bytes;
    let loaded_status = if loaded > p.mem_available_bytes {
        Status::Warn
    } else {
        Status::Ok
    };
    vec![
        Check::new(
            "memory, idle connections",
            have.clone(),
            format!(
                "{} = {} x ({} B kernel socket + {} B engine)",
                fmt_bytes(idle),
                t.connections,
                t.kernel_bytes_per_socket,
                t.engine_bytes_per_conn
            ),
            idle_status,
        )
        .fix(idle_fix),
        Check::new(
            "memory, one unread frame per connection",
            have,
            format!(
                "{} = idle + {} x {} B pinned per queued small frame",
                fmt_bytes(loaded),
                t.connections,
                sizing::QUEUED_FRAME_BYTES
            ),
            loaded_status,
        )
        .note((loaded_status == Status::Warn).then(|| {
            "a broadcast that clients have not read yet pins more kernel memory than is available; \
             the engine's per-connection queue budget and tcp_mem pressure bound it"
                .to_string()
        })),
    ]
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ENOSYS => "ENOSYS".into(),
        libc::EPERM => "EPERM".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EACCES => "EACCES".into(),
        libc::EINVAL => "EINVAL".into(),
        e => format!("errno {e}"),
    }
}

fn io_uring_check(p: &HostProbe) -> Check {
    let disabled = p.sysctl("kernel.io_uring_disabled").map(|v| v.first());
    let current = format!(
        "kernel.io_uring_disabled={}; io_uring_setup: {}",
        disabled.map_or("absent".to_string(), |d| d.to_string()),
        p.io_uring.setup_errno.map_or("ok".to_string(), errno_name)
    );
    let Some(errno) = p.io_uring.setup_errno else {
        return Check::new("io_uring", current, "rings can be created", Status::Ok);
    };
    let fix = match (disabled, errno) {
        (Some(2), _) => "`sysctl -w kernel.io_uring_disabled=0` as root (2 disables io_uring for everyone)".to_string(),
        (Some(1), _) => "`sysctl -w kernel.io_uring_disabled=0`, or add the engine's user to the group in kernel.io_uring_group".to_string(),
        (_, libc::ENOMEM) => "raise RLIMIT_MEMLOCK (`LimitMEMLOCK=infinity`): kernels before 5.12 charge rings to it".to_string(),
        (_, libc::ENOSYS) => "the kernel lacks CONFIG_IO_URING, or a seccomp profile blocks io_uring_setup: allow io_uring_setup, io_uring_enter and io_uring_register in the container's seccomp profile".to_string(),
        _ => "a seccomp profile or LSM denies io_uring_setup: allow io_uring_setup, io_uring_enter and io_uring_register".to_string(),
    };
    Check::new("io_uring", current, "rings can be created", Status::Warn)
        .fix(Some(fix))
        .note(Some(
            "the engine falls back to epoll: ordinary fds then cap it at RLIMIT_NOFILE per process"
                .to_string(),
        ))
}

/// `sysctl -w` for a value, quoted when it has several fields.
pub fn sysctl_w(key: &str, v: &SysctlValue) -> String {
    if v.0.len() > 1 {
        format!("sysctl -w {key}='{v}'")
    } else {
        format!("sysctl -w {key}={v}")
    }
}

fn sysctl_check(spec: &SysctlSpec, r: &Requirements, p: &HostProbe) -> Option<Check> {
    if spec.key == "kernel.io_uring_disabled" {
        return None; // Covered by the io_uring check, which also runs the syscall.
    }
    let Some(reading) = p.sysctls.get(spec.key) else {
        let note = if spec.optional {
            "not present (module not loaded): no limit"
        } else {
            "not readable on this host"
        };
        let status = if spec.optional {
            Status::Ok
        } else {
            Status::Warn
        };
        return Some(
            Check::new(spec.key, "absent", spec.needed.to_string(), status)
                .note(Some(note.to_string())),
        );
    };
    let cur = &reading.value;
    let mut needed = spec.needed.to_string();
    let mut status = if spec.direction.satisfied(cur, &spec.needed) {
        Status::Ok
    } else {
        spec.severity
    };
    let mut note = None;
    let mut extra_fix = None;
    match spec.key {
        "net.ipv4.ip_local_port_range" => {
            let pairs =
                u64::from(r.target.source_ips.max(1)) * u64::from(r.target.dest_endpoints.max(1));
            let holds = width(cur) * pairs;
            needed = format!(
                "{needed} ({} ports per (source ip, endpoint) pair)",
                r.ports_per_pair.unwrap_or(0)
            );
            status = if holds >= r.target.connections {
                Status::Ok
            } else {
                Status::Blocker
            };
            let full = sizing::PORT_RANGE_HIGH_MAX - sizing::PORT_RANGE_LOW_MIN + 1;
            note = Some(format!("the current range holds {holds} connections"));
            if r.ports_per_pair.unwrap_or(0) > full {
                let ips = r
                    .target
                    .connections
                    .div_ceil(full * u64::from(r.target.dest_endpoints.max(1)));
                extra_fix = Some(format!(
                    "; a range holds at most {full} ports, so also connect from at least {ips} source ips \
                     (--source-ips {ips}, bind each socket with IP_BIND_ADDRESS_NO_PORT) or to more server \
                     endpoints (--dest-endpoints)"
                ));
            }
        }
        "net.netfilter.nf_conntrack_max" if status != Status::Ok => {
            let count = p
                .sysctl("net.netfilter.nf_conntrack_count")
                .map(|v| v.first());
            if count == Some(0) {
                status = Status::Warn;
                note = Some("nf_conntrack is loaded but tracks nothing in this network namespace (count 0); it becomes a blocker as soon as a firewall or NAT rule tracks connections".to_string());
            }
        }
        "fs.nr_open" if status != Status::Ok => {
            if let Some(per_ring) = r
                .nofile_per_ring
                .filter(|pr| cur.first() >= *pr && p.io_uring.available())
            {
                status = Status::Warn;
                note = Some(format!(
                    "io_uring needs only {per_ring} per ring; the epoll fallback needs {}",
                    spec.needed
                ));
            }
        }
        "net.ipv4.tcp_mem" => {
            let buffers = r.tcp_mem_pages[2].saturating_mul(r.target.page_size);
            if buffers.saturating_add(r.memory_idle_bytes) > p.mem_total_bytes {
                status = status.max(Status::Warn);
                note = Some(format!(
                    "full buffers ({}) plus idle sockets exceed MemTotal: lower --rmem-default/--wmem-default",
                    fmt_bytes(buffers)
                ));
            }
        }
        _ => {}
    }
    let merged = spec.direction.merge(cur, &spec.needed);
    let fix = match (&merged, status) {
        (_, Status::Ok) => None,
        (Some(m), _) if m != cur => {
            let cmd = sysctl_w(spec.key, m);
            Some(if reading.writable {
                cmd
            } else {
                format!("{cmd} (as root on the host: /proc/sys is not writable from here)")
            })
        }
        _ => None,
    };
    let fix = fix.map(|f| f + extra_fix.as_deref().unwrap_or_default());
    Some(Check {
        name: spec.key.to_string(),
        current: cur.to_string(),
        needed,
        status,
        fix,
        note,
    })
}

/// The human-readable report.
pub fn render_text(rep: &Report) -> String {
    let t = &rep.requirements.target;
    let p = &rep.host;
    let mut s = String::new();
    let shards = if t.role == Role::Server {
        format!(", {} shards", t.shards)
    } else {
        format!(", {} process(es)", t.processes)
    };
    let _ = writeln!(
        s,
        "shardcast doctor: {} connections, role {}{shards}",
        t.connections,
        t.role.as_str()
    );
    let _ = writeln!(
        s,
        "host: {} CPUs, MemTotal {}, MemAvailable {}, RLIMIT_NOFILE {} soft / {} hard, CAP_SYS_RESOURCE {}, euid {}, io_uring {}\n",
        p.cpus,
        fmt_bytes(p.mem_total_bytes),
        fmt_bytes(p.mem_available_bytes),
        show_limit(p.nofile_soft),
        show_limit(p.nofile_hard),
        if p.cap_sys_resource { "yes" } else { "no" },
        p.euid,
        if p.io_uring.available() { "yes" } else { "no" }
    );
    for c in &rep.checks {
        let _ = writeln!(s, "{:<8} {}", c.status.as_str(), c.name);
        let _ = writeln!(s, "         current: {}", c.current);
        let _ = writeln!(s, "         needed:  {}", c.needed);
        if let Some(f) = &c.fix {
            let _ = writeln!(s, "         fix:     {f}");
        }
        if let Some(n) = &c.note {
            let _ = writeln!(s, "         note:    {n}");
        }
    }
    if let Some(c) = &rep.capacity.io_uring {
        let _ = writeln!(s, "\ncapacity with io_uring direct descriptors: {c}");
    }
    let label = if t.role == Role::Server {
        "with ordinary fds (epoll)"
    } else {
        "of the load generator"
    };
    let _ = writeln!(
        s,
        "{}capacity {label}: {}",
        if rep.capacity.io_uring.is_some() {
            ""
        } else {
            "\n"
        },
        rep.capacity.ordinary_fds
    );
    if rep.checks.iter().any(|c| {
        c.status != Status::Ok && c.fix.as_deref().is_some_and(|f| f.starts_with("sysctl"))
    }) {
        let _ = writeln!(
            s,
            "all sysctl fixes at once: shardcast-tune apply --target {} --role {} --dry-run (then --apply --persist)",
            t.connections,
            t.role.as_str()
        );
    }
    if rep.can_hold_target {
        let _ = writeln!(
            s,
            "verdict: OK, this host can hold {} connections",
            t.connections
        );
    } else {
        let _ = writeln!(
            s,
            "verdict: BLOCKED, this host cannot hold {} connections: {}",
            t.connections,
            rep.blockers.join("; ")
        );
    }
    s
}
