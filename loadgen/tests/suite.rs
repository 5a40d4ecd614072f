//! The `suite` scenario against an in-process engine: paced broadcasts and a burst,
//! steady publications over spread channels, a hold and a drain, at small N.

mod common;

use std::time::Duration;

use clap::Parser as _;
use common::engine;
use shardcast_loadgen::{Hooks, Opts};

#[test]
fn suite_steps_count_every_delivery_and_the_drain() {
    let e = engine(false);
    let addr = e.local_addr().to_string();
    let args = [
        "shardcast-loadgen",
        "suite",
        "--targets",
        &addr,
        "-n",
        "60",
        "--ramp",
        "1000",
        "--broadcasts",
        "3",
        "--payload-bytes",
        "200",
        "--spread-channels",
        "6",
        "--rate",
        "60",
        "--duration",
        "1",
        "--hold",
        "1",
        "--sigterm",
        "--drain",
        "5",
        "--quiet",
        "--settle",
        "0",
        "--max-seconds",
        "60",
    ];
    let plan = Opts::try_parse_from(args).unwrap().plan().unwrap();
    assert_eq!(plan.channels.len(), 7);
    let hooks = Hooks {
        drain: Some(Box::new(move || e.drain(Duration::from_millis(500)))),
    };
    let r = shardcast_loadgen::run_with(&plan, None, hooks).expect("run completes");
    let s = r.suite.as_ref().expect("suite section");
    let text = r.summary();
    assert_eq!(s.connections_open, 60, "{text}");
    assert_eq!(s.broadcasts.len(), 3, "{text}");
    for b in &s.broadcasts {
        assert_eq!((b.expected, b.delivered), (60, 60), "{text}");
        assert!(!b.incomplete, "{text}");
        assert!(b.first_ms > 0.0 && b.first_ms <= b.p50_ms && b.p99_ms <= b.last_ms + 1.0);
        assert!(b.offset.is_some());
        assert_eq!(
            (b.missing, b.duplicate, b.out_of_order, b.closed),
            (0, 0, 0, 0)
        );
    }
    let burst = s.burst.as_ref().expect("burst");
    assert_eq!((burst.published, burst.acknowledged), (3, 3), "{text}");
    assert_eq!((burst.expected, burst.delivered), (180, 180), "{text}");
    assert_eq!(
        (burst.closed, burst.duplicate, burst.out_of_order),
        (0, 0, 0)
    );
    assert!(burst.deliveries_per_s > 0.0);
    let st = s.steady.as_ref().expect("steady");
    assert_eq!(st.channels, 6);
    assert!(
        st.published >= 55 && st.acknowledged == st.published,
        "{text}"
    );
    assert_eq!(st.expected, st.acknowledged * 10, "{text}");
    assert_eq!((st.delivered, st.lost), (st.expected, 0), "{text}");
    assert_eq!(st.latency.count, st.delivered);
    let h = s.hold.as_ref().expect("hold");
    assert_eq!((h.open, h.closed), (60, 0), "{text}");
    let d = s.drain.as_ref().expect("drain");
    assert!(d.triggered, "{text}");
    assert_eq!(
        (d.open_before, d.closed, d.still_open),
        (60, 60, 0),
        "{text}"
    );
    assert_eq!(d.closes.get("closed with code 4001"), Some(&60), "{text}");
    assert!(d.first_ms <= d.p50_ms && d.p50_ms <= d.last_ms, "{text}");
    assert!(d.last_ms < 5_000.0, "{text}");
    // Every tracker: nothing missing, doubled or reordered over the whole run.
    let c = &r.counters;
    assert_eq!(
        (c.missing, c.duplicate, c.out_of_order),
        (0, 0, 0),
        "{text}"
    );
    assert_eq!(c.deliveries, 60 * 6 + st.delivered, "{text}");
    let m = r.loadgen_memory.as_ref().expect("loadgen memory");
    assert!(m.rss_after_bytes > 0 && m.processes == 1);
}

#[test]
fn suite_rejects_other_protocols_and_spread() {
    for extra in [["--protocol", "raw"], ["--spread", "--quiet"]] {
        let mut a = vec!["shardcast-loadgen", "suite"];
        a.extend_from_slice(&extra);
        let o = Opts::try_parse_from(a).unwrap();
        assert!(o.plan().is_err());
    }
}
