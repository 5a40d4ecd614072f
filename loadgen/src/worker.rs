//! One event-loop thread: an epoll instance, a slab of connections, the ramp,
//! the churn schedule and the connect timeouts. No task per connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardcast_proto::{DecoderConfig, Role};

use crate::cli::{Plan, Protocol, Scenario};
use crate::conn::{Conn, Ctx, Next, Phase};
use crate::stats::{Hist, Tick, Totals};
use crate::sys::{self, Epoll, Event};

/// Snapshots are published this often (the progress line reads them).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Reads per readiness event before moving to the next connection.
const READS_PER_EVENT: usize = 8;

/// What the threads of one process share with the process's controller.
#[derive(Debug, Default)]
pub struct Shared {
    pub stop: AtomicBool,
    pub measuring: AtomicBool,
    /// Unix ns of the drain mark (0: none): closes after it are timed from it.
    pub mark_ns: AtomicU64,
    /// Last offset published per channel, set before `stop` (fanout).
    pub finals: Mutex<Vec<u64>>,
    pub snaps: Vec<Mutex<Tick>>,
}

/// This thread's share of the global connection indices: `first + stride * j` below `total`.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    pub first: u64,
    pub stride: u64,
    pub total: u64,
}

impl Share {
    pub fn count(&self) -> u64 {
        if self.first >= self.total {
            0
        } else {
            (self.total - self.first).div_ceil(self.stride)
        }
    }
}

struct Slot {
    gen: u32,
    conn: Option<Conn>,
}

pub struct Worker {
    index: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    ep: Epoll,
    slots: Vec<Slot>,
    free: Vec<u32>,
    ctx: Ctx,
    share: Share,
    next_j: u64,
    /// Planned connections that are up or failed.
    resolved: u64,
    start: Instant,
    timeouts: VecDeque<(Instant, u64)>,
    buf: Vec<u8>,
    /// Churn: closes per second for this thread, next due time and a slot cursor.
    churn_every: Option<Duration>,
    churn_next: Option<Instant>,
    churn_cursor: usize,
}

fn token(idx: u32, gen: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(idx)
}

impl Worker {
    pub fn new(
        index: usize,
        plan: Arc<Plan>,
        shared: Arc<Shared>,
        share: Share,
        threads_total: usize,
    ) -> std::io::Result<Worker> {
        let o = &plan.opts;
        let ctx = Ctx {
            scenario: o.scenario,
            protocol: o.protocol,
            channels: plan.channels.clone(),
            path: plan.path.clone(),
            message_bytes: o.message_bytes,
            inflight: o.inflight,
            dec_cfg: DecoderConfig {
                role: Role::Client,
                message_bytes_max: 16 << 20,
            },
            totals: Totals {
                subscribers: vec![0; plan.channels.len()],
                ..Totals::default()
            },
            interval: Hist::default(),
            measuring: false,
            rng: 0x9e37_79b9_7f4a_7c15 ^ ((index as u64 + 1) << 17) ^ sys::unix_ns(),
        };
        let churn_every = (o.scenario == Scenario::Churn)
            .then(|| Duration::from_secs_f64(threads_total as f64 / o.churn_rate));
        Ok(Worker {
            index,
            plan,
            shared,
            ep: Epoll::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            ctx,
            share,
            next_j: 0,
            resolved: 0,
            start: Instant::now(),
            timeouts: VecDeque::new(),
            buf: vec![0; 256 * 1024],
            churn_every,
            churn_next: None,
            churn_cursor: 0,
        })
    }

    fn ramp_due(&self, j: u64) -> Instant {
        let g = self.share.first + self.share.stride * j;
        self.start + Duration::from_secs_f64(g as f64 / self.plan.opts.ramp)
    }

