//! Multishot recv on a direct descriptor, filling buffers from the shared ring.
//!
//! One SQE per connection keeps receiving until the kernel ends it. Every CQE
//! carrying data names the provided buffer it filled; that buffer is lent to the
//! shard until `release`.
//!
//! When the ring runs dry the kernel ends the recv with ENOBUFS, leaving the
//! data in the socket. The connection then waits in the re-arm list until
//! buffers are back in the ring (the shard released some), and `pump` arms it
//! again: no bytes are lost and the connection is not dropped.
//!
//! After `close` the shard no longer wants data for the key: data CQEs that
//! still arrive (the cancel races with incoming bytes) are not reported, and
//! their buffers go straight back to the ring.

use io_uring::{cqueue, opcode, types};

use super::conns::{CLOSING, REARM_QUEUED, RECV_ARMED, RECV_WANTED};
use super::token::{self, Kind};
use super::{UringDriver, BGID};
use crate::driver::{BufId, Completion, ConnKey};

impl UringDriver {
    pub(super) fn arm_recv(&mut self, conn: ConnKey) {
        let st = self.conns.get_mut(conn);
        debug_assert!(!st.has(RECV_ARMED), "recv armed twice for {conn}");
        st.set(RECV_ARMED);
        st.add_pending();
        let sqe = opcode::RecvMulti::new(types::Fixed(st.slot()), BGID)
            .build()
            .user_data(token::encode(Kind::Recv, conn));
        self.push(&sqe);
    }

    /// Queue `conn` for `pump` to arm again.
    fn queue_rearm(&mut self, conn: ConnKey) {
        let st = self.conns.get_mut(conn);
        if !st.has(REARM_QUEUED) {
            st.set(REARM_QUEUED);
            self.rearm_recv.push(conn);
        }
    }

    /// Arm again the connections whose recv ended, if there are buffers for them.
    /// Without buffers they would end with ENOBUFS as soon as data arrives.
    pub(super) fn rearm_recvs(&mut self) {
        if self.rearm_recv.is_empty() || self.bufs.available() == 0 {
            return;
        }
        // Arming may flush the SQ and reap, which can queue more connections:
        // those land in the (now empty) field and are merged back afterwards.
        let mut list = std::mem::take(&mut self.rearm_recv);
        for &conn in &list {
            let st = self.conns.get_mut(conn);
            if !st.has(REARM_QUEUED) {
                // Closed (or closed and reused) since it was queued.
                continue;
            }
            st.clear(REARM_QUEUED);
            if st.has(RECV_WANTED) && !st.has(CLOSING) && !st.has(RECV_ARMED) {
                self.arm_recv(conn);
            }
        }
        list.clear();
        list.append(&mut self.rearm_recv);
        self.rearm_recv = list;
    }

    pub(super) fn on_recv(
        &mut self,
        conn: ConnKey,
        res: i32,
        flags: u32,
        out: &mut Vec<Completion>,
    ) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let mut offset = 0;
        if let Some(bid) = bid {
            let len = res.max(0) as u32;
            offset = self.bufs.take(bid, len, cqueue::buffer_more(flags));
        }
        let st = *self.conns.get_mut(conn);
        if st.has(CLOSING) || !st.has(RECV_WANTED) {
            if let Some(bid) = bid {
                self.bufs.give_back(bid);
            }
        } else if res > 0 {
            match bid {
                Some(bid) => {
                    out.push(Completion::Recv {
                        conn,
                        buf: BufId {
                            id: bid,
                            ring: 0,
                            offset,
                        },
                        len: res as u32,
                    });
                    if !more {
                        // The kernel ended the multishot (e.g. CQ pressure):
                        // the connection is fine, keep receiving.
                        self.queue_rearm(conn);
                    }
                }
                None => {
                    // Data without a buffer cannot happen with BUFFER_SELECT.
                    tracing::error!(conn, res, "recv CQE without a buffer");
                    self.recv_closed(conn, Some(libc::EIO), out);
                }
            }
        } else {
            if let Some(bid) = bid {
                self.bufs.give_back(bid);
            }
            match -res {
                0 => self.recv_closed(conn, None, out),
                // Ring ran dry: data waits in the socket until buffers return,
                // or at once if the pool still has untouched buffers to add.
                libc::ENOBUFS => {
                    self.bufs.grow();
                    self.queue_rearm(conn);
                }
                // Not expected from a multishot recv, but harmless to retry.
                libc::EINTR | libc::EAGAIN => self.queue_rearm(conn),
                // ECONNRESET, ETIMEDOUT, EHOSTUNREACH...: the peer or the path
                // is gone. ECANCELED without our close: someone cancelled it
                // (teardown); the read side is over either way. EBADF: the
                // slot holds no socket (a shard bug).
                errno => self.recv_closed(conn, Some(errno), out),
            }
        }
        if !more {
            self.conns.get_mut(conn).clear(RECV_ARMED);
            self.op_done(conn, out);
        }
    }

    fn recv_closed(&mut self, conn: ConnKey, err: Option<i32>, out: &mut Vec<Completion>) {
        self.conns.get_mut(conn).clear(RECV_WANTED);
        out.push(Completion::RecvClosed { conn, err });
    }
}
