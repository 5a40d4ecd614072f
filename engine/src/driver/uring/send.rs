//! Vectored sends: one SENDMSG per `send`, its memory owned by a slab.
//!
//! SENDMSG rather than WRITEV: MSG_NOSIGNAL keeps a write to a reset peer from
//! raising SIGPIPE, and a socket's O_NONBLOCK flag cannot turn it into an EAGAIN
//! completion. Without MSG_WAITALL a stream socket's short write completes as
//! is; the shard resubmits the rest.
//!
//! The kernel reads the `msghdr`, the iovec array and the bytes they point at
//! after `send` returns (at submission, or later if the socket buffer is full),
//! so all three live in a slab entry until the CQE arrives: the `Bytes` clones
//! keep the data alive, and the `msghdr` is boxed so that growing the slab never
//! moves one the kernel has been given (the iovec array is a `Vec`'s heap block,
//! which does not move either). Entries are reused, keeping their
//! vectors' capacity, so steady-state sends allocate nothing.
//!
//! A send of one buffer (a broadcast frame to an idle subscriber, a ping: most
//! sends) is a plain SEND of that buffer's bytes, held by a `Bytes` clone in the
//! entry itself: no `msghdr`, no iovec array, nothing on the heap. A broadcast
//! to thousands of connections needs one entry each at once, and with three
//! allocations per entry the burst cost 3 allocations per subscriber and left
//! pages behind in the allocator afterwards.

use bytes::Bytes;
use io_uring::{opcode, types};

use super::conns::{CLOSED, CLOSING, SEND_QUEUED};
use super::token::{self, Kind};
use super::UringDriver;
use crate::driver::{Completion, ConnKey, Sock, SEND_IOVECS_MAX};

/// Vector capacity a recycled slab entry keeps (typical sends carry a few frames).
const KEEP_IOVECS: usize = 8;
/// Free entries that keep their vectors; beyond this, a finished entry gives
/// its memory back. A broadcast briefly needs one entry per subscriber; keeping
/// them all would pin hundreds of bytes per connection for good, and even 256
/// kept (about 500 bytes each with their vectors) were 17 bytes per connection
/// of an idle 15,000 on 2 shards; a burst regrows the rest in a few hundred
/// allocations.
const KEEP_WARM: usize = 16;

struct SendOp {
    conn: ConnKey,
    /// Direct descriptor to write to (kept for a send queued in the driver).
    slot: u32,
    /// The one buffer of a single-buffer send.
    one: Option<Bytes>,
    /// A vectored send's header, iovecs and buffers (empty otherwise).
    msg: Option<Box<libc::msghdr>>,
    iov: Vec<libc::iovec>,
    bufs: Vec<Bytes>,
}

impl SendOp {
    fn in_use(&self) -> bool {
        self.one.is_some() || !self.iov.is_empty()
    }

    fn payload(&self) -> Payload {
        match (&self.one, &self.msg) {
            (Some(b), _) => Payload::One(b.as_ptr(), b.len() as u32),
            (None, Some(m)) => Payload::Msg(&**m),
            (None, None) => unreachable!("a send op in use has a payload"),
        }
    }
}

/// What a SQE hands the kernel: a buffer, or a `msghdr` of several.
#[derive(Clone, Copy)]
enum Payload {
    One(*const u8, u32),
    Msg(*const libc::msghdr),
}

#[derive(Default)]
pub(super) struct SendSlab {
    ops: Vec<SendOp>,
    free: Vec<u32>,
}

