//! Run the deterministic simulation (engine/src/sim.rs) for one seed or a range.
//!
//!     cargo run -p shardcast --example sim -- --seed 42 [--trace]
//!     cargo run --release -p shardcast --example sim -- --seeds 0..10000 [--steps 300]
//!
//! A failing seed prints itself, the broken invariant and the last events;
//! running it again with `--seed N --trace` replays it exactly and prints
//! every event.

use std::time::Instant;

use shardcast::sim::heap::Tagging;
use shardcast::sim::{run, Options};

/// Counts the engine's heap apart from the clients' (the check after every close).
#[global_allocator]
static HEAP: Tagging = Tagging;

fn usage() -> ! {
    eprintln!("usage: sim [--seed N | --seeds A..B] [--steps K] [--trace] [--keep-going]");
    std::process::exit(2)
}

fn main() {
    let mut seeds = 0..1u64;
    let mut steps = Options::new(0).steps;
    let mut trace = false;
    let mut keep_going = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => {
                let n: u64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage());
                seeds = n..n + 1;
            }
            "--seeds" => {
                let v = args.next().unwrap_or_else(|| usage());
                let (a, b) = v.split_once("..").unwrap_or_else(|| usage());
                let (Ok(a), Ok(b)) = (a.parse(), b.parse()) else {
                    usage()
                };
                seeds = a..b;
            }
            "--steps" => {
                steps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--trace" => trace = true,
            "--keep-going" => keep_going = true,
            _ => usage(),
        }
    }
    let t0 = Instant::now();
    let (mut passed, mut failed) = (0u64, Vec::new());
    let mut pushes = 0u64;
    let mut recovered = 0u64;
    // The most the engine's heap kept after every close, per shard: bytes, blocks.
    let mut heap_max = (i64::MIN, i64::MIN);
    let mut closes = std::collections::BTreeMap::<u16, u64>::new();
    for seed in seeds.clone() {
        let opts = Options {
            seed,
            steps,
            full_trace: trace,
            sabotage: None,
        };
        // An engine panic (a debug assertion, say) is a failure of this seed too.
        let res = std::panic::catch_unwind(|| run(&opts)).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(shardcast::sim::Failure {
                seed,
                step: 0,
                what: format!("panic: {what}"),
                config: String::new(),
                trace: Vec::new(),
            })
        });
        match res {
            Ok(r) => {
                passed += 1;
                pushes += r.pushes;
                recovered += r.recovered as u64;
                if let Some((bytes, blocks)) = r.heap_growth {
                    let n = r.shards as i64;
                    heap_max.0 = heap_max.0.max(bytes / n);
                    heap_max.1 = heap_max.1.max(blocks / n);
                }
                for (c, n) in &r.closes {
                    *closes.entry(*c).or_default() += *n as u64;
                }
                if trace {
                    for l in &r.trace {
                        println!("{l}");
                    }
                }
                if seeds.end - seeds.start == 1 {
                    println!(
                        "seed {seed}: ok, {} shards, {} steps, {:?} simulated, {} connects, {} pushes, {} recovered, {} published, {} refused, {} resets, closes {:?}, heap kept {:?} (bytes, blocks), digest {:016x}",
                        r.shards, r.steps, r.simulated, r.connects, r.pushes, r.recovered,
                        r.published, r.refused, r.resets, r.closes, r.heap_growth, r.digest
                    );
                }
            }
            Err(f) => {
                println!("{f}");
                failed.push(seed);
                if !keep_going {
                    break;
                }
            }
        }
    }
    println!(
        "{passed} seeds passed, {} failed {:?} in {:.1?}; {pushes} pushes checked, {recovered} recoveries, closes {closes:?}; engine heap kept after every close at most {} B and {} blocks a shard",
        failed.len(),
        failed,
        t0.elapsed(),
        heap_max.0,
        heap_max.1,
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
