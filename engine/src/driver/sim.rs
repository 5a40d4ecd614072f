//! An in-memory network and a [`Driver`] over it, for the deterministic
//! simulation (`engine/src/sim.rs`).
//!
//! A socket is a pair of byte pipes in a [`Net`] shared by every shard of one
//! simulated engine (all on one thread in the simulation; in real time, see
//! [`bridge`], the shard's thread and the bridge's threads). The client
//! side (the simulation's clients) writes request bytes and masked frames into
//! one pipe and reads what the server sent from the other; the server side is
//! this driver, which turns the pipes into the same [`Completion`]s the epoll
//! and io_uring drivers produce, under the same rules (`driver/mod.rs`):
//! one `Sent` per `send`, `Closed` last for a key, receive buffers lent until
//! `release`.
//!
//! Faults come from a seeded generator ([`Faults`]), so a seed replays exactly:
//! - short writes: a `send` writes a random prefix (`Sent` with fewer bytes);
//! - a bounded socket buffer: a reader that does not read makes sends wait,
//!   as `EAGAIN` parks them in the epoll driver;
//! - split reads: a `Recv` carries a random part of what is waiting;
//! - receive pauses: no buffer for a connection for a while, as when the
//!   provided-buffer ring is empty (`ENOBUFS`) and the receive is re-armed;
//! - delayed completions, reordered across connections but never within one
//!   (the real drivers keep each connection's completions in order);
//! - on `close`, an unfinished send reports `ECANCELED` (io_uring) or
//!   nothing (epoll), at random;
//! - resets are the client's doing (`Net::reset`): the read side ends with
//!   `ECONNRESET` and writes fail with `EPIPE`.
//!
//! The same driver also runs in real time (`io.sim_seed`, testing only):
//! [`bridge`] accepts real TCP connections and pumps their bytes through
//! pipes, so the scenario tests' real clients reach an engine whose shards
//! see only this driver, its faults and its reordering.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{BufId, Completion, ConnKey, Driver, DriverKind, Sock};

pub mod bridge;

/// splitmix64: small, seedable, good enough for schedules and faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.below(1000) < per_mille as u64
    }

    /// A new generator for a part of the simulation (its own stream).
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// How often each fault happens, in per mille per opportunity.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A send writes a random prefix only.
    pub short_write: u32,
    /// A read takes a random part of what is waiting.
    pub split_read: u32,
    /// A connection gets no receive buffer this poll (ENOBUFS-like pause).
    pub recv_pause: u32,
    /// A completion (and the later ones of its connection) waits for a later poll.
    pub delay: u32,
    /// Bytes a socket's send buffer holds before writes wait for the reader.
    pub socket_bytes: usize,
}

impl Faults {
    /// Faults drawn from the seed's generator: some seeds are calm, some harsh.
    pub fn random(rng: &mut Rng) -> Faults {
        let harsh = rng.chance(500);
        let p = |rng: &mut Rng, max: u64| if harsh { rng.below(max) as u32 } else { 0 };
        Faults {
            short_write: p(rng, 500),
            split_read: p(rng, 500),
            recv_pause: p(rng, 300),
            delay: p(rng, 400),
            socket_bytes: [512, 4096, 65_536][rng.below(3) as usize],
        }
    }
}

/// One simulated TCP connection, both directions.
#[derive(Debug, Default)]
pub struct Pipe {
    pub shard: usize,
    /// Client → server bytes not yet read by the server.
    pub to_server: VecDeque<u8>,
    /// The client shut its write side (FIN): the server reads EOF after the bytes.
    pub client_fin: bool,
    /// The client reset the connection: the server's reads and writes fail.
    pub reset: bool,
    /// Server → client bytes not yet read by the client.
    pub to_client: VecDeque<u8>,
    /// The server shut its write side or closed: the client reads EOF after the bytes.
    pub server_fin: bool,
    /// The server's driver closed the socket.
    pub server_closed: bool,
    /// The client let go of its end.
    pub client_gone: bool,
    /// In real time, the bridge's threads for this pipe wait on it (with the
    /// net's lock) for bytes to write or room to read into.
    pub bridge: Option<Arc<Condvar>>,
}

impl Pipe {
    /// Tell the bridge's threads, if any, that the server side moved.
    fn moved(&self) {
        if let Some(cv) = &self.bridge {
            cv.notify_all();
        }
    }
}

