//! Host tuning for shardcast: the sizing arithmetic that turns a target number
//! of connections into the value every kernel and process limit needs,
//! `doctor` (what stops this host, and the exact fix), `apply` (raise the
//! sysctls, never lowering anything) and the profile files.
//!
//! The engine calls [`raise_nofile_soft_to_hard`] and [`capacity_estimate`]
//! at start, and delegates `shardcast doctor ...` to [`cli_main`].

pub mod apply;
pub mod capacity;
pub mod cli;
pub mod doctor;
pub mod probe;
pub mod profile;
pub mod sizing;
pub mod spec;
pub mod sysctl;

pub use capacity::{
    capacity_estimate, raise_nofile_soft_to_hard, Capacity, CapacityInput, Limiter,
};
pub use cli::{cli_main, run};
pub use doctor::{diagnose, Report, Status};
pub use probe::HostProbe;
pub use sizing::{size, Requirements, Role, Target};

/// Bytes in binary units with one decimal, for reports.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fmt_bytes_units() {
        assert_eq!(super::fmt_bytes(100), "100 B");
        assert_eq!(super::fmt_bytes(4096), "4.0 KiB");
        assert_eq!(super::fmt_bytes(4_196_000_000), "3.9 GiB");
    }
}
