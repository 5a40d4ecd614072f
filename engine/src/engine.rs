//! Starting the shards, and the handle the embedding program keeps:
//! publish from any thread, read stats, shut down.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use crate::channel::authority::Authority;
use crate::config::Config;
use crate::driver::{self, DriverKind};
use crate::shard::mesh::{self, owner_of, Peer, Published, ReplyTo, ShardMsg};
use crate::shard::shared::Shared;
use crate::shard::Shard;
use crate::stats::Stats;

/// Why a publication from the embedding API was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Channel name is not 1–255 bytes of `[A-Za-z0-9_.:/-]`.
    BadChannel,
    /// `data` is not a single valid JSON value.
    BadData,
    /// The owner shard's inbox is full, or (from [`Handle::publish`]) the owner
    /// refused it because a shard it fans out to has a full inbox and router
    /// overflow: not published, retry later (backpressure, not loss).
    Overloaded,
    /// The engine has stopped (kept for callers matching on it; a shard that
    /// drops the reply channel is refusing the publication: `Overloaded`).
    Stopped,
    /// No answer within the wait (the publication may still happen).
    Timeout,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishError::BadChannel => "bad channel name",
            PublishError::BadData => "data is not valid JSON",
            PublishError::Overloaded => "owner shard overloaded, retry later",
            PublishError::Stopped => "engine stopped",
            PublishError::Timeout => "no answer from the owner shard in time",
        })
    }
}

impl std::error::Error for PublishError {}

pub struct Engine;

