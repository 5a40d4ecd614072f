//! One shard: a pinned thread with its own listener, driver, connections,
//! registry and owned channels. Its loop, top-down:
//!
//! 1. `driver.poll` reaps completions into a vector (no logic runs while reaping);
//! 2. each completion is handled: accepts, received bytes, finished sends, closes;
//! 3. the inbox from other shards and API callers is drained (bounded per turn);
//! 4. timers fire (handshake deadlines, close lingers);
//! 5. every connection with queued bytes and no send in flight gets one vectored write;
//! 6. messages for other shards are flushed and sleeping shards woken once.

pub(crate) mod inbox;
pub mod mesh;
pub(crate) mod router;
pub mod shared;
mod slow;
mod stop;
pub(crate) mod trim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast_proto::error::close_code;
use shardcast_proto::{http, sse};

use crate::channel::authority::OwnerSide;
use crate::channel::owner::Owner;
use crate::channel::subscriptions::Subscriptions;
use crate::config::{Config, Limits};
use crate::conn::outbound::Outbound;
use crate::conn::partial::Partials;
use crate::conn::session::Session;
use crate::conn::Slab;
use crate::driver::{Completion, Driver};
use crate::payload::ShardId;
use crate::policy::auth::unix_now;
use crate::policy::heartbeat::{self, Beat};
use crate::policy::timer::{wheel_tick, BeatClock, Beats, Deadline, Deadlines};
use crate::shard::mesh::{Inbox, Peer, ReplyTo, ShardMsg};
use crate::shard::router::Router;
use crate::shard::shared::Shared;
use crate::stats::ShardStats;

/// Inbox messages handled per loop turn, so sockets are served between bursts.
const INBOX_PER_TURN: usize = 8192;
/// How often a shard refreshes its channel snapshot for `/api/channels`.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);
/// The message of error 111 when the router refuses work.
pub(crate) const OVERLOADED: &str =
    "shard overloaded: not accepted (limits.router_overflow_msgs_max), retry later";
/// How often the driver may give back memory kept from a burst.
const TRIM_EVERY: Duration = Duration::from_secs(1);

pub struct Shard {
    driver: Box<dyn Driver>,
    pub(crate) core: Core,
    /// What one loop turn reuses (see [`Shard::turn`]).
    completions: Vec<Completion>,
    batch: Vec<Bytes>,
    trimmed_at: Instant,
    /// Where each turn's time goes; slow turns are logged.
    turn_clock: slow::TurnClock,
}

/// Everything but the driver, so received bytes (borrowed from the driver)
/// can be handed to the logic without aliasing.
pub(crate) struct Core {
    pub id: ShardId,
    pub shards: usize,
    pub cfg: Arc<Config>,
    /// WebSocket messages in, commands out.
    pub session: Session,
    pub http_limits: http::Limits,
    pub conns: Slab,
    /// Who here subscribes to what, and where each channel stands.
    pub subs: Subscriptions,
    pub owner: Owner,
    pub inbox: Inbox,
    /// Messages to other shards and to itself (`shard/router.rs`).
    pub router: Router,
    /// When a refusal by the router was last logged, and those since.
    pub refusals: crate::shard::router::RefusalLog,
    /// What is queued for the connections: write lists, framings, byte count.
    pub out: Outbound,
    /// Handshake deadlines, HTTP write stalls and close lingers.
    pub deadlines: Deadlines,
    pub stats: Arc<ShardStats>,
    pub shared: Arc<Shared>,
    /// Where `now` comes from: the real clock, or the simulation's (`clock.rs`).
    pub clock: crate::clock::Clock,
    pub next_req: u32,
    pub stopping: bool,
    /// When the shard must stop even if some connection never reported
    /// `Closed` (set by `stop`): a shutdown is bounded, whatever the driver does.
    pub stop_by: Option<Instant>,
    /// Counted out of `Shared::shards_at_work` (see `Core::may_exit`).
    pub left_work: bool,
    pub snapshot_version: u64,
    pub snapshot_at: Instant,
    pub now: Instant,
    pub beat_clock: BeatClock,
    pub beats: Beats,
    /// Pings the last heartbeat sweep queued (the slow-turn report).
    pub pings_queued: usize,
    /// Incomplete messages: their deadlines and the bytes they hold.
    pub partials: Partials,
    /// Publication times of this turn's deliveries, recorded once their writes are submitted.
    pub delivered_at: Vec<Instant>,
    pub drain: Option<crate::policy::drain::DrainPlan>,
    pub started: Instant,
    pub accept_budget: crate::policy::ratelimit::AcceptBudget,
    /// Recoveries being replayed to this shard's subscribers, and those waiting.
    pub replays: crate::channel::replay::Replays,
}

