//! The coordinator: phases of a run, the once-a-second progress line, the memory
//! probe and the publisher. The same code drives threads in this process or
//! worker processes (see [`crate::fleet`]).
//!
//! Phases: ramp (until every connection is up or failed) → settle → memory
//! sample → measure for `--duration` (fanout: publish; echo: time the round
//! trips; churn: close and reopen) → drain (fanout: wait for the last
//! deliveries) → stop. Every phase is bounded, and the whole run by `--max-seconds`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Plan, Scenario};
use crate::fleet::{Fleet, Group, Procs};
use crate::mem::{self, Probe};
use crate::publisher::{Outcome, Publisher};
use crate::report::{Cpu, LoadgenMemory, Phases, Report, Sample};
use crate::stats::{Counters, Hist, Tick, Totals};
use crate::suite::{self, Hooks};

/// Drain: ticks without a single new delivery before giving up on the rest.
const STALL_TICKS: u32 = 3;

/// How often [`Coord::poll`] reads the fleet (the suite's finer view).
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(50);

pub(crate) struct Coord<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) fleet: Box<dyn Fleet>,
    t0: Instant,
    pub(crate) deadline: Instant,
    next_tick: Instant,
    last: Counters,
    timeline: Vec<Sample>,
    progress: bool,
    /// Latencies polled since the last once-a-second sample.
    sec_interval: Hist,
    /// CPU seconds of all loadgen processes at the last tick.
    last_cpu_s: f64,
}

impl Coord<'_> {
    pub(crate) fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Read the fleet now (after a short sleep), without waiting for the next whole
    /// second; the once-a-second sample and progress line still come on time. The
    /// returned tick's interval holds the latencies since the previous read.
    pub(crate) fn poll(&mut self) -> Result<Tick, String> {
        std::thread::sleep(POLL_EVERY);
        let t = self.fleet.tick()?;
        self.sec_interval.merge(&t.interval);
        if Instant::now() >= self.next_tick {
            self.next_tick += Duration::from_secs(1);
            if Instant::now() > self.next_tick {
                self.next_tick = Instant::now() + Duration::from_secs(1);
            }
            let h = std::mem::take(&mut self.sec_interval);
            self.emit(&t.counters, &h);
        }
        Ok(t)
    }

    /// Sleep to the next whole second of the run, then read and print a tick.
    pub(crate) fn tick(&mut self) -> Result<Tick, String> {
        let now = Instant::now();
        if self.next_tick > now {
            std::thread::sleep(self.next_tick - now);
        } else if now - self.next_tick > Duration::from_millis(500) {
            // Late (a phase change took a while): skip the missed ticks rather than
            // firing them back to back with nothing new in them.
            std::thread::sleep(Duration::from_millis(500));
            self.next_tick = Instant::now();
        }
        self.next_tick += Duration::from_secs(1);
        let t = self.fleet.tick()?;
        self.last_cpu_s = t.cpu_s;
        let mut h = std::mem::take(&mut self.sec_interval);
        h.merge(&t.interval);
        self.emit(&t.counters, &h);
        Ok(t)
    }

    /// One second's sample and progress line.
    fn emit(&mut self, c: &Counters, interval: &Hist) {
        let msgs =
            (c.deliveries + c.echoes).saturating_sub(self.last.deliveries + self.last.echoes);
        let s = Sample {
            t_s: self.t0.elapsed().as_secs_f64(),
            open: c.open,
            up: c.up,
            failed: c.failed,
            msgs_per_s: msgs,
            count: interval.count(),
            p50_us: interval.at(50.0) as f64 / 1e3,
            p99_us: interval.at(99.0) as f64 / 1e3,
            p999_us: interval.at(99.9) as f64 / 1e3,
            max_us: interval.max() as f64 / 1e3,
        };
        if self.progress {
            let lat = if s.count > 0 {
                format!("p50 {} p99 {}", fmt_us(s.p50_us), fmt_us(s.p99_us))
            } else {
                "p50 - p99 -".into()
            };
            let new_up = c.up.saturating_sub(self.last.up);
            eprintln!(
                "[{:>5.0}s] open {}/{} (up {} +{new_up}/s failed {} closed {}) | {} msg/s | {lat}",
                s.t_s, c.open, self.plan.connections, c.up, c.failed, c.closed, msgs
            );
        }
        self.timeline.push(s);
        self.last = *c;
    }

    /// Tick for about `secs` seconds (at least one tick when secs > 0), or until out of time.
    fn hold(&mut self, secs: f64) -> Result<Tick, String> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let mut t = self.tick()?;
        while self.next_tick <= until && !self.out_of_time() {
            t = self.tick()?;
        }
        Ok(t)
    }
}