impl Engine {
    /// Bind, start one shard per configured core, and return the handle.
    pub fn start(cfg: Config) -> io::Result<Handle> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let verifier = crate::policy::auth::Verifier::from_config(&cfg.auth)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if !cfg.io.huge_pages {
            disable_huge_pages();
        }
        let cfg = Arc::new(cfg);
        let n = cfg.shard_count();
        let (listeners, addr) = bind_all(&cfg)?;
        let mut peers = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let (p, i) = mesh::inbox(cfg.limits.inbox_msgs_max)?;
            peers.push(p);
            inboxes.push(i);
        }
        let redis = cfg
            .cluster
            .redis_addr()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let authority = Authority::start(redis, &cfg.cluster.key_prefix, &peers)?;
        let shared = Arc::new(Shared::new(n, verifier, authority));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pin = cfg.pin_cores && n <= cores.len();
        let dcfg = cfg.driver_config();
        let mut threads = Vec::with_capacity(n);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(n);
        for (id, (l, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let (cfg, peers, shared, dcfg, ready_tx) = (
                cfg.clone(),
                peers.clone(),
                shared.clone(),
                dcfg.clone(),
                ready_tx.clone(),
            );
            let core = cores.get(id).copied();
            let t = std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || {
                    if let (true, Some(core)) = (pin, core) {
                        core_affinity::set_for_current(core);
                    }
                    // Each shard builds its own ring on its own thread (SINGLE_ISSUER).
                    let built = match cfg.io.sim_seed {
                        0 => driver::build(cfg.driver, l, inbox.waker.fd(), &dcfg),
                        seed => driver::sim::bridge::driver(l, inbox.waker.fd(), &dcfg, seed, id),
                    };
                    match built {
                        Ok(d) => {
                            let d = driver::faulty::wrap(d, cfg.io.fault_seed, id);
                            let uring = (d.kind() == DriverKind::Uring) as u64;
                            shared.stats[id].uring.store(uring, Ordering::Relaxed);
                            let _ = ready_tx.send(Ok(d.kind()));
                            Shard::new(id, cfg, d, peers, inbox, shared).run();
                        }
                        Err(e) => {
                            // Never at work: the shards that started must not wait for it.
                            shared.shards_at_work.fetch_sub(1, Ordering::AcqRel);
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
            threads.push(t);
        }
        let kind = wait_ready(n, &ready_rx, &peers)?;
        Ok(Handle {
            peers,
            shared,
            threads,
            local_addr: addr,
            driver: kind,
            shards: n,
        })
    }
}

/// One listener per ring of every shard (`io.rings_per_shard`), by shard,
/// and the address they share (with port 0, the one the first was given).
fn bind_all(cfg: &Config) -> io::Result<(Vec<Vec<Socket>>, SocketAddr)> {
    let mut listeners = Vec::with_capacity(cfg.shard_count());
    let mut addr = cfg.listen;
    for _ in 0..cfg.shard_count() {
        let mut ls = Vec::new();
        for _ in 0..cfg.rings_per_shard() {
            let l = listener(addr, cfg.io.send_buffer_bytes)?;
            // Port 0: every shard must share the port the first one got.
            addr = l.local_addr()?.as_socket().expect("inet socket");
            ls.push(l);
        }
        listeners.push(ls);
    }
    Ok((listeners, addr))
}

/// Wait until all `n` shards have built their drivers: the driver kind, or
/// the first error (the shards that did start are told to stop).
fn wait_ready(
    n: usize,
    ready: &crossbeam_channel::Receiver<io::Result<DriverKind>>,
    peers: &[Peer],
) -> io::Result<DriverKind> {
    let mut kind = DriverKind::Epoll;
    for _ in 0..n {
        match ready.recv() {
            Ok(Ok(k)) => kind = k,
            Ok(Err(e)) => {
                for p in peers {
                    let _ = p.try_send(ShardMsg::Shutdown);
                    p.wake();
                }
                return Err(e);
            }
            Err(_) => return Err(io::Error::other("shard thread died during start")),
        }
    }
    Ok(kind)
}

fn listener(addr: SocketAddr, send_buffer_bytes: u32) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if send_buffer_bytes > 0 {
        // Inherited by accepted sockets (and turns off send-buffer autotuning).
        s.set_send_buffer_size(send_buffer_bytes as usize)?;
    }
    s.set_reuse_address(true)?;
    // With port 0, the first socket binds without SO_REUSEPORT so the kernel
    // picks a port no other socket holds; a reuseport bind to port 0 may be
    // handed a port another process's reuseport listener already serves.
    // SO_REUSEPORT is set right after, so the other shards can join.
    let ephemeral = addr.port() == 0;
    if !ephemeral {
        s.set_reuse_port(true)?;
    }
    // Inherited by accepted sockets: pushes are small and latency-bound.
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if ephemeral {
        s.set_reuse_port(true)?;
    }
    s.listen(4096)?;
    Ok(s)
}

/// The running engine. Dropping it without `shutdown` leaves the shards running.
pub struct Handle {
    peers: Vec<Peer>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    driver: DriverKind,
    shards: usize,
}

impl Handle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Publish raw JSON `data` to `channel` without waiting for its offset.
    /// Callable from any thread, including async tasks (never blocks).
    pub fn publish_nowait(
        &self,
        channel: &str,
        data: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        self.submit(channel, data.into(), ReplyTo::Nobody)
    }

    /// Publish and wait (at most `wait`) for the offset and epoch the owner assigned.
    pub fn publish(
        &self,
        channel: &str,
        data: impl Into<Bytes>,
        wait: Duration,
    ) -> Result<Published, PublishError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(channel, data.into(), ReplyTo::External(tx))?;
        // The owner drops the reply channel unanswered only when it refuses the
        // publication (a shard stops only through this handle, which is here).
        rx.recv_timeout(wait).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => PublishError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => PublishError::Overloaded,
        })
    }

    fn submit(&self, channel: &str, data: Bytes, reply: ReplyTo) -> Result<(), PublishError> {
        if !shardcast_proto::command::is_valid_channel(channel) {
            return Err(PublishError::BadChannel);
        }
        let mut check = data.to_vec();
        if simd_json::to_borrowed_value(&mut check).is_err() {
            return Err(PublishError::BadData);
        }
        let owner = owner_of(channel, self.shards);
        let msg = ShardMsg::Publish {
            channel: Arc::from(channel),
            data,
            reply,
        };
        if self.peers[owner].try_send(msg).is_err() {
            // The only counter written from outside a shard, hence the atomic add.
            let c = &self.shared.stats[owner].rejected_overloaded;
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(PublishError::Overloaded);
        }
        self.peers[owner].wake();
        Ok(())
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for st in &self.shared.stats {
            s.add(st);
        }
        s
    }

    /// Close every connection with 1001 and stop the shards; returns when they have exited.
    pub fn shutdown(mut self) {
        self.stop_and_join(|| ShardMsg::Shutdown);
    }

    /// Drain gracefully: `/ready` answers 503, new upgrades are refused, and
    /// open WebSockets are closed with 4001 paced over `window`; returns when
    /// every shard has stopped.
    pub fn drain(mut self, window: Duration) {
        self.stop_and_join(|| ShardMsg::Drain { window });
    }

    fn stop_and_join(&mut self, msg: impl Fn() -> ShardMsg) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for p in &self.peers {
            // A full inbox drains within a turn; keep trying until the message fits.
            let mut msg = msg();
            loop {
                match p.try_send(msg) {
                    Ok(()) => break,
                    Err(m) => {
                        msg = m;
                        p.wake();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            p.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Keep transparent huge pages out of this process (see `IoConfig::huge_pages`).
/// The kernel checks the flag at every fault and in khugepaged, so it covers
/// mappings made before the call too, such as the allocator's first arena.
fn disable_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "PR_SET_THP_DISABLE failed; huge pages stay as the host has them");
    }
}
