//! Sysctl values: parsing, the "never weaken" merge rule, and reading and
//! writing them under a root directory (normally /proc/sys, a temporary
//! directory in tests).

use serde::Serialize;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A sysctl value: one or more unsigned integers separated by whitespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SysctlValue(pub Vec<u64>);

impl SysctlValue {
    pub fn one(v: u64) -> SysctlValue {
        SysctlValue(vec![v])
    }

    /// Parses the text of a /proc/sys file; `None` for anything that is not
    /// a list of unsigned integers (we never touch such keys).
    pub fn parse(s: &str) -> Option<SysctlValue> {
        let v: Option<Vec<u64>> = s.split_whitespace().map(|w| w.parse().ok()).collect();
        v.filter(|v| !v.is_empty()).map(SysctlValue)
    }

    /// The first element, for single-valued keys.
    pub fn first(&self) -> u64 {
        self.0.first().copied().unwrap_or(0)
    }
}

impl fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Which way a key gets "stronger". `apply` only ever moves a key in this
/// direction, so it never undoes an operator's more generous setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Capacities: each element must be at least the needed one.
    AtLeast,
    /// Timeouts and switches where smaller is stronger (keepalive,
    /// io_uring_disabled): each element must be at most the needed one.
    AtMost,
    /// A `low high` range where wider is stronger (ip_local_port_range).
    Wider,
    /// A mode switch ordered from weakest to strongest; values not listed
    /// are treated as weakest.
    Ranked(&'static [u64]),
}

impl Direction {
    /// Whether `current` already satisfies `needed`. Values of different
    /// shapes never satisfy each other.
    pub fn satisfied(self, current: &SysctlValue, needed: &SysctlValue) -> bool {
        if current.0.len() != needed.0.len() {
            return false;
        }
        let pairs = || current.0.iter().zip(&needed.0);
        match self {
            Direction::AtLeast => pairs().all(|(c, n)| c >= n),
            Direction::AtMost => pairs().all(|(c, n)| c <= n),
            Direction::Wider => width(current) >= width(needed),
            Direction::Ranked(order) => rank(order, current.first()) >= rank(order, needed.first()),
        }
    }

    /// The value to set: `current` moved towards `needed` only where it falls
    /// short, so nothing already stronger is weakened. `None` when the shapes
    /// differ and no sensible merge exists.
    pub fn merge(self, current: &SysctlValue, needed: &SysctlValue) -> Option<SysctlValue> {
        if current.0.len() != needed.0.len() {
            return None;
        }
        if self.satisfied(current, needed) {
            return Some(current.clone());
        }
        let zip = current.0.iter().zip(&needed.0);
        let merged = match self {
            Direction::AtLeast => zip.map(|(c, n)| *c.max(n)).collect(),
            Direction::AtMost => zip.map(|(c, n)| *c.min(n)).collect(),
            Direction::Wider => {
                let (c, n) = (&current.0, &needed.0);
                vec![c[0].min(n[0]), c[1].max(n[1])]
            }
            Direction::Ranked(_) => needed.0.clone(),
        };
        Some(SysctlValue(merged))
    }
}

/// Number of ports in a `low high` range (0 for a malformed one).
pub fn width(v: &SysctlValue) -> u64 {
    match v.0.as_slice() {
        [lo, hi] if hi >= lo => hi - lo + 1,
        _ => 0,
    }
}

fn rank(order: &[u64], v: u64) -> usize {
    order.iter().position(|x| *x == v).map_or(0, |p| p + 1)
}

/// A directory laid out like /proc/sys: `net.core.somaxconn` lives at
/// `<root>/net/core/somaxconn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlRoot {
    path: PathBuf,
}

impl Default for SysctlRoot {
    fn default() -> Self {
        SysctlRoot::new("/proc/sys")
    }
}

