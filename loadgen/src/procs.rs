//! Worker processes: the parent re-executes this binary K times with a hidden
//! `--worker-index i`; each child runs a [`Group`] for its share of connections.
//!
//! Protocol, one JSON object per line:
//! - child → parent (stdout): `{"Tick":{…}}` five times a second, then `{"Result":{…}}`
//!   (or `{"Error":"…"}`). Histograms travel as base64 V2 serializations, so the
//!   parent's merge is exact.
//! - parent → child (stdin): `"Measure"`, then `{"Stop":{"finals":[…]}}`. If stdin
//!   closes (the parent died) the child stops by itself; it also stops on its own
//!   once `--max-seconds` (plus a grace period) has passed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::{Opts, Plan};
use crate::fleet::{Fleet, Group};
use crate::stats::{Counters, Hist, Tick, Totals};
use crate::sys;

#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Tick(Box<Tick>),
    Result(Box<Totals>),
    Error(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Measure,
    /// Time closes from this Unix ns on (the suite's drain).
    Mark {
        ns: u64,
    },
    Stop {
        finals: Vec<u64>,
    },
}

/// How often a child reports (the parent's view is at most this stale; the suite
/// waits on it to see a broadcast reach everyone).
const TICK_EVERY: Duration = Duration::from_millis(100);

/// How long a child may outlive `--max-seconds` before stopping by itself.
const GRACE: Duration = Duration::from_secs(30);

/// After "stop", how long the parent waits for the results, all workers together.
/// A worker that has not answered by then is counted from its last tick (partial:
/// no latencies) and killed, so an overloaded host still gets a report.
pub const STOP_WAIT: Duration = Duration::from_secs(20);

/// Descriptors a worker needs besides its connections (stdio, epoll, libraries).
const FD_OVERHEAD: u64 = 64;

/// Connections one worker of `plan` will hold at most.
pub fn per_worker(plan: &Plan) -> u64 {
    plan.connections.div_ceil(plan.opts.workers as u64)
}

/// Refuse a plan whose per-process share cannot fit the descriptor limit.
pub fn check_fds(plan: &Plan) -> Result<(), String> {
    let need = per_worker(plan) + FD_OVERHEAD;
    let limit = sys::fd_limit();
    if need > limit {
        let k = plan
            .connections
            .div_ceil(limit.saturating_sub(FD_OVERHEAD).max(1));
        return Err(format!(
            "{} connections per process need about {need} descriptors, but the limit is {limit}: use --workers {k} or more",
            per_worker(plan)
        ));
    }
    Ok(())
}

fn emit(msg: &FromWorker) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, msg);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The child's main loop. Returns the process exit code.
pub fn worker_main(plan: Plan) -> i32 {
    let index = plan.opts.worker_index.unwrap_or(0);
    let workers = plan.opts.workers;
    let hard_stop = Instant::now() + Duration::from_secs_f64(plan.opts.max_seconds) + GRACE;
    let mut group = match Group::start(Arc::new(plan), index, workers) {
        Ok(g) => g,
        Err(e) => {
            emit(&FromWorker::Error(e));
            return 1;
        }
    };
    let (tx, rx) = mpsc::channel::<Option<ToWorker>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(cmd) => {
                    if tx.send(Some(cmd)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("loadgen worker: bad command {line:?}: {e}"),
            }
        }
        let _ = tx.send(None);
    });
    let mut next_tick = Instant::now() + TICK_EVERY;
    let finals = loop {
        let now = Instant::now();
        if now >= hard_stop {
            eprintln!("loadgen worker {index}: hard time bound reached, stopping");
            break Vec::new();
        }
        if now >= next_tick {
            next_tick += TICK_EVERY;
            match group.tick() {
                Ok(t) => emit(&FromWorker::Tick(Box::new(t))),
                Err(e) => emit(&FromWorker::Error(e)),
            }
        }
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Some(ToWorker::Measure)) => {
                let _ = group.measure();
            }
            Ok(Some(ToWorker::Mark { ns })) => {
                let _ = group.mark(ns);
            }
            Ok(Some(ToWorker::Stop { finals })) => break finals,
            Ok(None) | Err(RecvTimeoutError::Disconnected) => break Vec::new(),
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    match Box::new(group).stop(finals) {
        Ok(t) => {
            emit(&FromWorker::Result(Box::new(t)));
            0
        }
        Err(e) => {
            emit(&FromWorker::Error(e));
            1
        }
    }
}

