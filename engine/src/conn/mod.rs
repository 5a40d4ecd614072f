//! Per-connection state, kept small (48 bytes): an idle subscribed WebSocket
//! connection holds a socket handle, a generation, a few flags, two 16-bit
//! heartbeat stamps, an empty queue (one null pointer) and its one
//! subscription (8 bytes; more live in the shard's `MoreSubs`). A message cut
//! off by the end of a read, the HTTP phase's state and the token's claims
//! live in the `Extra` box, which an anonymous connection between messages
//! does not have.

pub(crate) mod commands;
pub(crate) mod convert;
pub(crate) mod lifecycle;
pub(crate) mod outbound;
pub mod outq;
pub(crate) mod partial;
pub(crate) mod session;
pub(crate) mod sse;

use std::sync::Arc;

use bytes::Bytes;
use shardcast_proto::Decoder;

use crate::channel::sublist::SubRef;
use crate::conn::outq::OutQueue;
use crate::driver::{ConnKey, Sock, SEND_IOVECS_MAX};
use crate::payload::{ConnRef, ShardId};
use crate::policy::users::UserConns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading an HTTP request (an upgrade or an API call).
    Http,
    /// An open WebSocket.
    Ws,
    /// Our close frame (or final HTTP response) is queued or sent; waiting to close the socket.
    Closing,
    /// The socket close was requested from the driver; waiting for `Closed`.
    Dead,
}

/// HTTP-phase state: the request bytes so far, and the request awaiting an async result.
#[derive(Debug, Default)]
pub struct HttpState {
    pub buf: Vec<u8>,
    /// When an incomplete request stops being waited for (slowloris guard).
    pub deadline: Option<std::time::Instant>,
    /// Pipelined API requests in arrival order: publishes waiting for owner
    /// shards, and responses ready but held behind them (answers keep order).
    pub waiting: std::collections::VecDeque<Waiting>,
    /// Set while the unsent responses are at `http_queue_bytes_max` and requests
    /// wait (backpressure): when the client must have read some of them by.
    pub stalled: Option<std::time::Instant>,
    /// `100 Continue` was sent for the request being received.
    pub continued: bool,
}

/// A pipelined API request: waiting for owner shards to assign offsets, or
/// already answered (`ready`) but held until the requests before it are.
#[derive(Debug, Default)]
pub struct Waiting {
    pub req: u32,
    pub broadcast: bool,
    pub keep_alive: bool,
    pub channels: Vec<Arc<str>>,
    pub results: Vec<Option<crate::shard::mesh::Published>>,
    pub ready: Option<Vec<u8>>,
}

/// Outcome of queueing bytes for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueue {
    Ok,
    /// The queue would exceed `queue_bytes_max`: the connection is a slow consumer.
    Backpressure,
}

/// Bits of [`Conn::flags`].
pub mod flag {
    /// The read side ended (EOF or error).
    pub const READ_CLOSED: u16 = 1 << 0;
    /// Shut down the write side once `out` drains (after a close frame or final response).
    pub const CLOSE_AFTER_FLUSH: u16 = 1 << 1;
    /// In the shard's dirty list already.
    pub const DIRTY: u16 = 1 << 2;
    /// A ping was sent and nothing has arrived since.
    pub const PING_OUTSTANDING: u16 = 1 << 3;
    /// A write is in flight.
    pub const SENDING: u16 = 1 << 4;
    /// A Server-Sent Events stream, not a WebSocket (same phase, other framing).
    pub const SSE: u16 = 1 << 5;
    /// Free the queue's memory once it drains: what is queued is a one-off (the
    /// upgrade's replies, a heartbeat ping), so the connection is idle after it.
    pub const RELEASE_WHEN_DRAINED: u16 = 1 << 6;
    /// The WebSocket speaks `shardcast.v1.msgpack`: binary MessagePack frames.
    pub const MSGPACK: u16 = 1 << 7;
    /// An entry for this connection sits in the shard's frame-deadline wheel
    /// (at most one: the visit re-arms it while a message is still incomplete).
    pub const FRAME_TIMER: u16 = 1 << 8;
    /// The connection's token has an expiry (the heartbeat sweep checks it).
    pub const EXPIRES: u16 = 1 << 9;
    /// Pinged at least once: later pings come a whole interval after the last
    /// bytes, the first one after a delay spread by key (see policy/heartbeat.rs).
    pub const PINGED: u16 = 1 << 10;
    /// In the shard's urgent list already (see `conn/outbound.rs`).
    pub const URGENT: u16 = 1 << 11;
    /// Queued bytes include a control frame, reply or close not yet handed to
    /// a write: when a write in flight completes, the rest goes out ahead of
    /// the bulk list.
    pub const URGENT_QUEUED: u16 = 1 << 12;
}

