//! Memory, io_uring and the sysctl keys.

use super::{Check, Status};
use crate::fmt_bytes;
use crate::probe::HostProbe;
use crate::sizing::{self, Requirements};
use crate::spec::SysctlSpec;
use crate::sysctl::{width, SysctlValue};

pub(super) fn memory_checks(r: &Requirements, p: &HostProbe) -> Vec<Check> {
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
            if t.loopback {
                format!(
                    "{} = the memory prediction below (engine, both ends' sockets, load generator)",
                    fmt_bytes(idle)
                )
            } else {
                format!(
                    "{} = {} x ({} B kernel socket + {} B engine)",
                    fmt_bytes(idle),
                    t.connections,
                    t.kernel_bytes_per_socket,
                    t.engine_bytes_per_conn
                )
            },
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

pub(super) fn io_uring_check(p: &HostProbe) -> Check {
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

pub(super) fn sysctl_check(spec: &SysctlSpec, r: &Requirements, p: &HostProbe) -> Option<Check> {
    if spec.key == "kernel.io_uring_disabled" {
        return None; // Covered by the io_uring check, which also runs the syscall.
    }
    let Some(reading) = p.sysctls.get(spec.key) else {
        let (status, note) = if spec.optional {
            (Status::Ok, "not present (module not loaded): no limit")
        } else {
            (Status::Warn, "not readable on this host")
        };
        let c = Check::new(spec.key, "absent", spec.needed.to_string(), status);
        return Some(c.note(Some(note.to_string())));
    };
    let cur = &reading.value;
    let satisfied = spec.direction.satisfied(cur, &spec.needed);
    let status = if satisfied { Status::Ok } else { spec.severity };
    let mut c = Check::new(spec.key, cur.to_string(), spec.needed.to_string(), status);
    let mut extra_fix = None;
    match spec.key {
        "net.ipv4.ip_local_port_range" => extra_fix = refine_port_range(&mut c, cur, r),
        "net.netfilter.nf_conntrack_max" => refine_conntrack(&mut c, p),
        "fs.nr_open" => refine_nr_open(&mut c, cur, r, p),
        "net.ipv4.tcp_mem" => refine_tcp_mem(&mut c, r, p),
        _ => {}
    }
    if c.status != Status::Ok {
        let merged = spec.direction.merge(cur, &spec.needed).filter(|m| m != cur);
        let cmd = merged.map(|m| {
            let cmd = sysctl_w(spec.key, &m);
            if reading.writable {
                cmd
            } else {
                format!("{cmd} (as root on the host: /proc/sys is not writable from here)")
            }
        });
        let parts: Vec<String> = cmd.into_iter().chain(extra_fix).collect();
        c.fix = (!parts.is_empty()).then(|| parts.join("; "));
    }
    Some(c)
}

/// Ports are per (source ip, destination) pair, so what counts is the range
/// width times the pairs. Returns advice beyond the sysctl when one range
/// cannot hold enough.
fn refine_port_range(c: &mut Check, cur: &SysctlValue, r: &Requirements) -> Option<String> {
    let t = &r.target;
    let endpoints = u64::from(t.dest_endpoints.max(1));
    let holds = width(cur) * u64::from(t.source_ips.max(1)) * endpoints;
    let per_pair = r.ports_per_pair.unwrap_or(0);
    c.needed = format!(
        "{} ({per_pair} ports per (source ip, endpoint) pair)",
        c.needed
    );
    c.status = if holds >= t.connections {
        Status::Ok
    } else {
        Status::Blocker
    };
    c.note = Some(format!("the current range holds {holds} connections"));
    let full = sizing::PORT_RANGE_HIGH_MAX - sizing::PORT_RANGE_LOW_MIN + 1;
    (per_pair > full).then(|| {
        let ips = t.connections.div_ceil(full * endpoints);
        format!(
            "a range holds at most {full} ports, so also connect from at least {ips} source ips \
             (--source-ips {ips}, bind each socket with IP_BIND_ADDRESS_NO_PORT) or to more server \
             endpoints (--dest-endpoints)"
        )
    })
}

/// A loaded module that tracks nothing in this namespace is a risk, not yet a wall.
fn refine_conntrack(c: &mut Check, p: &HostProbe) {
    let count = p
        .sysctl("net.netfilter.nf_conntrack_count")
        .map(|v| v.first());
    if c.status != Status::Ok && count == Some(0) {
        c.status = Status::Warn;
        c.note = Some(
            "nf_conntrack is loaded but tracks nothing in this network namespace (count 0); it \
             becomes a blocker as soon as a firewall or NAT rule tracks connections"
                .to_string(),
        );
    }
}

/// fs.nr_open caps each limit value; with io_uring a ring needs only its share.
fn refine_nr_open(c: &mut Check, cur: &SysctlValue, r: &Requirements, p: &HostProbe) {
    let ring_fits = r
        .nofile_per_ring
        .filter(|pr| cur.first() >= *pr && p.io_uring.available());
    if let (Some(per_ring), true) = (ring_fits, c.status != Status::Ok) {
        c.status = Status::Warn;
        c.note = Some(format!(
            "io_uring needs only {per_ring} per ring; the epoll fallback needs {}",
            c.needed
        ));
    }
}

/// The tcp_mem ceiling is only useful if that much memory exists beside the sockets.
fn refine_tcp_mem(c: &mut Check, r: &Requirements, p: &HostProbe) {
    let buffers = r.tcp_mem_pages[2].saturating_mul(r.target.page_size);
    if buffers.saturating_add(r.memory_idle_bytes) > p.mem_total_bytes {
        c.status = c.status.max(Status::Warn);
        c.note = Some(format!(
            "full buffers ({}) plus idle sockets exceed MemTotal: lower --rmem-default/--wmem-default",
            fmt_bytes(buffers)
        ));
    }
}