impl Shard {
    pub(crate) fn new(
        id: ShardId,
        cfg: Arc<Config>,
        driver: Box<dyn Driver>,
        peers: Vec<Peer>,
        inbox: Inbox,
        shared: Arc<Shared>,
    ) -> Shard {
        Shard::with_clock(id, cfg, driver, peers, inbox, shared, Default::default())
    }

    /// As [`Shard::new`], reading the time from `clock` (the simulation's virtual one).
    pub(crate) fn with_clock(
        id: ShardId,
        cfg: Arc<Config>,
        driver: Box<dyn Driver>,
        peers: Vec<Peer>,
        inbox: Inbox,
        shared: Arc<Shared>,
        clock: crate::clock::Clock,
    ) -> Shard {
        let shards = peers.len();
        let http_limits = http::Limits {
            header_bytes_max: cfg.limits.header_bytes_max,
            body_bytes_max: cfg.limits.http_body_bytes_max,
            ..http::Limits::default()
        };
        let now = clock.now();
        let (beat_clock, beats) = clocks(&cfg.limits, now);
        let core = Core {
            partials: Partials::new(&cfg.limits, shared.stats[id].clone(), now),
            beat_clock,
            beats,
            pings_queued: 0,
            delivered_at: Vec::new(),
            drain: None,
            started: now,
            accept_budget: crate::policy::ratelimit::AcceptBudget::new(now),
            replays: Default::default(),
            id,
            shards,
            owner: Owner::new(
                id,
                cfg.limits.idle_channels_max,
                Arc::new(cfg.namespaces.clone()),
                shared.authority.positions(),
            ),
            session: Session::new(&cfg),
            http_limits,
            conns: Slab::with_capacity(cfg.limits.conns_per_shard_max as usize),
            subs: Subscriptions::new(id, shards),
            router: Router::new(id, peers, cfg.limits.router_overflow_msgs_max),
            refusals: Default::default(),
            inbox,
            out: Outbound::new(&cfg, shared.stats[id].clone()),
            deadlines: Deadlines::default(),
            stats: shared.stats[id].clone(),
            shared,
            clock,
            next_req: 0,
            stopping: false,
            stop_by: None,
            left_work: false,
            snapshot_version: u64::MAX,
            snapshot_at: now,
            now,
            cfg,
        };
        Shard {
            driver,
            core,
            completions: Vec::with_capacity(1024),
            batch: Vec::with_capacity(crate::driver::SEND_IOVECS_MAX),
            trimmed_at: now,
            turn_clock: slow::TurnClock::new(now),
        }
    }

    pub fn run(mut self) {
        tracing::debug!(
            shard = self.core.id,
            driver = self.driver.kind().as_str(),
            "shard started"
        );
        while self.turn() {}
        tracing::debug!(shard = self.core.id, "shard stopped");
    }

