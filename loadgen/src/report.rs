//! The final report: derived figures, the text summary, and the JSON form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::{Opts, Plan, Scenario};
use crate::mem::Probe;
use crate::publisher::Outcome;
use crate::run::fmt_us;
use crate::stats::{Counters, Hist, Totals};

/// One second of the run (the progress line, and the SVG's points).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub open: u64,
    pub up: u64,
    pub failed: u64,
    /// Deliveries plus echoes received during this second.
    pub msgs_per_s: u64,
    /// Latencies recorded during this second, and their percentiles.
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    pub ramp_s: f64,
    pub settle_s: f64,
    pub measure_s: f64,
    pub drain_s: f64,
    pub total_s: f64,
    /// Every planned connection was up or failed before the ramp's time bound.
    pub ramp_complete: bool,
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(h: &Hist) -> Percentiles {
        let us = |v: u64| v as f64 / 1e3;
        Percentiles {
            count: h.count(),
            mean_us: if h.count() > 0 { h.0.mean() / 1e3 } else { 0.0 },
            p50_us: us(h.at(50.0)),
            p90_us: us(h.at(90.0)),
            p99_us: us(h.at(99.0)),
            p999_us: us(h.at(99.9)),
            max_us: us(h.max()),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            fmt_us(self.p50_us),
            fmt_us(self.p90_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us),
            self.count
        )
    }
}

/// CPU use during the measured phase, in percent of one core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cpu {
    pub window_s: f64,
    /// CPU time over the ramp, seconds: the server's, and all loadgen processes'.
    pub ramp_server_s: Option<f64>,
    pub ramp_loadgen_s: f64,
    /// The `--target-pid` process (the server), when given.
    pub server_pct: Option<f64>,
    /// All loadgen processes together.
    pub loadgen_pct: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Fanout {
    pub published: u64,
    pub acknowledged: u64,
    /// Σ over channels of acknowledged publications × subscribers at the end.
    pub expected_deliveries: u64,
    pub deliveries: u64,
    /// Deliveries ÷ (last delivery − first publication).
    pub deliveries_per_s: f64,
    pub publish_rate_per_s: f64,
    pub missing: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub publisher: Outcome,
}

/// The load generator's own resident memory (all its processes), before the ramp
/// and after it: what one client connection costs the client side in user space.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadgenMemory {
    pub processes: u64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub connections: u64,
    /// Whole RSS of every loadgen process ÷ connections open.
    pub whole_bytes_per_conn: f64,
    /// (RSS after − RSS before) ÷ connections open.
    pub delta_bytes_per_conn: f64,
    /// Anonymous resident memory (RssAnon: heap and stacks, not the binary every
    /// process maps and shares), all processes, after the ramp.
    pub anon_after_bytes: u64,
    pub anon_before_bytes: u64,
    /// RssAnon after ÷ connections open: the honest whole figure.
    pub anon_bytes_per_conn: f64,
}

