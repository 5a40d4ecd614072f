//! Deterministic simulation: a whole engine (every shard, the mesh, the
//! owners) run on one thread over an in-memory network
//! ([`crate::driver::sim`]) and a virtual clock ([`crate::clock`]), with
//! simulated clients driven by one seeded generator. The same seed replays
//! the same schedule, faults and bytes, so a failure is reproduced with
//! `cargo run -p shardcast --example sim -- --seed N`.
//!
//! A run: start an engine whose sizes come from the seed (shards, queue and
//! inbox bounds, history, socket buffers, fault rates); for `steps` steps
//! let clients connect, subscribe (some recovering with `since` after a
//! disconnect), unsubscribe, publish in bursts (also from outside, as
//! `Handle::publish_nowait` does, which fills inboxes), stall, read slowly,
//! close or reset; step every shard once or twice in a seeded order; move the
//! clock. Then drain, and step until every shard has stopped.
//!
//! Checked after every step (and on every frame a client reads):
//! - each subscription's pushes are gap-free and in order from the subscribe
//!   reply on (from `since` when recovered), in the reply's epoch, and no push
//!   arrives for a channel the client is not subscribed to;
//! - every push of a position carries the same data for every subscriber, and
//!   one publication never appears at two positions;
//! - nothing arrives after the server's close frame;
//! - a close code is one the client's own behaviour explains (1000 only after
//!   its close, 4008/4009 only for a client that stalled or read slowly, 4001
//!   only during the drain); an end without a close frame only for those
//!   that stalled or read slowly (their close frame could not be written);
//! - at most one reply per command id, and only to ids that were sent;
//! - outbound queues within `queue_bytes_max` (plus the control allowance),
//!   inboxes within `inbox_msgs_max`, every receive buffer released within
//!   the turn, decoders' partial bytes within their bound;
//! - after the drain: every shard stopped within its bound; no connection,
//!   subscriber, waiter, replay, queued byte, partial byte, lent buffer or
//!   open socket left; every pipe of the network released; every client
//!   ended with a close code its behaviour explains; the engine's live heap,
//!   counted apart from the clients' ([`heap`]), back to what it was before
//!   the first client, within what the engine keeps by design.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shardcast_proto::frame::{encode_frame, OpCode, Role};
use shardcast_proto::{Decoder, DecoderConfig, Message};

use crate::channel::authority::Authority;
use crate::channel::owner::Owner;
use crate::clock::{Clock, VirtualClock};
use crate::config::Config;
use crate::driver::sim::{Faults, Net, Rng, SimDriver};
use crate::shard::mesh::{self, owner_of, Peer, ReplyTo, ShardMsg};
use crate::shard::shared::Shared;
use crate::shard::Shard;

pub mod heap;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Random steps before the drain.
    pub steps: u32,
    /// Keep every trace line (for `--trace`), not only the last ones.
    pub full_trace: bool,
    /// Break the simulation on purpose, to show that its checks catch it.
    pub sabotage: Option<Sabotage>,
}

/// Deliberate mistakes in the simulated clients' view, each of which a check
/// must report (`engine/tests/sim.rs`): a checker that cannot fail proves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Lose the 20th push a client reads: a gap.
    DropPush,
    /// Read the 20th push twice: a repeat.
    RepeatPush,
    /// Take a push as if it arrived after the close frame.
    PushAfterClose,
    /// One client never lets go of its connection: a pipe is left at the end.
    KeepPipe,
    /// A 64-byte block counted as the engine's and kept for each connection,
    /// as a leak in the engine would: its heap does not return to the start.
    LeakPerConnection,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            steps: 300,
            full_trace: false,
            sabotage: None,
        }
    }
}

/// What a passing run did (to see that the schedules reach what they should).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    /// A hash of the whole trace: equal for two runs of one seed.
    pub digest: u64,
    pub steps: u32,
    pub shards: usize,
    pub connects: u32,
    pub pushes: u64,
    pub recovered: u32,
    pub published: u32,
    pub refused: u32,
    pub closes: BTreeMap<u16, u32>,
    pub resets: u32,
    pub simulated: Duration,
    /// The engine's live heap after every connection closed, the drain and
    /// the trims, minus before the first client, in bytes and blocks (the
    /// owners' idle channels left out): None without the counting allocator
    /// ([`heap::Tagging`]).
    pub heap_growth: Option<(i64, i64)>,
    /// Every trace line when `full_trace` was asked.
    pub trace: Vec<String>,
}

/// A broken invariant, with the seed that replays it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: u32,
    pub what: String,
    /// The engine's sizes and the fault rates the seed chose.
    pub config: String,
    /// The last trace lines before the failure.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {}: {}",
            self.seed, self.step, self.what
        )?;
        writeln!(f, "{}", self.config)?;
        writeln!(f, "last events:")?;
        for l in &self.trace {
            writeln!(f, "  {l}")?;
        }
        write!(
            f,
            "replay: cargo run -p shardcast --example sim -- --seed {} --trace",
            self.seed
        )
    }
}

/// Run one seed.
pub fn run(opts: &Options) -> Result<Report, Failure> {
    // What a process allocates once, on first use (thread-locals, lazy
    // statics, the first tracing call sites), is not the engine's to give
    // back: a first run, unchecked, allocates it before any measured one.
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        let mut sim = Sim::new(&Options::new(1));
        sim.heap_checked = false;
        let _ = sim.run_all();
    });
    let mut sim = Sim::new(opts);
    let res = sim.run_all();
    match res {
        Ok(()) => Ok(sim.report()),
        Err(what) => Err(Failure {
            seed: opts.seed,
            step: sim.step,
            what,
            config: sim.config_line.clone(),
            trace: if opts.full_trace {
                std::mem::take(&mut sim.all_trace)
            } else {
                sim.trace.iter().cloned().collect()
            },
        }),
    }
}

const TRACE_KEPT: usize = 60;
/// Longer than the shards' trim period (`shard/mod.rs`, `TRIM_EVERY`).
const WARM_UP: Duration = Duration::from_millis(1_100);
/// How much more the engine's heap may hold, per shard, after every close
/// than before the first client (`Sim::heap_check`): what the engine keeps by
/// design once used. Its lists keep room for 256 entries (`alloc_trim`), its
/// timer wheels' slots room for 64 each (`policy/timer.rs`), and its maps
/// their tables. Measured over seeds 0..10000 (ARCHITECTURE.md): at most
/// 30,048 B and 38 blocks a shard. A leak of one block per connection (60 to
/// 100 connections a run) can hide under the block bound on a seed of
/// several shards, not on one of a single shard.
const HEAP_KEPT_BYTES: i64 = 40 * 1024;
const HEAP_KEPT_BLOCKS: i64 = 48;
const CHANNELS: [&str; 5] = ["h:a", "h:b", "h:c", "h:d", "plain"];

