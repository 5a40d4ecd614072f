//! Per-connection state, kept small: an idle subscribed WebSocket connection
//! holds a socket handle, a generation, a few flags, an empty decoder (one
//! pointer), an empty queue and its subscription list. Everything needed only
//! during the HTTP phase lives in a box that is dropped after the upgrade.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use shardcast_proto::Decoder;

use crate::driver::{ConnKey, Sock, SEND_IOVECS_MAX};
use crate::registry::{ChannelId, Slot};

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
    /// An API request waiting for owner shards: its id and the results gathered so far.
    pub waiting: Option<crate::http_api::Waiting>,
}

/// Outcome of queueing bytes for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueue {
    Ok,
    /// The queue would exceed `queue_bytes_max`: the connection is a slow consumer.
    Backpressure,
}

#[derive(Debug)]
pub struct Conn {
    pub sock: Sock,
    pub gen: u32,
    pub phase: Phase,
    /// Entries at the front of `out` submitted in the send in flight (0: none).
    pub inflight: u8,
    /// The read side ended (EOF or error).
    pub read_closed: bool,
    /// Shut down the write side once `out` drains (after a close frame or final response).
    pub close_after_flush: bool,
    /// In the shard's dirty list already.
    pub dirty: bool,
    /// A ping was sent and nothing has arrived since.
    pub ping_outstanding: bool,
    pub queued_bytes: u32,
    /// Command rate limit: tokens left (negative: commands refused since the
    /// bucket ran dry), and when it was last refilled (shard milliseconds).
    pub rl_tokens: i16,
    pub rl_stamp_ms: u32,
    /// Heartbeat wheel tick of the last bytes received, and of the last data message.
    pub last_rx_tick: u32,
    pub last_msg_tick: u32,
    pub decoder: Decoder,
    pub out: VecDeque<Bytes>,
    /// (channel, slot in the channel's subscriber list).
    pub subs: Vec<(ChannelId, Slot)>,
    /// Rarely needed state, boxed so an anonymous idle WebSocket pays one null pointer.
    pub extra: Option<Box<Extra>>,
}

/// State only some connections need: the HTTP phase, or an authenticated identity.
#[derive(Debug, Default)]
pub struct Extra {
    pub http: Option<HttpState>,
    pub claims: Option<crate::auth::Claims>,
}

impl Conn {
    pub fn new(sock: Sock, gen: u32) -> Conn {
        Conn {
            sock,
            gen,
            phase: Phase::Http,
            inflight: 0,
            read_closed: false,
            close_after_flush: false,
            dirty: false,
            ping_outstanding: false,
            queued_bytes: 0,
            rl_tokens: i16::MAX,
            rl_stamp_ms: 0,
            last_rx_tick: 0,
            last_msg_tick: 0,
            decoder: Decoder::default(),
            out: VecDeque::new(),
            subs: Vec::new(),
            extra: Some(Box::new(Extra {
                http: Some(HttpState::default()),
                claims: None,
            })),
        }
    }

    /// Queue bytes unless that would pass `bytes_max` bytes or `frames_max` frames.
    pub fn enqueue(&mut self, b: Bytes, bytes_max: usize, frames_max: usize) -> Enqueue {
        if self.queued_bytes as usize + b.len() > bytes_max || self.out.len() >= frames_max {
            return Enqueue::Backpressure;
        }
        self.queued_bytes += b.len() as u32;
        self.out.push_back(b);
        Enqueue::Ok
    }

    /// Queue a control frame ahead of queued data but behind the send in flight,
    /// so a pong or close is never stuck behind a backlog. Not counted against the limit.
    pub fn enqueue_control(&mut self, b: Bytes) {
        self.queued_bytes += b.len() as u32;
        let at = (self.inflight as usize).min(self.out.len());
        self.out.insert(at, b);
    }

    /// Drop queued data that is not being written (before a slow-consumer close).
    pub fn discard_unsent(&mut self) {
        let keep = self.inflight as usize;
        while self.out.len() > keep {
            if let Some(b) = self.out.pop_back() {
                self.queued_bytes -= b.len() as u32;
            }
        }
    }

