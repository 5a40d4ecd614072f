//! `doctor`: for a target, every limit with its current value, the value
//! needed, a verdict and the exact fix. Works on a [`HostProbe`], so any
//! host's numbers can be checked.

mod checks;
mod nofile;
mod render;

pub use checks::sysctl_w;
pub use render::render_text;

use crate::capacity::{capacity_estimate, Capacity, CapacityInput};
use crate::probe::HostProbe;
use crate::sizing::{size, Requirements, Role, Target};
use crate::spec::sysctl_specs;
use checks::{io_uring_check, memory_checks, sysctl_check};
use nofile::nofile_checks;
use serde::Serialize;

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