#[derive(Debug)]
pub struct Conn {
    pub sock: Sock,
    pub gen: u32,
    pub phase: Phase,
    /// See [`flag`].
    pub flags: u16,
    /// Subscriptions waiting in the registry for the owner's answer (`Waiter`s),
    /// counted with `subs` against `channels_per_conn_max`. In padding too.
    pub pending_subs: u16,
    /// Command rate limit: tokens left (negative: commands refused since the
    /// bucket ran dry), and when it was last refilled (shard milliseconds).
    pub rl_tokens: i16,
    pub rl_stamp_ms: u32,
    /// Heartbeat tick (mod 2^16) of the last bytes received, or of the ping
    /// sent since (`PING_OUTSTANDING`); and of the last data message (for an
    /// SSE stream, of the last comment sent). 16 bits are enough: the sweep
    /// acts on every connection within `ping + pong` ticks of the first, and
    /// the idle timeout is bounded below 2^16 ticks (config.rs). See policy/heartbeat.rs.
    pub last_rx_tick: u16,
    pub last_msg_tick: u16,
    pub out: OutQueue,
    /// The subscriptions: the one most connections hold, or where the shard's
    /// `MoreSubs` keeps two or more (channel/sublist.rs).
    pub subs: SubRef,
    /// Rarely needed state, boxed so an anonymous idle WebSocket pays one null pointer.
    pub extra: Option<Box<Extra>>,
}

/// State only some connections need: the HTTP phase, or an authenticated identity.
#[derive(Debug, Default)]
pub struct Extra {
    pub http: Option<HttpState>,
    pub claims: Option<crate::policy::auth::Claims>,
    /// Counted in the per-user connection limit (released when it closes).
    pub user_counted: bool,
    /// A message cut off by the end of a read, held until the rest arrives
    /// (most messages arrive whole, so most connections never need this).
    pub decoder: Decoder,
}

impl Extra {
    /// Nothing worth a box: the connection can drop it.
    fn is_empty(&self) -> bool {
        self.http.is_none() && self.claims.is_none() && !self.user_counted && self.decoder.is_idle()
    }
}

impl Conn {
    pub fn new(sock: Sock, gen: u32) -> Conn {
        Conn {
            sock,
            gen,
            phase: Phase::Http,
            flags: 0,
            pending_subs: 0,
            rl_tokens: i16::MAX,
            rl_stamp_ms: 0,
            last_rx_tick: 0,
            last_msg_tick: 0,
            out: OutQueue::default(),
            subs: SubRef::default(),
            extra: Some(Box::new(Extra {
                http: Some(HttpState::default()),
                ..Extra::default()
            })),
        }
    }

    /// Queue bytes unless that would pass `bytes_max` bytes or `frames_max` frames.
    pub fn enqueue(&mut self, b: Bytes, bytes_max: usize, frames_max: usize) -> Enqueue {
        if self.queued_bytes() + b.len() > bytes_max || self.out.len() >= frames_max {
            return Enqueue::Backpressure;
        }
        self.out.push_back(b);
        Enqueue::Ok
    }

    /// Bytes in the outbound queue.
    pub fn queued_bytes(&self) -> usize {
        self.out.bytes() as usize
    }