    /// One loop turn; false when the shard has stopped. `run` calls it in a
    /// loop; the simulation calls it for each shard in turn, on one thread.
    pub(crate) fn turn(&mut self) -> bool {
        let timeout = self.core.poll_timeout();
        let may_sleep = timeout != Some(Duration::ZERO) && self.core.inbox.prepare_sleep();
        let res = self.driver.poll(
            if may_sleep {
                timeout
            } else {
                Some(Duration::ZERO)
            },
            &mut self.completions,
        );
        self.core.inbox.woke();
        if let Err(e) = res {
            tracing::error!(shard = self.core.id, error = %e, "driver poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.core.now = self.core.clock.now();
        self.turn_clock.begin(self.core.now);
        let mut completions = std::mem::take(&mut self.completions);
        let completed = completions.len();
        for c in completions.drain(..) {
            self.complete(c);
        }
        self.completions = completions;
        self.turn_clock
            .lap(slow::COMPLETIONS, self.core.clock.now());
        self.core.drain_inbox();
        self.turn_clock.lap(slow::INBOX, self.core.clock.now());
        let reads_behind = self.driver.reads_behind();
        self.core.tick(reads_behind);
        self.turn_clock.lap(slow::TIMERS, self.core.clock.now());
        let mut batch = std::mem::take(&mut self.batch);
        self.flush(&mut batch);
        self.batch = batch;
        self.turn_clock.lap(slow::WRITES, self.core.clock.now());
        self.core.record_latency();
        self.core.router.flush();
        self.turn_clock
            .lap(slow::BOOKKEEPING, self.core.clock.now());
        if self.core.now.duration_since(self.trimmed_at) >= TRIM_EVERY {
            self.trimmed_at = self.core.now;
            self.driver.trim();
            let core = &mut self.core;
            trim::trim_lists(
                &mut core.deadlines,
                &core.conns,
                &mut core.router,
                &mut core.out,
                &mut core.partials,
                &mut core.delivered_at,
            );
            crate::alloc_trim::shrink_vec(&mut self.completions);
            crate::alloc_trim::trim();
            self.turn_clock.lap(slow::TRIM, self.core.clock.now());
        }
        let writes = self.core.out.last_flush();
        let pings = std::mem::take(&mut self.core.pings_queued);
        self.turn_clock.end(self.core.id, completed, writes, pings);
        if self.core.may_exit() {
            return false;
        }
        if self.core.stop_by.is_some_and(|t| self.core.now >= t) {
            // Every close is bounded by close_linger_ms; a connection still
            // here well past that waits for a completion that is not coming.
            if !self.core.conns.is_empty() {
                tracing::error!(
                    shard = self.core.id,
                    open = self.core.conns.len(),
                    "connections still open past the shutdown bound; stopping anyway"
                );
            }
            return false;
        }
        true
    }

    fn complete(&mut self, c: Completion) {
        let core = &mut self.core;
        match c {
            Completion::Accepted { sock } => {
                let key = core.conns.insert(sock);
                ShardStats::inc(&core.stats.conns_open);
                core.arm_http_deadline(key);
                let per_sec = core.cfg.limits.accepts_per_sec;
                if !core.accept_budget.admit(core.now, per_sec) {
                    ShardStats::inc(&core.stats.rejected_accept_rate);
                    core.abort(key);
                } else if core.stopping {
                    core.abort(key);
                } else {
                    self.driver.start_recv(sock, key);
                }
            }
            Completion::Recv { conn, buf, len } => {
                ShardStats::add(&core.stats.bytes_in, len as u64);
                let data = self.driver.recv_buf(buf, len);
                core.on_data(conn, data);
                self.driver.release(buf);
            }
            Completion::RecvClosed { conn, .. } => core.on_read_closed(conn),
            Completion::Sent { conn, result } => core.on_sent(conn, result),
            Completion::Closed { conn } => core.on_closed(conn),
            Completion::Wake => {}
        }
    }

    /// Step 5 of the loop: one vectored write per connection with queued bytes.
    fn flush(&mut self, batch: &mut Vec<Bytes>) {
        let core = &mut self.core;
        core.out.flush(&mut core.conns, self.driver.as_mut(), batch);
    }
}

/// The heartbeat's clock, and its periods in its ticks.
fn clocks(l: &Limits, now: Instant) -> (BeatClock, Beats) {
    let tick = wheel_tick(l.ping_interval_ms, l.pong_timeout_ms, l.idle_timeout_ms);
    let beat_clock = BeatClock::new(tick, now);
    let beats = Beats {
        ping: beat_clock.ticks(Duration::from_millis(l.ping_interval_ms)),
        pong: beat_clock.ticks(Duration::from_millis(l.pong_timeout_ms)),
        idle: if l.idle_timeout_ms == 0 {
            0
        } else {
            beat_clock.ticks(Duration::from_millis(l.idle_timeout_ms))
        },
    };
    (beat_clock, beats)
}

impl Core {
    /// How long the loop may block: zero when work is pending, else until the next timer.
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        if self.router.has_pending() || self.out.has_dirty() {
            return Some(Duration::ZERO);
        }
        let next = self
            .deadlines
            .next()
            .into_iter()
            .chain((!self.conns.is_empty()).then(|| self.beat_clock.deadline()))
            .chain(self.partials.next_deadline())
            .min();
        let mut wait = SNAPSHOT_EVERY;
        if let Some(t) = next {
            wait = wait.min(t.saturating_duration_since(self.clock.now()));
        }
        if self.stopping || self.drain.is_some() {
            wait = wait.min(Duration::from_millis(10));
        }
        Some(wait)
    }

    /// The parts that answer as a channel's owner, borrowed for one message.
    pub(crate) fn owner_side(&mut self) -> OwnerSide<'_> {
        OwnerSide {
            id: self.id,
            owner: &mut self.owner,
            router: &mut self.router,
            refusals: &mut self.refusals,
            authority: &self.shared.authority,
            cfg: &self.cfg,
            stats: &self.stats,
            now: self.now,
        }
    }

    /// Queue a message for shard `to` (possibly this one) that must not be
    /// lost: never refused (see `shard/router.rs` for the kinds and their bounds).
    pub fn send_to(&mut self, to: ShardId, msg: ShardMsg) {
        self.router.send(to, msg);
    }

    /// Count (and log, at most once a second) something the router refused.
    pub(crate) fn refused(&mut self, kind: crate::shard::router::Refused) {
        self.refusals.record(&self.stats, self.id, kind, self.now);
    }