/// Every pipe of one simulated engine, and what each shard's driver holds.
#[derive(Debug, Default)]
pub struct Net {
    pipes: BTreeMap<u32, Pipe>,
    next_id: u32,
    /// Connections waiting for each shard's accept.
    accept: Vec<VecDeque<u32>>,
    /// Receive buffers lent to each shard and not yet released.
    pub lent: Vec<usize>,
    /// Sockets each shard's driver holds open.
    pub open: Vec<usize>,
    /// Completions each shard's driver holds back (delayed).
    pub held: Vec<usize>,
}

impl Net {
    pub fn new(shards: usize) -> Net {
        Net {
            accept: vec![VecDeque::new(); shards],
            lent: vec![0; shards],
            open: vec![0; shards],
            held: vec![0; shards],
            ..Net::default()
        }
    }

    /// A client connects to `shard`'s listener; returns the pipe's id.
    pub fn connect(&mut self, shard: usize) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.pipes.insert(
            id,
            Pipe {
                shard,
                ..Pipe::default()
            },
        );
        self.accept[shard].push_back(id);
        id
    }

    pub fn pipe(&self, id: u32) -> Option<&Pipe> {
        self.pipes.get(&id)
    }

    pub fn pipe_mut(&mut self, id: u32) -> Option<&mut Pipe> {
        self.pipes.get_mut(&id)
    }

    /// Client side: queue bytes for the server.
    pub fn write(&mut self, id: u32, bytes: &[u8]) {
        if let Some(p) = self.pipes.get_mut(&id) {
            if !p.client_fin && !p.reset {
                p.to_server.extend(bytes);
            }
        }
    }

    /// Client side: take up to `max` bytes the server sent; `None` at EOF
    /// (the server closed its side and everything was read).
    pub fn read(&mut self, id: u32, max: usize, into: &mut Vec<u8>) -> Option<usize> {
        let p = self.pipes.get_mut(&id)?;
        let n = max.min(p.to_client.len());
        into.extend(p.to_client.drain(..n));
        if n == 0 && p.server_fin {
            return None;
        }
        Some(n)
    }

    /// Client side: shut the write side (the server reads EOF).
    pub fn fin(&mut self, id: u32) {
        if let Some(p) = self.pipes.get_mut(&id) {
            p.client_fin = true;
        }
    }

    /// Client side: reset (the server's reads end with ECONNRESET) and let go.
    pub fn reset(&mut self, id: u32) {
        if let Some(p) = self.pipes.get_mut(&id) {
            p.reset = true;
            p.to_server.clear();
            p.to_client.clear();
        }
        self.let_go(id);
    }

    /// Client side: done with the connection; the pipe goes once both sides are.
    pub fn let_go(&mut self, id: u32) {
        let Some(p) = self.pipes.get_mut(&id) else {
            return;
        };
        p.client_gone = true;
        if p.server_closed {
            self.pipes.remove(&id);
        }
    }

    /// Whether nothing is on its way to a server: no unread client bytes, no
    /// unaccepted connection, no completion held back.
    pub fn idle(&self) -> bool {
        self.held.iter().all(|h| *h == 0)
            && self.accept.iter().all(|q| q.is_empty())
            && self.pipes.values().all(|p| p.to_server.is_empty())
    }

    /// Pipes still held by either side.
    pub fn pipes(&self) -> usize {
        self.pipes.len()
    }

    /// Bytes allocated for what servers sent and clients have not read.
    pub fn client_buffers(&self) -> usize {
        self.pipes.values().map(|p| p.to_client.capacity()).sum()
    }

    /// Blocks allocated for them (one per pipe with unread bytes).
    pub fn client_blocks(&self) -> usize {
        self.pipes
            .values()
            .filter(|p| p.to_client.capacity() > 0)
            .count()
    }

    /// Connections queued for an accept that has not happened.
    pub fn unaccepted(&self) -> usize {
        self.accept.iter().map(|q| q.len()).sum()
    }
}

#[derive(Debug)]
struct Link {
    pipe: u32,
    /// Receiving (`start_recv` called, read side not ended).
    reading: bool,
    /// The send in flight, not yet written.
    send: Option<Vec<Bytes>>,
}