    /// Queue a control frame ahead of queued data but behind the write in flight,
    /// a partly written frame and earlier control frames, so a pong is never
    /// stuck behind a backlog and never splits a frame. Bounded like data.
    pub fn enqueue_control(&mut self, b: Bytes, bytes_max: usize) -> Enqueue {
        if self.queued_bytes() + b.len() > bytes_max {
            return Enqueue::Backpressure;
        }
        let at = (self.out.pinned() as usize).min(self.out.len());
        self.out.insert(at, b);
        self.out.set_pinned(self.out.pinned().saturating_add(1));
        Enqueue::Ok
    }

    /// Bytes wait in the shard's urgent list with no write in flight: the
    /// shard, not the peer, is what they wait for.
    pub fn waits_for_its_write_turn(&self) -> bool {
        self.has(flag::URGENT) && !self.has(flag::SENDING)
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u16, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    /// Drop queued frames that have not started to go out (before a slow-consumer close).
    pub fn discard_unsent(&mut self) {
        let keep = self.out.pinned() as usize;
        while self.out.len() > keep {
            self.out.pop_back();
        }
    }

    /// The buffers for the next vectored write.
    /// Marks the connection as sending and pins the batch.
    pub fn next_batch(&mut self, into: &mut Vec<Bytes>) -> usize {
        into.clear();
        into.extend(self.out.iter().take(SEND_IOVECS_MAX).cloned());
        self.out.set_pinned(self.out.pinned().max(into.len() as u8));
        self.set(flag::SENDING, true);
        into.len()
    }

    /// Account for `n` bytes written from the front of the queue.
    pub fn consume(&mut self, mut n: usize) {
        self.set(flag::SENDING, false);
        while n > 0 {
            let Some(front) = self.out.front_len() else {
                break;
            };
            if front <= n {
                n -= front;
                self.out.pop_front();
                self.out.set_pinned(self.out.pinned().saturating_sub(1));
            } else {
                self.out.advance_front(n);
                // The rest of a partly written frame must go out next.
                self.out.set_pinned(self.out.pinned().max(1));
                n = 0;
            }
        }
        self.out.trim_after_burst();
    }

    pub fn http_mut(&mut self) -> Option<&mut HttpState> {
        self.extra.as_mut().and_then(|e| e.http.as_mut())
    }

    pub fn http(&self) -> Option<&HttpState> {
        self.extra.as_ref().and_then(|e| e.http.as_ref())
    }

    /// End the HTTP phase; the box goes too unless it holds claims.
    pub fn take_http(&mut self) -> Option<HttpState> {
        let h = self.extra.as_mut()?.http.take();
        self.tidy_extra();
        h
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drop the box once nothing in it is needed.
    fn tidy_extra(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.is_empty()) {
            self.extra = None;
        }
    }

    /// The frame decoder, lent out while a read is handled (the handlers may
    /// use the whole shard); give it back with [`Conn::put_decoder`].
    pub fn take_decoder(&mut self) -> Decoder {
        self.extra
            .as_mut()
            .map(|e| std::mem::take(&mut e.decoder))
            .unwrap_or_default()
    }

    /// Keep what the decoder holds; an idle one needs no room.
    pub fn put_decoder(&mut self, d: Decoder) {
        if d.is_idle() {
            if let Some(e) = self.extra.as_mut() {
                e.decoder = d;
            }
            self.tidy_extra();
        } else {
            self.extra_mut().decoder = d;
        }
    }

    /// Since when a message is incomplete (the decoder's stamp), if one is.
    pub fn incomplete_since(&self) -> Option<u32> {
        self.extra.as_ref()?.decoder.incomplete_since()
    }

    pub fn claims(&self) -> Option<&crate::policy::auth::Claims> {
        self.extra.as_ref().and_then(|e| e.claims.as_ref())
    }

    pub fn set_claims(&mut self, c: crate::policy::auth::Claims) {
        self.set(flag::EXPIRES, c.exp.is_some());
        self.extra_mut().claims = Some(c);
    }

    /// Count an authenticated connection against `limits.conns_per_user_max`
    /// (`max`; 0: no limit); false when the user already holds that many (the
    /// caller refuses it). Released when it stops being a WebSocket.
    pub(crate) fn admit_user(&mut self, users: &UserConns, max: u32) -> bool {
        if max == 0 {
            return true;
        }
        let Some(e) = self.extra.as_mut() else {
            return true; // anonymous: no identity to count
        };
        let Some(sub) = e
            .claims
            .as_ref()
            .map(|c| c.sub.as_str())
            .filter(|s| !s.is_empty())
        else {
            return true;
        };
        if !users.acquire(sub, max) {
            return false;
        }
        e.user_counted = true;
        true
    }
}

/// Connections of one shard, indexed by key; generations guard reuse.
#[derive(Debug, Default)]
pub struct Slab {
    entries: Vec<Entry>,
    free: Vec<ConnKey>,
    len: usize,
}

/// A slot of the slab. A free one keeps the generation of its last connection
/// in the room the record leaves, so no separate vector of generations is
/// needed (4 bytes per connection); the enum is no larger than `Option<Conn>`.
#[derive(Debug)]
enum Entry {
    Used(Conn),
    Free(u32),
}

impl Slab {
    /// A slab whose vectors never move up to `n` connections: reserved, not
    /// touched, so pages cost RSS only as connections arrive, and no doubling
    /// leaves an old copy behind (the allocator's slack, not ours).
    pub fn with_capacity(n: usize) -> Slab {
        Slab {
            entries: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            len: 0,
        }
    }

