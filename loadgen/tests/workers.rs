//! Worker processes that hang or fail: the parent still reports, in bounded time,
//! with what they said before (their last tick), and lists what went wrong.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use clap::Parser as _;
use shardcast_loadgen::fleet::{Fleet, Procs};
use shardcast_loadgen::procs::FromWorker;
use shardcast_loadgen::stats::{Counters, Tick};
use shardcast_loadgen::Opts;

#[test]
fn a_hung_worker_and_a_failed_one_still_give_a_report() {
    let tick = Tick {
        counters: Counters {
            attempted: 5,
            up: 5,
            open: 5,
            deliveries: 7,
            ..Counters::default()
        },
        ready: true,
        ..Tick::default()
    };
    let line = serde_json::to_string(&FromWorker::Tick(Box::new(tick))).unwrap();
    assert!(!line.contains('\''));
    // Worker 0 reports one tick, then hangs (never reads "stop"); worker 1 fails at once.
    let dir = std::env::temp_dir().join(format!("loadgen-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("fake-worker.sh");
    let mut f = std::fs::File::create(&exe).unwrap();
    write!(
        f,
        "#!/bin/sh\ncase \"$*\" in *'--worker-index 1'*) echo '{{\"Error\":\"boom\"}}'; exit 1;; esac\necho '{line}'\nexec sleep 30\n"
    )
    .unwrap();
    drop(f);
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let opts =
        Opts::try_parse_from(["shardcast-loadgen", "idle", "-n", "10", "--workers", "2"]).unwrap();
    let plan = opts.plan().unwrap();
    let mut procs = Procs::start(&plan, &exe)
        .unwrap()
        .with_stop_wait(Duration::from_secs(1));
    let until = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = procs.tick().unwrap();
        if (t.counters.up == 5 && t.ready) || Instant::now() > until {
            break t;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(t.counters.up, 5);
    // The failed worker does not hold up the ramp.
    assert!(t.ready, "a worker that is gone must not block readiness");
    let started = Instant::now();
    let totals = Box::new(procs)
        .stop(Vec::new())
        .expect("a report, not an error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop is bounded"
    );
    let c = &totals.counters;
    assert_eq!((c.up, c.deliveries, c.open), (5, 7, 0));
    let errors: Vec<&String> = totals.errors.keys().collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("worker 0: no result within 1 s")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("worker 1: boom")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
