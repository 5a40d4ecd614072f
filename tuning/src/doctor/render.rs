//! The human-readable report.

use super::{Report, Status};
use crate::fmt_bytes;
use crate::sizing::Role;
use std::fmt::Write as _;

use super::nofile::show_limit;

/// The human-readable report: the gravest checks first, then capacity and verdict.
pub fn render_text(rep: &Report) -> String {
    let mut s = header(rep);
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
    s.push('\n');
    s.push_str(&footer(rep));
    s
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn header(rep: &Report) -> String {
    let t = &rep.requirements.target;
    let p = &rep.host;
    let mut s = String::new();
    let split = match t.role {
        Role::Server => format!("{} shards", t.shards),
        Role::Loadgen => format!("{} process(es)", t.processes),
    };
    let (n, role) = (t.connections, t.role.as_str());
    let _ = writeln!(s, "shardcast doctor: {n} connections, role {role}, {split}");
    let _ = writeln!(
        s,
        "host: {} CPUs, MemTotal {}, MemAvailable {}, RLIMIT_NOFILE {} soft / {} hard, \
         CAP_SYS_RESOURCE {}, euid {}, io_uring {}\n",
        p.cpus,
        fmt_bytes(p.mem_total_bytes),
        fmt_bytes(p.mem_available_bytes),
        show_limit(p.nofile_soft),
        show_limit(p.nofile_hard),
        yes_no(p.cap_sys_resource),
        p.euid,
        yes_no(p.io_uring.available())
    );
    s
}

fn footer(rep: &Report) -> String {
    let t = &rep.requirements.target;
    let (n, role) = (t.connections, t.role.as_str());
    let mut s = String::new();
    if let Some(c) = &rep.capacity.io_uring {
        let _ = writeln!(s, "capacity with io_uring direct descriptors: {c}");
    }
    let label = match t.role {
        Role::Server => "with ordinary fds (epoll)",
        Role::Loadgen => "of the load generator",
    };
    let _ = writeln!(s, "capacity {label}: {}", rep.capacity.ordinary_fds);
    let m = &rep.requirements.memory_prediction;
    let _ = writeln!(
        s,
        "memory prediction: {} = engine at start {} ({} B + {} shards x {} B) + engine per connection {} ({n} x {} B) + kernel {} ({} sockets x {} B){}",
        fmt_bytes(m.total_bytes),
        fmt_bytes(m.engine_fixed_bytes),
        crate::sizing::ENGINE_BASE_BYTES,
        t.shards,
        t.engine_bytes_per_shard,
        fmt_bytes(m.engine_conn_bytes),
        t.engine_bytes_per_conn,
        fmt_bytes(m.kernel_bytes),
        m.sockets,
        t.kernel_bytes_per_socket,
        if m.loadgen_bytes > 0 {
            format!(
                " + load generator {} ({} processes x {} B + {n} x {} B)",
                fmt_bytes(m.loadgen_bytes),
                t.processes,
                crate::sizing::LOADGEN_BYTES_PER_PROCESS,
                t.loadgen_bytes_per_conn
            )
        } else {
            String::new()
        }
    );
    let sysctl_fix = |c: &super::Check| c.fix.as_deref().is_some_and(|f| f.starts_with("sysctl"));
    if rep
        .checks
        .iter()
        .any(|c| c.status != Status::Ok && sysctl_fix(c))
    {
        let _ = writeln!(
            s,
            "all sysctl fixes at once: shardcast-tune apply --target {n} --role {role} --dry-run \
             (then --apply --persist)"
        );
    }
    if rep.can_hold_target {
        let _ = writeln!(s, "verdict: OK, this host can hold {n} connections");
    } else {
        let blockers = rep.blockers.join("; ");
        let _ = writeln!(
            s,
            "verdict: BLOCKED, this host cannot hold {n} connections: {blockers}"
        );
    }
    s
}
