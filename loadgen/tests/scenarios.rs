//! The loadgen against a real engine on loopback: small counts, bounded in time,
//! every figure checked against what the run must have produced.

mod common;

use std::process::Command;

use common::{engine, raw_peer, run};
use shardcast_loadgen::stats::Hist;

#[test]
fn idle_connections_all_come_up() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    let r = run(&[
        "idle",
        "--targets",
        &addr,
        "-n",
        "50",
        "--ramp",
        "500",
        "--duration",
        "0.5",
        "--channels",
        "a,b",
    ]);
    let c = &r.counters;
    assert_eq!(
        (c.attempted, c.up, c.failed, c.closed),
        (50, 50, 0, 0),
        "{}",
        r.summary()
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.connect_latency.count, 50);
    assert_eq!(c.subscribe_errors + c.bad_messages, 0);
    assert!(r.phases.ramp_complete);
    e.shutdown();
}

#[test]
fn fanout_every_delivery_arrives_once_in_order() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    // 200/s for 0.5 s: publications 0..100 are due before the end.
    let r = run(&[
        "fanout",
        "--targets",
        &addr,
        "-n",
        "50",
        "--ramp",
        "1000",
        "--duration",
        "0.5",
        "--rate",
        "200",
        "--payload-bytes",
        "300",
        "--channels",
        "news",
    ]);
    let f = r.fanout.as_ref().expect("fanout section");
    assert_eq!((f.published, f.acknowledged), (100, 100), "{}", r.summary());
    assert_eq!(f.expected_deliveries, 5_000);
    assert_eq!(f.deliveries, 5_000, "{}", r.summary());
    assert_eq!((f.missing, f.duplicate, f.out_of_order), (0, 0, 0));
    assert_eq!(r.latency.count, 5_000, "every delivery carried a timestamp");
    assert!(r.latency.p50_us > 0.0 && r.latency.max_us >= r.latency.p99_us);
    assert!(f.deliveries_per_s > 0.0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    e.shutdown();
}

#[test]
fn fanout_spread_over_channels_counts_per_channel() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    // 40 connections spread over 4 channels (10 each); 40 publications round-robin (10 each).
    let r = run(&[
        "fanout",
        "--targets",
        &addr,
        "-n",
        "40",
        "--duration",
        "0.4",
        "--rate",
        "100",
        "--channels",
        "c0,c1,c2,c3",
        "--spread",
    ]);
    let f = r.fanout.as_ref().unwrap();
    assert_eq!(f.acknowledged, 40, "{}", r.summary());
    assert_eq!(f.deliveries, 40 * 10, "{}", r.summary());
    assert_eq!((f.missing, f.duplicate, f.out_of_order), (0, 0, 0));
    e.shutdown();
}

#[test]
fn echo_counts_round_trips() {
    let e = engine(true);
    let addr = e.local_addr().to_string();
    let r = run(&[
        "echo",
        "--targets",
        &addr,
        "-n",
        "20",
        "--inflight",
        "2",
        "--message-bytes",
        "20",
        "--duration",
        "0.5",
    ]);
    let c = &r.counters;
    assert_eq!(c.up, 20, "{}", r.summary());
    assert!(c.echoes > 100, "{}", r.summary());
    assert_eq!(c.bad_messages, 0);
    // Each connection keeps 2 in flight: sent = echoes received + what is still in flight.
    assert!(
        c.sent >= c.echoes && c.sent <= c.echoes + 40,
        "sent {} echoes {}",
        c.sent,
        c.echoes
    );
    assert!(r.latency.count > 0 && r.latency.count <= c.echoes);
    assert!(r.msgs_per_s > 0.0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    e.shutdown();
}

#[test]
fn churn_reconnects_at_the_given_rate() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    let r = run(&[
        "churn",
        "--targets",
        &addr,
        "-n",
        "30",
        "--churn-rate",
        "40",
        "--duration",
        "1",
    ]);
    let c = &r.counters;
    assert!(c.churned >= 20, "{}", r.summary());
    assert_eq!(
        c.attempted,
        30 + c.churned,
        "every churned connection is replaced"
    );
    assert_eq!(c.up, c.attempted, "{}", r.summary());
    assert_eq!(c.failed, 0);
    e.shutdown();
}

#[test]
fn raw_protocol_fanout_through_a_broadcast_peer() {
    let peer = raw_peer();
    let addr = peer.addr.to_string();
    let r = run(&[
        "fanout",
        "--protocol",
        "raw",
        "--targets",
        &addr,
        "-n",
        "20",
        "--duration",
        "0.5",
        "--rate",
        "100",
    ]);
    let f = r.fanout.as_ref().unwrap();
    assert_eq!(f.published, 50, "{}", r.summary());
    assert_eq!(f.deliveries, 20 * 50, "{}", r.summary());
    assert_eq!((f.missing, f.duplicate, f.out_of_order), (0, 0, 0));
    assert_eq!(r.latency.count, 1000);
}

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardcast-loadgen"))
}

