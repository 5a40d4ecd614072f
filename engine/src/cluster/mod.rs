//! Cluster mode: several shardcast nodes share channels through Redis.
//!
//! Redis is the authority for a channel: a Lua script assigns each publication
//! its offset (`HINCRBY`), keeps the channel's history (a capped list), and
//! publishes it on a Redis channel (`PUBLISH`), all atomically, so every node
//! sees one order. A node's owner shard for the channel subscribes on behalf of
//! the node, turns each message into one push frame, and fans it out to its
//! local shards as in single-node mode. Recovery and `history` read Redis, so
//! any node serves any client. Presence stays per node (not built across nodes).
//!
//! One connection per node, in RESP3, carries both the commands and the pub/sub
//! messages: Redis writes them in the order it executed them, so a reply (the
//! position after a subscribe, a recovery's history) arrives after exactly the
//! messages published before it. The reader forwards both to the channel's owner
//! shard through its inbox, which keeps that order up to the subscribers.
//!
//! If the connection to Redis is lost, the node cannot know what it missed: it
//! closes its subscribers with 4001 (reconnect; they recover with `since`,
//! from Redis, on whichever node they reach), refuses new ones (503) and
//! publications until it is back, and reconnects every second.

pub(crate) mod relay;
pub mod resp;
mod scripts;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::payload::{BusEvent, ReadFor, Snapshot, Window};
use crate::shard::mesh::{owner_of, Peer, Published, ReplyTo, ShardMsg};
use resp::Resp;

/// Requests waiting in the bus's queue at most; past it, publications fail at once.
const QUEUE_MAX: usize = 65_536;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a shard asks of the bus.
#[derive(Debug)]
pub enum BusReq {
    /// Assign an offset, keep it in history, publish to every node.
    Publish {
        channel: Arc<str>,
        data: Bytes,
        history_size: usize,
        history_ttl_ms: u64,
        /// Used if the channel has no epoch in Redis yet.
        epoch: Arc<str>,
        reply: ReplyTo,
    },
    /// Start (subscribe, then read the position) or stop receiving a channel.
    Watch {
        channel: Arc<str>,
        on: bool,
        epoch: Arc<str>,
        /// Which start this is: an answer to an earlier one is stale.
        seq: u64,
    },
    /// Read the channel's position and a window of its history.
    Read {
        channel: Arc<str>,
        history_ttl_ms: u64,
        window: Window,
        /// Boxed: requests travel in a queue, and most are small.
        then: Box<ReadFor>,
    },
}

/// The node's handle on the bus, shared by its shards.
pub struct Bus {
    tx: Sender<BusReq>,
    up: Arc<AtomicBool>,
    prefix: String,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("up", &self.is_up()).finish()
    }
}

impl Bus {
    /// Connect (failing now if Redis cannot be reached) and start the bus threads.
    pub fn start(addr: SocketAddr, prefix: &str, peers: Vec<Peer>) -> std::io::Result<Arc<Bus>> {
        let stream = connect(addr)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_MAX);
        let up = Arc::new(AtomicBool::new(true));
        let bus = Arc::new(Bus {
            tx,
            up: up.clone(),
            prefix: prefix.to_string(),
        });
        let link = Link {
            addr,
            prefix: prefix.to_string(),
            topic_prefix: format!("{prefix}p:").into_bytes(),
            peers,
            up,
            pending: Arc::new(Mutex::new(VecDeque::new())),
        };
        std::thread::Builder::new()
            .name("shardcast-bus".into())
            .spawn(move || link.run(stream, rx))?;
        Ok(bus)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Queue a request; gives it back when the bus is down or its queue is full.
    pub fn send(&self, req: BusReq) -> Result<(), BusReq> {
        if !self.is_up() {
            return Err(req);
        }
        self.tx.try_send(req).map_err(|e| e.into_inner())
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cluster: cannot reach Redis at {addr}: {e}"),
        )
    })?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut hello = Vec::new();
    resp::command(&mut hello, &[b"HELLO", b"3"]);
    s.write_all(&hello)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "cluster: Redis closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        match resp::parse(&buf).map_err(std::io::Error::other)? {
            Some((Resp::Error(e), _)) => {
                return Err(std::io::Error::other(format!(
                    "cluster: Redis refused RESP3 (HELLO 3, Redis 6 or later needed): {e}"
                )))
            }
            Some((_, n)) if n == buf.len() => break,
            Some(_) => {
                return Err(std::io::Error::other(
                    "cluster: unexpected bytes after HELLO",
                ))
            }
            None => continue,
        }
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// What a reply in the FIFO is for.
enum Pending {
    Published { reply: ReplyTo },
    Watched { channel: Arc<str>, seq: u64 },
    Read { channel: Arc<str>, then: ReadFor },
}