/// What a worker's reader thread keeps for the coordinator: its latest tick and
/// the latencies of every tick since the coordinator last looked, merged. Ticks
/// are coalesced here, never queued, so a coordinator that falls behind (a
/// starved CPU) costs one histogram per worker, not one per tick (queued ticks
/// once grew the parent to 12 GiB).
#[derive(Default)]
struct Pending {
    latest: Option<Tick>,
    interval: Hist,
}

struct ChildProc {
    pending: Arc<Mutex<Pending>>,
    child: Child,
    stdin: Option<ChildStdin>,
    latest: Option<Tick>,
    result: Option<Totals>,
    /// Its output ended (it exited, or closed stdout).
    gone: bool,
}

/// The worker processes, from the parent's side.
pub struct Procs {
    kids: Vec<ChildProc>,
    rx: Receiver<(usize, Option<FromWorker>)>,
    interval: Hist,
    /// What went wrong with workers; reported with the results, never fatal.
    problems: Vec<String>,
    /// How long [`Fleet::stop`] waits for the results ([`STOP_WAIT`]).
    stop_wait: Duration,
}

impl Procs {
    /// Start `plan.opts.workers` children of `exe` (this program's binary).
    pub fn start(plan: &Plan, exe: &Path) -> Result<Procs, String> {
        let mut opts: Opts = plan.opts.clone();
        opts.json = None;
        opts.svg = None;
        opts.target_pid = None;
        let scenario = serde_json::to_value(opts.scenario).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let mut kids = Vec::new();
        for i in 0..opts.workers {
            let mut cmd = Command::new(exe);
            cmd.arg(scenario.as_str().unwrap_or("idle"))
                .args(opts_to_args(&opts))
                .arg("--worker-index")
                .arg(i.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("start worker {i} ({}): {e}", exe.display()))?;
            let stdout = child.stdout.take().expect("piped");
            let tx = tx.clone();
            let pending = Arc::new(Mutex::new(Pending::default()));
            let shared = pending.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let msg = serde_json::from_str::<FromWorker>(&line).unwrap_or_else(|e| {
                        FromWorker::Error(format!("bad line from worker {i}: {e}"))
                    });
                    if let FromWorker::Tick(mut t) = msg {
                        let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
                        p.interval.merge(&t.interval);
                        t.interval = Hist::default();
                        p.latest = Some(*t);
                        continue;
                    }
                    if tx.send((i, Some(msg))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
            let stdin = child.stdin.take();
            kids.push(ChildProc {
                pending,
                child,
                stdin,
                latest: None,
                result: None,
                gone: false,
            });
        }
        Ok(Procs {
            kids,
            rx,
            interval: Hist::default(),
            problems: Vec::new(),
            stop_wait: STOP_WAIT,
        })
    }

    /// Wait this long for the results after "stop" instead of [`STOP_WAIT`].
    pub fn with_stop_wait(mut self, d: Duration) -> Procs {
        self.stop_wait = d;
        self
    }

    /// One message from worker `i`. Nothing a worker says or fails to say stops the
    /// run: problems are kept and reported beside the results.
    fn handle(&mut self, i: usize, msg: Option<FromWorker>) {
        match msg {
            Some(FromWorker::Tick(t)) => {
                self.interval.merge(&t.interval);
                self.kids[i].latest = Some(*t);
            }
            Some(FromWorker::Result(r)) => self.kids[i].result = Some(*r),
            Some(FromWorker::Error(e)) => self.problems.push(format!("worker {i}: {e}")),
            None => {
                self.kids[i].gone = true;
                if self.kids[i].result.is_none() {
                    self.problems
                        .push(format!("worker {i} exited without a result"));
                }
            }
        }
    }

    /// Send `cmd` to every worker still listening; a worker that cannot take it is
    /// noted, not fatal (its pipe is closed, so it stops by itself).
    fn send(&mut self, cmd: &ToWorker) -> Result<(), String> {
        let line = serde_json::to_string(cmd).map_err(|e| e.to_string())? + "\n";
        for (i, k) in self.kids.iter_mut().enumerate() {
            if let Some(s) = k.stdin.as_mut() {
                if let Err(e) = s.write_all(line.as_bytes()).and_then(|_| s.flush()) {
                    self.problems
                        .push(format!("worker {i}: command not sent: {e}"));
                    k.stdin = None;
                }
            }
        }
        Ok(())
    }
}

impl Fleet for Procs {
    fn tick(&mut self) -> Result<Tick, String> {
        for k in &mut self.kids {
            let mut p = k.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = p.latest.take() {
                k.latest = Some(t);
            }
            self.interval.merge(&p.interval);
            p.interval.reset();
        }
        while let Ok((i, msg)) = self.rx.try_recv() {
            self.handle(i, msg);
        }
        let mut out = Tick {
            ready: true,
            ..Tick::default()
        };
        let mut counters = Counters::default();
        for k in &self.kids {
            match &k.latest {
                Some(t) => {
                    counters.add(&t.counters);
                    // A worker that is gone will not get any further: do not wait for it.
                    out.ready &= t.ready || k.gone;
                    out.cpu_s += t.cpu_s;
                    out.rss_bytes += t.rss_bytes;
                    out.anon_bytes += t.anon_bytes;
                    out.processes += 1;
                    out.last_delivery_ns = out.last_delivery_ns.max(t.last_delivery_ns);
                }
                None => out.ready &= k.gone,
            }
        }
        out.counters = counters;
        // The parent's own share (the publisher runs here).
        out.cpu_s += sys::cpu_seconds_self();
        let (rss, anon) = sys::rss_self();
        out.rss_bytes += rss;
        out.anon_bytes += anon;
        out.processes += 1;
        out.interval = std::mem::take(&mut self.interval);
        Ok(out)
    }

