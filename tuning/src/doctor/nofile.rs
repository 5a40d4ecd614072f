//! RLIMIT_NOFILE: per io_uring ring for direct descriptors, per process for
//! ordinary fds, and how to raise it (or why it cannot be raised here).

use super::{Check, Status};
use crate::probe::HostProbe;
use crate::sizing::{self, Requirements, Role};

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

pub(super) fn show_limit(v: u64) -> String {
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

/// The fd-limit checks: per ring and per process for a server, per process
/// for a load generator.
pub(super) fn nofile_checks(r: &Requirements, p: &HostProbe) -> Vec<Check> {
    match r.nofile_per_ring {
        Some(per_ring) => server_nofile_checks(r, p, per_ring),
        None => vec![loadgen_nofile_check(r, p)],
    }
}

fn loadgen_nofile_check(r: &Requirements, p: &HostProbe) -> Check {
    let t = &r.target;
    let hard = p.nofile_hard;
    let per_process = r.nofile_per_process;
    let ok = hard >= per_process;
    // Each process has its own limit, so more processes is a fix that needs
    // no privilege at all.
    let split = (hard > sizing::FD_RESERVE_PER_PROCESS && hard != u64::MAX).then(|| {
        let n = t
            .connections
            .div_ceil(hard - sizing::FD_RESERVE_PER_PROCESS);
        format!("; or split the load over {n} processes (--processes {n}), each with its own limit")
    });
    let fix = (!ok).then(|| nofile_fix(p, per_process, Role::Loadgen) + &split.unwrap_or_default());
    Check::new(
        "RLIMIT_NOFILE per loadgen process",
        format!(
            "{} soft / {} hard",
            show_limit(p.nofile_soft),
            show_limit(hard)
        ),
        format!(
            "{per_process} ({} connections over {} process(es) + {} reserve)",
            t.connections,
            t.processes.max(1),
            sizing::FD_RESERVE_PER_PROCESS
        ),
        if ok { Status::Ok } else { Status::Blocker },
    )
    .fix(fix)
    .note(soft_note(p, per_process))
}

/// Direct descriptors are capped per ring, ordinary fds per process; both are
/// reported, and which one blocks depends on whether io_uring works here.
fn server_nofile_checks(r: &Requirements, p: &HostProbe, per_ring: u64) -> Vec<Check> {
    let uring = p.io_uring.available();
    let ring_ok = p.nofile_hard >= per_ring;
    vec![
        ring_check(r, p, per_ring),
        epoll_check(r, p, uring && ring_ok),
    ]
}

fn ring_check(r: &Requirements, p: &HostProbe, per_ring: u64) -> Check {
    let t = &r.target;
    let hard = p.nofile_hard;
    let per_process = r.nofile_per_process;
    let shards = u64::from(t.shards.max(1));
    let uring = p.io_uring.available();
    let ring_ok = hard >= per_ring;
    let status = match (uring, ring_ok) {
        (false, _) => Status::Warn,
        (true, true) => Status::Ok,
        (true, false) => Status::Blocker,
    };
    // One limit value covers both modes, so the fix always names the larger.
    let fix = (uring && !ring_ok).then(|| {
        format!(
            "io_uring alone needs a limit of {per_ring}; {per_process} also covers the epoll \
             fallback. {}",
            nofile_fix(p, per_process, Role::Server)
        )
    });
    let note = if uring {
        soft_note(p, per_ring)
    } else {
        Some(
            "io_uring is unavailable here (see the io_uring check), so the engine uses ordinary fds"
                .to_string(),
        )
    };
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
        status,
    )
    .fix(fix)
    .note(note)
}

/// Ordinary fds cap the epoll fallback at one limit per process; that only
/// blocks when io_uring cannot carry the target instead.
fn epoll_check(r: &Requirements, p: &HostProbe, uring_carries: bool) -> Check {
    let per_process = r.nofile_per_process;
    let ok = p.nofile_hard >= per_process;
    let status = match (ok, uring_carries) {
        (true, _) => Status::Ok,
        (false, true) => Status::Warn,
        (false, false) => Status::Blocker,
    };
    let note = match status {
        Status::Warn => Some(
            "only matters if io_uring becomes unavailable and the engine falls back to epoll"
                .to_string(),
        ),
        _ => soft_note(p, per_process),
    };
    Check::new(
        "RLIMIT_NOFILE per process (ordinary fds, epoll fallback)",
        format!(
            "{} soft / {} hard",
            show_limit(p.nofile_soft),
            show_limit(p.nofile_hard)
        ),
        format!(
            "{per_process} ({} connections + {} reserve)",
            r.target.connections,
            sizing::FD_RESERVE_PER_PROCESS
        ),
        status,
    )
    .fix((!ok).then(|| nofile_fix(p, per_process, Role::Server)))
    .note(note)
}