impl SendSlab {
    /// Store `bufs` (at least one) for `conn`; returns the op id and what to submit.
    fn insert(&mut self, conn: ConnKey, slot: u32, bufs: &[Bytes]) -> (u32, Payload) {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.ops.push(SendOp {
                    conn,
                    slot,
                    one: None,
                    msg: None,
                    iov: Vec::new(),
                    bufs: Vec::new(),
                });
                (self.ops.len() - 1) as u32
            }
        };
        let op = &mut self.ops[id as usize];
        op.conn = conn;
        op.slot = slot;
        if let [b] = bufs {
            op.one = Some(b.clone());
            return (id, op.payload());
        }
        op.bufs.extend_from_slice(bufs);
        op.iov.extend(op.bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        // SAFETY: msghdr is plain C data for which all-zero is valid (null name
        // and control, no iovecs).
        let msg = op
            .msg
            .get_or_insert_with(|| Box::new(unsafe { std::mem::zeroed() }));
        msg.msg_iov = op.iov.as_mut_ptr();
        msg.msg_iovlen = op.iov.len() as _;
        (id, op.payload())
    }

    /// Connection, slot and payload of a stored op (None for a stale id).
    fn get(&self, id: u32) -> Option<(ConnKey, u32, Payload)> {
        let op = self.ops.get(id as usize)?;
        if !op.in_use() {
            return None;
        }
        Some((op.conn, op.slot, op.payload()))
    }

    /// The op finished: drop its `Bytes` and recycle the entry. Returns its connection.
    /// The connection of op `id`.
    fn conn_of(&self, id: u32) -> Option<ConnKey> {
        self.ops.get(id as usize).map(|op| op.conn)
    }

    fn remove(&mut self, id: u32) -> Option<ConnKey> {
        let op = self.ops.get_mut(id as usize)?;
        if !op.in_use() {
            return None;
        }
        if op.one.take().is_some() {
            self.free.push(id);
            return Some(op.conn);
        }
        op.iov.clear();
        op.bufs.clear();
        // The slab grows to the peak number of concurrent sends (every
        // connection, during a broadcast); cap what each entry keeps so a rare
        // 64-buffer send does not pin its vectors' capacity forever.
        let keep = if self.free.len() < KEEP_WARM {
            KEEP_IOVECS
        } else {
            0
        };
        op.iov.shrink_to(keep);
        op.bufs.shrink_to(keep);
        if keep == 0 {
            op.msg = None;
        } else if let Some(msg) = op.msg.as_mut() {
            msg.msg_iov = std::ptr::null_mut();
            msg.msg_iovlen = 0;
        }
        self.free.push(id);
        Some(op.conn)
    }

    /// A broadcast or a heartbeat round has one send per connection in flight,
    /// and the slab keeps that peak (about 128 bytes an entry). With nothing in
    /// flight, give it back down to the warm entries. Called about once a second,
    /// not after every burst, so a busy shard does not regrow it round after round.
    pub(super) fn shrink_if_idle(&mut self) {
        if self.in_flight() == 0 && self.ops.len() > KEEP_WARM {
            self.ops.truncate(KEEP_WARM);
            self.ops.shrink_to_fit();
            self.free.clear();
            self.free.extend((0..KEEP_WARM as u32).rev());
            self.free.shrink_to_fit();
        }
    }

    /// Sends in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.ops.len() - self.free.len()
    }
}