impl LoadgenMemory {
    pub fn new(before: &crate::stats::Tick, after: &crate::stats::Tick, open: u64) -> Self {
        let n = open.max(1) as f64;
        LoadgenMemory {
            processes: after.processes,
            rss_before_bytes: before.rss_bytes,
            rss_after_bytes: after.rss_bytes,
            connections: open,
            whole_bytes_per_conn: after.rss_bytes as f64 / n,
            delta_bytes_per_conn: (after.rss_bytes as f64 - before.rss_bytes as f64) / n,
            anon_after_bytes: after.anon_bytes,
            anon_before_bytes: before.anon_bytes,
            anon_bytes_per_conn: after.anon_bytes as f64 / n,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub options: Opts,
    pub machine: BTreeMap<String, String>,
    pub connections_planned: u64,
    pub threads_per_worker: usize,
    pub phases: Phases,
    pub counters: Counters,
    pub errors: BTreeMap<String, u64>,
    /// Fanout: publish → delivery; echo: round trip.
    pub latency: Percentiles,
    /// connect() → upgraded and subscribed.
    pub connect_latency: Percentiles,
    /// Deliveries or echoes per second during the measured phase.
    pub msgs_per_s: f64,
    /// Churn: connections closed and reopened per second.
    pub churn_per_s: f64,
    pub fanout: Option<Fanout>,
    pub memory: Option<Probe>,
    /// The load generator's own memory.
    pub loadgen_memory: Option<LoadgenMemory>,
    /// The suite's steps (scenario `suite`).
    pub suite: Option<crate::suite::SuiteReport>,
    pub cpu: Cpu,
    pub timeline: Vec<Sample>,
    /// The merged histograms (V2 + base64), for tools that want more percentiles.
    pub latency_hist: Hist,
    pub connect_hist: Hist,
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    m.insert("cores".into(), cores.to_string());
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), v.trim().into());
    }
    if let Ok(v) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(l) = v.lines().next() {
            m.insert(
                "memory".into(),
                l.trim_start_matches("MemTotal:").trim().into(),
            );
        }
    }
    m.insert("loadgen".into(), env!("CARGO_PKG_VERSION").into());
    m
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        plan: &Plan,
        totals: Totals,
        outcome: Option<Outcome>,
        memory: Option<Probe>,
        phases: Phases,
        at_measure: Counters,
        at_end: Counters,
        timeline: Vec<Sample>,
    ) -> Report {
        let c = totals.counters;
        let measure = phases.measure_s.max(1e-9);
        let msgs_per_s = match plan.opts.scenario {
            Scenario::Echo => (at_end.echoes.saturating_sub(at_measure.echoes)) as f64 / measure,
            _ => {
                let window = totals
                    .last_delivery_ns
                    .saturating_sub(outcome.as_ref().map_or(0, |o| o.first_ns));
                if window > 0 && outcome.is_some() {
                    c.deliveries as f64 / (window as f64 / 1e9)
                } else {
                    0.0
                }
            }
        };
        let mut errors = totals.errors.clone();
        for (k, v) in outcome.iter().flat_map(|o| &o.errors) {
            *errors.entry(k.clone()).or_default() += v;
        }
        let fanout = outcome.map(|o| {
            let expected = o
                .per_channel
                .iter()
                .zip(&totals.subscribers)
                .map(|(p, s)| p * s)
                .sum();
            let span = o.last_ns.saturating_sub(o.first_ns) as f64 / 1e9;
            Fanout {
                published: o.sent,
                acknowledged: o.acknowledged,
                expected_deliveries: expected,
                deliveries: c.deliveries,
                deliveries_per_s: msgs_per_s,
                publish_rate_per_s: if span > 0.0 {
                    o.sent.saturating_sub(1) as f64 / span
                } else {
                    0.0
                },
                missing: c.missing,
                duplicate: c.duplicate,
                out_of_order: c.out_of_order,
                publisher: o,
            }
        });
        Report {
            scenario: plan.opts.scenario,
            options: plan.opts.clone(),
            machine: machine(),
            connections_planned: plan.connections,
            threads_per_worker: plan.threads,
            phases,
            counters: c,
            errors,
            latency: Percentiles::of(&totals.latency),
            connect_latency: Percentiles::of(&totals.connect),
            msgs_per_s,
            churn_per_s: c.churned as f64 / measure,
            fanout,
            memory,
            loadgen_memory: None,
            suite: None,
            cpu: Cpu::default(),
            timeline,
            latency_hist: totals.latency,
            connect_hist: totals.connect,
        }
    }

    /// The human summary printed at the end.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== shardcast-loadgen {:?} ({:?}) ==",
            self.scenario, self.options.protocol
        );
        let _ = writeln!(
            s,
            "connections: planned {} attempted {} up {} failed {} closed {} churned {}",
            self.connections_planned, c.attempted, c.up, c.failed, c.closed, c.churned
        );
        let p = &self.phases;
        let _ = writeln!(
            s,
            "phases: ramp {:.1}s{} settle {:.1}s measure {:.1}s drain {:.1}s total {:.1}s",
            p.ramp_s,
            if p.ramp_complete { "" } else { " (incomplete)" },
            p.settle_s,
            p.measure_s,
            p.drain_s,
            p.total_s
        );
        let _ = writeln!(s, "connect latency: {}", self.connect_latency.line());
        match self.scenario {
            Scenario::Fanout => {
                if let Some(f) = &self.fanout {
                    let _ = writeln!(
                        s,
                        "fanout: published {} (acked {}, {:.1}/s), deliveries {} of {} expected, {:.0} deliveries/s",
                        f.published, f.acknowledged, f.publish_rate_per_s, f.deliveries, f.expected_deliveries, f.deliveries_per_s
                    );
                    let _ = writeln!(
                        s,
                        "        missing {} duplicate {} out-of-order {}",
                        f.missing, f.duplicate, f.out_of_order
                    );
                }
                let _ = writeln!(s, "delivery latency: {}", self.latency.line());
            }
            Scenario::Echo => {
                let _ = writeln!(
                    s,
                    "echo: {:.0} msgs/s ({} echoes)",
                    self.msgs_per_s, c.echoes
                );
                let _ = writeln!(s, "round trip: {}", self.latency.line());
            }
            Scenario::Churn => {
                let _ = writeln!(s, "churn: {:.1} reconnects/s", self.churn_per_s);
            }
            Scenario::Idle => {}
            Scenario::Suite => {
                if let Some(su) = &self.suite {
                    s.push_str(&su.summary());
                }
            }
        }
        if let Some(m) = &self.memory {
            let kib = |v: Option<u64>| {
                v.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
            };
            let per = |v: Option<f64>| v.map_or("?".into(), |b| format!("{b:.0} B"));
            let _ = writeln!(
                s,
                "memory (pid {}): RSS {} → {} over {} connections = {} per connection",
                m.pid,
                kib(m.before.rss_bytes),
                kib(m.after.rss_bytes),
                m.connections,
                per(m.rss_bytes_per_conn)
            );
            let _ = writeln!(
                s,
                "kernel (both ends, machine-wide): TCP buffers {} per connection, slab {} per connection",
                per(m.tcp_mem_bytes_per_conn),
                per(m.slab_bytes_per_conn)
            );
        }
        if let Some(m) = &self.loadgen_memory {
            let _ = writeln!(
                s,
                "loadgen memory ({} processes): RSS {:.1} MiB → {:.1} MiB over {} connections = {:.0} B per connection whole, {:.0} B added; anonymous (heap, stacks) {:.1} MiB = {:.0} B per connection",
                m.processes,
                m.rss_before_bytes as f64 / 1048576.0,
                m.rss_after_bytes as f64 / 1048576.0,
                m.connections,
                m.whole_bytes_per_conn,
                m.delta_bytes_per_conn,
                m.anon_after_bytes as f64 / 1048576.0,
                m.anon_bytes_per_conn
            );
        }
        let server = self
            .cpu
            .server_pct
            .map_or("?".into(), |p| format!("{p:.0}%"));
        let _ = writeln!(
            s,
            "cpu while measuring (100% = one core of {}): server {server}, loadgen {:.0}%",
            self.machine.get("cores").map_or("?", |c| c.as_str()),
            self.cpu.loadgen_pct
        );
        if self.cpu.ramp_loadgen_s > 0.0 {
            let _ = writeln!(
                s,
                "cpu over the ramp ({:.1} s): server {}, loadgen {:.1} s",
                self.phases.ramp_s,
                self.cpu
                    .ramp_server_s
                    .map_or("?".into(), |v| format!("{v:.1} s")),
                self.cpu.ramp_loadgen_s
            );
        }
        if c.epoch_changes + c.subscribe_errors + c.bad_messages > 0 {
            let _ = writeln!(
                s,
                "anomalies: epoch changes {} subscribe errors {} bad messages {}",
                c.epoch_changes, c.subscribe_errors, c.bad_messages
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors:");
            for (k, v) in &self.errors {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        s
    }
}
