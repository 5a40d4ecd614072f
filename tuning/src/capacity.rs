//! What the engine calls at start: raise its own fd limit, then work out how
//! many connections the fds and the memory of this host allow.

use crate::probe::{self, HostProbe};
use crate::sizing;
use serde::Serialize;
use std::fmt;
use std::io;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new
/// (soft, hard). An unlimited hard limit is met with fs.nr_open, the most
/// the kernel accepts for a soft limit. Never lowers anything.
///
/// Raising the soft limit needs no privilege. The io_uring direct-descriptor
/// table of each ring is capped by the soft limit at registration time, so
/// call this before creating the rings.
pub fn raise_nofile_soft_to_hard() -> io::Result<(u64, u64)> {
    let (soft, hard) = probe::nofile()?;
    let want = if hard == u64::MAX {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(sizing::FD_RESERVE_PER_PROCESS)
    } else {
        hard
    };
    if soft >= want {
        return Ok((soft, hard));
    }
    let lim = libc::rlimit {
        rlim_cur: want as libc::rlim_t,
        rlim_max: if hard == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            hard as libc::rlim_t
        },
    };
    // SAFETY: `lim` is a valid rlimit that outlives the call; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    probe::nofile()
}

/// Inputs of [`capacity_estimate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapacityInput {
    /// RLIMIT_NOFILE soft limit in force (after [`raise_nofile_soft_to_hard`]):
    /// it caps both the ordinary fd table and each ring's direct-descriptor table.
    pub nofile: u64,
    /// One io_uring ring per shard.
    pub shards: u32,
    /// Accepting into io_uring direct descriptors (else ordinary fds, epoll).
    pub direct_descriptors: bool,
    /// fs.file-max, when known: every socket is a struct file.
    pub file_max: Option<u64>,
    /// Memory the connections may use (MemAvailable at start).
    pub mem_bytes: u64,
    pub kernel_bytes_per_socket: u64,
    pub engine_bytes_per_conn: u64,
}

impl CapacityInput {
    /// Inputs from a probe, with the default kernel cost per socket.
    pub fn from_probe(
        p: &HostProbe,
        shards: u32,
        direct_descriptors: bool,
        engine_bytes_per_conn: u64,
    ) -> CapacityInput {
        CapacityInput {
            nofile: p.nofile_soft,
            shards,
            direct_descriptors,
            file_max: p.sysctl("fs.file-max").map(|v| v.first()),
            mem_bytes: p.mem_available_bytes,
            kernel_bytes_per_socket: sizing::DEFAULT_KERNEL_BYTES_PER_SOCKET,
            engine_bytes_per_conn,
        }
    }
}

/// Which resource runs out first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limiter {
    /// RLIMIT_NOFILE (per ring with direct descriptors, per process otherwise).
    Nofile,
    /// fs.file-max.
    FileMax,
    Memory,
}

/// How many connections this host allows, and why not more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub by_nofile: u64,
    pub by_file_max: Option<u64>,
    pub by_memory: u64,
    pub connections: u64,
    pub limited_by: Limiter,
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.limited_by {
            Limiter::Nofile => "RLIMIT_NOFILE",
            Limiter::FileMax => "fs.file-max",
            Limiter::Memory => "memory",
        };
        write!(
            f,
            "{} connections (limited by {by}; fds allow {}",
            self.connections, self.by_nofile
        )?;
        if let Some(v) = self.by_file_max {
            write!(f, ", fs.file-max {v}")?;
        }
        write!(f, ", memory {})", self.by_memory)?;
        Ok(())
    }
}

/// Connections that the fd limits and memory allow. With direct descriptors
/// each shard's ring holds up to `nofile` slots, so the fd capacity is
/// `nofile × shards`; with ordinary fds it is `nofile` minus the reserve.
pub fn capacity_estimate(i: &CapacityInput) -> Capacity {
    let by_nofile = if i.direct_descriptors {
        i.nofile.saturating_mul(u64::from(i.shards.max(1)))
    } else {
        i.nofile.saturating_sub(sizing::FD_RESERVE_PER_PROCESS)
    };
    let by_file_max = i
        .file_max
        .map(|m| m.saturating_sub(sizing::FILE_MAX_SYSTEM_HEADROOM));
    let per_conn = (i.kernel_bytes_per_socket + i.engine_bytes_per_conn).max(1);
    Capacity::from_parts(by_nofile, by_file_max, i.mem_bytes / per_conn)
}

impl Capacity {
    /// The smallest of the three, and which one it is.
    pub fn from_parts(by_nofile: u64, by_file_max: Option<u64>, by_memory: u64) -> Capacity {
        let mut connections = by_nofile;
        let mut limited_by = Limiter::Nofile;
        if let Some(v) = by_file_max.filter(|v| *v < connections) {
            connections = v;
            limited_by = Limiter::FileMax;
        }
        if by_memory < connections {
            connections = by_memory;
            limited_by = Limiter::Memory;
        }
        Capacity {
            by_nofile,
            by_file_max,
            by_memory,
            connections,
            limited_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> CapacityInput {
        CapacityInput {
            nofile: 20_000,
            shards: 2,
            direct_descriptors: true,
            file_max: Some(2_466_177),
            mem_bytes: 24 << 30,
            kernel_bytes_per_socket: 4096,
            engine_bytes_per_conn: 100,
        }
    }

    #[test]
    fn direct_descriptors_scale_with_rings() {
        let c = capacity_estimate(&input());
        assert_eq!(c.by_nofile, 40_000);
        assert_eq!(c.connections, 40_000);
        assert_eq!(c.limited_by, Limiter::Nofile);
    }

    #[test]
    fn ordinary_fds_keep_a_reserve() {
        let c = capacity_estimate(&CapacityInput {
            direct_descriptors: false,
            ..input()
        });
        assert_eq!(c.connections, 20_000 - 1024);
    }

    #[test]
    fn memory_and_file_max_can_limit() {
        let c = capacity_estimate(&CapacityInput {
            nofile: 10_000_000,
            ..input()
        });
        assert_eq!(c.limited_by, Limiter::FileMax);
        assert_eq!(c.connections, 2_466_177 - 65_536);
        let c = capacity_estimate(&CapacityInput {
            nofile: 10_000_000,
            file_max: None,
            mem_bytes: 4196 * 1000,
            ..input()
        });
        assert_eq!(c.limited_by, Limiter::Memory);
        assert_eq!(c.connections, 1000);
        assert!(c
            .to_string()
            .starts_with("1000 connections (limited by memory"));
    }

    #[test]
    fn raise_is_idempotent_and_never_lowers() {
        let (soft0, hard0) = probe::nofile().unwrap();
        let (soft1, hard1) = raise_nofile_soft_to_hard().unwrap();
        assert_eq!(hard1, hard0);
        assert!(soft1 >= soft0);
        if hard0 != u64::MAX {
            assert_eq!(soft1, hard0);
        }
        assert_eq!(raise_nofile_soft_to_hard().unwrap(), (soft1, hard1));
    }
}
