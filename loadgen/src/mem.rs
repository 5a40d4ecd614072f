//! The memory probe: the server's resident set, and the kernel's TCP and slab
//! memory, sampled before the ramp and after every connection is up.
//!
//! Kernel figures are machine-wide and cover both ends of each loopback
//! connection (the loadgen's sockets too); they are reported as such.

use serde::Serialize;

/// One sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// VmRSS of the target process, bytes.
    pub rss_bytes: Option<u64>,
    /// Rss from smaps_rollup (includes shared pages the same way), bytes.
    pub smaps_rss_bytes: Option<u64>,
    /// /proc/net/sockstat "TCP: … mem" (pages of socket buffers) × page size, bytes.
    pub tcp_mem_bytes: Option<u64>,
    /// /proc/meminfo Slab, bytes (struct sock, inodes, files, dentries, epoll items…).
    pub slab_bytes: Option<u64>,
    /// /proc/net/sockstat "TCP: inuse".
    pub tcp_inuse: Option<u64>,
    /// /proc/meminfo MemAvailable and MemFree, bytes (what the whole machine has left).
    pub mem_available_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
}

/// Before/after and the per-connection figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probe {
    pub pid: u32,
    pub before: Sample,
    pub after: Sample,
    /// Connections open when `after` was taken.
    pub connections: u64,
    /// ΔRSS / connections: the server's user-space cost of one connection.
    pub rss_bytes_per_conn: Option<f64>,
    /// ΔTCP buffer memory / connections (both ends of the loopback connection).
    pub tcp_mem_bytes_per_conn: Option<f64>,
    /// ΔSlab / connections (both ends; noisy, other activity counts too).
    pub slab_bytes_per_conn: Option<f64>,
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// `TCP: inuse X orphan Y tw Z alloc A mem M` → (inuse, mem pages).
fn sockstat() -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/net/sockstat") else {
        return (None, None);
    };
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else {
        return (None, None);
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1)?.parse().ok())
    };
    (field("inuse"), field("mem"))
}

/// /proc/net/sockstat "TCP … mem" in bytes now (machine-wide socket buffer memory).
pub fn tcp_mem_now() -> Option<u64> {
    sockstat().1.map(|p| p * page_size())
}

pub fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (inuse, mem_pages) = sockstat();
    Sample {
        rss_bytes: kb_field(&status, "VmRSS:"),
        smaps_rss_bytes: kb_field(&smaps, "Rss:"),
        tcp_mem_bytes: mem_pages.map(|p| p * page_size()),
        slab_bytes: kb_field(&meminfo, "Slab:"),
        tcp_inuse: inuse,
        mem_available_bytes: kb_field(&meminfo, "MemAvailable:"),
        mem_free_bytes: kb_field(&meminfo, "MemFree:"),
    }
}

/// CPU time (user + system) process `pid` has used, in seconds (from /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Is process `pid` still running (not gone, not a zombie waiting to be reaped)?
pub fn alive(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = text
        .rfind(')')
        .and_then(|i| text[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Is there a process `pid` to probe?
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/status")).exists()
}

impl Probe {
    pub fn new(pid: u32, before: Sample, after: Sample, connections: u64) -> Probe {
        let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if connections > 0 => {
                Some((b as f64 - a as f64) / connections as f64)
            }
            _ => None,
        };
        Probe {
            pid,
            rss_bytes_per_conn: per(before.rss_bytes, after.rss_bytes),
            tcp_mem_bytes_per_conn: per(before.tcp_mem_bytes, after.tcp_mem_bytes),
            slab_bytes_per_conn: per(before.slab_bytes, after.slab_bytes),
            before,
            after,
            connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        // Spin on CPU time, not wall time: on a busy machine 50 ms of wall time may
        // be far less CPU.
        let spin = std::time::Instant::now();
        while crate::sys::cpu_seconds_self() < 0.05 && spin.elapsed().as_secs() < 10 {}
        let cpu = cpu_seconds(std::process::id()).unwrap();
        let own = crate::sys::cpu_seconds_self();
        assert!(cpu > 0.02 && (cpu - own).abs() < 0.1, "{cpu} vs {own}");
        let s = sample(std::process::id());
        assert!(s.rss_bytes.unwrap() > 0);
        assert!(s.slab_bytes.is_some());
        let p = Probe::new(
            1,
            Sample {
                rss_bytes: Some(1000),
                ..Sample::default()
            },
            Sample {
                rss_bytes: Some(5000),
                ..Sample::default()
            },
            4,
        );
        assert_eq!(p.rss_bytes_per_conn, Some(1000.0));
        assert_eq!(p.tcp_mem_bytes_per_conn, None);
    }
}
