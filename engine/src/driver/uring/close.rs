//! Half-close, and the cancel + close sequence that ends a connection.
//!
//! `close` must produce `Closed` only after the last CQE for the key. Closing a
//! direct descriptor alone is not enough: a multishot recv (or a send waiting
//! for socket space) holds its own reference to the socket and would never
//! complete. So `close` submits, hard-linked in this order:
//!
//! 1. ASYNC_CANCEL matching every request on the fixed slot (only when some op
//!    is in flight): the recv and a pending send complete with ECANCELED;
//! 2. CLOSE of the fixed slot, freeing it for a later accept.
//!
//! The hard link makes the close wait for the cancel even when the cancel
//! fails (ENOENT: the ops finished meanwhile), so the slot is never freed,
//! and reused by an accept, while a request on it could still be found.
//! Every CQE decrements the key's in-flight count; at zero, `Closed`.

use io_uring::{opcode, types};

use super::conns::{
    CLOSED, CLOSE_DEFERRED, CLOSING, REARM_QUEUED, RECV_ARMED, RECV_WANTED, SEND_QUEUED,
};
use super::token::{self, Kind};
use super::UringDriver;
use crate::driver::{Completion, ConnKey, Sock};

impl UringDriver {
    pub(super) fn submit_shutdown(&mut self, sock: Sock, conn: ConnKey) {
        let st = self.conns.get_mut(conn);
        debug_assert!(!st.has(CLOSED), "shutdown_write on {conn} after its Closed");
        if st.has(CLOSING | CLOSED) {
            tracing::warn!(conn, "shutdown_write after close; ignored");
            return;
        }
        st.add_pending();
        let sqe = opcode::Shutdown::new(types::Fixed(sock.0), libc::SHUT_WR)
            .build()
            .user_data(token::encode(Kind::Shutdown, conn));
        self.push(&sqe);
    }

    /// Cancel what is in flight on the socket; close its slot once nothing is.
    ///
    /// The `Close` must not overtake another op on the same slot: an op that the
    /// kernel runs late (punted to a worker, or not yet cancelled) resolves the
    /// fixed slot when it runs, and once the slot is closed a new accept may
    /// already own it, so that op would hit the new connection (a shutdown
    /// there shows up as EPIPE on its first write). So the cancel goes first,
    /// and the close is submitted from `op_done` when the count reaches zero.
    pub(super) fn submit_close(&mut self, sock: Sock, conn: ConnKey) {
        let st = self.conns.get_mut(conn);
        if st.has(CLOSING) {
            tracing::warn!(conn, "close called twice; ignored");
            return;
        }
        st.clear(CLOSED);
        st.set_slot(sock.0);
        st.set(CLOSING);
        st.clear(RECV_WANTED | REARM_QUEUED);
        if st.has(SEND_QUEUED) {
            // Its send never reached the kernel: `pump` completes it with
            // ECANCELED without waiting for its turn in the queue.
            self.queued_to_cancel += 1;
        }
        if st.pending() == 0 {
            self.push_close(conn);
            return;
        }
        // An idle connection's multishot recv is often all that is in flight,
        // as at a mass disconnect or a drain, with at most a send beside it.
        // Matched by their user_data, the kernel finds each with one hash
        // lookup; matched by descriptor, it scans every request pending on
        // the ring, so closing n connections costs n² (a 23 s soft lockup
        // closing 19,000 connections of one ring). The descriptor is the
        // fallback for anything else in flight (a shutdown).
        let recv = st.has(RECV_ARMED);
        let queued = st.has(SEND_QUEUED);
        let pending = st.pending();
        st.set(CLOSE_DEFERRED);
        let send = self.conns.send_of(conn);
        let named = u32::from(recv) + u32::from(send.is_some()) + u32::from(queued);
        // At most two cancels, without allocating on the close path.
        let by_user_data =
            |kind, id| Some(types::CancelBuilder::user_data(token::encode(kind, id)));
        let cancels = if named == pending {
            [
                if recv {
                    by_user_data(Kind::Recv, conn)
                } else {
                    None
                },
                send.and_then(|id| by_user_data(Kind::Send, id)),
            ]
        } else {
            [
                Some(types::CancelBuilder::fd(types::Fixed(sock.0)).all()),
                None,
            ]
        };
        // A send still in the driver's queue is failed by `pump`; nothing in
        // the kernel to cancel then, and the close follows from `op_done`.
        for builder in cancels.into_iter().flatten() {
            self.conns.get_mut(conn).add_pending();
            let cancel = opcode::AsyncCancel2::new(builder)
                .build()
                .user_data(token::encode(Kind::Cancel, conn));
            self.push(&cancel);
        }
    }

    /// Close the slot now (nothing else is in flight on it).
    pub(super) fn push_close(&mut self, conn: ConnKey) {
        let st = self.conns.get_mut(conn);
        st.clear(CLOSE_DEFERRED);
        st.add_pending();
        let close = opcode::Close::new(types::Fixed(st.slot()))
            .build()
            .user_data(token::encode(Kind::Close, conn));
        self.push(&close);
    }

    /// Submit the closes that `op_done` found ready during the last reap.
    pub(super) fn submit_deferred_closes(&mut self) {
        let list = std::mem::take(&mut self.deferred_close);
        for &conn in &list {
            self.push_close(conn);
        }
        let mut list = list;
        list.clear();
        self.deferred_close = list;
    }

    pub(super) fn on_shutdown(&mut self, conn: ConnKey, res: i32, out: &mut Vec<Completion>) {
        match -res {
            0 => {}
            // ENOTCONN: the peer already reset. ECANCELED: cancelled by close.
            libc::ENOTCONN | libc::ECANCELED => {}
            errno => tracing::debug!(conn, errno, "shutdown(SHUT_WR) failed"),
        }
        self.op_done(conn, out);
    }

    pub(super) fn on_cancel(&mut self, conn: ConnKey, res: i32, out: &mut Vec<Completion>) {
        match -res {
            // res >= 0: number of requests cancelled (matching "all").
            n if n <= 0 => {}
            // Nothing left to cancel, or a request already running to completion:
            // either way its CQE arrives and is counted.
            libc::ENOENT | libc::EALREADY => {}
            errno => tracing::warn!(conn, errno, "cancel on close failed"),
        }
        self.op_done(conn, out);
    }

    pub(super) fn on_close(&mut self, conn: ConnKey, res: i32, out: &mut Vec<Completion>) {
        match -res {
            0 => self.open -= 1,
            // EBADF/EINVAL: the slot held no socket (the shard closed a `Sock`
            // that was never accepted, or twice); nothing was open to count down.
            errno => tracing::warn!(conn, errno, "close of direct descriptor failed"),
        }
        self.op_done(conn, out);
    }
}
