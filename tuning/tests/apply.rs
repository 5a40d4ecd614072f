//! `apply` against temporary /proc/sys-like trees: the dry run writes
//! nothing, --apply writes, never lowers, and is idempotent.

mod common;

use common::{fake_proc_sys, read, run, snapshot, TempDir, MACHINE_SYSCTLS};
use shardcast_tuning::apply::{self, Action};
use shardcast_tuning::sysctl::SysctlRoot;
use shardcast_tuning::{size, Role, Target};

fn machine_tree(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    fake_proc_sys(&d.path().join("sys"), MACHINE_SYSCTLS);
    d
}

#[test]
fn dry_run_changes_nothing() {
    let d = machine_tree("dry");
    let root = d.path().join("sys");
    let before = snapshot(d.path());
    let (code, out, err) = run(
        &format!(
            "t apply --target 1000000 --dry-run --sysctl-root {}",
            root.display()
        ),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: nothing is written"), "{out}");
    assert!(out.contains("net.core.somaxconn: 4096 → 16384"), "{out}");
    assert!(
        out.contains("net.ipv4.tcp_mem: 287901 383868 575802 → 1000000 1333333 2000000"),
        "{out}"
    );
    assert!(out.contains("fs.file-max: 2466177 (kept"), "{out}");
    assert_eq!(snapshot(d.path()), before);
    // No mode at all is a dry run too.
    let (code, out, _) = run(
        &format!("t apply --target 1000000 --sysctl-root {}", root.display()),
        None,
    );
    assert_eq!(code, 0);
    assert!(out.contains("dry run"));
    assert_eq!(snapshot(d.path()), before);
}

#[test]
fn apply_writes_raises_and_never_lowers() {
    let d = machine_tree("apply");
    let root = d.path().join("sys");
    // Operator choices stronger than ours must survive.
    fake_proc_sys(
        &root,
        &[
            ("fs.nr_open", "4000000"),
            ("net.ipv4.tcp_keepalive_time", "120"),
            ("net.ipv4.tcp_max_syn_backlog", "65535"),
            ("kernel.io_uring_disabled", "2"),
        ],
    );
    let cmd = format!(
        "t apply --target 1000000 --apply --sysctl-root {}",
        root.display()
    );
    let (code, out, err) = run(&cmd, None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(read(&root, "net.core.somaxconn"), "16384");
    assert_eq!(read(&root, "net.core.netdev_max_backlog"), "4096");
    assert_eq!(read(&root, "net.ipv4.tcp_mem"), "1000000 1333333 2000000");
    assert_eq!(read(&root, "net.netfilter.nf_conntrack_max"), "2000000");
    assert_eq!(read(&root, "net.ipv4.tcp_keepalive_intvl"), "30");
    assert_eq!(read(&root, "kernel.io_uring_disabled"), "0");
    // Higher or stronger values are left alone, element by element.
    assert_eq!(read(&root, "fs.file-max"), "2466177");
    assert_eq!(read(&root, "fs.nr_open"), "4000000");
    assert_eq!(read(&root, "net.ipv4.tcp_keepalive_time"), "120");
    assert_eq!(read(&root, "net.ipv4.tcp_max_syn_backlog"), "65535");
    assert_eq!(read(&root, "net.ipv4.tcp_rmem"), "4096\t131072\t33554432");
    assert_eq!(read(&root, "net.ipv4.tcp_wmem"), "4096\t16384\t4194304");
    // Server keys only: the port range is a load generator's business.
    assert_eq!(read(&root, "net.ipv4.ip_local_port_range"), "32768\t60999");

    // Idempotent: a second run plans no change and touches no file.
    let before = snapshot(d.path());
    let (code, out, _) = run(&cmd, None);
    assert_eq!(code, 0);
    assert!(out.contains("0 of 0 change(s) written"), "{out}");
    assert!(!out.contains('→'), "{out}");
    assert_eq!(snapshot(d.path()), before);
}

#[test]
fn loadgen_widens_the_port_range_and_enables_tw_reuse() {
    let d = machine_tree("loadgen");
    let root = d.path().join("sys");
    let cmd = format!(
        "t apply --target 40000 --role loadgen --apply --sysctl-root {}",
        root.display()
    );
    assert_eq!(run(&cmd, None).0, 0);
    assert_eq!(read(&root, "net.ipv4.ip_local_port_range"), "25536 65535");
    assert_eq!(read(&root, "net.ipv4.tcp_tw_reuse"), "1");
    // A range that is already wider, elsewhere, stays as it is.
    fake_proc_sys(&root, &[("net.ipv4.ip_local_port_range", "2000\t50000")]);
    assert_eq!(run(&cmd, None).0, 0);
    assert_eq!(read(&root, "net.ipv4.ip_local_port_range"), "2000\t50000");
}

#[test]
fn persist_writes_the_values_in_force_once() {
    let d = machine_tree("persist");
    let root = d.path().join("sys");
    let conf = d.path().join("etc/sysctl.d/60-shardcast.conf");
    let cmd = format!(
        "t apply --target 1000000 --apply --persist --sysctl-root {} --persist-path {}",
        root.display(),
        conf.display()
    );
    let (code, out, _) = run(&cmd, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("persisted to"), "{out}");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("\nnet.core.somaxconn = 16384\n"), "{text}");
    // The host's higher value is what boot must restore, not our lower need.
    assert!(text.contains("\nfs.file-max = 2466177\n"), "{text}");
    assert!(
        text.contains("\nnet.ipv4.tcp_rmem = 4096 131072 33554432\n"),
        "{text}"
    );
    let (code, out, _) = run(&cmd, None);
    assert_eq!(code, 0);
    assert!(out.contains("already up to date"), "{out}");
}

#[test]
fn absent_keys_are_skipped_not_created() {
    let d = TempDir::new("absent");
    let root = d.path().join("sys");
    let without_conntrack: Vec<_> = MACHINE_SYSCTLS
        .iter()
        .filter(|(k, _)| !k.starts_with("net.netfilter"))
        .copied()
        .collect();
    fake_proc_sys(&root, &without_conntrack);
    let (code, out, _) = run(
        &format!(
            "t apply --target 1000000 --apply --sysctl-root {}",
            root.display()
        ),
        None,
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("net.netfilter.nf_conntrack_max: skipped"),
        "{out}"
    );
    assert!(!root.join("net/netfilter").exists());
}

#[test]
fn failed_and_ignored_writes_are_reported() {
    let d = machine_tree("fail");
    let root_path = d.path().join("sys");
    let root = SysctlRoot::new(&root_path);
    let r = size(&Target::new(1_000_000, Role::Server));
    let plan = apply::plan(&r, &root);
    // The kernel may refuse a value (here ENOSPC) or keep another one (here
    // /dev/null, which reads back empty): neither may pass for success.
    let swap = |key: &str, to: &str| {
        let f = root.file(key);
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(to, &f).unwrap();
    };
    swap("net.core.somaxconn", "/dev/full");
    swap("net.core.netdev_max_backlog", "/dev/null");
    let written = apply::execute(&plan, &root);
    let result = |key: &str| {
        written
            .iter()
            .find(|w| w.key == key)
            .unwrap()
            .result
            .as_ref()
            .err()
            .map(|e| e.to_string())
    };
    assert!(result("net.core.somaxconn").is_some());
    assert!(result("net.core.netdev_max_backlog")
        .unwrap()
        .contains("kernel kept"));
    assert_eq!(result("net.ipv4.tcp_mem"), None);
    let changes = plan
        .iter()
        .filter(|p| matches!(p.action, Action::Change { .. }))
        .count();
    assert_eq!(written.len(), changes);
}

#[test]
fn json_dry_run_lists_the_plan() {
    let d = machine_tree("json");
    let root = d.path().join("sys");
    let before = snapshot(d.path());
    let cmd = format!(
        "t apply --target 1m --json --sysctl-root {}",
        root.display()
    );
    let (code, out, _) = run(&cmd, None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dry_run"], true);
    let plan = v["plan"].as_array().unwrap();
    let somaxconn = plan
        .iter()
        .find(|p| p["key"] == "net.core.somaxconn")
        .unwrap();
    assert_eq!(somaxconn["action"], "change");
    assert_eq!(somaxconn["from"][0], 4096);
    assert_eq!(somaxconn["to"][0], 16384);
    assert!(v["written"].as_array().unwrap().is_empty());
    assert_eq!(snapshot(d.path()), before);
}
