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
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::{Opts, Plan};
use crate::fleet::{Fleet, Group};
use crate::stats::{Counters, Hist, Tick, Totals};
use crate::sys;

#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Tick(Tick),
    Result(Totals),
    Error(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Measure,
    Stop { finals: Vec<u64> },
}

/// How often a child reports (the parent's once-a-second view is at most this stale).
const TICK_EVERY: Duration = Duration::from_millis(200);

/// How long a child may outlive `--max-seconds` before stopping by itself.
const GRACE: Duration = Duration::from_secs(30);

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
                Ok(t) => emit(&FromWorker::Tick(t)),
                Err(e) => emit(&FromWorker::Error(e)),
            }
        }
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Some(ToWorker::Measure)) => {
                let _ = group.measure();
            }
            Ok(Some(ToWorker::Stop { finals })) => break finals,
            Ok(None) | Err(RecvTimeoutError::Disconnected) => break Vec::new(),
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    match Box::new(group).stop(finals) {
        Ok(t) => {
            emit(&FromWorker::Result(t));
            0
        }
        Err(e) => {
            emit(&FromWorker::Error(e));
            1
        }
    }
}

struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    latest: Option<Tick>,
    result: Option<Totals>,
}

/// The worker processes, from the parent's side.
pub struct Procs {
    kids: Vec<ChildProc>,
    rx: Receiver<(usize, Option<FromWorker>)>,
    interval: Hist,
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
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let msg = serde_json::from_str::<FromWorker>(&line).unwrap_or_else(|e| {
                        FromWorker::Error(format!("bad line from worker {i}: {e}"))
                    });
                    if tx.send((i, Some(msg))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, None));
            });
            let stdin = child.stdin.take();
            kids.push(ChildProc {
                child,
                stdin,
                latest: None,
                result: None,
            });
        }
        Ok(Procs {
            kids,
            rx,
            interval: Hist::default(),
        })
    }

    fn handle(&mut self, i: usize, msg: Option<FromWorker>) -> Result<(), String> {
        match msg {
            Some(FromWorker::Tick(t)) => {
                self.interval.merge(&t.interval);
                self.kids[i].latest = Some(t);
            }
            Some(FromWorker::Result(r)) => self.kids[i].result = Some(r),
            Some(FromWorker::Error(e)) => return Err(format!("worker {i}: {e}")),
            None if self.kids[i].result.is_none() => {
                return Err(format!("worker {i} exited without a result"))
            }
            None => {}
        }
        Ok(())
    }

    fn send(&mut self, cmd: &ToWorker) -> Result<(), String> {
        let line = serde_json::to_string(cmd).map_err(|e| e.to_string())? + "\n";
        for (i, k) in self.kids.iter_mut().enumerate() {
            if let Some(s) = k.stdin.as_mut() {
                s.write_all(line.as_bytes())
                    .and_then(|_| s.flush())
                    .map_err(|e| format!("worker {i}: {e}"))?;
            }
        }
        Ok(())
    }
}

impl Fleet for Procs {
    fn tick(&mut self) -> Result<Tick, String> {
        while let Ok((i, msg)) = self.rx.try_recv() {
            self.handle(i, msg)?;
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
                    out.ready &= t.ready;
                    out.cpu_s += t.cpu_s;
                }
                None => out.ready = false,
            }
        }
        out.counters = counters;
        // The parent's own share (the publisher runs here).
        out.cpu_s += sys::cpu_seconds_self();
        out.interval = std::mem::take(&mut self.interval);
        Ok(out)
    }

    fn measure(&mut self) -> Result<(), String> {
        self.send(&ToWorker::Measure)
    }

    fn stop(mut self: Box<Self>, finals: Vec<u64>) -> Result<Totals, String> {
        self.send(&ToWorker::Stop { finals })?;
        for k in &mut self.kids {
            k.stdin = None;
        }
        let deadline = Instant::now() + GRACE;
        while self.kids.iter().any(|k| k.result.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, msg)) => self.handle(i, msg)?,
                Err(_) => return Err("workers did not report their results in time".into()),
            }
        }
        let mut out = Totals::default();
        for k in &mut self.kids {
            let _ = k.child.wait();
            out.merge(k.result.as_ref().expect("checked above"));
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
    if o.spread {
        a.push("--spread".into());
    }
    a.push("--quiet".into());
    a
}
