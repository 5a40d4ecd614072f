//! The `suite` scenario: one ramp, then several measurements on the same
//! connections, in this order (each step is optional and bounded):
//!
//! 1. **paced broadcasts** (`--broadcasts K`): K publications to the broadcast
//!    channel (the first of `--channels`), each sent once the previous one reached
//!    every open connection (or `--broadcast-timeout` passed). Per broadcast: the
//!    time from publish to the first, median, p99 and last delivery.
//! 2. **steady** (`--spread-channels M`): every connection is also subscribed to
//!    one of M channels; `--rate` publications per second for `--duration` seconds,
//!    round-robin over them: latency percentiles, lost.
//! 3. **hold** (`--hold S`): nothing published; heartbeats run. The server's CPU
//!    time (from /proc/PID/stat), pings received, connections closed.
//! 4. **burst**: K more broadcasts, pipelined as fast as the publisher sends them;
//!    deliveries/s from the first publication to the last delivery, against the
//!    paced figure. It comes after the steady step and the hold, so an overload
//!    that closes connections does not spoil them.
//! 5. **drain** (`--sigterm`): SIGTERM to `--target-pid`; every close of an up
//!    connection is timed from the signal and counted by close code; and when the
//!    server process exits.
//!
//! Duplicates and out-of-order deliveries are counted as they arrive (the
//! `live_*` counters), so each step has its own; missing ones are expected minus
//! delivered (and every tracker's gaps and tail are in the run's totals).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::mem;
use crate::publisher::{Publisher, SyncPublisher};
use crate::report::Percentiles;
use crate::run::{fmt_us, Coord};
use crate::stats::{Hist, Tick, Totals};
use crate::sys;

/// A step that sees no new delivery for this long gives up on the rest (TCP
/// retransmissions under memory pressure back off for seconds; a step should
/// not give up on those).
const STALL: Duration = Duration::from_secs(15);

/// The burst waits for its deliveries this long at most: ten publications to
/// a million connections are ten million deliveries, 100-170 s on two cores.
const BURST_MAX: Duration = Duration::from_secs(300);

/// Between steps: wait until no delivery has arrived for this long, so late
/// deliveries of one step are not counted in the next.
const QUIET: Duration = Duration::from_secs(1);
/// ... but never longer than this.
const QUIET_MAX: Duration = Duration::from_secs(30);

/// What the suite can be given besides options.
#[derive(Default)]
pub struct Hooks {
    /// Starts the server's drain instead of SIGTERM to `--target-pid` (tests run the
    /// engine in-process). Called on its own thread.
    pub drain: Option<Box<dyn FnOnce() + Send>>,
}

/// One paced broadcast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Broadcast {
    pub index: u32,
    pub offset: Option<u64>,
    /// Connections open when it was published: every one of them is owed it.
    pub expected: u64,
    pub delivered: u64,
    /// Publish → delivery, ms: the first, the median, p99 and the last.
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub last_ms: f64,
    /// Delivered ÷ (last delivery − publish).
    pub deliveries_per_s: f64,
    /// It did not reach everyone within --broadcast-timeout (or deliveries stalled).
    pub incomplete: bool,
    /// CPU time while it was in flight, ms: the server's, and all loadgen processes'.
    pub server_cpu_ms: Option<f64>,
    pub loadgen_cpu_ms: f64,
    /// Highest /proc/net/sockstat TCP `mem` seen while it was in flight, bytes
    /// (machine-wide socket buffers: the frames sent and not yet read).
    pub peak_tcp_mem_bytes: u64,
    /// Expected − (delivered − duplicates), at least 0; duplicates and
    /// out-of-order deliveries seen while it was in flight.
    pub missing: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    /// Connections closed while it was in flight.
    pub closed: u64,
}

/// Broadcasts sent back to back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Burst {
    pub published: u64,
    pub acknowledged: u64,
    /// Time the publisher took to send them all and read every answer, ms.
    pub publish_ms: f64,
    pub expected: u64,
    pub delivered: u64,
    /// First publication → last delivery, ms.
    pub span_ms: f64,
    pub deliveries_per_s: f64,
    /// The paced broadcasts' median deliveries/s, for comparison.
    pub paced_deliveries_per_s: f64,
    pub latency: Percentiles,
    pub closed: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub incomplete: bool,
    pub server_cpu_ms: Option<f64>,
    pub loadgen_cpu_ms: f64,
    /// Highest TCP socket buffer memory seen (machine-wide), bytes.
    pub peak_tcp_mem_bytes: u64,
}