impl UringDriver {
    pub(super) fn submit_send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        // Past SEND_IOVECS_MAX the contract is broken but the kernel still
        // copes (up to UIO_MAXIOV, then the send fails with EMSGSIZE).
        if bufs.len() > SEND_IOVECS_MAX {
            tracing::warn!(
                conn,
                bufs = bufs.len(),
                "send with more than SEND_IOVECS_MAX buffers"
            );
        }
        let st = self.conns.get_mut(conn);
        debug_assert!(!st.has(CLOSED), "send on {conn} after its Closed");
        if st.has(CLOSING | CLOSED) {
            // A send after close (a shard bug): the slot may soon hold another
            // socket, so never submit; the contract still owes one `Sent`.
            tracing::warn!(conn, "send after close; failed with ECANCELED");
            self.backlog.push(Completion::Sent {
                conn,
                result: Err(libc::ECANCELED),
            });
            return;
        }
        if bufs.iter().all(|b| b.is_empty()) {
            self.backlog.push(Completion::Sent {
                conn,
                result: Ok(0),
            });
            return;
        }
        st.add_pending();
        let (id, msg) = self.sends.insert(conn, sock.0, bufs);
        if self.sends_in_kernel < self.send_budget && self.send_queue.is_empty() {
            self.push_send(id, sock.0, msg);
        } else {
            // The CQ could not hold another completion for sure: wait in
            // order, `pump` submits it as reaped sends make room. The shard
            // sees a send in flight meanwhile, so its queue keeps growing and
            // the next write to this connection carries more frames.
            self.conns.get_mut(conn).set(SEND_QUEUED);
            self.send_queue.push_back(id);
        }
    }

    fn push_send(&mut self, id: u32, slot: u32, payload: Payload) {
        self.sends_in_kernel += 1;
        if let Some(conn) = self.sends.conn_of(id) {
            self.conns.set_send(conn, Some(id));
        }
        let sqe = match payload {
            Payload::One(ptr, len) => opcode::Send::new(types::Fixed(slot), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            Payload::Msg(msg) => opcode::SendMsg::new(types::Fixed(slot), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        };
        self.push(&sqe.user_data(token::encode(Kind::Send, id)));
    }

    /// Submit queued sends while the budget allows; a queued send whose
    /// connection was closed meanwhile completes with ECANCELED, unsubmitted
    /// (its slot may already be closed).
    pub(super) fn submit_queued_sends(&mut self) {
        let mut done = std::mem::take(&mut self.backlog);
        if self.queued_to_cancel > 0 {
            // One pass however many closes: a closing connection's `Closed`
            // must not wait behind sends stuck on slow readers.
            self.queued_to_cancel = 0;
            let mut queue = std::mem::take(&mut self.send_queue);
            queue.retain(|&id| {
                let Some((conn, _, _)) = self.sends.get(id) else {
                    return false;
                };
                if !self.conns.get_mut(conn).has(CLOSING) {
                    return true;
                }
                self.cancel_queued_send(id, conn, &mut done);
                false
            });
            self.send_queue = queue;
        }
        while self.sends_in_kernel < self.send_budget {
            let Some(id) = self.send_queue.pop_front() else {
                break;
            };
            let Some((conn, slot, msg)) = self.sends.get(id) else {
                tracing::error!(id, "queued send for an unknown op");
                continue;
            };
            if self.conns.get_mut(conn).has(CLOSING) {
                self.cancel_queued_send(id, conn, &mut done);
                continue;
            }
            self.conns.get_mut(conn).clear(SEND_QUEUED);
            self.push_send(id, slot, msg);
        }
        // Pushing may have flushed and reaped into the backlog meanwhile:
        // keep the order, earlier completions first.
        done.append(&mut self.backlog);
        self.backlog = done;
    }

    fn cancel_queued_send(&mut self, id: u32, conn: ConnKey, out: &mut Vec<Completion>) {
        self.sends.remove(id);
        self.conns.get_mut(conn).clear(SEND_QUEUED);
        out.push(Completion::Sent {
            conn,
            result: Err(libc::ECANCELED),
        });
        self.op_done(conn, out);
    }

    pub(super) fn on_send(&mut self, id: u32, res: i32, out: &mut Vec<Completion>) {
        self.sends_in_kernel = self.sends_in_kernel.saturating_sub(1);
        let Some(conn) = self.sends.remove(id) else {
            tracing::error!(id, res, "send CQE for an unknown op");
            return;
        };
        self.conns.set_send(conn, None);
        let result = if res >= 0 {
            Ok(res as usize)
        } else {
            match -res {
                // io_uring retries these itself; should one surface, "nothing
                // written" makes the shard resubmit, which is what it means.
                libc::EAGAIN | libc::EINTR => Ok(0),
                // EPIPE/ECONNRESET: peer gone. ECANCELED: cancelled by `close`.
                // ETIMEDOUT/EHOSTUNREACH: path gone. EBADF: stale slot. The shard
                // decides what each means for the connection.
                errno => Err(errno),
            }
        };
        out.push(Completion::Sent { conn, result });
        self.op_done(conn, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slab_gives_a_burst_back_once_nothing_is_in_flight() {
        let mut slab = SendSlab::default();
        let frame = Bytes::from_static(b"\x81\x02hi");
        // A broadcast: one send per connection in flight at once.
        let ids: Vec<u32> = (0..1000)
            .map(|c| slab.insert(c, c, std::slice::from_ref(&frame)).0)
            .collect();
        assert_eq!((slab.ops.len(), slab.in_flight()), (1000, 1000));
        for (c, id) in ids.iter().enumerate().take(999) {
            assert_eq!(slab.remove(*id), Some(c as u32));
        }
        assert_eq!(slab.ops.len(), 1000, "kept while a send is in flight");
        slab.shrink_if_idle();
        assert_eq!(slab.ops.len(), 1000, "kept while a send is in flight");
        assert_eq!(slab.remove(ids[999]), Some(999));
        slab.shrink_if_idle();
        assert_eq!((slab.ops.len(), slab.in_flight()), (KEEP_WARM, 0));
        assert_eq!(slab.remove(ids[999]), None, "a stale id is unknown");
        // Entries are reused afterwards.
        let (id, _) = slab.insert(7, 7, &[frame]);
        assert!((id as usize) < KEEP_WARM);
    }

    #[test]
    fn one_buffer_is_a_plain_send_and_several_a_sendmsg() {
        let mut slab = SendSlab::default();
        let (a, b) = (Bytes::from_static(b"abc"), Bytes::from_static(b"de"));
        let (id, p) = slab.insert(1, 9, std::slice::from_ref(&a));
        assert!(matches!(p, Payload::One(ptr, 3) if ptr == a.as_ptr()));
        assert!(slab.ops[id as usize].msg.is_none(), "nothing allocated");
        assert_eq!(slab.remove(id), Some(1));
        // The same entry, reused for two buffers.
        let (id2, p) = slab.insert(2, 9, &[a.clone(), b.clone()]);
        assert_eq!(id2, id);
        let Payload::Msg(m) = p else {
            panic!("two buffers go in a msghdr")
        };
        // SAFETY: test only; the msghdr lives in the slab entry.
        assert_eq!(unsafe { (*m).msg_iovlen }, 2);
        assert!(matches!(slab.get(id2), Some((2, 9, Payload::Msg(_)))));
        assert_eq!(slab.remove(id2), Some(2));
        assert!(slab.get(id2).is_none());
        let (id3, p) = slab.insert(3, 9, std::slice::from_ref(&b));
        assert!(matches!(p, Payload::One(_, 2)));
        assert_eq!(slab.remove(id3), Some(3));
        assert_eq!(slab.remove(id3), None, "removed once");
    }
}