    pub fn insert(&mut self, sock: Sock) -> ConnKey {
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.entries.push(Entry::Free(0));
                (self.entries.len() - 1) as ConnKey
            }
        };
        let e = &mut self.entries[key as usize];
        let gen = match e {
            Entry::Free(g) => g.wrapping_add(1),
            Entry::Used(_) => unreachable!("free list holds a used slot"),
        };
        *e = Entry::Used(Conn::new(sock, gen));
        self.len += 1;
        key
    }

    pub fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let e = self.entries.get_mut(key as usize)?;
        let gen = match e {
            Entry::Used(c) => c.gen,
            Entry::Free(_) => return None,
        };
        let Entry::Used(c) = std::mem::replace(e, Entry::Free(gen)) else {
            unreachable!()
        };
        self.free.push(key);
        self.len -= 1;
        Some(c)
    }

    /// How the other shards name connection `key` of shard `shard`, while it is open.
    pub fn conn_ref(&self, shard: ShardId, key: ConnKey) -> Option<ConnRef> {
        let conn = self.get(key)?;
        Some(ConnRef {
            shard,
            key,
            gen: conn.gen,
        })
    }

    pub fn get(&self, key: ConnKey) -> Option<&Conn> {
        match self.entries.get(key as usize) {
            Some(Entry::Used(c)) => Some(c),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        match self.entries.get_mut(key as usize) {
            Some(Entry::Used(c)) => Some(c),
            _ => None,
        }
    }

    /// The connection if it is still the incarnation `gen`.
    pub fn get_gen(&mut self, key: ConnKey, gen: u32) -> Option<&mut Conn> {
        self.get_mut(key).filter(|c| c.gen == gen)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest key ever used: every connection's key is below it.
    pub fn key_end(&self) -> ConnKey {
        self.entries.len() as ConnKey
    }

    pub fn keys(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Entry::Used(_)))
            .map(|(k, _)| k as ConnKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_and_partial_writes_advance() {
        let mut c = Conn::new(Sock(3), 1);
        assert_eq!(c.enqueue(Bytes::from_static(b"hello"), 8, 10), Enqueue::Ok);
        assert_eq!(
            c.enqueue(Bytes::from_static(b"world"), 8, 10),
            Enqueue::Backpressure
        );
        assert_eq!(c.enqueue(Bytes::from_static(b"abc"), 8, 10), Enqueue::Ok);
        let mut batch = Vec::new();
        assert_eq!(c.next_batch(&mut batch), 2);
        c.consume(6);
        assert_eq!(c.out.len(), 1);
        assert_eq!(&c.out.get(0).unwrap()[..], b"bc");
        assert_eq!(c.queued_bytes(), 2);
        let mut c = Conn::new(Sock(3), 1);
        assert_eq!(c.enqueue(Bytes::from_static(b"a"), 100, 1), Enqueue::Ok);
        assert_eq!(
            c.enqueue(Bytes::from_static(b"b"), 100, 1),
            Enqueue::Backpressure,
            "frame cap"
        );
    }

    fn order(c: &Conn) -> Vec<&[u8]> {
        c.out.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn control_frames_keep_their_order_and_never_split_a_frame() {
        let mut c = Conn::new(Sock(3), 1);
        c.enqueue(Bytes::from_static(b"data1"), 100, 10);
        c.enqueue(Bytes::from_static(b"data2"), 100, 10);
        let mut batch = Vec::new();
        c.next_batch(&mut batch);
        // Part of data1 written: its rest must go out before anything else.
        c.consume(2);
        c.enqueue_control(Bytes::from_static(b"P1"), 100);
        c.enqueue_control(Bytes::from_static(b"P2"), 100);
        assert_eq!(order(&c)[0], b"ta1", "the partial frame stays first");
        let pos = |x: &[u8]| order(&c).iter().position(|b| *b == x).unwrap();
        assert!(
            pos(b"P1") < pos(b"P2"),
            "pongs in ping order: {:?}",
            order(&c)
        );
        assert!(
            pos(b"P2") < pos(b"data2") || pos(b"data2") == 1,
            "{:?}",
            order(&c)
        );
        c.discard_unsent();
        assert_eq!(
            order(&c)[0],
            b"ta1",
            "a half-written frame is never dropped"
        );
        assert!(order(&c).contains(&&b"P1"[..]));
    }

    #[test]
    fn control_frames_are_bounded_too() {
        let mut c = Conn::new(Sock(3), 1);
        assert_eq!(
            c.enqueue_control(Bytes::from_static(b"12345"), 8),
            Enqueue::Ok
        );
        assert_eq!(
            c.enqueue_control(Bytes::from_static(b"12345"), 8),
            Enqueue::Backpressure
        );
    }

    #[test]
    fn idle_connection_state_is_small() {
        // Guard against growth: the per-connection target is < 100 bytes of user
        // space, of which the slab entry is the most (docs/ARCHITECTURE.md).
        use std::mem::size_of;
        assert!(
            size_of::<Option<Conn>>() <= 48,
            "{}",
            size_of::<Option<Conn>>()
        );
        assert_eq!(size_of::<Entry>(), size_of::<Option<Conn>>(), "gen fits in");
        assert_eq!(size_of::<OutQueue>(), 8, "an idle queue is a null pointer");
        assert_eq!(size_of::<Option<Box<Extra>>>(), 8);
        assert_eq!(
            size_of::<crate::channel::registry::Slot>(),
            4,
            "the registry entry"
        );
    }

    #[test]
    fn a_decoder_holding_nothing_needs_no_box() {
        let cfg = shardcast_proto::reassembly::DecoderConfig {
            role: shardcast_proto::Role::Server,
            message_bytes_max: 1 << 20,
        };
        let mut c = Conn::new(Sock(3), 1);
        c.take_http();
        let mut d = c.take_decoder();
        // Half of a masked text frame's header: the decoder must hold it.
        d.feed(&cfg, &mut [0x81], |_| {}).unwrap();
        c.put_decoder(d);
        assert!(c.extra.is_some() && c.incomplete_since().is_some());
        let mut d = c.take_decoder();
        d.feed(&cfg, &mut [0x80, 0, 0, 0, 0], |_| {}).unwrap();
        c.put_decoder(d);
        assert!(c.extra.is_none(), "the message completed: the box went");
    }

    #[test]
    fn slab_generations_change_on_reuse() {
        let mut s = Slab::default();
        let k = s.insert(Sock(1));
        let g = s.get(k).unwrap().gen;
        s.remove(k);
        assert!(s.remove(k).is_none(), "removed once");
        assert!(s.get(k).is_none());
        let k2 = s.insert(Sock(2));
        assert_eq!(k, k2);
        assert!(s.get_gen(k2, g).is_none());
        assert_eq!(s.get(k2).unwrap().gen, g.wrapping_add(1));
        assert_eq!(s.len(), 1);
        assert_eq!(s.keys().collect::<Vec<_>>(), vec![k2]);
    }
}