    /// Refuse a publication with error 111 (HTTP 503): a shard on its way has
    /// a full inbox and overflow. Nothing waits for a fire-and-forget one, and
    /// an embedding-API caller sees its reply channel close.
    pub(crate) fn refuse_publish(&mut self, reply: ReplyTo, kind: crate::shard::router::Refused) {
        self.refused(kind);
        let code = shardcast_proto::command::error_code::TOO_MANY_REQUESTS;
        match reply {
            ReplyTo::Nobody | ReplyTo::External(_) => {}
            reply => self.publish_failed(reply, code, OVERLOADED),
        }
    }

    fn record_latency(&mut self) {
        if self.delivered_at.is_empty() {
            return;
        }
        let now = self.clock.now();
        for t in self.delivered_at.drain(..) {
            self.stats.latency.record(now.saturating_duration_since(t));
        }
    }

    pub(crate) fn drain_inbox(&mut self) {
        let mut budget = INBOX_PER_TURN;
        while budget > 0 {
            budget -= 1;
            let msg = match self.router.pop_local() {
                Some(m) => m,
                None => match self.inbox.rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            self.handle_msg(msg);
        }
    }

    /// Timers due now; `reads_behind`: the driver holds received data not yet
    /// handed to the shard (see [`Driver::reads_behind`]).
    fn tick(&mut self, reads_behind: bool) {
        let now = self.now;
        while let Some((key, gen)) = self.deadlines.pop_due(Deadline::Handshake, now) {
            self.http_deadline_passed(key, gen);
        }
        while let Some((key, gen)) = self.deadlines.pop_due(Deadline::Stall, now) {
            self.http_stall_passed(key, gen);
        }
        let linger = Duration::from_millis(self.cfg.limits.close_linger_ms);
        while let Some((key, gen)) = self.deadlines.pop_due(Deadline::Linger, now) {
            let Some(conn) = self.conns.get_gen(key, gen) else {
                continue;
            };
            // Still waiting for its turn in this shard's urgent writes, its
            // close frame unwritten: the delay is ours, not the client's (a
            // drain of a million, say). Abort it then and it never gets the
            // frame; it gets its linger from its turn instead. One waiting
            // on a write in flight (a client not reading) is aborted.
            if conn.waits_for_its_write_turn() {
                self.deadlines
                    .push(Deadline::Linger, now + linger, key, gen);
                continue;
            }
            self.abort(key);
        }
        self.heartbeat_due(reads_behind);
        self.frame_deadlines_due();
        self.drain_step();
        if now.duration_since(self.snapshot_at) >= SNAPSHOT_EVERY {
            self.snapshot_at = now;
            self.publish_snapshot();
            self.owner.trim_idle();
            self.close_stalled_replays();
            // O(channels), so in debug builds and a few times a second only.
            if cfg!(debug_assertions) {
                self.subs.registry().assert_held_while_wanted();
            }
        }
    }

    /// Once a tick: visit every connection and act on the heartbeat deadlines
    /// that passed (each connection's are checked by `policy/heartbeat.rs`).
    /// `reads_behind`: the shard has received data it has not read yet.
    fn heartbeat_due(&mut self, reads_behind: bool) {
        let Some(t) = heartbeat::sweep_tick(&mut self.beat_clock, self.now) else {
            return;
        };
        self.pings_queued = 0;
        self.out.check_queued_gauge(&self.conns);
        let now_unix = unix_now();
        let pings_max = heartbeat::pings_per_tick_max(self.conns.len(), self.beats.ping);
        let draining = self.drain.is_some();
        for key in 0..self.conns.key_end() {
            let may_ping = self.pings_queued < pings_max;
            let sweep = heartbeat::Sweep {
                t,
                now_unix,
                reads_behind,
                may_ping,
                draining,
            };
            let beat = heartbeat::check(&mut self.conns, self.beats, key, sweep);
            match beat {
                Beat::Nothing => {}
                Beat::Ping => {
                    self.pings_queued += 1;
                    self.send_control(key, Bytes::from_static(&heartbeat::PING_FRAME));
                }
                Beat::SseComment => {
                    // A stream's client never answers: a comment every interval keeps
                    // proxies from timing it out, and a dead peer shows up as a failed write.
                    self.send_control(key, Bytes::from_static(sse::HEARTBEAT));
                }
                Beat::Close(code, why) => {
                    if code == close_code::IDLE_TIMEOUT {
                        ShardStats::inc(&self.stats.heartbeat_closes);
                    }
                    self.close_ws(key, code, why)
                }
            }
        }
    }

    fn publish_snapshot(&mut self) {
        let registry = self.subs.registry();
        if self.snapshot_version == registry.version {
            return;
        }
        self.snapshot_version = registry.version;
        let snap: Vec<(Arc<str>, u32)> = registry
            .iter()
            .filter(|c| !c.subscribers.is_empty())
            .map(|c| (c.name.clone(), c.subscribers.len() as u32))
            .collect();
        *self.shared.channels[self.id]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = snap;
    }
}
