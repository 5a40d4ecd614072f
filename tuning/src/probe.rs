//! What the host has right now. [`HostProbe`] is a plain struct of values so
//! the decision logic can be tested with any host's numbers; [`HostProbe::live`]
//! fills it from this process and /proc.

use crate::spec;
use crate::sysctl::{SysctlRoot, SysctlValue};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;

/// CAP_SYS_RESOURCE, needed to raise a hard rlimit (capability(7)).
pub const CAP_SYS_RESOURCE: u32 = 24;

/// One sysctl as read from the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SysctlReading {
    pub value: SysctlValue,
    /// Whether this process could write it (root and a writable /proc/sys).
    pub writable: bool,
}

/// Whether io_uring rings can be created here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IoUringProbe {
    /// `None` when io_uring_setup on a tiny ring worked, else its errno.
    pub setup_errno: Option<i32>,
}

impl IoUringProbe {
    pub fn available(&self) -> bool {
        self.setup_errno.is_none()
    }
}

/// A snapshot of the host's limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostProbe {
    pub nofile_soft: u64,
    /// `u64::MAX` for RLIM_INFINITY.
    pub nofile_hard: u64,
    /// CAP_SYS_RESOURCE in the effective set: the hard limit can be raised.
    pub cap_sys_resource: bool,
    pub euid: u32,
    pub cpus: u32,
    pub page_size: u64,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    /// The keys from [`spec::all_keys`] that exist on this host.
    pub sysctls: BTreeMap<String, SysctlReading>,
    pub io_uring: IoUringProbe,
}

impl HostProbe {
    /// Reads this process and host. Sysctls come from `root` (normally
    /// /proc/sys).
    pub fn live(root: &SysctlRoot) -> HostProbe {
        let (nofile_soft, nofile_hard) = nofile().unwrap_or((0, 0));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_bytes = meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0);
        let mut sysctls = BTreeMap::new();
        for key in spec::all_keys() {
            if let Ok(Some(value)) = root.read(key) {
                let writable = root.writable(key);
                sysctls.insert(key.to_string(), SysctlReading { value, writable });
            }
        }
        HostProbe {
            nofile_soft,
            nofile_hard,
            cap_sys_resource: has_capability(&status, CAP_SYS_RESOURCE),
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
            cpus: cpu_count(),
            page_size: page_size(),
            mem_total_bytes,
            mem_available_bytes: meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(mem_total_bytes),
            sysctls,
            io_uring: IoUringProbe {
                setup_errno: io_uring_setup_probe().err(),
            },
        }
    }

    /// The first value of a sysctl, if the host has it.
    pub fn sysctl(&self, key: &str) -> Option<&SysctlValue> {
        self.sysctls.get(key).map(|r| &r.value)
    }

    pub fn is_root(&self) -> bool {
        self.euid == 0
    }
}

fn rlim_to_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

/// RLIMIT_NOFILE as (soft, hard).
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rlim_to_u64(lim.rlim_cur), rlim_to_u64(lim.rlim_max)))
}

/// Whether capability bit `cap` is in the CapEff line of a
/// /proc/<pid>/status text. This is the capability in the process's own user
/// namespace; in an unprivileged user namespace setrlimit may still refuse.
pub fn has_capability(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| cap < 64 && mask & (1u64 << cap) != 0)
}

/// A `/proc/meminfo` field in bytes (the file states kB).
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// CPUs this process may run on (affinity and cgroup quota aware): the
/// engine starts one shard per CPU.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
}

/// `struct io_uring_params` (include/uapi/linux/io_uring.h): 120 bytes, all
/// zero for a plain ring. Only the size and zeroing matter to the probe.
#[repr(C)]
struct IoUringParams {
    words: [u32; 30],
}

/// Creates a one-entry io_uring and closes it. `Err(errno)` tells why rings
/// are unavailable: ENOSYS (kernel without io_uring, or seccomp), EPERM
/// (kernel.io_uring_disabled, or seccomp/LSM), ENOMEM (RLIMIT_MEMLOCK on
/// kernels before 5.12).
pub fn io_uring_setup_probe() -> Result<(), i32> {
    let mut params = IoUringParams { words: [0; 30] };
    // SAFETY: io_uring_setup(2) reads and writes exactly one io_uring_params
    // (120 bytes) at the pointer, which `params` provides and outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1u32,
            &mut params as *mut IoUringParams,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    // SAFETY: `fd` is the ring fd just returned to us and nobody else owns it.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_bit_24() {
        // This machine: everything but CAP_SYS_RESOURCE.
        let s = "Name:\tx\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n";
        assert!(!has_capability(s, CAP_SYS_RESOURCE));
        assert!(has_capability(s, 23));
        assert!(has_capability(
            "CapEff:\t0000000001000000\n",
            CAP_SYS_RESOURCE
        ));
        assert!(!has_capability(
            "CapEff:\t0000000000000000\n",
            CAP_SYS_RESOURCE
        ));
        assert!(!has_capability("no such line", CAP_SYS_RESOURCE));
    }

    #[test]
    fn meminfo_fields() {
        let m = "MemTotal:       24684092 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_bytes(m, "MemTotal"), Some(24_684_092 * 1024));
        assert_eq!(meminfo_bytes(m, "MemAvailable"), Some(20_000_000 * 1024));
        assert_eq!(meminfo_bytes(m, "Mem"), None);
        assert_eq!(meminfo_bytes(m, "SwapTotal"), None);
    }
}
