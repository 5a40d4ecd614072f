//! What a shard has to write: the connections' queues as seen from the shard.
//!
//! Every byte queued for a connection enters here and is counted here: data
//! frames (converted on the way for SSE streams and MessagePack connections,
//! once per shard and publication), control frames, raw HTTP responses and
//! close frames; bytes leave the count here when they are written, discarded
//! or dropped with their connection. The write lists (connections with bytes
//! to write), the write-side shutdowns and the socket closes wait here for the
//! loop's step 5 ([`Outbound::flush`]), which hands them to the driver.
//!
//! Writes go out in two classes, each a FIFO of connections of which at most
//! `io.sends_per_turn_max` are written a turn. Urgent: control frames,
//! replies, HTTP responses and closes, first. Bulk: publications fanned out
//! to subscribers, after; the rest of each waits for the next turns. One
//! publication to a million subscribers on a shard is a million writes, about
//! ten seconds of a core on loopback: written in one turn, the shard read
//! nothing, pinged nobody and answered no request for those ten seconds, and
//! the pings of the whole stretch then went out at once (docs/ARCHITECTURE.md,
//! "Bulk writes take turns").
//! A WebSocket closed by us waits here for its peer's close frame instead of a
//! write-side shutdown ([`Outbound::await_peer_close`]).
//!
//! The queues themselves live in each connection's record ([`Conn::out`]), so
//! the methods take the slab (or the connection) from their caller.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use shardcast_proto::close_scan::{CloseScan, Scan};
use shardcast_proto::{msgpack, sse, PreparedFrame};

use crate::alloc_trim::{shrink_deque, shrink_vec};
use crate::config::Config;
use crate::conn::convert::FrameCache;
use crate::conn::{flag, Conn, Enqueue, Phase, Slab};
use crate::driver::{ConnKey, Driver};
use crate::stats::ShardStats;

/// A shard's outbound side: its write work lists, framing caches and byte count.
pub(crate) struct Outbound {
    /// Connections with bytes queued and possibly no send in flight, oldest
    /// first (the bulk class: fan-out).
    dirty: VecDeque<ConnKey>,
    /// Connections with a control frame, reply or close queued (the urgent
    /// class): written before the bulk list, oldest first.
    urgent: VecDeque<ConnKey>,
    /// `io.sends_per_turn_max`: writes of each class handed to the driver per turn.
    sends_per_turn_max: usize,
    /// (urgent, bulk) writes the last flush started (the slow-turn report).
    last_flush: (usize, usize),
    /// Connections whose write side is shut once the loop turn ends.
    to_shutdown: Vec<ConnKey>,
    /// Connections whose socket is closed once the loop turn ends.
    to_close: Vec<ConnKey>,
    /// WebSockets we closed, reading their peer's frames for its close frame
    /// (24 bytes each, for as long as a close lasts).
    peer_close: HashMap<ConnKey, CloseScan>,
    /// The last frame turned into an SSE event, and into MessagePack, on this shard.
    sse_cache: FrameCache,
    msgpack_cache: FrameCache,
    stats: Arc<ShardStats>,
    /// `limits.queue_bytes_max` and `limits.queue_frames_max`.
    bytes_max: usize,
    frames_max: usize,
    /// `echo`: MessagePack connections get JSON frames as they are.
    echo: bool,
}

impl Outbound {
    pub(crate) fn new(cfg: &Config, stats: Arc<ShardStats>) -> Outbound {
        Outbound {
            dirty: VecDeque::new(),
            urgent: VecDeque::new(),
            sends_per_turn_max: cfg.io.sends_per_turn_max.max(1) as usize,
            last_flush: (0, 0),
            to_shutdown: Vec::new(),
            to_close: Vec::new(),
            peer_close: HashMap::new(),
            sse_cache: FrameCache::default(),
            msgpack_cache: FrameCache::default(),
            stats,
            bytes_max: cfg.limits.queue_bytes_max,
            frames_max: cfg.limits.queue_frames_max,
            echo: cfg.echo,
        }
    }

    /// Put `key` in the dirty list unless it is there already.
    #[inline]
    pub(crate) fn mark_dirty(&mut self, conn: &mut Conn, key: ConnKey) {
        if !conn.has(flag::DIRTY) {
            conn.set(flag::DIRTY, true);
            self.dirty.push_back(key);
        }
    }