/// A message a client decoded from the server: its opcode, payload and,
/// for a close, its code.
type ServerMsg = (OpCode, Vec<u8>, Option<u16>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Upgrade request sent, waiting for 101.
    Handshake,
    Open,
    /// Our close frame sent, waiting for the server's.
    Closing,
    /// The server's close frame arrived (or EOF); nothing may follow.
    Closed,
    /// Let go of the pipe.
    Done,
}

#[derive(Debug, Clone)]
struct Sub {
    epoch: String,
    next: u64,
    /// A recovery replays up to this offset.
    upto: u64,
}

#[derive(Debug)]
enum Pending {
    Subscribe {
        channel: String,
        since: Option<(String, u64)>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish,
}

struct Client {
    id: usize,
    pipe: u32,
    state: State,
    key: String,
    inbuf: Vec<u8>,
    dec: Decoder,
    subs: BTreeMap<String, Sub>,
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    /// Commands to send once the upgrade is answered.
    queued: Vec<String>,
    stalled_until: Option<Duration>,
    /// Stalled or read slowly at some point: may be closed as a slow consumer
    /// or for a missed heartbeat, or cut without a close frame.
    laggard: bool,
    slow: bool,
    close_code: Option<u16>,
    /// The server's 503 to an upgrade during the drain.
    refused: bool,
    /// When it sent its close frame.
    closing_at: Option<Duration>,
    /// Reset by the client: no close code expected.
    abrupt: bool,
    /// Most bytes seen waiting for this client after a shard's turn (its
    /// queue on the server and the unread socket buffer).
    backlog_max: usize,
    /// More than a socket buffer's worth waited in its queue after a step:
    /// the network, not the engine, held its bytes back.
    backlogged: bool,
    /// Bytes published to its channels since it last had nothing waiting
    /// (a burst that can fill its queue within one turn).
    pressure: usize,