    /// Run until told to stop; returns everything this thread measured.
    pub fn run(mut self) -> Totals {
        let mut events: Vec<Event> = Vec::with_capacity(sys::EVENTS_MAX);
        let mut last_flush = Instant::now();
        let planned = self.share.count();
        let coalesce = Duration::from_secs_f64(self.plan.opts.coalesce_ms / 1000.0);
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.ramp(now, planned);
            self.expire(now);
            self.churn(now);
            let mut wait = FLUSH_EVERY.saturating_sub(now.duration_since(last_flush));
            if self.next_j < planned {
                wait = wait.min(self.ramp_due(self.next_j).saturating_duration_since(now));
            }
            if let Some(t) = self.churn_next {
                wait = wait.min(t.saturating_duration_since(now));
            }
            let ms = wait.as_micros().div_ceil(1000) as i32;
            if let Err(e) = self.ep.wait(&mut events, ms) {
                self.ctx
                    .totals
                    .error(format!("epoll: {}", sys::error_kind(&e)));
                break;
            }
            let now_ns = sys::unix_ns();
            for ev in &events {
                self.on_event(*ev, now_ns);
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                self.flush(planned);
                last_flush = Instant::now();
            }
            // A full batch means more is waiting: take it now. Otherwise let
            // the next events gather while nobody is waiting to be woken.
            if !coalesce.is_zero() && !events.is_empty() && events.len() < sys::EVENTS_MAX {
                std::thread::sleep(coalesce);
            }
        }
        self.finish()
    }

    fn ramp(&mut self, now: Instant, planned: u64) {
        for _ in 0..256 {
            if self.next_j >= planned || self.ramp_due(self.next_j) > now {
                return;
            }
            let g = self.share.first + self.share.stride * self.next_j;
            self.next_j += 1;
            self.open(g, true);
        }
    }

    fn addrs(&self, g: u64) -> (Option<SocketAddr>, SocketAddr) {
        let p = &self.plan;
        let dest = p.targets[(g % p.targets.len() as u64) as usize];
        let n = p.sources.len() as u64;
        let src = (n > 0).then(|| {
            // Port 0: the kernel picks one at connect (IP_BIND_ADDRESS_NO_PORT).
            let port = p
                .source_ports
                .map_or(0, |(lo, count)| lo + ((g / n) % u64::from(count)) as u16);
            SocketAddr::new(p.sources[(g % n) as usize], port)
        });
        (src, dest)
    }

    fn subs_for(&self, g: u64) -> Vec<u16> {
        let n = self.ctx.channels.len() as u64;
        match self.ctx.scenario {
            Scenario::Echo => Vec::new(),
            // Raw and Socket.IO peers have one stream and no channels.
            _ if !matches!(self.ctx.protocol, Protocol::Shardcast | Protocol::Sse) => vec![0],
            // The broadcast channel, and one of the spread channels when there are any.
            Scenario::Suite if n > 1 => vec![0, 1 + (g % (n - 1)) as u16],
            Scenario::Suite => vec![0],
            _ if self.plan.opts.spread => vec![(g % n) as u16],
            _ => (0..n as u16).collect(),
        }
    }

    fn open(&mut self, g: u64, planned: bool) {
        self.ctx.totals.counters.attempted += 1;
        let (src, dest) = self.addrs(g);
        let sock = match sys::start_connect(src, dest) {
            Ok(s) => s,
            Err(e) => {
                self.ctx.totals.counters.failed += 1;
                self.ctx.totals.error(sys::error_kind(&e));
                self.resolved += u64::from(planned);
                return;
            }
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { gen: 0, conn: None });
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[idx as usize];
        slot.gen = slot.gen.wrapping_add(1);
        let tok = token(idx, slot.gen);
        let conn = Conn::new(sock, slot.gen, g, planned, self.subs_for(g));
        if let Err(e) = self.ep.add(conn.fd(), tok, conn.interest()) {
            self.ctx.totals.counters.failed += 1;
            self.ctx
                .totals
                .error(format!("epoll add: {}", sys::error_kind(&e)));
            self.resolved += u64::from(planned);
            self.free.push(idx);
            return;
        }
        self.slots[idx as usize].conn = Some(conn);
        let timeout = Duration::from_secs_f64(self.plan.opts.connect_timeout);
        self.timeouts.push_back((Instant::now() + timeout, tok));
    }

    fn on_event(&mut self, ev: Event, now_ns: u64) {
        let idx = (ev.token & 0xffff_ffff) as usize;
        let gen = (ev.token >> 32) as u32;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if slot.gen != gen {
            return;
        }
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let before = conn.interest();
        let mut next = Next::Continue;
        if ev.bits & (sys::WRITE | sys::FAIL) != 0
            && (conn.wants_write || conn.phase == Phase::Connecting)
        {
            let host = self.plan.targets[(conn.global % self.plan.targets.len() as u64) as usize]
                .to_string();
            next = conn.on_writable(&mut self.ctx, &host);
        }
        if next == Next::Continue
            && ev.bits & (sys::READ | sys::FAIL) != 0
            && conn.phase != Phase::Connecting
        {
            next = read_all(conn, &mut self.ctx, &mut self.buf, now_ns);
        }
        match next {
            Next::Continue => {}
            Next::BecameUp => self.became_up(idx),
            Next::Close(kind) => return self.close(idx, kind),
        }
        let Some(conn) = self.slots[idx].conn.as_ref() else {
            return;
        };
        if conn.interest() != before {
            if let Err(e) = self.ep.modify(conn.fd(), ev.token, conn.interest()) {
                self.close(idx, Some(format!("epoll mod: {}", sys::error_kind(&e))));
            }
        }
    }

    fn became_up(&mut self, idx: usize) {
        let Some(conn) = self.slots[idx].conn.as_mut() else {
            return;
        };
        conn.counted = true;
        let c = &mut self.ctx.totals.counters;
        c.up += 1;
        c.open += 1;
        self.resolved += u64::from(conn.planned);
        self.ctx
            .totals
            .connect
            .record(conn.started.elapsed().as_nanos() as u64);
    }

    /// Drop a connection; `kind` is the error to count (None: on purpose).
    fn close(&mut self, idx: usize, kind: Option<String>) {
        let Some(mut conn) = self.slots[idx].conn.take() else {
            return;
        };
        self.free.push(idx as u32);
        conn.account(&mut self.ctx);
        let c = &mut self.ctx.totals.counters;
        if conn.counted {
            c.open -= 1;
            if kind.is_some() {
                c.closed += 1;
                let mark = self.shared.mark_ns.load(Ordering::Relaxed);
                if mark != 0 {
                    let now = sys::unix_ns();
                    self.ctx.totals.closes.record(now.saturating_sub(mark));
                }
            }
        } else {
            c.failed += 1;
            self.resolved += u64::from(conn.planned);
        }
        if let Some(k) = kind {
            self.ctx.totals.error(k);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(due, tok)) = self.timeouts.front() {
            if due > now {
                return;
            }
            self.timeouts.pop_front();
            let idx = (tok & 0xffff_ffff) as usize;
            let slot = &self.slots[idx];
            let pending = slot.gen == (tok >> 32) as u32
                && slot.conn.as_ref().is_some_and(|c| c.phase != Phase::Up);
            if pending {
                let what = match slot.conn.as_ref().map(|c| c.phase) {
                    Some(Phase::Connecting) => "timed out (connect)",
                    Some(Phase::Handshake) => "timed out (upgrade)",
                    _ => "timed out (subscribe)",
                };
                self.close(idx, Some(what.into()));
            }
        }
    }

    fn churn(&mut self, now: Instant) {
        let Some(every) = self.churn_every else {
            return;
        };
        if !self.ctx.measuring {
            return;
        }
        let due = *self.churn_next.get_or_insert(now);
        if due > now || self.slots.is_empty() {
            return;
        }
        self.churn_next = Some(due + every);
        for step in 0..self.slots.len() {
            let idx = (self.churn_cursor + step) % self.slots.len();
            let Some(conn) = self.slots[idx].conn.as_mut() else {
                continue;
            };
            if conn.phase != Phase::Up {
                continue;
            }
            self.churn_cursor = idx + 1;
            let g = conn.global;
            conn.send_close(&mut self.ctx, 1000);
            self.close(idx, None);
            self.ctx.totals.counters.churned += 1;
            self.open(g, false);
            return;
        }
    }

    fn flush(&mut self, planned: u64) {
        self.ctx.measuring = self.shared.measuring.load(Ordering::Relaxed);
        let mut snap = self.shared.snaps[self.index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        snap.counters = self.ctx.totals.counters;
        snap.last_delivery_ns = self.ctx.totals.last_delivery_ns;
        snap.interval.merge(&self.ctx.interval);
        snap.ready = self.next_j >= planned && self.resolved >= planned;
        self.ctx.interval.reset();
    }

    fn finish(mut self) -> Totals {
        let finals = self
            .shared
            .finals
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        for slot in &mut self.slots {
            if let Some(mut conn) = slot.conn.take() {
                conn.finish(&mut self.ctx, &finals);
                conn.send_close(&mut self.ctx, 1000);
            }
        }
        self.ctx.totals.counters.open = 0;
        self.flush(0);
        self.ctx.totals
    }
}

/// Read until the socket is drained (or a few buffers' worth), handing bytes to the connection.
fn read_all(conn: &mut Conn, ctx: &mut Ctx, buf: &mut [u8], now_ns: u64) -> Next {
    for _ in 0..READS_PER_EVENT {
        match sys::read(conn.fd(), buf) {
            Ok(0) => {
                let kind = match conn.phase {
                    Phase::Handshake => "closed during upgrade",
                    _ => "closed without close frame",
                };
                return Next::Close(Some(kind.into()));
            }
            Ok(n) => {
                let next = conn.on_bytes(ctx, &mut buf[..n], now_ns);
                if next != Next::Continue || n < buf.len() {
                    return next;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Next::Continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Next::Close(Some(sys::error_kind(&e))),
        }
    }
    Next::Continue
}