impl SysctlRoot {
    pub fn new(path: impl Into<PathBuf>) -> SysctlRoot {
        SysctlRoot { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, key: &str) -> PathBuf {
        self.path.join(key.replace('.', "/"))
    }

    /// The parsed value, `Ok(None)` when the key does not exist (module not
    /// loaded, older kernel) or holds something that is not integers.
    pub fn read(&self, key: &str) -> io::Result<Option<SysctlValue>> {
        match std::fs::read_to_string(self.file(key)) {
            Ok(s) => Ok(SysctlValue::parse(&s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes an existing key. Never creates files: a missing key under
    /// /proc/sys means the kernel has no such setting.
    pub fn write(&self, key: &str, value: &SysctlValue) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.file(key))?;
        // One write call: procfs parses each write on its own.
        f.write_all(format!("{value}\n").as_bytes())
    }

    /// Whether this process may write the key (false on a read-only /proc/sys
    /// in a container, or when not root).
    pub fn writable(&self, key: &str) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(self.file(key).as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call;
        // access(2) only reads it.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SysctlValue {
        SysctlValue::parse(s).unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(
            v("4096\t131072\t6291456\n"),
            SysctlValue(vec![4096, 131072, 6291456])
        );
        assert_eq!(
            v("4096\t131072\t6291456").to_string(),
            "4096 131072 6291456"
        );
        assert_eq!(SysctlValue::parse(""), None);
        assert_eq!(SysctlValue::parse("-1"), None);
        assert_eq!(SysctlValue::parse("bbr"), None);
    }

    #[test]
    fn at_least_is_element_wise_max() {
        let d = Direction::AtLeast;
        let cur = v("287901 383868 575802");
        let need = v("1000000 1333333 2000000");
        assert!(!d.satisfied(&cur, &need));
        assert_eq!(d.merge(&cur, &need), Some(need.clone()));
        // The host's larger default buffer stays; only the max is raised.
        let cur = v("4096 131072 4194304");
        let need = v("4096 4096 6291456");
        assert_eq!(d.merge(&cur, &need), Some(v("4096 131072 6291456")));
        assert!(d.satisfied(&v("5000"), &v("4096")));
        assert_eq!(d.merge(&v("5000"), &v("4096")), Some(v("5000")));
    }

    #[test]
    fn at_most_never_lengthens() {
        let d = Direction::AtMost;
        assert_eq!(d.merge(&v("7200"), &v("300")), Some(v("300")));
        assert_eq!(d.merge(&v("60"), &v("300")), Some(v("60")));
        assert_eq!(d.merge(&v("2"), &v("0")), Some(v("0")));
        assert!(d.satisfied(&v("0"), &v("0")));
    }

    #[test]
    fn wider_port_range() {
        let d = Direction::Wider;
        let cur = v("32768 60999");
        assert!(d.satisfied(&cur, &v("40000 65535")));
        assert_eq!(d.merge(&cur, &v("25536 65535")), Some(v("25536 65535")));
        // A wider current range on other ports is kept as it is.
        assert_eq!(
            d.merge(&v("2000 60000"), &v("25536 65535")),
            Some(v("2000 60000"))
        );
        // Narrow but offset: the union is taken, never shrinking either end.
        assert_eq!(
            d.merge(&v("50000 51000"), &v("25536 65535")),
            Some(v("25536 65535"))
        );
        assert_eq!(width(&v("1024 65535")), 64_512);
    }

    #[test]
    fn ranked_tw_reuse() {
        // 0 off < 2 loopback only < 1 everywhere.
        let d = Direction::Ranked(&[0, 2, 1]);
        assert_eq!(d.merge(&v("2"), &v("1")), Some(v("1")));
        assert_eq!(d.merge(&v("0"), &v("1")), Some(v("1")));
        assert!(d.satisfied(&v("1"), &v("1")));
        assert!(!d.satisfied(&v("2"), &v("1")));
        // Asking only for loopback never downgrades a global 1.
        assert_eq!(d.merge(&v("1"), &v("2")), Some(v("1")));
    }

    #[test]
    fn shape_mismatch_is_never_merged() {
        assert!(!Direction::AtLeast.satisfied(&v("1 2"), &v("1 2 3")));
        assert_eq!(Direction::AtLeast.merge(&v("1 2"), &v("1 2 3")), None);
    }

    #[test]
    fn root_maps_dots_to_directories() {
        let r = SysctlRoot::new("/x");
        assert_eq!(
            r.file("net.ipv4.tcp_mem"),
            PathBuf::from("/x/net/ipv4/tcp_mem")
        );
    }
}