struct Link {
    addr: SocketAddr,
    prefix: String,
    /// `{prefix}p:`, the start of every pub/sub topic (checked on every message).
    topic_prefix: Vec<u8>,
    peers: Vec<Peer>,
    up: Arc<AtomicBool>,
    pending: Arc<Mutex<VecDeque<Pending>>>,
}

impl Link {
    fn meta_key(&self, ch: &str) -> Vec<u8> {
        format!("{}{{{ch}}}:m", self.prefix).into_bytes()
    }
    fn hist_key(&self, ch: &str) -> Vec<u8> {
        format!("{}{{{ch}}}:h", self.prefix).into_bytes()
    }
    fn topic(&self, ch: &str) -> Vec<u8> {
        [self.topic_prefix.as_slice(), ch.as_bytes()].concat()
    }

    /// The writer: one loop per connection; reconnects after a loss, and ends
    /// when the engine has dropped every handle on the bus.
    fn run(self, mut stream: TcpStream, rx: Receiver<BusReq>) {
        let this = Arc::new(self);
        loop {
            let reader = match stream.try_clone() {
                Ok(r) => {
                    let l = this.clone();
                    std::thread::spawn(move || l.read_loop(r))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster: bus socket");
                    return;
                }
            };
            let closed = this.write_loop(&mut stream, &rx);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = reader.join();
            if closed {
                return;
            }
            this.lost(&rx);
            stream = loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Err(RecvTimeoutError::Disconnected) => return,
                    Ok(req) => this.fail(req),
                    Err(RecvTimeoutError::Timeout) => match connect(this.addr) {
                        Ok(s) => break s,
                        Err(e) => tracing::warn!(error = %e, "cluster: Redis still unreachable"),
                    },
                }
            };
            tracing::info!(addr = %this.addr, "cluster: bus reconnected");
            this.up.store(true, Ordering::Relaxed);
        }
    }

    /// Write requests as they come; true when the engine is gone, false when
    /// the connection is.
    fn write_loop(&self, s: &mut TcpStream, rx: &Receiver<BusReq>) -> bool {
        let mut out = Vec::new();
        while self.up.load(Ordering::Relaxed) {
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
            };
            out.clear();
            // Batch what is queued into one write.
            for req in std::iter::once(first).chain(rx.try_iter().take(1023)) {
                self.encode(req, &mut out);
            }
            if let Err(e) = s.write_all(&out) {
                tracing::error!(error = %e, "cluster: write to Redis failed");
                self.up.store(false, Ordering::Relaxed);
            }
        }
        false
    }

    /// Encode a request and note what its reply is for (pushes take no slot).
    fn encode(&self, req: BusReq, out: &mut Vec<u8>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let awaits = match req {
            BusReq::Publish {
                channel,
                data,
                history_size,
                history_ttl_ms,
                epoch,
                reply,
            } => {
                let history = (history_size, history_ttl_ms);
                self.encode_publish(&channel, &data, history, &epoch, out);
                Some(Pending::Published { reply })
            }
            BusReq::Watch {
                channel,
                on,
                epoch,
                seq,
            } => {
                self.encode_watch(&channel, on, &epoch, out);
                on.then_some(Pending::Watched { channel, seq })
            }
            BusReq::Read {
                channel,
                history_ttl_ms,
                window,
                then,
            } => {
                self.encode_read(&channel, history_ttl_ms, &window, out);
                Some(Pending::Read {
                    channel,
                    then: *then,
                })
            }
        };
        if let Some(p) = awaits {
            pending.push_back(p);
        }
    }

    /// The publish script: the next offset, kept in history, published on the topic.
    fn encode_publish(
        &self,
        channel: &str,
        data: &[u8],
        (history_size, history_ttl_ms): (usize, u64),
        epoch: &str,
        out: &mut Vec<u8>,
    ) {
        let (m, h, t) = (
            self.meta_key(channel),
            self.hist_key(channel),
            self.topic(channel),
        );
        let (size, ttl) = (history_size.to_string(), history_ttl_ms.to_string());
        resp::command(
            out,
            &[
                b"EVAL",
                scripts::PUBLISH.as_bytes(),
                b"2",
                &m,
                &h,
                data,
                size.as_bytes(),
                ttl.as_bytes(),
                epoch.as_bytes(),
                &t,
            ],
        );
    }

    /// Subscribe to the topic and read the position (which the reply answers),
    /// or unsubscribe (no reply awaited).
    fn encode_watch(&self, channel: &str, on: bool, epoch: &str, out: &mut Vec<u8>) {
        let t = self.topic(channel);
        if !on {
            return resp::command(out, &[b"UNSUBSCRIBE", &t]);
        }
        resp::command(out, &[b"SUBSCRIBE", &t]);
        let m = self.meta_key(channel);
        resp::command(
            out,
            &[
                b"EVAL",
                scripts::POSITION.as_bytes(),
                b"1",
                &m,
                epoch.as_bytes(),
            ],
        );
    }

    /// The read script: one page of history after `window.after`.
    fn encode_read(&self, channel: &str, history_ttl_ms: u64, window: &Window, out: &mut Vec<u8>) {
        let (m, h) = (self.meta_key(channel), self.hist_key(channel));
        let ttl = history_ttl_ms.to_string();
        let after = window.after.map(|a| a.to_string()).unwrap_or_default();
        let (count, bytes) = (window.count.to_string(), window.page_bytes.to_string());
        resp::command(
            out,
            &[
                b"EVAL",
                scripts::READ.as_bytes(),
                b"2",
                &m,
                &h,
                ttl.as_bytes(),
                after.as_bytes(),
                count.as_bytes(),
                bytes.as_bytes(),
            ],
        );
    }

    fn read_loop(&self, mut s: TcpStream) {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut used = 0;
            loop {
                match resp::parse(&buf[used..]) {
                    Ok(Some((v, n))) => {
                        used += n;
                        self.on_value(v);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cluster: unreadable reply from Redis");
                        self.up.store(false, Ordering::Relaxed);
                        return;
                    }
                }
            }
            buf.drain(..used);
        }
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(addr = %self.addr, "cluster: connection to Redis lost");
        }
    }

    fn on_value(&self, v: Resp) {
        if let Resp::Push(items) = v {
            return self.on_push(items);
        }
        let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        else {
            tracing::warn!(reply = ?v, "cluster: reply nobody waits for");
            return;
        };
        match p {
            Pending::Published { reply } => match position(&v) {
                Some((epoch, offset)) => {
                    deliver_result(&self.peers, reply, Ok(Published { offset, epoch }))
                }
                None => deliver_result(
                    &self.peers,
                    reply,
                    Err(format!("cluster publish failed: {v:?}")),
                ),
            },
            Pending::Watched { channel, seq } => {
                let Some((epoch, offset)) = position(&v) else {
                    tracing::error!(channel = %channel, reply = ?v, "cluster: position read failed");
                    return;
                };
                self.to_owner(&channel, BusEvent::Watched { epoch, offset, seq });
            }
            Pending::Read { channel, then } => {
                let event = match snapshot(&v) {
                    Some(snapshot) => BusEvent::Read { snapshot, then },
                    None => BusEvent::ReadFailed { then },
                };
                self.to_owner(&channel, event);
            }
        }
    }

    /// `["message", topic, "<epoch> <offset> <data>"]`; confirmations are ignored.
    fn on_push(&self, items: Vec<Resp>) {
        let [kind, topic, payload] = items.as_slice() else {
            return;
        };
        if kind.as_bytes() != Some(b"message") {
            return;
        }
        let (Some(topic), Some(payload)) = (topic.as_bytes(), payload.as_bytes()) else {
            return;
        };
        let Some(channel) = topic
            .strip_prefix(self.topic_prefix.as_slice())
            .and_then(|c| std::str::from_utf8(c).ok())
        else {
            return;
        };
        let mut parts = payload.splitn(3, |&b| b == b' ');
        let (Some(epoch), Some(offset), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let (Ok(epoch), Some(offset)) = (
            std::str::from_utf8(epoch),
            std::str::from_utf8(offset)
                .ok()
                .and_then(|o| o.parse().ok()),
        ) else {
            return;
        };
        let event = BusEvent::Message {
            epoch: Arc::from(epoch),
            offset,
            data: Bytes::copy_from_slice(data),
        };
        self.to_owner(channel, event);
    }

    fn to_owner(&self, channel: &str, event: BusEvent) {
        let owner = owner_of(channel, self.peers.len());
        send_blocking(
            &self.peers[owner],
            ShardMsg::Bus {
                channel: Arc::from(channel),
                event: Box::new(event),
            },
        );
    }

    /// The connection is gone: fail what waits, and tell every shard.
    fn lost(&self, rx: &Receiver<BusReq>) {
        self.up.store(false, Ordering::Relaxed);
        let waiting: Vec<Pending> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for p in waiting {
            self.fail_pending(p);
        }
        for req in rx.try_iter().collect::<Vec<_>>() {
            self.fail(req);
        }
        for p in &self.peers {
            send_blocking(p, ShardMsg::BusLost);
        }
    }

    /// A request that cannot be carried out while the bus is down.
    fn fail(&self, req: BusReq) {
        match req {
            BusReq::Publish { reply, .. } => self.fail_pending(Pending::Published { reply }),
            BusReq::Read { channel, then, .. } => self.fail_pending(Pending::Read {
                channel,
                then: *then,
            }),
            BusReq::Watch { .. } => {}
        }
    }

    fn fail_pending(&self, p: Pending) {
        match p {
            Pending::Published { reply } => {
                deliver_result(&self.peers, reply, Err("cluster bus unavailable".into()))
            }
            Pending::Read { channel, then, .. } => {
                self.to_owner(&channel, BusEvent::ReadFailed { then })
            }
            Pending::Watched { .. } => {}
        }
    }
}