    /// The newest position seen per channel (for `since` after a reconnect).
    seen: BTreeMap<String, (String, u64)>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    clock: Arc<VirtualClock>,
    net: Arc<Mutex<Net>>,
    /// The engine's allocations (shards, drivers, mesh, owners).
    heap: heap::Scope,
    /// Its live bytes once warmed up, before the first client.
    heap_start: i64,
    heap_blocks: i64,
    /// Whether to check the heap at the end (not in the process's warm-up run).
    heap_checked: bool,
    shards: Vec<Option<Shard>>,
    /// Shards that left their loop (kept for the checks at the end).
    stopped: Vec<Shard>,
    peers: Vec<Peer>,
    shared: Arc<Shared>,
    cfg: Arc<Config>,
    clients: Vec<Client>,
    /// Which client holds each pipe.
    by_pipe: BTreeMap<u32, usize>,
    steps: u32,
    step: u32,
    full_trace: bool,
    trace: VecDeque<String>,
    all_trace: Vec<String>,
    digest: u64,
    /// (channel, epoch, offset) → data, from the first push of that position.
    positions: BTreeMap<(String, String, u64), String>,
    /// data → its position (a publication lands at one position only).
    placed: BTreeMap<String, (String, String, u64)>,
    next_pub: u64,
    drain_from: Option<Duration>,
    drain_window: Duration,
    report: Report,
    config_line: String,
    faults: Faults,
    /// Bytes published per channel since the mesh was last quiet.
    recent: BTreeMap<String, usize>,
    sabotage: Option<Sabotage>,
    /// What [`Sabotage::LeakPerConnection`] keeps.
    leaked: Vec<Box<[u8]>>,
}

fn fnv(h: u64, s: &str) -> u64 {
    let mut h = h;
    for b in s.bytes().chain(std::iter::once(b'\n')) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn sim_config(rng: &mut Rng) -> Config {
    let mut c = Config {
        shards: rng.range(1, 4) as usize,
        pin_cores: false,
        ..Config::default()
    };
    let l = &mut c.limits;
    l.conns_per_shard_max = 256;
    l.message_bytes_max = 2048;
    l.queue_bytes_max = [2048, 8192, 65_536][rng.below(3) as usize];
    l.inbox_msgs_max = [4, 16, 256, 65_536][rng.below(4) as usize];
    l.router_overflow_msgs_max = [2, 8, 64, 8192][rng.below(4) as usize];
    l.handshake_timeout_ms = 3_000;
    l.close_linger_ms = 500;
    l.ping_interval_ms = 2_000;
    l.pong_timeout_ms = 1_000;
    l.drain_window_ms = 2_000;
    l.reconnect_spread_ms = 1_000;
    l.frame_timeout_ms = 2_000;
    l.idle_channels_max = [1, 4, 1000][rng.below(3) as usize];
    let r = &mut c.recovery;
    r.page_bytes_max = [256, 1024, 16_384][rng.below(3) as usize];
    r.held_bytes_max = [2048, 8192, 65_536][rng.below(3) as usize];
    r.replays_per_shard_max = rng.range(1, 4) as usize;
    r.stall_timeout_ms = 3_000;
    c.namespaces.insert(
        "h".into(),
        crate::policy::auth::Namespace {
            history_size: [4, 16, 100][rng.below(3) as usize],
            ..Default::default()
        },
    );
    c
}

/// The trace's first line: the seed's config and faults.
fn config_line(cfg: &Config, n: usize, faults: &Faults) -> String {
    let l = &cfg.limits;
    format!(
        "config: shards {n}, queue {} B, inbox {}, overflow {}, idle channels {}, history {}, page {} B, held {} B, replays {}, faults {:?}",
        l.queue_bytes_max,
        l.inbox_msgs_max,
        l.router_overflow_msgs_max,
        l.idle_channels_max,
        cfg.namespaces["h"].history_size,
        cfg.recovery.page_bytes_max,
        cfg.recovery.held_bytes_max,
        cfg.recovery.replays_per_shard_max,
        faults,
    )
}

impl Sim {
    fn new(opts: &Options) -> Sim {
        let mut rng = Rng::new(opts.seed);
        let cfg = sim_config(&mut rng);
        cfg.validate().expect("the simulation's config is valid");
        let cfg = Arc::new(cfg);
        let n = cfg.shard_count();
        let net = Arc::new(Mutex::new(Net::new(n)));
        let clock = Arc::new(VirtualClock::default());
        let faults = Faults::random(&mut rng);
        let heap = heap::Scope::new();
        let (peers, shared, mut shards) =
            heap.enter(|| Sim::engine(opts, &cfg, &net, &clock, &faults, &mut rng));
        // Warm-up: a second passes and each shard takes a turn, so the first
        // trim gives back what the shard sized for a burst at its start (the
        // completions vector), before the heap is measured.
        clock.advance(WARM_UP);
        heap.enter(|| {
            for s in shards.iter_mut().flatten() {
                s.turn();
            }
        });
        let heap_start = heap.live();
        let heap_blocks = heap.blocks();
        let sim_faults = faults.clone();
        let mut sim = Sim {
            seed: opts.seed,
            rng,
            clock,
            net,
            heap,
            heap_start,
            heap_blocks,
            heap_checked: true,
            shards,
            stopped: Vec::new(),
            peers,
            shared,
            cfg,
            clients: Vec::new(),
            by_pipe: BTreeMap::new(),
            steps: opts.steps,
            step: 0,
            full_trace: opts.full_trace,
            trace: VecDeque::new(),
            all_trace: Vec::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            positions: BTreeMap::new(),
            placed: BTreeMap::new(),
            next_pub: 0,
            drain_from: None,
            drain_window: Duration::ZERO,
            report: Report {
                seed: opts.seed,
                shards: n,
                ..Report::default()
            },
            config_line: String::new(),
            faults: sim_faults,
            recent: BTreeMap::new(),
            sabotage: opts.sabotage,
            leaked: Vec::new(),
        };
        let line = config_line(&sim.cfg, n, &faults);
        sim.config_line = line.clone();
        sim.log(line);
        sim
    }

    /// The engine: every shard with its driver, inbox and peers, and what they share.
    fn engine(
        opts: &Options,
        cfg: &Arc<Config>,
        net: &Arc<Mutex<Net>>,
        clock: &Arc<VirtualClock>,
        faults: &Faults,
        rng: &mut Rng,
    ) -> (Vec<Peer>, Arc<Shared>, Vec<Option<Shard>>) {
        let n = cfg.shard_count();
        let mut peers = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let (p, i) = mesh::inbox(cfg.limits.inbox_msgs_max).expect("eventfd");
            peers.push(p);
            inboxes.push(i);
        }
        let authority = Authority::start(None, "", &peers).expect("local authority");
        let shared = Arc::new(Shared::new(n, None, authority));
        let mut shards = Vec::with_capacity(n);
        for (id, inbox) in inboxes.into_iter().enumerate() {
            let driver = SimDriver::new(id, net.clone(), rng.fork(), faults.clone(), 8, 4096);
            let mut s = Shard::with_clock(
                id,
                cfg.clone(),
                Box::new(driver),
                peers.clone(),
                inbox,
                shared.clone(),
                Clock::Virtual(clock.clone()),
            );
            s.core.owner.set_boot_nanos(opts.seed);
            shards.push(Some(s));
        }
        (peers, shared, shards)
    }

    fn log(&mut self, line: String) {
        let line = format!(
            "[{} {}ms] {line}",
            self.step,
            self.clock.elapsed().as_millis()
        );
        self.digest = fnv(self.digest, &line);
        if self.full_trace {
            self.all_trace.push(line.clone());
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn report(&mut self) -> Report {
        let mut r = self.report.clone();
        r.digest = self.digest;
        r.steps = self.step;
        r.simulated = self.clock.elapsed();
        r.trace = std::mem::take(&mut self.all_trace);
        r
    }

    fn run_all(&mut self) -> Result<(), String> {
        while self.step < self.steps {
            self.step += 1;
            let actions = self.rng.range(0, 3);
            for _ in 0..actions {
                self.act()?;
            }
            self.turn_shards()?;
            self.clients_io()?;
            self.relieve();
            self.advance();
            self.check()?;
        }
        self.begin_drain();
        let l = &self.cfg.limits;
        // Every connection is told within the window and closed within the
        // linger after; the shards' own bound is 2 lingers and a second more.
        let bound = self.drain_window + Duration::from_millis(2 * l.close_linger_ms + 2_000);
        let start = self.clock.elapsed();
        while self.shards.iter().any(|s| s.is_some()) {
            if self.clock.elapsed() - start > bound {
                let live: Vec<String> = self
                    .shards
                    .iter()
                    .flatten()
                    .map(|s| format!("shard {} with {} conns", s.core.id, s.core.conns.len()))
                    .collect();
                return Err(format!(
                    "drain did not end within {bound:?}: {}",
                    live.join(", ")
                ));
            }
            self.step += 1;
            self.turn_shards()?;
            self.clients_io()?;
            self.advance();
            self.check()?;
        }
        // The shards are gone: read what is left, then every client lets go.
        self.settle()?;
        self.clients_io()?;
        self.finish()
    }

    // ---- the schedule ----

    fn act(&mut self) -> Result<(), String> {
        let open: Vec<usize> = self
            .clients
            .iter()
            .filter(|c| c.state == State::Open)
            .map(|c| c.id)
            .collect();
        let live = self
            .clients
            .iter()
            .filter(|c| c.state != State::Done)
            .count();
        let roll = self.rng.below(100);
        if open.is_empty() || (roll < 12 && live < 40) {
            self.connect();
            return Ok(());
        }
        let c = open[self.rng.below(open.len() as u64) as usize];
        match roll {
            0..=11 => {
                self.connect();
            }
            12..=34 => self.subscribe(c, None),
            35..=40 => self.unsubscribe(c),
            41..=64 => self.publish(c),
            65..=71 => self.publish_outside(),
            72..=77 => {
                let ms = self.rng.range(200, 6_000);
                let until = self.clock.elapsed() + Duration::from_millis(ms);
                let cl = &mut self.clients[c];
                cl.stalled_until = Some(until);
                cl.laggard = true;
                self.log(format!("client {c} stalls {ms} ms"));
            }
            78..=82 => {
                let cl = &mut self.clients[c];
                cl.slow = !cl.slow;
                cl.laggard = true;
                let slow = cl.slow;
                self.log(format!("client {c} reads slowly: {slow}"));
            }
            83..=90 => {
                self.send_frame(c, OpCode::Close, &1000u16.to_be_bytes());
                self.clients[c].state = State::Closing;
                self.clients[c].closing_at = Some(self.clock.elapsed());
                self.log(format!("client {c} closes"));
            }
            91..=95 => {
                let cl = &mut self.clients[c];
                cl.abrupt = true;
                cl.state = State::Done;
                let pipe = cl.pipe;
                self.net.lock().expect("net").reset(pipe);
                self.report.resets += 1;
                self.log(format!("client {c} resets"));
            }
            _ => self.reconnect(),
        }
        Ok(())
    }

    fn connect(&mut self) -> usize {
        let shard = self.rng.below(self.shards.len() as u64) as usize;
        let pipe = self.net.lock().expect("net").connect(shard);
        if self.sabotage == Some(Sabotage::LeakPerConnection) {
            let leak = self.heap.enter(|| vec![0u8; 64].into_boxed_slice());
            self.leaked.push(leak);
        }
        let id = self.clients.len();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let key = shardcast_proto::handshake::client_key(nonce);
        let req = shardcast_proto::handshake::client_request("sim", "/ws", &key, &[], &[]);
        self.write_split(pipe, &req);
        self.clients.push(Client {
            id,
            pipe,
            state: State::Handshake,
            key,
            inbuf: Vec::new(),
            dec: Decoder::default(),
            subs: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_id: 1,
            queued: Vec::new(),
            stalled_until: None,
            laggard: false,
            slow: false,
            close_code: None,
            refused: false,
            closing_at: None,
            abrupt: false,
            backlog_max: 0,
            pressure: 0,
            backlogged: false,
            seen: BTreeMap::new(),
        });
        self.by_pipe.insert(pipe, id);
        self.report.connects += 1;
        self.log(format!(
            "client {id} connects to shard {shard} (pipe {pipe})"
        ));
        id
    }

    /// A client that is gone comes back and recovers its channels with `since`.
    fn reconnect(&mut self) {
        let gone: Vec<usize> = self
            .clients
            .iter()
            .filter(|c| c.state == State::Done && !c.seen.is_empty())
            .map(|c| c.id)
            .collect();
        if gone.is_empty() {
            self.connect();
            return;
        }
        let old = gone[self.rng.below(gone.len() as u64) as usize];
        let seen = std::mem::take(&mut self.clients[old].seen);
        let id = self.connect();
        self.log(format!("client {id} continues client {old}"));
        for (channel, (epoch, offset)) in seen {
            self.subscribe(id, Some((channel, epoch, offset)));
        }
    }

    fn command(&mut self, c: usize, pending: Pending, body: String) {
        let cl = &mut self.clients[c];
        let id = cl.next_id;
        cl.next_id += 1;
        cl.pending.insert(id, pending);
        // Its reply: an error 111 is about 140 bytes.
        cl.pressure += 140;
        let text = format!(r#"{{"id":{id},{body}}}"#);
        if cl.state == State::Handshake {
            cl.queued.push(text);
        } else {
            self.send_frame(c, OpCode::Text, text.as_bytes());
        }
    }

    fn subscribe(&mut self, c: usize, since: Option<(String, String, u64)>) {
        let (channel, since) = match since {
            Some((ch, e, o)) => (ch, Some((e, o))),
            None => {
                let ch = CHANNELS[self.rng.below(CHANNELS.len() as u64) as usize].to_string();
                (ch, None)
            }
        };
        let cl = &self.clients[c];
        let busy = cl.subs.contains_key(&channel)
            || cl.pending.values().any(|p| match p {
                Pending::Subscribe { channel: ch, .. } | Pending::Unsubscribe { channel: ch } => {
                    *ch == channel
                }
                Pending::Publish => false,
            });
        if busy {
            return;
        }
        let body = match &since {
            Some((e, o)) => format!(
                r#""op":"subscribe","channel":"{channel}","since":{{"epoch":"{e}","offset":{o}}}"#
            ),
            None => format!(r#""op":"subscribe","channel":"{channel}""#),
        };
        // Publications not yet fanned out may reach it as soon as it joins.
        self.clients[c].pressure += self.recent.get(&channel).copied().unwrap_or(0);
        self.log(format!("client {c} subscribes {channel} since {since:?}"));
        self.command(c, Pending::Subscribe { channel, since }, body);
    }

    fn unsubscribe(&mut self, c: usize) {
        let cl = &self.clients[c];
        let Some(channel) = cl
            .subs
            .keys()
            .find(|ch| {
                !cl.pending
                    .values()
                    .any(|p| matches!(p, Pending::Unsubscribe { channel } if channel == *ch))
            })
            .cloned()
        else {
            return;
        };
        let body = format!(r#""op":"unsubscribe","channel":"{channel}""#);
        self.log(format!("client {c} unsubscribes {channel}"));
        self.command(c, Pending::Unsubscribe { channel }, body);
    }

    fn publish(&mut self, c: usize) {
        let channel = CHANNELS[self.rng.below(CHANNELS.len() as u64) as usize];
        let burst = self.rng.range(1, 12);
        for _ in 0..burst {
            self.next_pub += 1;
            let body = format!(
                r#""op":"publish","channel":"{channel}","data":{{"p":{}}}"#,
                self.next_pub
            );
            self.command(c, Pending::Publish, body);
        }
        self.report.published += burst as u32;
        self.press(channel, burst as usize);
        self.log(format!("client {c} publishes {burst} to {channel}"));
    }

    /// As `Handle::publish_nowait`: straight into the owner's inbox.
    fn publish_outside(&mut self) {
        let channel = CHANNELS[self.rng.below(CHANNELS.len() as u64) as usize];
        let burst = self.rng.range(1, 40);
        let owner = owner_of(channel, self.peers.len());
        let mut refused = 0;
        for _ in 0..burst {
            self.next_pub += 1;
            let msg = ShardMsg::Publish {
                channel: Arc::from(channel),
                data: Bytes::from(format!(r#"{{"p":{}}}"#, self.next_pub)),
                reply: ReplyTo::Nobody,
            };
            if self.peers[owner].try_send(msg).is_err() {
                refused += 1;
            }
        }
        self.report.published += burst as u32 - refused;
        self.press(channel, burst as usize);
        self.report.refused += refused;
        self.log(format!(
            "outside publishes {burst} to {channel} (owner {owner}), {refused} refused at a full inbox"
        ));
    }

    /// `count` pushes are on their way to every subscriber of `channel`.
    fn press(&mut self, channel: &str, count: usize) {
        // A push is its data and about 70 bytes of frame header and JSON.
        let bytes = count * 90;
        *self.recent.entry(channel.to_string()).or_default() += bytes;
        for cl in &mut self.clients {
            let wants = cl.subs.contains_key(channel)
                || cl
                    .pending
                    .values()
                    .any(|p| matches!(p, Pending::Subscribe { channel: ch, .. } if ch == channel));
            if wants {
                cl.pressure += bytes;
            }
        }
    }

    fn begin_drain(&mut self) {
        self.drain_window = Duration::from_millis(self.rng.range(0, 3_000));
        self.drain_from = Some(self.clock.elapsed());
        let window = self.drain_window;
        for (i, p) in self.peers.iter().enumerate() {
            let mut msg = ShardMsg::Drain { window };
            // A full inbox: let its shard take a turn until the message fits.
            loop {
                match p.try_send(msg) {
                    Ok(()) => break,
                    Err(m) => {
                        msg = m;
                        if let Some(s) = self.shards[i].as_mut() {
                            self.heap.enter(|| s.turn());
                        } else {
                            break;
                        }
                    }
                }
            }
        }
        self.log(format!("drain over {window:?}"));
    }

    /// Each running shard takes one or two turns, in a seeded order.
    fn turn_shards(&mut self) -> Result<(), String> {
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        for i in (1..order.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        for i in order {
            let turns = self.rng.range(1, 2);
            for _ in 0..turns {
                let Some(s) = self.shards[i].as_mut() else {
                    break;
                };
                let running = self.heap.enter(|| s.turn());
                self.observe_backlog(i);
                let lent = self.net.lock().expect("net").lent[i];
                if lent != 0 {
                    return Err(format!(
                        "shard {i}: {lent} receive buffers not released after its turn"
                    ));
                }
                if !running {
                    self.shard_stopped(i)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Remember each of shard `i`'s clients' backlog (for `on_close`).
    fn observe_backlog(&mut self, i: usize) {
        let Some(s) = self.shards[i].as_ref() else {
            return;
        };
        let net = self.net.lock().expect("net");
        for key in s.core.conns.keys() {
            let conn = s.core.conns.get(key).expect("listed");
            let pipe = conn.sock.0;
            let Some(c) = self.by_pipe.get(&pipe) else {
                continue;
            };
            let unread = net.pipe(pipe).map_or(0, |p| p.to_client.len());
            let cl = &mut self.clients[*c];
            cl.backlog_max = cl.backlog_max.max(conn.queued_bytes() + unread);
        }
    }

    /// Forget the pressure on clients with nothing waiting for them, once no
    /// message is on its way between shards.
    fn relieve(&mut self) {
        let socket_bytes = self.faults.socket_bytes;
        for s in self.shards.iter().flatten() {
            for key in s.core.conns.keys() {
                let conn = s.core.conns.get(key).expect("listed");
                if conn.queued_bytes() > socket_bytes {
                    if let Some(c) = self.by_pipe.get(&conn.sock.0) {
                        self.clients[*c].backlogged = true;
                    }
                }
            }
        }
        let quiet = self.net.lock().expect("net").idle()
            && self
                .shards
                .iter()
                .flatten()
                .all(|s| s.core.inbox.rx.is_empty() && !s.core.router.has_pending());
        if !quiet {
            return;
        }
        self.recent.clear();
        let net = self.net.lock().expect("net");
        for s in self.shards.iter().flatten() {
            for key in s.core.conns.keys() {
                let conn = s.core.conns.get(key).expect("listed");
                let pipe = conn.sock.0;
                let unread = net.pipe(pipe).map_or(0, |p| p.to_client.len());
                if conn.queued_bytes() + unread == 0 {
                    if let Some(c) = self.by_pipe.get(&pipe) {
                        self.clients[*c].pressure = 0;
                    }
                }
            }
        }
    }

    /// A shard left its loop: it must have left nothing behind.
    fn shard_stopped(&mut self, i: usize) -> Result<(), String> {
        let s = self.shards[i].take().expect("running");
        let core = &s.core;
        self.log(format!("shard {i} stopped"));
        if self.drain_from.is_none() {
            return Err(format!("shard {i} stopped before the drain"));
        }
        let mut left = Vec::new();
        if !core.conns.is_empty() {
            left.push(format!("{} connections", core.conns.len()));
        }
        if core.subs.more_lists() != 0 {
            left.push("subscription lists".into());
        }
        let st = &self.shared.stats[i];
        let gauge = |g: &std::sync::atomic::AtomicU64| g.load(std::sync::atomic::Ordering::Relaxed);
        if gauge(&st.queued_bytes) != 0 {
            left.push(format!("queued_bytes gauge {}", gauge(&st.queued_bytes)));
        }
        if gauge(&st.partial_bytes) != 0 {
            left.push(format!("{} partial bytes", gauge(&st.partial_bytes)));
        }
        if gauge(&st.conns_open) != 0 {
            left.push(format!("conns_open gauge {}", gauge(&st.conns_open)));
        }
        let net = self.net.lock().expect("net");
        if net.open[i] != 0 {
            left.push(format!("{} sockets open in the driver", net.open[i]));
        }
        drop(net);
        self.stopped.push(s);
        if !left.is_empty() {
            return Err(format!("shard {i} stopped leaving {}", left.join(", ")));
        }
        Ok(())
    }

    /// Every shard has stopped. Answers still on their way between shards
    /// (a recovery asked of another owner, say) would be dropped with the
    /// process; here they are handed over, and then nothing may be left:
    /// no channel with subscribers or waiters, no replay slot.
    fn settle(&mut self) -> Result<(), String> {
        loop {
            self.heap.enter(|| {
                for s in &mut self.stopped {
                    s.core.drain_inbox();
                    s.core.router.flush();
                }
            });
            let busy = self
                .stopped
                .iter()
                .any(|s| !s.core.inbox.rx.is_empty() || s.core.router.has_pending());
            if !busy {
                break;
            }
        }
        for s in &self.stopped {
            let core = &s.core;
            let i = core.id;
            let mut left = Vec::new();
            let held = core
                .subs
                .registry()
                .iter()
                .filter(|c| !c.subscribers.is_empty() || !c.waiters.is_empty())
                .count();
            if held > 0 {
                left.push(format!("{held} channels with subscribers or waiters"));
            }
            if core.replays.slots_used() != 0 || core.replays.queued() != 0 {
                left.push(format!(
                    "{} replay slots held, {} recoveries waiting",
                    core.replays.slots_used(),
                    core.replays.queued()
                ));
            }
            if !left.is_empty() {
                return Err(format!(
                    "shard {i} left {} once every answer arrived",
                    left.join(", ")
                ));
            }
        }
        self.heap_check()?;
        // The process exits: the drivers go, and the kernel closes what they held.
        self.stopped.clear();
        Ok(())
    }

    /// Every connection closed, the drain ran and every shard stopped:
    /// the engine's live heap is back where it was before the first client,
    /// within what it keeps by design ([`HEAP_KEPT_BYTES`] and
    /// [`HEAP_KEPT_BLOCKS`] a shard). The bytes a shard wrote that the clients have not
    /// read are the (simulated) kernel's, not the engine's: left out.
    fn heap_check(&mut self) -> Result<(), String> {
        if !self.heap_checked || !heap::installed() {
            return Ok(());
        }
        let unread = self.net.lock().expect("net").client_buffers() as i64;
        // The owners keep channels nobody listens to, with their history, by
        // design (up to `idle_channels_max`): each is swapped for a new one
        // (as built at the start) before the count.
        for s in &mut self.stopped {
            let core = &mut s.core;
            let fresh = self.heap.enter(|| {
                Owner::new(
                    core.id,
                    core.cfg.limits.idle_channels_max,
                    Arc::new(core.cfg.namespaces.clone()),
                    core.shared.authority.positions(),
                )
            });
            drop(std::mem::replace(&mut core.owner, fresh));
        }
        let growth = self.heap.live() - unread - self.heap_start;
        let blocks = self.heap.blocks()
            - self.net.lock().expect("net").client_blocks() as i64
            - self.heap_blocks;
        self.report.heap_growth = Some((growth, blocks));
        let n = self.stopped.len() as i64;
        if growth > HEAP_KEPT_BYTES * n || blocks > HEAP_KEPT_BLOCKS * n {
            return Err(format!(
                "engine heap grew by {growth} B in {blocks} blocks from before the first client to after every close (at most {} B and {} blocks for {n} shards)",
                HEAP_KEPT_BYTES * n,
                HEAP_KEPT_BLOCKS * n,
            ));
        }
        Ok(())
    }

    fn advance(&mut self) {
        let ms = match self.rng.below(100) {
            // Less than the pong timeout: a client that reads every step
            // answers each ping in time.
            0..=79 => self.rng.range(0, 20),
            80..=97 => self.rng.range(20, 150),
            _ => self.rng.range(150, 300),
        };
        self.clock.advance(Duration::from_millis(ms));
    }

    // ---- the clients ----

    fn write_split(&mut self, pipe: u32, bytes: &[u8]) {
        self.net.lock().expect("net").write(pipe, bytes);
    }

    fn send_frame(&mut self, c: usize, op: OpCode, payload: &[u8]) {
        let mask = (self.rng.next_u64() as u32).to_le_bytes();
        let mut out = Vec::with_capacity(payload.len() + 14);
        encode_frame(&mut out, op, true, payload, Some(mask));
        let pipe = self.clients[c].pipe;
        self.write_split(pipe, &out);
    }

    fn clients_io(&mut self) -> Result<(), String> {
        let now = self.clock.elapsed();
        for c in 0..self.clients.len() {
            let cl = &mut self.clients[c];
            if cl.state == State::Done {
                continue;
            }
            if cl.stalled_until.is_some_and(|t| t > now) {
                continue;
            }
            cl.stalled_until = None;
            let budget = if cl.slow {
                self.rng.range(1, 256) as usize
            } else {
                1 << 20
            };
            let pipe = cl.pipe;
            let mut bytes = std::mem::take(&mut self.clients[c].inbuf);
            let got = self.net.lock().expect("net").read(pipe, budget, &mut bytes);
            self.clients[c].inbuf = bytes;
            self.client_bytes(c)?;
            if got.is_none() {
                self.client_eof(c)?;
            }
        }
        Ok(())
    }

    fn client_bytes(&mut self, c: usize) -> Result<(), String> {
        if !self.client_handshake(c)? {
            return Ok(());
        }
        let cl = &mut self.clients[c];
        if cl.refused {
            // The rest of the 503 answer.
            cl.inbuf.clear();
        }
        if cl.inbuf.is_empty() {
            return Ok(());
        }
        if cl.state == State::Closed {
            return Err(format!(
                "client {c}: {} bytes after the server's close frame",
                cl.inbuf.len()
            ));
        }
        let msgs = self.client_frames(c)?;
        for (op, payload, code) in msgs {
            match op {
                OpCode::Text | OpCode::Binary => self.on_text(c, &payload)?,
                OpCode::Ping if self.clients[c].state == State::Open => {
                    self.send_frame(c, OpCode::Pong, &payload);
                }
                OpCode::Close => self.on_close(c, code.unwrap_or(1005))?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The upgrade's answer, while a client waits for it; false when there is
    /// nothing more to read yet (an incomplete answer, or a refusal).
    fn client_handshake(&mut self, c: usize) -> Result<bool, String> {
        let cl = &mut self.clients[c];
        if cl.state == State::Handshake {
            match shardcast_proto::handshake::verify_response(&cl.inbuf, &cl.key) {
                Ok(None) => return Ok(false),
                Ok(Some((_, used))) => {
                    cl.inbuf.drain(..used);
                    cl.state = State::Open;
                    let queued = std::mem::take(&mut cl.queued);
                    self.log(format!("client {c} upgraded"));
                    for text in queued {
                        self.send_frame(c, OpCode::Text, text.as_bytes());
                    }
                }
                Err(e) => {
                    let head = String::from_utf8_lossy(&cl.inbuf).into_owned();
                    if self.drain_from.is_some() && head.starts_with("HTTP/1.1 503") {
                        cl.refused = true;
                        cl.state = State::Closed;
                        cl.inbuf.clear();
                        self.log(format!("client {c} refused during the drain"));
                        return Ok(false);
                    }
                    return Err(format!("client {c}: bad upgrade answer ({e:?}): {head:?}"));
                }
            }
        }
        Ok(true)
    }

    /// The complete frames in a client's input, decoded (the rest stays for
    /// the next read); nothing may follow the server's close frame.
    fn client_frames(&mut self, c: usize) -> Result<Vec<ServerMsg>, String> {
        let cl = &mut self.clients[c];
        let cfg = DecoderConfig {
            role: Role::Client,
            message_bytes_max: 1 << 24,
        };
        let mut msgs: Vec<ServerMsg> = Vec::new();
        let mut input = std::mem::take(&mut cl.inbuf);
        let mut closed_at = None;
        // Feed frame by frame so bytes after a close frame are seen, not skipped.
        let mut at = 0;
        while at < input.len() {
            let Some((h, hl)) =
                shardcast_proto::frame::FrameHeader::parse(&input[at..], Role::Client)
                    .map_err(|e| format!("client {c}: bad frame from the server: {e:?}"))?
            else {
                break;
            };
            let end = at + hl + h.payload_len as usize;
            if end > input.len() {
                break;
            }
            if closed_at.is_some() {
                return Err(format!(
                    "client {c}: a frame ({:?}) after the server's close frame",
                    h.opcode
                ));
            }
            cl.dec
                .feed(&cfg, &mut input[at..end], |m| match m {
                    Message::Text(t) => msgs.push((OpCode::Text, t.to_vec(), None)),
                    Message::Binary(t) => msgs.push((OpCode::Binary, t.to_vec(), None)),
                    Message::Ping(p) => msgs.push((OpCode::Ping, p.to_vec(), None)),
                    Message::Pong(_) => {}
                    Message::Close(code) => {
                        msgs.push((OpCode::Close, Vec::new(), Some(code.map_or(1005, |c| c.0))))
                    }
                })
                .map_err(|e| format!("client {c}: bad frame from the server: {e:?}"))?;
            if h.opcode == OpCode::Close {
                closed_at = Some(end);
            }
            at = end;
        }
        input.drain(..at);
        cl.inbuf = input;
        Ok(msgs)
    }

    fn on_close(&mut self, c: usize, code: u16) -> Result<(), String> {
        let draining = self.drain_from.is_some();
        let cl = &mut self.clients[c];
        // A recovery under way: replaying, or asked for and not yet answered
        // (its page may have left the history meanwhile).
        let replaying = cl.subs.values().any(|s| s.next <= s.upto)
            || cl
                .pending
                .values()
                .any(|p| matches!(p, Pending::Subscribe { since: Some(_), .. }));
        let ok = match code {
            1000 => cl.state == State::Closing,
            4001 => draining,
            // A slow consumer: a reader that stalled or read slowly, one whose
            // backlog grew past a quarter of the queue bound (a fast reader
            // behind a small socket buffer), or one whose replay fell out of
            // history or behind the live channel.
            4008 => {
                cl.laggard
                    || cl.backlogged
                    || replaying
                    || (cl.backlog_max.max(cl.pressure)) * 4 >= self.cfg.limits.queue_bytes_max
            }
            4009 => cl.laggard || cl.backlogged,
            _ => false,
        };
        *self.report.closes.entry(code).or_default() += 1;
        self.log(format!("client {c} got close {code}"));
        let cl = &mut self.clients[c];
        if !ok {
            return Err(format!(
                "client {c}: close code {code} not explained (state {:?}, laggard {}, draining {draining})",
                cl.state, cl.laggard
            ));
        }
        let echo = cl.state == State::Open;
        cl.close_code = Some(code);
        cl.state = State::Closed;
        if echo {
            // Answer the close, then shut our side, as a client library does.
            let mask = (self.rng.next_u64() as u32).to_le_bytes();
            let mut out = Vec::new();
            encode_frame(
                &mut out,
                OpCode::Close,
                true,
                &code.to_be_bytes(),
                Some(mask),
            );
            let mut net = self.net.lock().expect("net");
            net.write(self.clients[c].pipe, &out);
        }
        let pipe = self.clients[c].pipe;
        self.net.lock().expect("net").fin(pipe);
        Ok(())
    }

    fn client_eof(&mut self, c: usize) -> Result<(), String> {
        let cl = &mut self.clients[c];
        let pipe = cl.pipe;
        // A handshake the drain's end cut short gets no 503: the shard is stopping.
        let cut = cl.state == State::Handshake && self.drain_from.is_some();
        // A close is bounded by `close_linger_ms`: one that could not finish
        // in time (its close frame behind a backlog, the reply not yet read)
        // is cut. That is the client's own close, or the drain's.
        let now = self.clock.elapsed();
        let linger = Duration::from_millis(self.cfg.limits.close_linger_ms);
        let began = match cl.state {
            State::Closing => cl.closing_at,
            State::Open => self.drain_from,
            _ => None,
        };
        let lingered = began.is_some_and(|t| now.saturating_sub(t) >= linger);
        if cl.state != State::Closed
            && !cl.laggard
            && !cl.backlogged
            && !cl.abrupt
            && !cut
            && !lingered
        {
            return Err(format!(
                "client {c}: the server closed without a close frame (state {:?}, close began {began:?}, now {now:?})",
                cl.state
            ));
        }
        cl.refused |= cut || lingered;
        cl.state = State::Done;
        if self.sabotage == Some(Sabotage::KeepPipe) {
            self.sabotage = None;
            self.log(format!("client {c} keeps its pipe (sabotage)"));
            return Ok(());
        }
        self.net.lock().expect("net").let_go(pipe);
        self.log(format!("client {c} sees EOF"));
        Ok(())
    }

    fn on_text(&mut self, c: usize, text: &[u8]) -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
            format!(
                "client {c}: text frame is not JSON ({e}): {}",
                String::from_utf8_lossy(text)
            )
        })?;
        if let Some(id) = v.get("id").and_then(|i| i.as_u64()) {
            return self.on_reply(c, id, &v);
        }
        if v.get("op").is_some() {
            return Ok(());
        }
        let (Some(channel), Some(offset), Some(epoch)) = (
            v.get("channel").and_then(|x| x.as_str()),
            v.get("offset").and_then(|x| x.as_u64()),
            v.get("epoch").and_then(|x| x.as_str()),
        ) else {
            return Err(format!("client {c}: unexpected message {v}"));
        };
        let data = v.get("data").map(|d| d.to_string()).unwrap_or_default();
        self.report.pushes += 1;
        if self.report.pushes == 20 {
            match self.sabotage {
                Some(Sabotage::DropPush) => return Ok(()),
                Some(Sabotage::RepeatPush) => {
                    // Take it once now; the code below takes it again.
                    self.sabotage = None;
                    self.report.pushes -= 1;
                    self.on_text(c, text)?;
                }
                Some(Sabotage::PushAfterClose) => {
                    self.clients[c].state = State::Closed;
                    let mut frame = Vec::new();
                    encode_frame(&mut frame, OpCode::Text, true, text, None);
                    self.clients[c].inbuf.extend_from_slice(&frame);
                    return self.client_bytes(c);
                }
                _ => {}
            }
        }
        self.check_push(c, channel, epoch, offset, data)
    }

    /// A push, checked against the client's subscription (the next offset in
    /// its epoch) and against what every other subscriber got at that position.
    fn check_push(
        &mut self,
        c: usize,
        channel: &str,
        epoch: &str,
        offset: u64,
        data: String,
    ) -> Result<(), String> {
        let cl = &mut self.clients[c];
        let Some(sub) = cl.subs.get_mut(channel) else {
            return Err(format!(
                "client {c}: push {channel}@{epoch}:{offset} without a subscription"
            ));
        };
        if sub.epoch != epoch || sub.next != offset {
            return Err(format!(
                "client {c}: push {channel}@{epoch}:{offset}, expected {}:{} (gap, repeat or epoch change)",
                sub.epoch, sub.next
            ));
        }
        sub.next += 1;
        cl.seen
            .insert(channel.to_string(), (epoch.to_string(), offset));
        let pos = (channel.to_string(), epoch.to_string(), offset);
        match self.positions.get(&pos) {
            Some(d) if *d != data => {
                return Err(format!(
                "client {c}: {channel}@{epoch}:{offset} carries {data}, another subscriber got {d}"
            ))
            }
            Some(_) => {}
            None => {
                if let Some(other) = self.placed.get(&data) {
                    return Err(format!("publication {data} at {pos:?} and at {other:?}"));
                }
                self.placed.insert(data.clone(), pos.clone());
                self.positions.insert(pos, data);
            }
        }
        Ok(())
    }

    fn on_reply(&mut self, c: usize, id: u64, v: &serde_json::Value) -> Result<(), String> {
        let cl = &mut self.clients[c];
        let Some(p) = cl.pending.remove(&id) else {
            return Err(format!(
                "client {c}: reply to id {id}, which is not waiting: {v}"
            ));
        };
        let ok = v.get("ok");
        match p {
            Pending::Subscribe { channel, since } => {
                return self.on_subscribed(c, channel, since, v);
            }
            Pending::Unsubscribe { channel } => {
                if ok.is_some() {
                    cl.subs.remove(&channel);
                    self.log(format!("client {c} unsubscribed {channel}"));
                } else {
                    return Err(format!("client {c}: unsubscribe {channel} failed: {v}"));
                }
            }
            Pending::Publish => {
                if ok.is_none() {
                    let code = v["error"]["code"].as_u64().unwrap_or(0);
                    if code != 111 {
                        return Err(format!("client {c}: publish failed: {v}"));
                    }
                    self.report.refused += 1;
                }
            }
        }
        Ok(())
    }

    /// A subscribe's reply: where the subscription starts (after what it
    /// recovered, when it asked with `since`).
    fn on_subscribed(
        &mut self,
        c: usize,
        channel: String,
        since: Option<(String, u64)>,
        v: &serde_json::Value,
    ) -> Result<(), String> {
        let Some(ok) = v.get("ok") else {
            self.log(format!("client {c}: subscribe {channel} refused: {v}"));
            return Ok(());
        };
        let epoch = ok["epoch"].as_str().unwrap_or_default().to_string();
        let offset = ok["offset"].as_u64().unwrap_or(0);
        let recovered = ok.get("recovered").and_then(|r| r.as_bool());
        if ok["channel"].as_str() != Some(channel.as_str()) {
            return Err(format!(
                "client {c}: subscribe reply for another channel: {v}"
            ));
        }
        let next = match (&since, recovered) {
            (Some((e, o)), Some(true)) => {
                if *e != epoch || *o > offset {
                    return Err(format!(
                        "client {c}: recovered from {e}:{o} but the reply says {epoch}:{offset}"
                    ));
                }
                self.report.recovered += 1;
                o + 1
            }
            (Some(_), None) => {
                return Err(format!(
                    "client {c}: a subscribe with since got no `recovered`: {v}"
                ))
            }
            (None, Some(_)) => return Err(format!("client {c}: `recovered` without since: {v}")),
            _ => offset + 1,
        };
        self.log(format!(
            "client {c} subscribed {channel} at {epoch}:{offset} recovered {recovered:?}, next {next}"
        ));
        let cl = &mut self.clients[c];
        cl.subs.insert(
            channel,
            Sub {
                epoch,
                next,
                upto: offset,
            },
        );
        Ok(())
    }

    // ---- checks ----

    fn check(&mut self) -> Result<(), String> {
        let l = &self.cfg.limits;
        // Data within `queue_bytes_max`, control frames (pongs, close) 4 KiB past it.
        let ws_max = l.queue_bytes_max + 4096;
        let http_max = l.http_queue_bytes_max + 4096;
        for s in self.shards.iter().flatten() {
            let core = &s.core;
            for key in core.conns.keys() {
                let conn = core.conns.get(key).expect("listed");
                let queue_max = if conn.phase == crate::conn::Phase::Http {
                    http_max
                } else {
                    ws_max
                };
                if conn.queued_bytes() > queue_max {
                    return Err(format!(
                        "shard {}: connection {key} queues {} bytes, over {queue_max}",
                        core.id,
                        conn.queued_bytes()
                    ));
                }
            }
            let inbox = core.inbox.rx.len();
            if inbox > l.inbox_msgs_max + self.shards.len() {
                return Err(format!(
                    "shard {}: inbox holds {inbox}, over {}",
                    core.id, l.inbox_msgs_max
                ));
            }
            let partial = self.shared.stats[core.id]
                .partial_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            if partial as usize > l.partial_bytes_per_shard_max {
                return Err(format!("shard {}: {partial} partial bytes", core.id));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let cl = &self.clients[c];
            match cl.state {
                State::Done | State::Closed => {}
                s => {
                    if !(cl.laggard || cl.backlogged || cl.abrupt) {
                        return Err(format!("client {c} still {s:?} after every shard stopped"));
                    }
                }
            }
            let cl = &self.clients[c];
            if cl.state != State::Done {
                let pipe = cl.pipe;
                self.net.lock().expect("net").let_go(pipe);
                self.clients[c].state = State::Done;
            }
        }
        let net = self.net.lock().expect("net");
        if net.pipes() != 0 {
            return Err(format!(
                "{} pipes left after every side let go",
                net.pipes()
            ));
        }
        if net.unaccepted() != 0 {
            return Err(format!("{} connections never accepted", net.unaccepted()));
        }
        drop(net);
        for c in &self.clients {
            if !c.abrupt && !c.refused && c.close_code.is_none() && !c.laggard && !c.backlogged {
                return Err(format!("client {} ended without a close code", c.id));
            }
        }
        let _ = self.seed;
        let mut s = String::new();
        for (code, n) in &self.report.closes {
            let _ = write!(s, " {code}×{n}");
        }
        self.log(format!("done; closes:{s}"));
        Ok(())
    }
}