/// Human-readable microseconds.
pub fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.0}µs")
    }
}

/// Run a whole scenario; `exe` is this program's binary, needed for `--workers` > 1.
pub fn run(plan: &Plan, exe: Option<&Path>) -> Result<Report, String> {
    run_with(plan, exe, Hooks::default())
}

/// [`run`] with hooks (the suite's drain trigger, for tests without a server process).
pub fn run_with(plan: &Plan, exe: Option<&Path>, hooks: Hooks) -> Result<Report, String> {
    let o = &plan.opts;
    crate::procs::check_fds(plan)?;
    if let Some(pid) = o.target_pid {
        if !mem::exists(pid) {
            return Err(format!("--target-pid {pid}: no such process"));
        }
    }
    let t0 = Instant::now();
    let mem_before = o.target_pid.map(mem::sample);
    let ramp_cpu0 = o.target_pid.and_then(mem::cpu_seconds);
    let fleet: Box<dyn Fleet> = if o.workers > 1 {
        let exe = match exe {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe().map_err(|e| format!("own binary: {e}"))?,
        };
        Box::new(Procs::start(plan, &exe)?)
    } else {
        Box::new(Group::start(Arc::new(plan.clone()), 0, 1)?)
    };
    let mut c = Coord {
        plan,
        fleet,
        t0,
        deadline: t0 + Duration::from_secs_f64(o.max_seconds),
        next_tick: t0 + Duration::from_secs(1),
        last: Counters::default(),
        timeline: Vec::new(),
        progress: !o.quiet,
        sec_interval: Hist::default(),
        last_cpu_s: 0.0,
    };
    let ramp_bound =
        t0 + Duration::from_secs_f64(plan.connections as f64 / o.ramp + o.connect_timeout + 5.0);
    let mut ramp_complete = false;
    let mut lg_before: Option<Tick> = None;
    loop {
        let t = c.tick()?;
        lg_before.get_or_insert_with(|| t.clone());
        if t.ready {
            ramp_complete = true;
            break;
        }
        if Instant::now() >= ramp_bound || c.out_of_time() {
            eprintln!("loadgen: the ramp did not complete in time; measuring what is up");
            break;
        }
    }
    let ramp_s = t0.elapsed().as_secs_f64();
    let ramp_server_s = match (ramp_cpu0, o.target_pid.and_then(mem::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let ramp_loadgen_s = c.last_cpu_s;
    let settled = if o.settle > 0.0 && !c.out_of_time() {
        c.hold(o.settle)?
    } else {
        c.tick()?
    };
    let memory = o.target_pid.map(|pid| {
        Probe::new(
            pid,
            mem_before.unwrap_or_default(),
            mem::sample(pid),
            settled.counters.open,
        )
    });
    let settle_s = t0.elapsed().as_secs_f64() - ramp_s;
    let loadgen_memory = LoadgenMemory::new(
        lg_before.as_ref().unwrap_or(&settled),
        &settled,
        settled.counters.open,
    );

    c.fleet.measure()?;
    let at_measure = settled.counters;
    let measure_start = Instant::now();
    let server_cpu0 = o.target_pid.and_then(mem::cpu_seconds);
    let mut suite_out = None;
    let mut t = settled.clone();
    if o.scenario == Scenario::Suite && !c.out_of_time() {
        let (rep, last) = suite::run_steps(&mut c, hooks)?;
        suite_out = Some(rep);
        t = last;
    }
    let mut publisher = (o.scenario == Scenario::Fanout).then(|| {
        let left = c.deadline.saturating_duration_since(Instant::now());
        Publisher::start(plan, Duration::from_secs_f64(o.duration).min(left))
    });
    if o.scenario != Scenario::Suite {
        t = if o.duration > 0.0 && !c.out_of_time() {
            c.hold(o.duration)?
        } else {
            c.tick()?
        };
    }
    let outcome: Option<Outcome> = publisher.as_mut().map(Publisher::finish);
    let measure_s = measure_start.elapsed().as_secs_f64();
    let cpu = Cpu {
        window_s: measure_s,
        ramp_server_s,
        ramp_loadgen_s,
        loadgen_pct: (t.cpu_s - settled.cpu_s) / measure_s.max(1e-9) * 100.0,
        server_pct: match (server_cpu0, o.target_pid.and_then(mem::cpu_seconds)) {
            (Some(a), Some(b)) => Some((b - a) / measure_s.max(1e-9) * 100.0),
            _ => None,
        },
    };

    let drain_start = Instant::now();
    if let Some(out) = &outcome {
        let expected = expected_deliveries(plan, out, t.counters.open);
        let drain_end = drain_start + Duration::from_secs_f64(o.drain);
        // Stop early only once deliveries have not moved for STALL_TICKS ticks in a row.
        let (mut prev, mut still) = (t.counters.deliveries, 0);
        while t.counters.deliveries < expected && Instant::now() < drain_end && !c.out_of_time() {
            t = c.tick()?;
            still = if t.counters.deliveries == prev {
                still + 1
            } else {
                0
            };
            if still >= STALL_TICKS {
                break;
            }
            prev = t.counters.deliveries;
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    if let Some(p) = publisher {
        p.close();
    }
    let at_end = t.counters;
    let finals = match &suite_out {
        Some(s) => s.finals.clone(),
        None => outcome
            .as_ref()
            .map(|o| o.finals.clone())
            .unwrap_or_default(),
    };
    let totals: Totals = c.fleet.stop(finals)?;
    let phases = Phases {
        ramp_s,
        settle_s,
        measure_s,
        drain_s,
        total_s: t0.elapsed().as_secs_f64(),
        ramp_complete,
    };
    if let Some(s) = suite_out.as_mut() {
        s.complete(&totals);
    }
    let mut r = Report::build(
        plan, totals, outcome, memory, phases, at_measure, at_end, c.timeline,
    );
    r.cpu = cpu;
    r.loadgen_memory = Some(loadgen_memory);
    r.suite = suite_out;
    Ok(r)
}

/// What the drain waits for: every open connection getting every publication
/// sent on the channels it subscribed to. Sent, not acknowledged: a publication
/// whose answer was lost or late may still be delivered, and stopping at the
/// acknowledged count would cut its deliveries off. One that was never published
/// ends the drain through the stall rule instead. (The report's "expected"
/// counts acknowledged publications only: that is what subscribers are owed.)
fn expected_deliveries(plan: &Plan, out: &Outcome, open: u64) -> u64 {
    let published = out.sent.max(out.per_channel.iter().sum());
    if plan.opts.spread {
        published * open / plan.channels.len().max(1) as u64
    } else {
        published * open
    }
}

/// Merge latency histograms exactly (exposed for tests of the merge).
pub fn merge_all(parts: &[Totals]) -> Totals {
    let mut out = Totals {
        latency: Hist::default(),
        ..Totals::default()
    };
    for p in parts {
        out.merge(p);
    }
    out
}