/// A [`Driver`] over a [`Net`], with seeded faults.
pub struct SimDriver {
    shard: usize,
    net: Arc<Mutex<Net>>,
    rng: Rng,
    faults: Faults,
    links: BTreeMap<ConnKey, Link>,
    /// Completions produced and not yet handed to the shard, in order per connection.
    ready: VecDeque<Completion>,
    bufs: Vec<Vec<u8>>,
    free: Vec<u16>,
    buf_bytes: usize,
    /// In real time: the wake-ups to wait on and the bridge to the real sockets.
    live: Option<bridge::Live>,
    /// Bytes left waiting for a started connection after the last `produce`
    /// (a paused or split read, no free buffer): poll again soon.
    more: bool,
}

impl SimDriver {
    pub fn new(
        shard: usize,
        net: Arc<Mutex<Net>>,
        rng: Rng,
        faults: Faults,
        bufs: u16,
        buf_bytes: usize,
    ) -> SimDriver {
        SimDriver {
            shard,
            net,
            rng,
            faults,
            links: BTreeMap::new(),
            ready: VecDeque::new(),
            bufs: (0..bufs).map(|_| vec![0; buf_bytes]).collect(),
            free: (0..bufs).rev().collect(),
            buf_bytes,
            live: None,
            more: false,
        }
    }

    /// Move what the network allows into `ready`.
    fn produce(&mut self) {
        let mut net = self.net.lock().expect("net");
        self.more = false;
        while let Some(pipe) = net.accept[self.shard].pop_front() {
            self.ready
                .push_back(Completion::Accepted { sock: Sock(pipe) });
        }
        for (&conn, link) in self.links.iter_mut() {
            let Some(p) = net.pipes.get_mut(&link.pipe) else {
                continue;
            };
            if let Some(bufs) = &link.send {
                if p.reset || p.server_fin {
                    link.send = None;
                    self.ready.push_back(Completion::Sent {
                        conn,
                        result: Err(libc::EPIPE),
                    });
                } else {
                    let total: usize = bufs.iter().map(|b| b.len()).sum();
                    let room = self.faults.socket_bytes.saturating_sub(p.to_client.len());
                    let mut n = total.min(room);
                    if n > 1 && self.rng.chance(self.faults.short_write) {
                        n = self.rng.range(1, n as u64 - 1) as usize;
                    }
                    if n > 0 {
                        let mut left = n;
                        for b in bufs {
                            let take = left.min(b.len());
                            p.to_client.extend(&b[..take]);
                            left -= take;
                            if left == 0 {
                                break;
                            }
                        }
                        link.send = None;
                        p.moved();
                        self.ready.push_back(Completion::Sent {
                            conn,
                            result: Ok(n),
                        });
                    }
                }
            }
            if !link.reading {
                continue;
            }
            if p.reset {
                link.reading = false;
                self.ready.push_back(Completion::RecvClosed {
                    conn,
                    err: Some(libc::ECONNRESET),
                });
            } else if !p.to_server.is_empty() {
                self.more = true;
                if self.rng.chance(self.faults.recv_pause) {
                    continue;
                }
                let Some(id) = self.free.pop() else {
                    continue;
                };
                let mut n = p.to_server.len().min(self.buf_bytes);
                if n > 1 && self.rng.chance(self.faults.split_read) {
                    n = self.rng.range(1, n as u64 - 1) as usize;
                }
                let buf = &mut self.bufs[id as usize];
                for (dst, src) in buf.iter_mut().zip(p.to_server.drain(..n)) {
                    *dst = src;
                }
                p.moved();
                self.ready.push_back(Completion::Recv {
                    conn,
                    buf: BufId {
                        id,
                        ring: 0,
                        offset: 0,
                    },
                    len: n as u32,
                });
            } else if p.client_fin {
                link.reading = false;
                self.ready
                    .push_back(Completion::RecvClosed { conn, err: None });
            }
        }
    }
}

/// The process exits: the kernel closes every socket the shard still had,
/// including connections accepted but not yet reported.
impl Drop for SimDriver {
    fn drop(&mut self) {
        if let Some(live) = self.live.as_mut() {
            live.stop();
        }
        let mut net = self.net.lock().expect("net");
        let mut socks: Vec<u32> = self.links.values().map(|l| l.pipe).collect();
        socks.extend(self.ready.iter().filter_map(|c| match c {
            Completion::Accepted { sock } => Some(sock.0),
            _ => None,
        }));
        socks.extend(std::mem::take(&mut net.accept[self.shard]));
        for id in socks {
            if let Some(p) = net.pipes.get_mut(&id) {
                p.server_fin = true;
                p.server_closed = true;
                p.moved();
                if p.client_gone {
                    net.pipes.remove(&id);
                }
            }
        }
    }
}

