//! The connections of a run, seen from the coordinator: either threads in this
//! process ([`Group`]) or worker processes that each run a group ([`Procs`]).
//!
//! Connection `g` (global index) goes to worker `g mod K`, and within it to thread
//! `(g / K) mod T`; it starts at `g / ramp` seconds, so the ramp stays even over
//! every worker and thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::cli::Plan;
use crate::stats::{Tick, Totals};
use crate::worker::{Share, Shared, Worker};

/// What the coordinator can ask of the connections.
pub trait Fleet {
    /// Cumulative counters, latencies since the previous call, and whether the ramp is over.
    fn tick(&mut self) -> Result<Tick, String>;
    /// The measured phase starts (echo latencies and churn begin).
    fn measure(&mut self) -> Result<(), String>;
    /// From now on, time each close of an up connection from `ns` (Unix ns).
    fn mark(&mut self, ns: u64) -> Result<(), String>;
    /// Stop every connection. `finals`: last offset published per channel (fanout).
    fn stop(self: Box<Self>, finals: Vec<u64>) -> Result<Totals, String>;
}

/// The threads of one process.
pub struct Group {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Totals>>,
}

impl Group {
    /// Start this process's threads: worker `worker` of `workers`.
    pub fn start(plan: Arc<Plan>, worker: usize, workers: usize) -> Result<Group, String> {
        let t = plan.threads;
        let shared = Arc::new(Shared {
            snaps: (0..t).map(|_| Mutex::new(Tick::default())).collect(),
            finals: Mutex::new(vec![0; plan.channels.len()]),
            ..Shared::default()
        });
        let mut threads = Vec::with_capacity(t);
        for i in 0..t {
            let share = Share {
                first: (worker + workers * i) as u64,
                stride: (workers * t) as u64,
                total: plan.connections,
            };
            let w = Worker::new(i, plan.clone(), shared.clone(), share, workers * t)
                .map_err(|e| format!("event loop: {e}"))?;
            let h = std::thread::Builder::new()
                .name(format!("loadgen-{worker}-{i}"))
                .spawn(move || w.run())
                .map_err(|e| format!("spawn thread: {e}"))?;
            threads.push(h);
        }
        Ok(Group { shared, threads })
    }
}

impl Fleet for Group {
    fn tick(&mut self) -> Result<Tick, String> {
        let mut out = Tick {
            ready: true,
            ..Tick::default()
        };
        for s in &self.shared.snaps {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            out.merge(&s);
            s.interval.reset();
        }
        out.cpu_s = crate::sys::cpu_seconds_self();
        (out.rss_bytes, out.anon_bytes) = crate::sys::rss_self();
        out.processes = 1;
        Ok(out)
    }

    fn mark(&mut self, ns: u64) -> Result<(), String> {
        self.shared.mark_ns.store(ns, Ordering::Relaxed);
        Ok(())
    }

    fn measure(&mut self) -> Result<(), String> {
        self.shared.measuring.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn stop(self: Box<Self>, finals: Vec<u64>) -> Result<Totals, String> {
        *self.shared.finals.lock().unwrap_or_else(|e| e.into_inner()) = finals;
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut out = Totals::default();
        for t in self.threads {
            let totals = t
                .join()
                .map_err(|_| "an event-loop thread panicked".to_string())?;
            out.merge(&totals);
        }
        Ok(out)
    }
}

pub use crate::procs::Procs;