#[test]
fn two_workers_merge_to_exact_totals() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    let dir = std::env::temp_dir().join(format!("loadgen-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let svg = dir.join("r.svg");
    let out = loadgen()
        .args([
            "fanout",
            "--targets",
            &addr,
            "-n",
            "60",
            "--workers",
            "2",
            "--threads",
            "2",
            "--duration",
            "0.5",
        ])
        .args([
            "--rate",
            "100",
            "--settle",
            "0",
            "--source-ips",
            "127.0.0.2-127.0.0.4",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["counters"]["up"], 60, "{v}");
    assert_eq!(v["counters"]["attempted"], 60);
    assert_eq!(v["fanout"]["acknowledged"], 50);
    assert_eq!(v["fanout"]["deliveries"], 3000);
    assert_eq!(v["fanout"]["missing"], 0);
    // The merged histogram holds every delivery of both workers.
    let h = Hist::decode(v["latency_hist"].as_str().unwrap()).unwrap();
    assert_eq!(h.count(), 3000);
    assert_eq!(v["latency"]["count"], 3000);
    let connect = Hist::decode(v["connect_hist"].as_str().unwrap()).unwrap();
    assert_eq!(connect.count(), 60);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("polyline"),
        "an SVG with lines"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    e.shutdown();
}

#[test]
fn non_loopback_targets_are_refused_before_any_traffic() {
    for args in [
        vec!["idle", "--targets", "10.1.2.3:80"],
        vec!["idle", "--targets", "127.0.0.1:80,192.168.0.1:80"],
        vec!["fanout", "--publish-target", "8.8.8.8:80"],
        vec!["idle", "--source-ips", "10.0.0.1-10.0.0.3"],
        vec!["idle", "--targets", "example.com:80"],
    ] {
        let out = loadgen().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("loopback"), "{args:?}: {err}");
    }
}

#[test]
fn too_many_connections_for_one_process_asks_for_workers() {
    let opts = <shardcast_loadgen::Opts as clap::Parser>::try_parse_from([
        "shardcast-loadgen",
        "idle",
        "-n",
        "1000000",
        "--targets",
        "127.0.0.1:9",
    ])
    .unwrap();
    let err = shardcast_loadgen::run(&opts.plan().unwrap(), None).unwrap_err();
    assert!(err.contains("--workers"), "{err}");
}

/// Socket.IO's heartbeat is 300 ms here (a pong owed at the next ping closes
/// the connection), so a run of three seconds fails unless every connection (and
/// the publisher) answers the pings. (At 100 ms a loaded machine missed one.)
#[test]
fn socketio_fanout_through_a_strict_peer() {
    let peer = common::sio::sio_peer(false, 300);
    let addr = peer.addr.to_string();
    let r = run(&[
        "fanout",
        "--protocol",
        "socketio",
        "--targets",
        &addr,
        "-n",
        "20",
        "--duration",
        "1",
        "--rate",
        "50",
        "--payload-bytes",
        "300",
    ]);
    let f = r.fanout.as_ref().unwrap();
    assert_eq!(f.published, 50, "{}", r.summary());
    assert_eq!(f.deliveries, 20 * 50, "{}", r.summary());
    assert_eq!((f.missing, f.duplicate, f.out_of_order), (0, 0, 0));
    assert_eq!(r.counters.bad_messages, 0, "{}", r.summary());
    assert_eq!(r.counters.up, 20);
    assert_eq!(r.latency.count, 1000);
    assert_eq!((peer.ping_timeouts(), peer.bad_packets()), (0, 0));
    assert!(peer.pongs() >= 20 * 5, "pongs {}", peer.pongs());
}

#[test]
fn socketio_echo_round_trips() {
    // Pings every 300 ms with a 300 ms timeout, as in the fan-out test above: at
    // 100 ms a loaded CI machine answered one ping late and the peer dropped it.
    let peer = common::sio::sio_peer(true, 300);
    let addr = peer.addr.to_string();
    let r = run(&[
        "echo",
        "--protocol",
        "socketio",
        "--targets",
        &addr,
        "-n",
        "10",
        "--message-bytes",
        "20",
        "--duration",
        "0.5",
    ]);
    let c = &r.counters;
    assert_eq!(c.up, 10, "{}", r.summary());
    assert!(c.echoes > 50, "{}", r.summary());
    assert_eq!(c.bad_messages, 0, "{}", r.summary());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((peer.ping_timeouts(), peer.bad_packets()), (0, 0));
}

#[test]
fn socketio_never_up_without_the_open_packet() {
    // A raw broadcast peer never sends the open packet: nobody comes up, and the
    // connections time out in the set-up phase instead of being counted as up.
    let peer = raw_peer();
    let addr = peer.addr.to_string();
    let r = run(&[
        "idle",
        "--protocol",
        "socketio",
        "--targets",
        &addr,
        "-n",
        "5",
        "--connect-timeout",
        "0.5",
        "--duration",
        "0",
    ]);
    assert_eq!(r.counters.up, 0, "{}", r.summary());
    assert_eq!(r.counters.failed, 5, "{}", r.summary());
}

#[test]
fn sse_fanout_against_the_engine() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    let r = run(&[
        "fanout",
        "--protocol",
        "sse",
        "--targets",
        &addr,
        "-n",
        "30",
        "--channels",
        "a,b",
        "--duration",
        "0.5",
        "--rate",
        "40",
        "--payload-bytes",
        "200",
    ]);
    let f = r.fanout.as_ref().unwrap();
    assert_eq!(f.published, 20, "{}", r.summary());
    assert_eq!(f.deliveries, 30 * 20, "{}", r.summary());
    assert_eq!((f.missing, f.duplicate, f.out_of_order), (0, 0, 0));
    assert_eq!(r.counters.bad_messages, 0, "{}", r.summary());
    assert_eq!(r.counters.up, 30);
    e.shutdown();
}
