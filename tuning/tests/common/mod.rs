//! Shared fixtures: a probe with this project's build machine's numbers, and
//! temporary /proc/sys-like trees.
#![allow(dead_code)] // Each test binary uses a different part.

use shardcast_tuning::probe::{IoUringProbe, SysctlReading};
use shardcast_tuning::sysctl::SysctlValue;
use shardcast_tuning::HostProbe;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The sysctls as measured on the build machine (docs/tuning.md quotes them).
pub const MACHINE_SYSCTLS: &[(&str, &str)] = &[
    ("fs.file-max", "2466177"),
    ("fs.file-nr", "449\t0\t2466177"),
    ("fs.nr_open", "1048576"),
    ("kernel.io_uring_disabled", "0"),
    ("net.core.netdev_max_backlog", "1000"),
    ("net.core.somaxconn", "4096"),
    ("net.ipv4.ip_local_port_range", "32768\t60999"),
    ("net.ipv4.tcp_keepalive_intvl", "75"),
    ("net.ipv4.tcp_keepalive_probes", "9"),
    ("net.ipv4.tcp_keepalive_time", "7200"),
    ("net.ipv4.tcp_max_syn_backlog", "2048"),
    ("net.ipv4.tcp_mem", "287901\t383868\t575802"),
    ("net.ipv4.tcp_rmem", "4096\t131072\t33554432"),
    ("net.ipv4.tcp_tw_reuse", "2"),
    ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
    ("net.netfilter.nf_conntrack_count", "0"),
    ("net.netfilter.nf_conntrack_max", "262144"),
    ("vm.max_map_count", "65530"),
];

/// This machine: nofile 20000 soft = hard, no CAP_SYS_RESOURCE, 2 CPUs,
/// 24 GiB, io_uring working.
pub fn this_machine() -> HostProbe {
    let sysctls: BTreeMap<String, SysctlReading> = MACHINE_SYSCTLS
        .iter()
        .map(|(k, v)| {
            let value = SysctlValue::parse(v).expect("fixture value");
            (
                k.to_string(),
                SysctlReading {
                    value,
                    writable: true,
                },
            )
        })
        .collect();
    HostProbe {
        nofile_soft: 20_000,
        nofile_hard: 20_000,
        cap_sys_resource: false,
        euid: 0,
        cpus: 2,
        page_size: 4096,
        mem_total_bytes: 24 << 30,
        mem_available_bytes: 22 << 30,
        sysctls,
        io_uring: IoUringProbe { setup_errno: None },
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("shardcast-tune-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A /proc/sys-like tree under `root` holding `values` (key, text).
pub fn fake_proc_sys(root: &Path, values: &[(&str, &str)]) {
    for (k, v) in values {
        let f = root.join(k.replace('.', "/"));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, format!("{v}\n")).unwrap();
    }
}

/// Every file under `root` with its contents, for before/after comparisons.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), m));
            }
        }
    }
    out
}

pub fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Runs the CLI with an injected probe; returns (exit code, stdout, stderr).
pub fn run(cmdline: &str, probe: Option<&HostProbe>) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = shardcast_tuning::run(&args(cmdline), probe, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

pub fn read(root: &Path, key: &str) -> String {
    std::fs::read_to_string(root.join(key.replace('.', "/")))
        .unwrap()
        .trim()
        .to_string()
}