/// Steady publications over the spread channels.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Steady {
    pub channels: u64,
    pub subscribers_per_channel: f64,
    pub rate_per_s: f64,
    pub seconds: f64,
    pub published: u64,
    pub acknowledged: u64,
    /// Acknowledged × subscribers per channel (open ÷ channels).
    pub expected: u64,
    pub delivered: u64,
    /// Expected − (delivered − duplicates), at least 0.
    pub lost: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub latency: Percentiles,
    pub publisher_errors: BTreeMap<String, u64>,
    pub closed: u64,
}

/// A hold with heartbeats.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hold {
    pub seconds: f64,
    pub open: u64,
    /// Server CPU time over the hold, seconds, and as % of one core.
    pub server_cpu_s: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    /// Server CPU per connection per second, ns (server_cpu_s ÷ open ÷ seconds).
    pub server_cpu_ns_per_conn_s: Option<f64>,
    pub loadgen_cpu_pct: f64,
    /// Pings received (and answered) by the connections during the hold.
    pub pings: u64,
    pub closed: u64,
}

/// A drain: SIGTERM, then every connection closed by the server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drain {
    pub open_before: u64,
    pub triggered: bool,
    pub trigger_error: Option<String>,
    /// Closes of up connections after the signal, by kind ("closed with code 4001", …).
    pub closes: BTreeMap<String, u64>,
    pub closed: u64,
    /// Signal → close, ms: first, median, p99, last.
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub last_ms: f64,
    /// Connections still open when the step ended.
    pub still_open: u64,
    /// Signal → the server process gone (or a zombie), s; None: did not exit in the step.
    pub server_exit_s: Option<f64>,
    /// How long the step waited at most, s.
    pub bound_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SuiteReport {
    pub connections_open: u64,
    pub broadcasts: Vec<Broadcast>,
    pub burst: Option<Burst>,
    pub steady: Option<Steady>,
    pub hold: Option<Hold>,
    pub drain: Option<Drain>,
    /// What went wrong in a step (a publication without an answer…): the step
    /// stopped there, the next ones ran.
    pub errors: Vec<String>,
    /// Server RSS after each step (label, bytes).
    pub server_rss: Vec<(String, u64)>,
    /// Last offset acknowledged per channel (the trackers' end point).
    #[serde(skip)]
    pub finals: Vec<u64>,
}