    /// Put `key` in the urgent list: what was just queued (a control frame, a
    /// reply, an HTTP response or a close) goes out this turn, ahead of bulk.
    #[inline]
    pub(crate) fn mark_urgent(&mut self, conn: &mut Conn, key: ConnKey) {
        conn.set(flag::URGENT_QUEUED, true);
        if !conn.has(flag::URGENT) {
            conn.set(flag::URGENT, true);
            self.urgent.push_back(key);
        }
    }

    /// Bytes remain queued after a write: back in the urgent list if some of
    /// them are urgent, else at the end of the bulk list.
    pub(crate) fn mark_more(&mut self, conn: &mut Conn, key: ConnKey) {
        if conn.has(flag::URGENT_QUEUED) {
            self.mark_urgent(conn, key);
        } else {
            self.mark_dirty(conn, key);
        }
    }

    /// (urgent, bulk) writes the last [`Outbound::flush`] started.
    pub(crate) fn last_flush(&self) -> (usize, usize) {
        self.last_flush
    }

    /// Whether some connection waits for step 5 to write.
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.urgent.is_empty()
    }

    /// Queue a data frame for a WebSocket (or SSE stream), converted to its
    /// framing; anything else is ignored. Backpressure means the connection is
    /// past its budget: the caller closes it (`Core::slow_consumer`).
    #[inline]
    pub(crate) fn queue_frame(&mut self, conns: &mut Slab, key: ConnKey, frame: Bytes) -> Enqueue {
        self.queue_data(conns, key, frame, false)
    }

    /// Queue a reply to a command like a data frame (same framing and budget),
    /// in the urgent class: the client waits for it, it must not wait behind
    /// a fan-out.
    pub(crate) fn queue_reply(&mut self, conns: &mut Slab, key: ConnKey, frame: Bytes) -> Enqueue {
        self.queue_data(conns, key, frame, true)
    }

    #[inline]
    fn queue_data(
        &mut self,
        conns: &mut Slab,
        key: ConnKey,
        frame: Bytes,
        urgent: bool,
    ) -> Enqueue {
        let Some(conn) = conns.get_mut(key) else {
            return Enqueue::Ok;
        };
        if conn.phase != Phase::Ws {
            return Enqueue::Ok;
        }
        // One slab lookup for a WebSocket speaking JSON (the hot path); SSE streams
        // and MessagePack connections get the frame converted (once per shard).
        let framing = conn.flags & (flag::SSE | flag::MSGPACK);
        let frame = if framing == 0 || (framing == flag::MSGPACK && self.echo) {
            frame
        } else {
            let converted = if framing & flag::SSE != 0 {
                self.sse_event(&frame)
            } else {
                self.msgpack_frame(&frame)
            };
            let Some(frame) = converted else {
                return Enqueue::Ok;
            };
            frame
        };
        let len = frame.len() as u64;
        let r = conn.enqueue(frame, self.bytes_max, self.frames_max);
        if r == Enqueue::Ok {
            ShardStats::inc(&self.stats.frames_out);
            ShardStats::add(&self.stats.queued_bytes, len);
            if urgent {
                self.mark_urgent(conn, key);
            } else {
                self.mark_dirty(conn, key);
            }
        }
        r
    }

    /// Queue a control frame (ping, pong, SSE heartbeat) ahead of queued data,
    /// counted like data; past [`Outbound::control_bytes_max`] it is refused
    /// (backpressure, and the caller closes the connection). A connection
    /// that is gone is `None`.
    pub(crate) fn queue_control(
        &mut self,
        conns: &mut Slab,
        key: ConnKey,
        frame: Bytes,
    ) -> Option<Enqueue> {
        let limit = self.control_bytes_max();
        let conn = conns.get_mut(key)?;
        let len = frame.len() as u64;
        if conn.enqueue_control(frame, limit) == Enqueue::Backpressure {
            return Some(Enqueue::Backpressure);
        }
        ShardStats::add(&self.stats.queued_bytes, len);
        self.mark_urgent(conn, key);
        Some(Enqueue::Ok)
    }

    /// Control frames may pass the data budget by a little, so a heartbeat ping
    /// still fits when data filled the queue; a pong flood cannot grow past it.
    pub(crate) fn control_bytes_max(&self) -> usize {
        self.bytes_max + 4096
    }

    /// Queue raw bytes (HTTP responses); not subject to the WebSocket budget
    /// (the callers bound them, see `Core::send_raw`).
    pub(crate) fn queue_raw(&mut self, conns: &mut Slab, key: ConnKey, bytes: Bytes) {
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        ShardStats::add(&self.stats.queued_bytes, bytes.len() as u64);
        conn.out.push_back(bytes);
        self.mark_urgent(conn, key);
    }

    /// Queue a connection's last frame (a close frame or event) behind its data,
    /// whatever the budget. The caller then closes it after the flush.
    pub(crate) fn queue_last(&mut self, conn: &mut Conn, frame: Bytes) {
        ShardStats::add(&self.stats.queued_bytes, frame.len() as u64);
        conn.out.push_back(frame);
    }

    /// Drop what the connection has not started writing (a slow consumer).
    pub(crate) fn discard_unsent(&mut self, conn: &mut Conn) {
        let before = conn.queued_bytes();
        conn.discard_unsent();
        ShardStats::sub(
            &self.stats.queued_bytes,
            (before - conn.queued_bytes()) as u64,
        );
    }

    /// `n` bytes of the connection's queue were written.
    pub(crate) fn written(&mut self, conn: &mut Conn, n: usize) {
        ShardStats::add(&self.stats.bytes_out, n as u64);
        ShardStats::sub(&self.stats.queued_bytes, n as u64);
        conn.consume(n);
    }

    /// The connection is gone with what it still had queued.
    pub(crate) fn dropped(&mut self, conn: &Conn) {
        ShardStats::sub(&self.stats.queued_bytes, conn.queued_bytes() as u64);
    }

    /// Shut the connection's write side at the end of this loop turn.
    pub(crate) fn shutdown_write(&mut self, key: ConnKey) {
        self.to_shutdown.push(key);
    }

    /// Close the connection's socket at the end of this loop turn.
    pub(crate) fn close(&mut self, key: ConnKey) {
        self.peer_close.remove(&key);
        self.to_close.push(key);
    }

    /// Our close frame is queued on WebSocket `key`: its socket is to be closed
    /// when the peer's close frame arrives (or the linger ends), with no
    /// write-side shutdown before. RFC 6455 §7.1.1 has the server close the
    /// TCP connection first, after the closing handshake; and on io_uring a
    /// shutdown always runs on an io-wq worker, where every cancel of a close
    /// storm has to walk the shutdowns queued (docs/ARCHITECTURE.md, "Orderly close").
    pub(crate) fn await_peer_close(&mut self, key: ConnKey) {
        self.peer_close.insert(key, CloseScan::default());
    }

    /// Whether `key` waits for its peer's close frame rather than a shutdown.
    pub(crate) fn awaits_peer_close(&self, key: ConnKey) -> bool {
        self.peer_close.contains_key(&key)
    }

    /// Bytes read from a closing connection: true once they hold the peer's
    /// close frame (or what is not a client's frames at all). Their payloads
    /// are skipped, not kept.
    pub(crate) fn peer_closed(&mut self, key: ConnKey, data: &[u8]) -> bool {
        self.peer_close
            .get_mut(&key)
            .is_some_and(|scan| scan.feed(data) != Scan::More)
    }

    /// Step 5 of the loop: one vectored write per connection with queued bytes
    /// and no write in flight (up to `sends_per_turn_max` of the urgent list,
    /// then as many of the bulk list), then the shutdowns and closes.
    pub(crate) fn flush(
        &mut self,
        conns: &mut Slab,
        driver: &mut dyn Driver,
        batch: &mut Vec<Bytes>,
    ) {
        let mut urgent = 0;
        while urgent < self.sends_per_turn_max {
            let Some(key) = self.urgent.pop_front() else {
                break;
            };
            if let Some(conn) = conns.get_mut(key) {
                conn.set(flag::URGENT, false);
                urgent += usize::from(write_queued(conn, key, driver, batch));
            }
        }
        let mut sends = 0;
        while sends < self.sends_per_turn_max {
            let Some(key) = self.dirty.pop_front() else {
                break;
            };
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            conn.set(flag::DIRTY, false);
            if write_queued(conn, key, driver, batch) {
                sends += 1;
            }
        }
        self.last_flush = (urgent, sends);
        batch.clear();
        for key in self.to_shutdown.drain(..) {
            if let Some(conn) = conns.get(key) {
                driver.shutdown_write(conn.sock, key);
            }
        }
        for key in self.to_close.drain(..) {
            if let Some(conn) = conns.get(key) {
                driver.close(conn.sock, key);
            }
        }
    }

    /// Give back what a burst left in the work lists (see `shard/trim.rs`).
    pub(crate) fn trim(&mut self) {
        shrink_deque(&mut self.dirty);
        shrink_deque(&mut self.urgent);
        shrink_vec(&mut self.to_shutdown);
        shrink_vec(&mut self.to_close);
        if self.peer_close.is_empty() {
            self.peer_close.shrink_to_fit();
        }
    }

    /// The shard's queued-bytes gauge equals what its connections' queues
    /// hold: every byte is added where it is queued and subtracted where it is
    /// written or dropped. Debug builds check it once a heartbeat tick (a walk
    /// over the slab, like the heartbeat's own), so a frame counted on one
    /// side only fails the tests instead of drifting the metric.
    pub(crate) fn check_queued_gauge(&self, conns: &Slab) {
        if cfg!(debug_assertions) {
            let held: u64 = conns
                .keys()
                .filter_map(|k| conns.get(k))
                .map(|c| c.queued_bytes() as u64)
                .sum();
            let gauge = self.stats.queued_bytes.load(Ordering::Relaxed);
            debug_assert_eq!(gauge, held, "queued-bytes gauge drifted from the queues");
        }
    }

    /// The event a frame becomes on a stream (converted once per shard, see
    /// [`crate::conn::convert`]); None for anything but a whole data frame.
    fn sse_event(&mut self, frame: &Bytes) -> Option<Bytes> {
        self.sse_cache.get(frame, |f| {
            let json = shardcast_proto::prepared::payload_of(f)?;
            let mut out = Vec::with_capacity(json.len() + 48);
            sse::write_event(&mut out, json);
            Some(Bytes::from(out))
        })
    }

    /// The binary MessagePack frame a JSON frame becomes for a `shardcast.v1.msgpack`
    /// connection (converted once per shard, see [`crate::conn::convert`]).
    fn msgpack_frame(&mut self, frame: &Bytes) -> Option<Bytes> {
        self.msgpack_cache.get(frame, |f| {
            let json = shardcast_proto::prepared::payload_of(f)?;
            let mut mp = Vec::with_capacity(json.len());
            match msgpack::json_to_msgpack(json, &mut mp) {
                Ok(()) => Some(PreparedFrame::binary(&mp).into_bytes()),
                Err(e) => {
                    // Every JSON the engine queues is its own or validated: a bug.
                    tracing::warn!(error = %e, "frame not converted to MessagePack; dropped");
                    None
                }
            }
        })
    }
}