impl SimDriver {
    /// Hand over what is ready, except that some connections' completions
    /// wait for a later poll: reordered across connections, never within one.
    fn hand_over(&mut self, out: &mut Vec<Completion>) {
        self.produce();
        let mut held: BTreeSet<Option<ConnKey>> = BTreeSet::new();
        let mut keep = VecDeque::new();
        for c in self.ready.drain(..) {
            let key = c.conn();
            // Accepts are one stream of their own (the listener's).
            if held.contains(&key) || self.rng.chance(self.faults.delay) {
                held.insert(key);
                keep.push_back(c);
            } else {
                match c {
                    // Lent to the shard from now until `release`.
                    Completion::Recv { .. } => self.net.lock().expect("net").lent[self.shard] += 1,
                    // The shard's from now until `close`.
                    Completion::Accepted { .. } => {
                        self.net.lock().expect("net").open[self.shard] += 1
                    }
                    _ => {}
                }
                out.push(c);
            }
        }
        self.ready = keep;
        self.net.lock().expect("net").held[self.shard] = self.ready.len();
    }
}

impl Driver for SimDriver {
    fn kind(&self) -> DriverKind {
        // Reported as epoll for logs and metrics: the simulation is not a backend.
        DriverKind::Epoll
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let before = out.len();
        self.hand_over(out);
        let Some(live) = &self.live else {
            return Ok(());
        };
        if out.len() > before {
            return Ok(());
        }
        // Nothing yet: wait for the bridge or another shard, briefly when
        // something held back or left unread will be ready by the next poll.
        let soon = Some(bridge::AGAIN);
        let wait = if self.more || !self.ready.is_empty() {
            timeout.min(soon).or(soon)
        } else {
            timeout
        };
        if live.wait(wait)? {
            out.push(Completion::Wake);
        }
        self.hand_over(out);
        Ok(())
    }

    fn start_recv(&mut self, sock: Sock, conn: ConnKey) {
        let old = self.links.insert(
            conn,
            Link {
                pipe: sock.0,
                reading: true,
                send: None,
            },
        );
        assert!(old.is_none(), "key {conn} reused before its Closed");
    }

    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8] {
        &mut self.bufs[buf.id as usize][..len as usize]
    }

    fn release(&mut self, buf: BufId) {
        assert!(
            !self.free.contains(&buf.id),
            "buffer {} released twice",
            buf.id
        );
        self.free.push(buf.id);
        self.net.lock().expect("net").lent[self.shard] -= 1;
    }

    fn send(&mut self, _sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        assert!(bufs.len() <= super::SEND_IOVECS_MAX);
        let link = self
            .links
            .get_mut(&conn)
            .expect("send on a started connection");
        assert!(link.send.is_none(), "two sends in flight on {conn}");
        link.send = Some(bufs.to_vec());
    }

    fn shutdown_write(&mut self, sock: Sock, _conn: ConnKey) {
        if let Some(p) = self.net.lock().expect("net").pipes.get_mut(&sock.0) {
            p.server_fin = true;
            p.moved();
        }
    }

    fn close(&mut self, sock: Sock, conn: ConnKey) {
        let link = self.links.remove(&conn);
        if link.is_some_and(|l| l.send.is_some()) && self.rng.chance(500) {
            // io_uring cancels the send; epoll just drops it.
            self.ready.push_back(Completion::Sent {
                conn,
                result: Err(libc::ECANCELED),
            });
        }
        let mut net = self.net.lock().expect("net");
        net.open[self.shard] -= 1;
        if let Some(p) = net.pipes.get_mut(&sock.0) {
            p.server_fin = true;
            p.server_closed = true;
            p.to_server.clear();
            p.moved();
            if p.client_gone {
                net.pipes.remove(&sock.0);
            }
        }
        self.ready.push_back(Completion::Closed { conn });
    }

    fn open_sockets(&self) -> usize {
        self.net.lock().expect("net").open[self.shard]
    }
}
