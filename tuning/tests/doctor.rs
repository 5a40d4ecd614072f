//! `doctor` against injected probes (this machine and variations of it) and
//! once against the live host.

mod common;

use common::{run, this_machine};
use serde_json::Value;
use shardcast_tuning::sysctl::{SysctlRoot, SysctlValue};
use shardcast_tuning::{diagnose, HostProbe, Role, Status, Target};

fn set(p: &mut HostProbe, key: &str, v: &str) {
    p.sysctls.get_mut(key).expect("fixture key").value = SysctlValue::parse(v).unwrap();
}

fn server(n: u64, shards: u32) -> Target {
    Target {
        shards,
        ..Target::new(n, Role::Server)
    }
}

#[test]
fn this_machine_million_is_blocked_by_the_fd_limit() {
    let (code, out, err) = run(
        "shardcast-tune doctor --target 1000000",
        Some(&this_machine()),
    );
    assert_eq!(code, 1, "{out}{err}");
    // The gravest check comes first, and it is the fd limit.
    let first = out.lines().find(|l| l.starts_with("BLOCKER")).unwrap();
    assert!(first.contains("RLIMIT_NOFILE per io_uring ring"), "{out}");
    assert!(
        out.contains("current: 20000 slots per ring x 2 rings = 40000 connections"),
        "{out}"
    );
    assert!(out.contains("needed:  500000 slots per ring"), "{out}");
    assert!(
        out.contains("RLIMIT_NOFILE per process (ordinary fds, epoll fallback)"),
        "{out}"
    );
    assert!(out.contains("Cannot be raised on this host"), "{out}");
    assert!(out.contains("lacks CAP_SYS_RESOURCE"), "{out}");
    assert!(out.contains("LimitNOFILE=1001024"), "{out}");
    assert!(out.contains("verdict: BLOCKED"), "{out}");
}