/// Hand the connection's queued bytes to one write, unless a write is in
/// flight (its completion asks again) or there is nothing to write. True when
/// a write was started.
fn write_queued(
    conn: &mut Conn,
    key: ConnKey,
    driver: &mut dyn Driver,
    batch: &mut Vec<Bytes>,
) -> bool {
    if conn.has(flag::SENDING) || conn.phase == Phase::Dead || conn.out.is_empty() {
        return false;
    }
    // Control frames sit at the front of the queue, so this write takes them.
    conn.set(flag::URGENT_QUEUED, false);
    conn.next_batch(batch);
    driver.send(conn.sock, key, batch);
    batch.clear();
    true
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;
    use crate::driver::{BufId, Completion, DriverKind, Sock};

    /// Records which connections were written to, in order.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<ConnKey>,
    }

    impl Driver for Recorder {
        fn kind(&self) -> DriverKind {
            DriverKind::Epoll
        }
        fn poll(&mut self, _: Option<Duration>, _: &mut Vec<Completion>) -> io::Result<()> {
            Ok(())
        }
        fn start_recv(&mut self, _: Sock, _: ConnKey) {}
        fn recv_buf(&mut self, _: BufId, _: u32) -> &mut [u8] {
            unreachable!("no reads here")
        }
        fn release(&mut self, _: BufId) {}
        fn send(&mut self, _: Sock, conn: ConnKey, bufs: &[Bytes]) {
            assert!(!bufs.is_empty());
            self.sent.push(conn);
        }
        fn shutdown_write(&mut self, _: Sock, _: ConnKey) {}
        fn close(&mut self, _: Sock, _: ConnKey) {}
        fn open_sockets(&self) -> usize {
            0
        }
    }

    fn shard_of(n: u32, sends_per_turn: u32) -> (Outbound, Slab) {
        let mut cfg = Config::default();
        cfg.io.sends_per_turn_max = sends_per_turn;
        let out = Outbound::new(&cfg, Arc::new(ShardStats::default()));
        let mut conns = Slab::with_capacity(n as usize);
        for i in 0..n {
            let key = conns.insert(Sock(i));
            conns.get_mut(key).unwrap().phase = Phase::Ws;
        }
        (out, conns)
    }

    /// What a write of `n` bytes completing does (the shard's `on_sent`).
    fn complete(out: &mut Outbound, conns: &mut Slab, key: ConnKey, n: usize) {
        let conn = conns.get_mut(key).unwrap();
        out.written(conn, n);
        if !conn.out.is_empty() {
            out.mark_more(conn, key);
        }
    }

    #[test]
    fn a_fan_out_takes_turns_and_a_ping_goes_out_in_the_turn_it_is_queued() {
        let (mut out, mut conns) = shard_of(10, 3);
        let frame = Bytes::from(vec![0x81; 1024]);
        for key in 0..10 {
            assert_eq!(out.queue_frame(&mut conns, key, frame.clone()), Enqueue::Ok);
        }
        let ping = Bytes::from_static(&crate::policy::heartbeat::PING_FRAME);
        out.queue_control(&mut conns, 8, ping.clone()).unwrap();
        let (mut d, mut batch) = (Recorder::default(), Vec::new());
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(
            d.sent,
            [8, 0, 1, 2],
            "the ping first, then three of the fan-out"
        );
        assert!(out.has_dirty(), "the rest waits for the next turns");
        // Next turn: a ping to a connection at the back of the bulk list, and
        // another to one whose write is in flight (it goes when that completes).
        out.queue_control(&mut conns, 9, ping.clone()).unwrap();
        out.queue_control(&mut conns, 0, ping.clone()).unwrap();
        d.sent.clear();
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [9, 3, 4, 5]);
        complete(&mut out, &mut conns, 0, 1024);
        d.sent.clear();
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [0, 6, 7], "8 and 9 were written already");
        d.sent.clear();
        out.flush(&mut conns, &mut d, &mut batch);
        assert!(d.sent.is_empty() && !out.has_dirty());
        // Every connection got its publication, each once.
        for key in 1..8 {
            complete(&mut out, &mut conns, key, 1024);
        }
        complete(&mut out, &mut conns, 8, 1024 + 2);
        complete(&mut out, &mut conns, 9, 1024 + 2);
        complete(&mut out, &mut conns, 0, 2);
        assert!((0..10).all(|k| conns.get(k).unwrap().out.is_empty()));
    }

    #[test]
    fn a_bunch_of_pings_takes_turns_too_and_leaves_room_for_bulk() {
        let (mut out, mut conns) = shard_of(8, 3);
        let ping = Bytes::from_static(&crate::policy::heartbeat::PING_FRAME);
        for key in 0..5 {
            out.queue_control(&mut conns, key, ping.clone()).unwrap();
        }
        for key in 5..8 {
            out.queue_frame(&mut conns, key, Bytes::from(vec![0x81; 1024]));
        }
        let (mut d, mut batch) = (Recorder::default(), Vec::new());
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [0, 1, 2, 5, 6, 7]);
        assert_eq!(out.last_flush(), (3, 3));
        d.sent.clear();
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [3, 4]);
        assert!(!out.has_dirty());
    }

    #[test]
    fn bulk_left_behind_a_write_waits_its_turn_again() {
        let (mut out, mut conns) = shard_of(4, 2);
        for _ in 0..2 {
            for key in 0..4 {
                out.queue_frame(&mut conns, key, Bytes::from(vec![0x81; 1024]));
            }
        }
        let (mut d, mut batch) = (Recorder::default(), Vec::new());
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [0, 1]);
        // A write that took only part of the queue: the rest is bulk, at the back.
        let conn = conns.get_mut(0).unwrap();
        out.written(conn, 1024);
        out.mark_more(conns.get_mut(0).unwrap(), 0);
        d.sent.clear();
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [2, 3]);
        d.sent.clear();
        out.flush(&mut conns, &mut d, &mut batch);
        assert_eq!(d.sent, [0]);
    }
}