    fn measure(&mut self) -> Result<(), String> {
        self.send(&ToWorker::Measure)
    }

    fn mark(&mut self, ns: u64) -> Result<(), String> {
        self.send(&ToWorker::Mark { ns })
    }

    fn stop(mut self: Box<Self>, finals: Vec<u64>) -> Result<Totals, String> {
        self.send(&ToWorker::Stop { finals })?;
        for k in &mut self.kids {
            k.stdin = None;
        }
        let deadline = Instant::now() + self.stop_wait;
        while self.kids.iter().any(|k| k.result.is_none() && !k.gone) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, msg)) => self.handle(i, msg),
                Err(_) => break,
            }
        }
        let mut out = Totals::default();
        for (i, k) in self.kids.iter_mut().enumerate() {
            match &k.result {
                Some(r) => {
                    let _ = k.child.wait();
                    out.merge(r);
                }
                None => {
                    // Partial: the counters of its last tick, without latencies.
                    let _ = k.child.kill();
                    let _ = k.child.wait();
                    if let Some(t) = &k.latest {
                        let mut c = t.counters;
                        c.open = 0;
                        out.counters.add(&c);
                    }
                    out.error(format!(
                        "worker {i}: no result within {} s (counted from its last report, without latencies)",
                        self.stop_wait.as_secs_f64()
                    ));
                }
            }
        }
        for p in std::mem::take(&mut self.problems) {
            out.error(p);
        }
        Ok(out)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for k in &mut self.kids {
            k.stdin = None;
            if k.result.is_none() {
                let _ = k.child.kill();
            }
            let _ = k.child.wait();
        }
    }
}

/// The options a worker needs, as command-line flags.
fn opts_to_args(o: &Opts) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut flag = |k: &str, v: String| {
        a.push(format!("--{k}"));
        a.push(v);
    };
    flag("targets", o.targets.join(","));
    flag("protocol", o.protocol.as_str().into());
    if let Some(n) = o.connections {
        flag("connections", n.to_string());
    }
    flag("ramp", o.ramp.to_string());
    flag("duration", o.duration.to_string());
    flag("max-seconds", o.max_seconds.to_string());
    if let Some(t) = o.threads {
        flag("threads", t.to_string());
    }
    flag("workers", o.workers.to_string());
    if let Some(s) = &o.source_ips {
        flag("source-ips", s.clone());
    }
    if let Some(s) = &o.source_ports {
        flag("source-ports", s.clone());
    }
    if let Some(p) = &o.path {
        flag("path", p.clone());
    }
    flag("channels", o.channels.join(","));
    flag("rate", o.rate.to_string());
    flag("payload-bytes", o.payload_bytes.to_string());
    flag("message-bytes", o.message_bytes.to_string());
    flag("inflight", o.inflight.to_string());
    flag("churn-rate", o.churn_rate.to_string());
    flag("connect-timeout", o.connect_timeout.to_string());
    flag("spread-channels", o.spread_channels.to_string());
    flag("coalesce-ms", o.coalesce_ms.to_string());
    if o.spread {
        a.push("--spread".into());
    }
    a.push("--quiet".into());
    a
}