#[test]
fn this_machine_million_json_names_only_fd_blockers() {
    let (code, out, _) = run(
        "shardcast-tune doctor --target 1000000 --json",
        Some(&this_machine()),
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["can_hold_target"], false);
    let blockers: Vec<&str> = v["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(blockers.len(), 2, "{blockers:?}");
    assert!(
        blockers.iter().all(|b| b.starts_with("RLIMIT_NOFILE")),
        "{blockers:?}"
    );
    assert_eq!(v["capacity"]["io_uring"]["connections"], 40_000);
    assert_eq!(v["capacity"]["ordinary_fds"]["connections"], 20_000 - 1024);
    assert_eq!(v["requirements"]["target"]["shards"], 2);
    let checks = v["checks"].as_array().unwrap();
    let conntrack = checks
        .iter()
        .find(|c| c["name"] == "net.netfilter.nf_conntrack_max")
        .unwrap();
    // Loaded but tracking nothing here: a warning, not a blocker.
    assert_eq!(conntrack["status"], "WARN");
    for c in checks {
        assert!(["OK", "WARN", "BLOCKER"].contains(&c["status"].as_str().unwrap()));
        if c["status"] != "OK" && c["name"] != "memory, one unread frame per connection" {
            assert!(c["fix"].is_string(), "{c}");
        }
    }
}

#[test]
fn per_ring_limit_holds_what_ordinary_fds_cannot() {
    // 30000 over 2 rings is 15000 per ring: fits io_uring, not epoll.
    let r = diagnose(&server(30_000, 2), &this_machine());
    assert!(r.can_hold_target, "{:?}", r.blockers);
    let status = |name: &str| {
        r.checks
            .iter()
            .find(|c| c.name.starts_with(name))
            .unwrap()
            .status
    };
    assert_eq!(status("RLIMIT_NOFILE per io_uring ring"), Status::Ok);
    assert_eq!(status("RLIMIT_NOFILE per process"), Status::Warn);
    // One shard means one ring: then 30000 does not fit.
    assert!(!diagnose(&server(30_000, 1), &this_machine()).can_hold_target);
}

#[test]
fn without_io_uring_ordinary_fds_decide() {
    let mut p = this_machine();
    p.io_uring.setup_errno = Some(libc::EPERM);
    set(&mut p, "kernel.io_uring_disabled", "2");
    let r = diagnose(&server(30_000, 2), &p);
    assert_eq!(
        r.blockers,
        vec!["RLIMIT_NOFILE per process (ordinary fds, epoll fallback)".to_string()]
    );
    assert!(r.capacity.io_uring.is_none());
    let uring = r.checks.iter().find(|c| c.name == "io_uring").unwrap();
    assert_eq!(uring.status, Status::Warn);
    assert!(uring
        .fix
        .as_deref()
        .unwrap()
        .contains("sysctl -w kernel.io_uring_disabled=0"));
}

#[test]
fn with_cap_sys_resource_the_fix_is_to_raise() {
    let mut p = this_machine();
    p.cap_sys_resource = true;
    let r = diagnose(&server(2_000_000, 2), &p);
    let fix = r.checks[0].fix.clone().unwrap();
    assert!(!fix.to_lowercase().contains("cannot be raised"), "{fix}");
    assert!(fix.contains("prlimit"), "{fix}");
    // 2,001,024 is above fs.nr_open (1048576), which has to go first.
    assert!(fix.contains("sysctl -w fs.nr_open=2001024"), "{fix}");
    // io_uring needs only 1,000,000 per ring, which fs.nr_open allows: a warning.
    let nr_open = |r: &shardcast_tuning::Report| {
        r.checks
            .iter()
            .find(|c| c.name == "fs.nr_open")
            .unwrap()
            .status
    };
    assert_eq!(nr_open(&r), Status::Warn);
    // One ring needs all 2,000,000 in one table: fs.nr_open now blocks.
    let r = diagnose(&server(2_000_000, 1), &p);
    assert_eq!(nr_open(&r), Status::Blocker);
}

#[test]
fn generous_host_holds_a_million() {
    let mut p = this_machine();
    p.nofile_soft = 1024;
    p.nofile_hard = 1_048_576;
    set(&mut p, "net.netfilter.nf_conntrack_max", "4000000");
    let r = diagnose(&server(1_000_000, 2), &p);
    assert!(r.can_hold_target, "{:?}", r.blockers);
    assert_eq!(r.exit_code(), 0);
    // Soft below need but hard enough: fine, the engine raises soft to hard.
    let c = r
        .checks
        .iter()
        .find(|c| c.name.starts_with("RLIMIT_NOFILE per process"))
        .unwrap();
    assert_eq!(c.status, Status::Ok);
    assert!(c.note.as_deref().unwrap().contains("raises soft to hard"));
}

#[test]
fn memory_can_block() {
    let mut p = this_machine();
    p.nofile_hard = 1_048_576;
    p.mem_total_bytes = 2 << 30;
    p.mem_available_bytes = 1 << 30;
    let r = diagnose(&server(1_000_000, 2), &p);
    assert_eq!(r.blockers, vec!["memory, idle connections".to_string()]);
    // 2 GiB / 5030 B per connection (4,900 kernel + 130 engine).
    assert_eq!(
        r.capacity.io_uring.as_ref().unwrap().by_memory,
        (2u64 << 30) / 5030
    );
    // The engine's own cost is an input: 4 KiB more per connection halves it.
    let t = Target {
        engine_bytes_per_conn: 4196,
        ..server(1_000_000, 2)
    };
    assert_eq!(
        diagnose(&t, &p).capacity.ordinary_fds.by_memory,
        (2u64 << 30) / 9096
    );
}

#[test]
fn tracking_conntrack_is_a_blocker() {
    let mut p = this_machine();
    p.nofile_hard = 1_048_576;
    set(&mut p, "net.netfilter.nf_conntrack_count", "1200");
    let r = diagnose(&server(1_000_000, 2), &p);
    assert_eq!(
        r.blockers,
        vec!["net.netfilter.nf_conntrack_max".to_string()]
    );
    // Without the module the key is absent: no limit at all.
    p.sysctls.remove("net.netfilter.nf_conntrack_max");
    assert!(diagnose(&server(1_000_000, 2), &p).can_hold_target);
}

#[test]
fn loadgen_on_this_machine() {
    let p = this_machine();
    let (code, out, _) = run(
        "shardcast-tune doctor --target 1000000 --role loadgen",
        Some(&p),
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("BLOCKER  RLIMIT_NOFILE per loadgen process"),
        "{out}"
    );
    assert!(
        out.contains("BLOCKER  net.ipv4.ip_local_port_range"),
        "{out}"
    );
    assert!(out.contains("at least 16 source ips"), "{out}");
    assert!(out.contains("split the load over 53 processes"), "{out}");
    assert!(out.contains("sysctl -w net.ipv4.tcp_tw_reuse=1"), "{out}");
    assert!(!out.contains("somaxconn"), "{out}");
    // 53 processes fit the fd limit; 36 source ips x 28232 ports hold 1M.
    let (code, out, _) = run(
        "shardcast-tune doctor --target 1000000 --role loadgen --processes 53 --source-ips 36",
        Some(&p),
    );
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = run(
        "shardcast-tune doctor --target 1000000 --role loadgen --processes 53 --source-ips 35",
        Some(&p),
    );
    assert_eq!(code, 1);
}

#[test]
fn unwritable_sysctls_say_so() {
    let mut p = this_machine();
    p.sysctls.get_mut("net.core.somaxconn").unwrap().writable = false;
    let r = diagnose(&server(1_000_000, 2), &p);
    let c = r
        .checks
        .iter()
        .find(|c| c.name == "net.core.somaxconn")
        .unwrap();
    assert!(
        c.fix.as_deref().unwrap().contains("not writable from here"),
        "{:?}",
        c.fix
    );
}

/// The real host: only checks that the probe returns sane values, nothing
/// that holds on one machine only.
#[test]
fn live_probe_is_sane() {
    let p = HostProbe::live(&SysctlRoot::default());
    assert!(p.nofile_soft > 0 && p.nofile_hard >= p.nofile_soft, "{p:?}");
    assert!(p.cpus >= 1);
    assert!(p.page_size >= 4096 && p.page_size.is_power_of_two());
    assert!(p.mem_total_bytes > 0 && p.mem_available_bytes <= p.mem_total_bytes);
    assert!(p.sysctl("fs.file-max").is_some_and(|v| v.first() > 0));
    if p.io_uring.available() {
        // 2 refuses every io_uring_setup, so a working ring contradicts it.
        assert_ne!(
            p.sysctl("kernel.io_uring_disabled").map(|v| v.first()),
            Some(2)
        );
    }
    let (code, out, err) = run("shardcast-tune doctor --target 1000 --json", None);
    assert!(code == 0 || code == 1, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["host"]["cpus"], p.cpus);
}