/// Server CPU since `before` (seconds, from /proc/PID/stat), in ms.
fn cpu_ms(before: Option<f64>, pid: Option<u32>) -> Option<f64> {
    Some((pid.and_then(mem::cpu_seconds)? - before?) * 1e3)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Poll until `done` says so, deliveries stall for [`STALL`], or `bound` passes.
/// Returns the last tick, the latencies seen meanwhile, and whether `done` held.
fn wait_for(
    c: &mut Coord<'_>,
    bound: Duration,
    hist: &mut Hist,
    peak_tcp: &mut u64,
    mut done: impl FnMut(&Tick) -> bool,
) -> Result<(Tick, bool), String> {
    let end = Instant::now() + bound;
    let mut t = c.poll()?;
    hist.merge(&t.interval);
    *peak_tcp = (*peak_tcp).max(mem::tcp_mem_now().unwrap_or(0));
    let (mut last_count, mut last_move) = (t.counters.deliveries, Instant::now());
    while !done(&t) {
        if Instant::now() >= end || c.out_of_time() || last_move.elapsed() >= STALL {
            return Ok((t, false));
        }
        t = c.poll()?;
        hist.merge(&t.interval);
        *peak_tcp = (*peak_tcp).max(mem::tcp_mem_now().unwrap_or(0));
        if t.counters.deliveries != last_count {
            last_count = t.counters.deliveries;
            last_move = Instant::now();
        }
    }
    Ok((t, true))
}

/// Poll until deliveries have not moved for [`QUIET`] (at most [`QUIET_MAX`]).
fn quiesce(c: &mut Coord<'_>, mut t: Tick) -> Result<Tick, String> {
    let end = Instant::now() + QUIET_MAX;
    let (mut last, mut since) = (t.counters.deliveries, Instant::now());
    while since.elapsed() < QUIET && Instant::now() < end && !c.out_of_time() {
        t = c.poll()?;
        if t.counters.deliveries != last {
            last = t.counters.deliveries;
            since = Instant::now();
        }
    }
    Ok(t)
}

/// Run the steps after the ramp; returns their report and the last tick.
pub(crate) fn run_steps(c: &mut Coord<'_>, hooks: Hooks) -> Result<(SuiteReport, Tick), String> {
    let plan = c.plan;
    let o = &plan.opts;
    let pid = o.target_pid;
    let mut rep = SuiteReport {
        finals: vec![0; plan.channels.len()],
        ..SuiteReport::default()
    };
    let mut t = c.poll()?;
    rep.connections_open = t.counters.open;
    let rss = |rep: &mut SuiteReport, label: &str| {
        if let Some(b) = pid.and_then(|p| mem::sample(p).rss_bytes) {
            rep.server_rss.push((label.to_string(), b));
        }
    };
    rss(&mut rep, "after the ramp");
    let bcast = plan.channels[0].clone();
    let timeout = Duration::from_secs_f64(o.broadcast_timeout);
    let mut seq = 0u64;

    let mut publ = None;
    if o.broadcasts > 0 && !c.out_of_time() {
        match SyncPublisher::connect(plan, timeout) {
            Ok(p) => publ = Some(p),
            Err(e) => rep.errors.push(format!("broadcasts: {e}")),
        }
    }
    if let Some(publ) = publ.as_mut() {
        eprintln!(
            "suite: {} paced broadcasts of {} B to {} connections",
            o.broadcasts, o.payload_bytes, t.counters.open
        );
        for i in 0..o.broadcasts {
            if c.out_of_time() {
                break;
            }
            let base_c = t.counters;
            let base = base_c.deliveries;
            let open = t.counters.open;
            let (cpu0, lg0) = (pid.and_then(mem::cpu_seconds), t.cpu_s);
            seq += 1;
            // A fresh connection each time: a broadcast to a million takes longer
            // than the server keeps an idle HTTP connection open.
            if i > 0 {
                if let Ok(p) = SyncPublisher::connect(plan, timeout) {
                    *publ = p;
                }
            }
            let (ts, _, offs) = match publ.publish(&[(bcast.as_str(), seq)], o.payload_bytes) {
                Ok(v) => v,
                Err(e) => {
                    rep.errors.push(format!("broadcast {}: {e}", i + 1));
                    break;
                }
            };
            let offset = offs.first().copied().flatten();
            if let Some(off) = offset {
                rep.finals[0] = rep.finals[0].max(off);
            }
            let mut h = Hist::default();
            let mut peak = 0;
            let (nt, done) = wait_for(c, timeout, &mut h, &mut peak, |t| {
                // Connections closed meanwhile are owed nothing more.
                t.counters.deliveries >= base + t.counters.open.min(open)
            })?;
            t = nt;
            let delivered = t.counters.deliveries - base;
            let last_ns = t.last_delivery_ns.saturating_sub(ts);
            let b = Broadcast {
                index: i + 1,
                offset,
                expected: open,
                delivered,
                first_ms: ms(h.min()),
                p50_ms: ms(h.at(50.0)),
                p99_ms: ms(h.at(99.0)),
                last_ms: ms(last_ns),
                deliveries_per_s: if last_ns > 0 {
                    delivered as f64 / (last_ns as f64 / 1e9)
                } else {
                    0.0
                },
                incomplete: !done,
                server_cpu_ms: cpu_ms(cpu0, pid),
                loadgen_cpu_ms: (t.cpu_s - lg0) * 1e3,
                peak_tcp_mem_bytes: peak,
                missing: 0,
                duplicate: t.counters.live_duplicate - base_c.live_duplicate,
                out_of_order: t.counters.live_out_of_order - base_c.live_out_of_order,
                closed: t.counters.closed - base_c.closed,
            };
            let mut b = b;
            b.missing = b
                .expected
                .saturating_sub(b.delivered.saturating_sub(b.duplicate));
            eprintln!(
                "suite: broadcast {}: {}/{} delivered, first {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms, {:.0} deliveries/s",
                b.index, b.delivered, b.expected, b.first_ms, b.p50_ms, b.p99_ms, b.last_ms, b.deliveries_per_s
            );
            rep.broadcasts.push(b);
        }
        rss(&mut rep, "after the paced broadcasts");
    }

    if plan.publish_channels.start > 0 && o.duration > 0.0 && !c.out_of_time() {
        t = quiesce(c, t)?;
        let base = t.counters;
        let m = plan.publish_channels.len() as u64;
        eprintln!(
            "suite: steady {} publications/s over {m} channels for {} s",
            o.rate, o.duration
        );
        let left = c.deadline.saturating_duration_since(Instant::now());
        let mut publisher = Publisher::start(plan, Duration::from_secs_f64(o.duration).min(left));
        let mut h = Hist::default();
        let until = Instant::now() + Duration::from_secs_f64(o.duration);
        while Instant::now() < until && !c.out_of_time() {
            t = c.poll()?;
            h.merge(&t.interval);
        }
        let out = publisher.finish();
        let open = t.counters.open;
        let per_channel = open as f64 / m as f64;
        let sent_expected = (out.sent as f64 * per_channel).round() as u64;
        let mut peak = 0;
        let (nt, _) = wait_for(
            c,
            Duration::from_secs_f64(o.drain),
            &mut h,
            &mut peak,
            |t| t.counters.deliveries >= base.deliveries + sent_expected,
        )?;
        t = nt;
        publisher.close();
        for (f, o) in rep.finals.iter_mut().zip(&out.finals) {
            *f = (*f).max(*o);
        }
        let expected = (out.acknowledged as f64 * per_channel).round() as u64;
        let delivered = t.counters.deliveries - base.deliveries;
        let duplicate = t.counters.live_duplicate - base.live_duplicate;
        let span = out.last_ns.saturating_sub(out.first_ns) as f64 / 1e9;
        let s = Steady {
            channels: m,
            subscribers_per_channel: per_channel,
            rate_per_s: if span > 0.0 {
                out.sent.saturating_sub(1) as f64 / span
            } else {
                0.0
            },
            seconds: o.duration,
            published: out.sent,
            acknowledged: out.acknowledged,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered.saturating_sub(duplicate)),
            duplicate,
            out_of_order: t.counters.live_out_of_order - base.live_out_of_order,
            latency: Percentiles::of(&h),
            publisher_errors: out.errors.clone(),
            closed: t.counters.closed - base.closed,
        };
        eprintln!(
            "suite: steady: {}/{} delivered, lost {}, p50 {} p99 {} p99.9 {}",
            s.delivered,
            s.expected,
            s.lost,
            fmt_us(s.latency.p50_us),
            fmt_us(s.latency.p99_us),
            fmt_us(s.latency.p999_us)
        );
        rep.steady = Some(s);
        rss(&mut rep, "after the steady publications");
    }

    if o.hold > 0.0 && !c.out_of_time() {
        t = quiesce(c, t)?;
        eprintln!("suite: hold {} s (heartbeats only)", o.hold);
        let base = t.clone();
        let cpu0 = pid.and_then(mem::cpu_seconds);
        let started = Instant::now();
        // Leave the burst and the drain their time: a hold cut short says so in `seconds`.
        let mut reserve = Duration::ZERO;
        if o.sigterm {
            reserve += Duration::from_secs_f64(o.drain + 10.0);
        }
        if publ.is_some() {
            reserve += Duration::from_secs(60); // the burst
        }
        let left = c
            .deadline
            .saturating_duration_since(started)
            .saturating_sub(reserve);
        let until = started + Duration::from_secs_f64(o.hold).min(left);
        while Instant::now() < until && !c.out_of_time() {
            t = c.poll()?;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = match (cpu0, pid.and_then(mem::cpu_seconds)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let open = t.counters.open;
        let h = Hold {
            seconds: secs,
            open,
            server_cpu_s: cpu,
            server_cpu_pct: cpu.map(|c| c / secs * 100.0),
            server_cpu_ns_per_conn_s: cpu.map(|c| c * 1e9 / open.max(1) as f64 / secs),
            loadgen_cpu_pct: (t.cpu_s - base.cpu_s) / secs * 100.0,
            pings: t.counters.pings - base.counters.pings,
            closed: t.counters.closed - base.counters.closed,
        };
        eprintln!(
            "suite: hold: {:.0} s, server CPU {}, pings {}, closed {}",
            h.seconds,
            h.server_cpu_pct
                .map_or("?".into(), |p| format!("{p:.1}% of a core")),
            h.pings,
            h.closed
        );
        rep.hold = Some(h);
        rss(&mut rep, "after the hold");
    }

    // The burst (overload) comes after the steady step and the hold, so they are
    // measured on every connection; the drain then takes what is left.
    if let Some(publ) = publ.as_mut() {
        if !c.out_of_time() && rep.errors.is_empty() {
            t = quiesce(c, t)?;
            // A fresh connection: the server may have closed the idle one.
            if let Ok(p) = SyncPublisher::connect(plan, timeout) {
                *publ = p;
            }
            let base = t.counters;
            let open = t.counters.open;
            let (cpu0, lg0) = (pid.and_then(mem::cpu_seconds), t.cpu_s);
            let k = u64::from(o.broadcasts);
            let items: Vec<(&str, u64)> = (0..k).map(|j| (bcast.as_str(), seq + 1 + j)).collect();
            let started = Instant::now();
            let published = publ.publish(&items, o.payload_bytes);
            let failed = published.is_err();
            if let Err(e) = &published {
                rep.errors.push(format!("burst: {e}"));
            }
            let (first, _, offs) = published.unwrap_or_default();
            let publish_ms = started.elapsed().as_secs_f64() * 1e3;
            for off in offs.iter().flatten() {
                rep.finals[0] = rep.finals[0].max(*off);
            }
            let acknowledged = offs.iter().flatten().count() as u64;
            let expected = k * open;
            let mut h = Hist::default();
            // No waiting for a burst that did not go out.
            let bound = if failed {
                Duration::ZERO
            } else {
                (timeout * o.broadcasts).min(BURST_MAX)
            };
            let mut peak = 0;
            let (nt, done) = wait_for(c, bound, &mut h, &mut peak, |t| {
                t.counters.deliveries >= base.deliveries + k * t.counters.open.min(open)
            })?;
            t = nt;
            let delivered = t.counters.deliveries - base.deliveries;
            let span = t.last_delivery_ns.saturating_sub(first);
            let mut paced: Vec<f64> = rep.broadcasts.iter().map(|b| b.deliveries_per_s).collect();
            paced.sort_by(f64::total_cmp);
            let b = Burst {
                published: k,
                acknowledged,
                publish_ms,
                expected,
                delivered,
                span_ms: ms(span),
                deliveries_per_s: if span > 0 {
                    delivered as f64 / (span as f64 / 1e9)
                } else {
                    0.0
                },
                paced_deliveries_per_s: paced.get(paced.len() / 2).copied().unwrap_or(0.0),
                latency: Percentiles::of(&h),
                closed: t.counters.closed - base.closed,
                duplicate: t.counters.live_duplicate - base.live_duplicate,
                out_of_order: t.counters.live_out_of_order - base.live_out_of_order,
                incomplete: !done,
                server_cpu_ms: cpu_ms(cpu0, pid),
                loadgen_cpu_ms: (t.cpu_s - lg0) * 1e3,
                peak_tcp_mem_bytes: peak,
            };
            eprintln!(
                "suite: burst of {k}: {}/{} delivered in {:.0} ms, {:.0} deliveries/s (paced: {:.0}), closed {}",
                b.delivered, b.expected, b.span_ms, b.deliveries_per_s, b.paced_deliveries_per_s, b.closed
            );
            rep.burst = Some(b);
            rss(&mut rep, "after the burst");
        }
    }

    if o.sigterm && !c.out_of_time() {
        t = quiesce(c, t)?;
        let open_before = t.counters.open;
        let base = t.counters;
        let mut d = Drain {
            open_before,
            bound_s: o.drain + 5.0,
            ..Drain::default()
        };
        let mark = sys::unix_ns();
        c.fleet.mark(mark)?;
        let started = Instant::now();
        if let Some(f) = hooks.drain {
            std::thread::spawn(f);
            d.triggered = true;
        } else if let Some(p) = pid {
            match sys::signal(p, libc::SIGTERM) {
                Ok(()) => d.triggered = true,
                Err(e) => d.trigger_error = Some(e.to_string()),
            }
        } else {
            d.trigger_error = Some("no --target-pid to signal".into());
        }
        if d.triggered {
            eprintln!("suite: drain: SIGTERM sent, {open_before} connections open");
            let end = started + Duration::from_secs_f64(d.bound_s);
            loop {
                t = c.poll()?;
                if d.server_exit_s.is_none() && pid.is_some_and(|p| !mem::alive(p)) {
                    d.server_exit_s = Some(started.elapsed().as_secs_f64());
                }
                let exited = pid.is_none() || d.server_exit_s.is_some();
                if (t.counters.open == 0 && exited) || Instant::now() >= end || c.out_of_time() {
                    break;
                }
            }
        }
        d.closed = t.counters.closed - base.closed;
        d.still_open = t.counters.open;
        eprintln!(
            "suite: drain: {} closed, {} still open, server exit {}",
            d.closed,
            d.still_open,
            d.server_exit_s
                .map_or("not seen".into(), |s| format!("after {s:.2} s"))
        );
        rep.drain = Some(d);
    }
    Ok((rep, t))
}

impl SuiteReport {
    /// Fill in what only the final totals know (close codes and times).
    pub(crate) fn complete(&mut self, totals: &Totals) {
        if let Some(d) = self.drain.as_mut() {
            d.closes = totals
                .errors
                .iter()
                .filter(|(k, _)| k.starts_with("closed"))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let h = &totals.closes;
            d.first_ms = ms(h.min());
            d.p50_ms = ms(h.at(50.0));
            d.p99_ms = ms(h.at(99.0));
            d.last_ms = ms(h.max());
        }
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        for e in &self.errors {
            let _ = writeln!(s, "suite error: {e}");
        }
        for b in &self.broadcasts {
            let _ = writeln!(
                s,
                "broadcast {:>2}: {}/{} delivered{}; publish → first {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms; {:.0} deliveries/s; CPU server {} loadgen {:.0} ms",
                b.index,
                b.delivered,
                b.expected,
                if b.incomplete { " (INCOMPLETE)" } else { "" },
                b.first_ms,
                b.p50_ms,
                b.p99_ms,
                b.last_ms,
                b.deliveries_per_s,
                b.server_cpu_ms.map_or("?".into(), |v| format!("{v:.0} ms")),
                b.loadgen_cpu_ms
            );
        }
        if let Some(b) = &self.burst {
            let _ = writeln!(
                s,
                "burst: {} published back to back ({:.1} ms), {}/{} delivered in {:.0} ms: {:.0} deliveries/s (paced median {:.0}); closed {} duplicate {} out-of-order {}; TCP buffers at most {:.0} MiB",
                b.published, b.publish_ms, b.delivered, b.expected, b.span_ms, b.deliveries_per_s,
                b.paced_deliveries_per_s, b.closed, b.duplicate, b.out_of_order,
                b.peak_tcp_mem_bytes as f64 / 1048576.0
            );
        }
        if let Some(st) = &self.steady {
            let _ = writeln!(
                s,
                "steady: {} channels × {:.0} subscribers, {:.1} publications/s for {} s: {}/{} delivered, lost {}, duplicate {}, out-of-order {}; p50 {} p99 {} p99.9 {}",
                st.channels, st.subscribers_per_channel, st.rate_per_s, st.seconds, st.delivered,
                st.expected, st.lost, st.duplicate, st.out_of_order,
                fmt_us(st.latency.p50_us), fmt_us(st.latency.p99_us), fmt_us(st.latency.p999_us)
            );
        }
        if let Some(h) = &self.hold {
            let _ = writeln!(
                s,
                "hold: {:.0} s at {} connections: server CPU {} ({} ns per connection-second), loadgen {:.1}%, pings {}, closed {}",
                h.seconds,
                h.open,
                h.server_cpu_pct.map_or("?".into(), |p| format!("{p:.1}%")),
                h.server_cpu_ns_per_conn_s.map_or("?".into(), |v| format!("{v:.0}")),
                h.loadgen_cpu_pct,
                h.pings,
                h.closed
            );
        }
        if let Some(d) = &self.drain {
            let codes: Vec<String> = d.closes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(
                s,
                "drain: {} open; closes {} [{}]; signal → first {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms; still open {}; server exit {}",
                d.open_before,
                d.closed,
                codes.join(", "),
                d.first_ms,
                d.p50_ms,
                d.p99_ms,
                d.last_ms,
                d.still_open,
                d.server_exit_s.map_or("not seen".into(), |x| format!("after {x:.2} s"))
            );
        }
        s
    }
}
