//! How shards (and threads outside the engine) talk: one bounded crossbeam
//! inbox per shard plus an eventfd wake-up. Nothing is shared but the queues.
//!
//! Ordering: messages from one sender to one shard arrive in the order sent.
//! The fan-out protocol relies on it: an owner's subscribe acknowledgement is
//! always followed, never preceded, by the publications after that offset.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use shardcast_proto::PreparedFrame;

use crate::driver::Waker;
use crate::payload::{BusEvent, ConnRef, Member, Page, Recovery, ShardId};

/// Result of a publication, as seen by the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// Where the owner sends a publication's result.
#[derive(Debug)]
pub enum ReplyTo {
    /// Nobody waits (fire and forget).
    Nobody,
    /// A WebSocket client's `publish` command with this id.
    Ws { conn: ConnRef, id: Option<u64> },
    /// An HTTP API request in flight on a connection: slot `index` of request `req`.
    Http { conn: ConnRef, req: u32, index: u16 },
    /// A thread using the embedding API.
    External(Sender<Published>),
}

impl ReplyTo {
    /// The shard of the connection waiting for the result, if one waits.
    pub fn conn_shard(&self) -> Option<ShardId> {
        match self {
            ReplyTo::Ws { conn, .. } | ReplyTo::Http { conn, .. } => Some(conn.shard),
            ReplyTo::Nobody | ReplyTo::External(_) => None,
        }
    }
}

#[derive(Debug)]
pub enum ShardMsg {
    /// To the owner: shard `from` starts (`on`) or stops wanting the channel's publications.
    Interest {
        channel: Arc<str>,
        from: ShardId,
        on: bool,
    },
    /// To a shard that asked for interest: current position; later publications follow.
    InterestAck {
        channel: Arc<str>,
        epoch: Arc<str>,
        offset: u64,
    },
    /// To the owner: assign an offset and fan out.
    Publish {
        channel: Arc<str>,
        data: Bytes,
        reply: ReplyTo,
    },
    /// To a shard with subscribers: one publication, already framed once for all.
    Deliver {
        channel: Arc<str>,
        offset: u64,
        epoch: Arc<str>,
        frame: PreparedFrame,
        /// When the owner assigned the offset (for the latency histogram).
        published_at: std::time::Instant,
    },
    /// To the publisher's shard: the result for an in-engine publisher.
    Published { reply: ReplyTo, result: Published },
    /// To the owner: what did `conn` miss since `since`? (a subscribe with `since`)
    Recover {
        channel: Arc<str>,
        since: shardcast_proto::command::Since,
        conn: ConnRef,
    },
    /// To the subscriber's shard: the missed pushes, then live ones follow.
    Recovered {
        channel: Arc<str>,
        conn: ConnRef,
        recovery: Recovery,
    },
    /// To the owner: the next page of a replay (pushes after `since` up to `upto`).
    ReplayPage {
        channel: Arc<str>,
        since: shardcast_proto::command::Since,
        upto: u64,
        conn: ConnRef,
    },
    /// To the subscriber's shard: that page; None when history no longer holds it.
    ReplayPageReady {
        channel: Arc<str>,
        conn: ConnRef,
        frames: Option<Vec<PreparedFrame>>,
    },
    /// To the subscriber's shard: its `since` could not be read (cluster bus down).
    RecoverFailed { channel: Arc<str>, conn: ConnRef },
    /// To the owner: a `history` command.
    History {
        channel: Arc<str>,
        since: Option<shardcast_proto::command::Since>,
        limit: usize,
        conn: ConnRef,
        id: Option<u64>,
    },
    HistoryPage {
        conn: ConnRef,
        id: Option<u64>,
        page: Option<Page>,
    },
    /// To the owner: a `presence` command.
    PresenceQuery {
        channel: Arc<str>,
        conn: ConnRef,
        id: Option<u64>,
    },
    PresenceList {
        conn: ConnRef,
        id: Option<u64>,
        members: Vec<Member>,
    },
    /// To the owner: a member joined or left.
    PresenceChange {
        channel: Arc<str>,
        member: Member,
        join: bool,
    },
    /// To shards with subscribers: a presence event, framed once.
    Event {
        channel: Arc<str>,
        frame: PreparedFrame,
    },
    /// Cluster mode, to the owner: what Redis said about a channel, in its order.
    Bus {
        channel: Arc<str>,
        event: Box<BusEvent>,
    },
    /// Cluster mode: the link to Redis is lost (every shard closes its subscribers).
    BusLost,
    /// To the publisher's shard: the publication did not happen (error `code`:
    /// 100 when the cluster bus could not carry it, 111 when the router refused it).
    PublishFailed {
        reply: ReplyTo,
        code: u16,
        message: String,
    },
    /// Close everything now (1001) and stop.
    Shutdown,
    /// Close WebSockets with 4001 paced over the window, then stop.
    Drain { window: std::time::Duration },
}

/// The sending side of one shard's inbox.
#[derive(Clone)]
pub struct Peer {
    tx: Sender<ShardMsg>,
    /// `limits.inbox_msgs_max`: `try_send` refuses past it.
    capacity: usize,
    waker: Arc<Waker>,
    sleeping: Arc<AtomicBool>,
}

/// What a shard owns of its inbox.
pub struct Inbox {
    pub rx: Receiver<ShardMsg>,
    pub waker: Arc<Waker>,
    pub sleeping: Arc<AtomicBool>,
}

/// A shard's inbox, bounded at `capacity` messages.
///
/// The queue is crossbeam's list flavour with the bound checked in `try_send`,
/// not the array flavour: a bounded array channel allocates and touches every
/// slot at creation (65,536 × 120 bytes, 7.5 MiB per shard, 375 MiB for 50
/// shards, whatever the traffic), while the list allocates blocks of 31
/// messages as they are queued and frees them as they are taken, so an idle
/// inbox costs a few hundred bytes. The check reads the length without
/// writing, and concurrent senders can pass it together, so the bound may be
/// exceeded by at most the number of senders racing (the shards and API
/// threads), which is what a bound on memory needs.
pub fn inbox(capacity: usize) -> std::io::Result<(Peer, Inbox)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(Waker::new()?);
    let sleeping = Arc::new(AtomicBool::new(false));
    Ok((
        Peer {
            tx,
            capacity,
            waker: waker.clone(),
            sleeping: sleeping.clone(),
        },
        Inbox {
            rx,
            waker,
            sleeping,
        },
    ))
}

impl Peer {
    /// Queue without waking; the caller wakes once per loop turn with [`Peer::wake_if_sleeping`].
    pub fn try_send(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        if self.tx.len() >= self.capacity {
            return Err(msg);
        }
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(m) | TrySendError::Disconnected(m) => m,
        })
    }

    /// Wake the shard only if it is (about to be) blocked: a busy shard drains its
    /// inbox every turn anyway, so this saves a syscall per message under load.
    pub fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    pub fn wake(&self) {
        self.waker.wake();
    }
}

impl Inbox {
    /// Announce that the shard is about to block; returns false if it must not
    /// (messages arrived meanwhile). Pairs with [`Peer::wake_if_sleeping`].
    pub fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.rx.is_empty() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

/// The owner shard of a channel: a stable hash of its name (FNV-1a, so every
/// process and node agrees without coordination).
pub fn owner_of(channel: &str, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as ShardId
}
