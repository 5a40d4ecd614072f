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

use bytes::Bytes;
use io_uring::{opcode, types};

use super::conns::{CLOSING, SEND_QUEUED};
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
    msg: Box<libc::msghdr>,
    iov: Vec<libc::iovec>,
    bufs: Vec<Bytes>,
}

#[derive(Default)]
pub(super) struct SendSlab {
    ops: Vec<SendOp>,
    free: Vec<u32>,
}

impl SendSlab {
    /// Store `bufs` for `conn`; returns the op id and the `msghdr` to submit.
    fn insert(&mut self, conn: ConnKey, slot: u32, bufs: &[Bytes]) -> (u32, *const libc::msghdr) {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.ops.push(SendOp {
                    conn,
                    slot,
                    // SAFETY: msghdr is plain C data for which all-zero is valid
                    // (null name and control, no iovecs).
                    msg: Box::new(unsafe { std::mem::zeroed() }),
                    iov: Vec::new(),
                    bufs: Vec::new(),
                });
                (self.ops.len() - 1) as u32
            }
        };
        let op = &mut self.ops[id as usize];
        op.conn = conn;
        op.slot = slot;
        op.bufs.extend_from_slice(bufs);
        op.iov.extend(op.bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = op.iov.len() as _;
        (id, &*op.msg)
    }

    /// Connection, slot and `msghdr` of a stored op (None for a stale id).
    fn get(&self, id: u32) -> Option<(ConnKey, u32, *const libc::msghdr)> {
        let op = self.ops.get(id as usize)?;
        if op.iov.is_empty() {
            return None;
        }
        Some((op.conn, op.slot, &*op.msg))
    }

    /// The op finished: drop its `Bytes` and recycle the entry. Returns its connection.
    fn remove(&mut self, id: u32) -> Option<ConnKey> {
        let op = self.ops.get_mut(id as usize)?;
        if op.iov.is_empty() {
            return None;
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
        op.msg.msg_iov = std::ptr::null_mut();
        op.msg.msg_iovlen = 0;
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
        if st.has(CLOSING) {
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
        st.pending += 1;
        let (id, msg) = self.sends.insert(conn, sock.0, bufs);
        if self.sends_in_kernel < self.send_budget && self.send_queue.is_empty() {
            self.push_send(id, sock.0, msg);
        } else {
            // The CQ could not hold another completion for sure: wait in
            // order, `pump` submits it as reaped sends make room. The shard
            // sees a send in flight meanwhile, so its queue keeps growing and
            // the next write to this connection carries more frames.
            self.conns.get_mut(conn).flags |= SEND_QUEUED;
            self.send_queue.push_back(id);
        }
    }

    fn push_send(&mut self, id: u32, slot: u32, msg: *const libc::msghdr) {
        self.sends_in_kernel += 1;
        let sqe = opcode::SendMsg::new(types::Fixed(slot), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(token::encode(Kind::Send, id));
        self.push(&sqe);
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
            self.conns.get_mut(conn).flags &= !SEND_QUEUED;
            self.push_send(id, slot, msg);
        }
        // Pushing may have flushed and reaped into the backlog meanwhile:
        // keep the order, earlier completions first.
        done.append(&mut self.backlog);
        self.backlog = done;
    }

    fn cancel_queued_send(&mut self, id: u32, conn: ConnKey, out: &mut Vec<Completion>) {
        self.sends.remove(id);
        self.conns.get_mut(conn).flags &= !SEND_QUEUED;
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
}