/// A shard's inbox is bounded; the bus thread waits rather than drop a message.
fn send_blocking(peer: &Peer, mut msg: ShardMsg) {
    loop {
        match peer.try_send(msg) {
            Ok(()) => return peer.wake(),
            Err(m) => {
                msg = m;
                peer.wake();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn deliver_result(peers: &[Peer], reply: ReplyTo, result: Result<Published, String>) {
    match (reply, result) {
        (ReplyTo::Nobody, _) => {}
        (ReplyTo::External(tx), Ok(r)) => {
            let _ = tx.try_send(r);
        }
        (ReplyTo::External(_), Err(_)) => {} // the caller times out
        (reply, result) => {
            let Some(shard) = reply.conn_shard() else {
                return;
            };
            let msg = match result {
                Ok(result) => ShardMsg::Published { reply, result },
                Err(message) => ShardMsg::PublishFailed {
                    reply,
                    code: shardcast_proto::command::error_code::INTERNAL,
                    message,
                },
            };
            send_blocking(&peers[shard], msg);
        }
    }
}

/// `[epoch, offset]` from a script.
fn position(v: &Resp) -> Option<(Arc<str>, u64)> {
    let Resp::Array(a) = v else { return None };
    let epoch = std::str::from_utf8(a.first()?.as_bytes()?).ok()?;
    let offset = a.get(1)?.as_int()?;
    Some((Arc::from(epoch), u64::try_from(offset).ok()?))
}

/// `[epoch, offset, oldest, more, "<offset> <ms> <data>"…]` from the read script
/// (which already dropped what outlived the TTL).
fn snapshot(v: &Resp) -> Option<Snapshot> {
    let (epoch, offset) = position(v)?;
    let Resp::Array(a) = v else { return None };
    let oldest = u64::try_from(a.get(2)?.as_int()?).ok()?;
    let more = a.get(3)?.as_int()? != 0;
    let mut items = Vec::with_capacity(a.len().saturating_sub(4));
    for e in a.iter().skip(4) {
        let b = e.as_bytes()?;
        let mut parts = b.splitn(3, |&c| c == b' ');
        let off: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let _ms = parts.next()?;
        items.push((off, Bytes::copy_from_slice(parts.next()?)));
    }
    Some(Snapshot {
        epoch,
        offset,
        oldest,
        more,
        items,
    })
}