    /// The buffers for the next vectored write.
    pub fn next_batch(&self, into: &mut Vec<Bytes>) -> usize {
        into.clear();
        into.extend(self.out.iter().take(SEND_IOVECS_MAX).cloned());
        into.len()
    }

    /// Account for `n` bytes written from the front of the queue.
    pub fn consume(&mut self, mut n: usize) {
        self.inflight = 0;
        self.queued_bytes -= n as u32;
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.out.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    pub fn http_mut(&mut self) -> Option<&mut HttpState> {
        self.extra.as_mut().and_then(|e| e.http.as_mut())
    }

    pub fn http(&self) -> Option<&HttpState> {
        self.extra.as_ref().and_then(|e| e.http.as_ref())
    }

    /// End the HTTP phase; the box goes too unless it holds claims.
    pub fn take_http(&mut self) -> Option<HttpState> {
        let e = self.extra.as_mut()?;
        let h = e.http.take();
        if e.claims.is_none() {
            self.extra = None;
        }
        h
    }

    pub fn claims(&self) -> Option<&crate::auth::Claims> {
        self.extra.as_ref().and_then(|e| e.claims.as_ref())
    }

    pub fn set_claims(&mut self, c: crate::auth::Claims) {
        self.extra.get_or_insert_with(Box::default).claims = Some(c);
    }
}

/// Connections of one shard, indexed by key; generations guard reuse.
#[derive(Debug, Default)]
pub struct Slab {
    entries: Vec<Option<Conn>>,
    free: Vec<ConnKey>,
    gens: Vec<u32>,
    len: usize,
}

impl Slab {
    pub fn insert(&mut self, sock: Sock) -> ConnKey {
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.entries.push(None);
                self.gens.push(0);
                (self.entries.len() - 1) as ConnKey
            }
        };
        let gen = self.gens[key as usize].wrapping_add(1);
        self.gens[key as usize] = gen;
        self.entries[key as usize] = Some(Conn::new(sock, gen));
        self.len += 1;
        key
    }

    pub fn remove(&mut self, key: ConnKey) -> Option<Conn> {
        let c = self.entries.get_mut(key as usize)?.take()?;
        self.free.push(key);
        self.len -= 1;
        Some(c)
    }

    pub fn get(&self, key: ConnKey) -> Option<&Conn> {
        self.entries.get(key as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.entries.get_mut(key as usize).and_then(Option::as_mut)
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

    pub fn keys(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
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
        c.inflight = 2;
        c.consume(6);
        assert_eq!(c.out.len(), 1);
        assert_eq!(&c.out[0][..], b"bc");
        assert_eq!(c.queued_bytes, 2);
        let mut c = Conn::new(Sock(3), 1);
        assert_eq!(c.enqueue(Bytes::from_static(b"a"), 100, 1), Enqueue::Ok);
        assert_eq!(
            c.enqueue(Bytes::from_static(b"b"), 100, 1),
            Enqueue::Backpressure,
            "frame cap"
        );
    }

    #[test]
    fn control_frames_jump_the_queue_but_not_the_send_in_flight() {
        let mut c = Conn::new(Sock(3), 1);
        c.enqueue(Bytes::from_static(b"a"), 100, 10);
        c.enqueue(Bytes::from_static(b"b"), 100, 10);
        c.inflight = 1;
        c.enqueue_control(Bytes::from_static(b"P"));
        let v: Vec<&[u8]> = c.out.iter().map(|b| &b[..]).collect();
        assert_eq!(v, vec![&b"a"[..], b"P", b"b"]);
        c.discard_unsent();
        assert_eq!(c.out.len(), 1);
        assert_eq!(c.queued_bytes, 1);
    }

    #[test]
    fn idle_connection_state_is_small() {
        // Guard against growth: the per-connection target is < 100 bytes of user space.
        assert!(
            std::mem::size_of::<Option<Conn>>() <= 104,
            "{}",
            std::mem::size_of::<Option<Conn>>()
        );
    }

    #[test]
    fn slab_generations_change_on_reuse() {
        let mut s = Slab::default();
        let k = s.insert(Sock(1));
        let g = s.get(k).unwrap().gen;
        s.remove(k);
        let k2 = s.insert(Sock(2));
        assert_eq!(k, k2);
        assert!(s.get_gen(k2, g).is_none());
    }
}
