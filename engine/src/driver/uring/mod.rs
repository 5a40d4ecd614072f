//! io_uring driver: multishot accept into direct descriptors, multishot recv on a
//! provided-buffer ring, vectored sends batched into one `io_uring_enter`.
//!
//! Layout: one file per op (`accept`, `recv`, `send`, `close` with shutdown and
//! cancel, `wake`), the provided-buffer ring (`bufring`), per-connection
//! bookkeeping (`conns`), the `user_data` encoding (`token`) and ring creation
//! (`setup`). This file holds the driver state, the submission helpers and the
//! reap loop.
//!
//! Flow: `start_recv`, `send`, `shutdown_write` and `close` only push SQEs.
//! Nothing enters the kernel until `poll` (or a full SQ, which is flushed and
//! retried), so a shard turn that sends to 500 connections costs one syscall.
//! `poll` submits, waits, then turns every CQE into at most one `Completion`.
//! The reap loop never runs shard logic and never pushes an SQE: what must be
//! re-armed (accept, wake, recv) is only flagged there and submitted by `pump`
//! at the next `poll`, so a flush inside a push can safely reap.
//!
//! After `close(conn)` the only completions still reported for `conn` are the
//! `Sent` owed for a send in flight (usually `Err(ECANCELED)`), then `Closed`.
//! `Recv` CQEs that race with the cancel are not reported: the driver puts
//! their buffers back itself. `RecvClosed` is not reported either, since the
//! shard itself ended the connection.

mod accept;
mod bufring;
mod close;
mod conns;
mod recv;
mod send;
mod setup;
mod token;
mod wake;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{squeue, types, IoUring};

use super::{BufId, Completion, ConnKey, Driver, DriverConfig, DriverKind, Sock};
use accept::AcceptState;
use bufring::BufRing;
use conns::{ConnTable, CLOSED, CLOSE_DEFERRED, CLOSING, RECV_ARMED, RECV_WANTED};
use send::SendSlab;
use token::Kind;
use wake::WakeState;

/// The one provided-buffer group of each ring.
const BGID: u16 = 0;

/// How long `Drop` waits for cancelled operations to finish.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

pub struct UringDriver {
    // Declared first so it is dropped first: the ring's teardown releases the
    // kernel's hold on the buffer ring and the send storage declared below.
    ring: IoUring,
    listener: socket2::Socket,
    wake_fd: RawFd,
    bufs: BufRing,
    sends: SendSlab,
    conns: ConnTable,
    accept: AcceptState,
    wake: WakeState,
    /// Connections whose recv ended without the shard asking (ENOBUFS, no MORE).
    rearm_recv: Vec<ConnKey>,
    /// Connections whose slot close waits for the next submission (see `submit_close`).
    deferred_close: Vec<ConnKey>,
    /// Completions reaped outside `poll` (a flush of a full SQ must make room in
    /// the CQ) or produced without the kernel; `poll` hands them out first.
    backlog: Vec<Completion>,
    /// Scratch for one batch of CQEs: (user_data, result, flags).
    cqes: Vec<(u64, i32, u32)>,
    /// Sends submitted whose CQE has not been reaped yet (at most `send_budget`).
    sends_in_kernel: usize,
    /// Most sends in the kernel at once: what the CQ holds beyond the
    /// completions of everything else (see `setup::send_budget`).
    send_budget: usize,
    /// Sends waiting for room in the budget, oldest first: send-slab ids.
    send_queue: VecDeque<u32>,
    /// Closed connections whose send is still in `send_queue`.
    queued_to_cancel: usize,
    /// Accepted and not yet closed.
    open: usize,
    fixed_slots: u32,
    overflow_logged: bool,
    /// An error that broke the ring outside `poll`; `poll` returns it.
    fatal: Option<io::Error>,
}

impl UringDriver {
    pub fn new(
        listener: socket2::Socket,
        wake_fd: RawFd,
        cfg: &DriverConfig,
    ) -> io::Result<UringDriver> {
        let ring = setup::build_ring(cfg.ring_entries, cfg.cq_entries)?;
        setup::check_features(&ring)?;
        let fixed_slots = setup::fixed_file_slots(cfg.conns_max)?;
        ring.submitter().register_files_sparse(fixed_slots)?;
        let mut bufs = BufRing::new(cfg.recv_bufs, cfg.recv_buf_bytes)?;
        bufs.register(&ring.submitter(), BGID, cfg.recv_incremental)?;
        // Inherited by every accepted socket (see accept.rs).
        listener.set_tcp_nodelay(true)?;
        let send_budget = setup::send_budget(ring.params().cq_entries(), u32::from(cfg.recv_bufs));
        let mut driver = UringDriver {
            ring,
            listener,
            wake_fd,
            bufs,
            sends: SendSlab::default(),
            conns: ConnTable::new(cfg.conns_max),
            accept: AcceptState::default(),
            wake: WakeState::default(),
            rearm_recv: Vec::new(),
            deferred_close: Vec::new(),
            backlog: Vec::new(),
            cqes: Vec::with_capacity(256),
            sends_in_kernel: 0,
            send_budget,
            send_queue: VecDeque::new(),
            queued_to_cancel: 0,
            open: 0,
            fixed_slots,
            overflow_logged: false,
            fatal: None,
        };
        driver.arm_accept();
        // A negative fd: no cross-thread wake-ups on this ring (another ring of
        // the same shard watches the shard's eventfd, see `rings.rs`).
        if wake_fd >= 0 {
            driver.arm_wake();
        }
        // Enter once now: a sandbox that allows io_uring_setup but not
        // io_uring_enter then fails here, while `build` can still fall back to
        // epoll, rather than at the shard's first poll.
        driver.ring.submit()?;
        tracing::debug!(
            sq = driver.ring.params().sq_entries(),
            cq = driver.ring.params().cq_entries(),
            send_budget,
            single_issuer = driver.ring.params().is_setup_single_issuer(),
            fixed_slots,
            "io_uring driver ready"
        );
        Ok(driver)
    }

    /// Size of the direct-descriptor table: accepts beyond it fail with ENFILE.
    /// Whether reads share buffers (`io.recv_incremental` on a kernel that has it).
    pub fn recv_incremental(&self) -> bool {
        self.bufs.incremental()
    }

    pub fn fixed_file_slots(&self) -> u32 {
        self.fixed_slots
    }

    /// Signal `fd` (an eventfd) whenever the ring has new work: completion
    /// work queued for this thread, or CQEs posted (`IORING_REGISTER_EVENTFD`).
    pub(crate) fn register_eventfd(&self, fd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(fd)
    }

    /// Whether a `poll` now would find something: completions kept from a
    /// flush, CQEs in the ring, or completion work the kernel queued for this
    /// thread (`IORING_SQ_TASKRUN`, set from the first queued item until the
    /// work is run). While this is false, the next new work signals the
    /// registered eventfd.
    pub(crate) fn has_work(&mut self) -> bool {
        !self.backlog.is_empty()
            || !self.ring.completion().is_empty()
            || self.ring.submission().taskrun()
            // SQEs pushed and not yet submitted (re-arms pushed at the end of `poll`).
            || !self.ring.submission().is_empty()
            || self.accept.rearm
            || self.accept.timer_wanted
            || self.wake.rearm
            || !self.rearm_recv.is_empty()
            || !self.deferred_close.is_empty()
    }

    /// Push one SQE; when the SQ is full, flush it to the kernel and retry.
    fn push(&mut self, sqe: &squeue::Entry) {
        self.push_all(std::slice::from_ref(sqe));
    }

    /// Push SQEs that must stay together (a linked chain) in one go.
    fn push_all(&mut self, sqes: &[squeue::Entry]) {
        loop {
            // SAFETY: every SQE built by this driver points only at memory that
            // stays valid until its CQE is reaped: send storage lives in the
            // boxed slab entry until `on_send`, the back-off timespec is boxed in
            // the driver, buffers come from the registered ring, and fixed slots
            // and fds are plain integers.
            let pushed = unsafe { self.ring.submission().push_multiple(sqes) };
            if pushed.is_ok() {
                return;
            }
            if !self.flush_full_sq() {
                return;
            }
        }
    }

    /// Submit the full SQ. Returns false when the ring is unusable (the SQEs
    /// are then dropped and `poll` reports the error).
    fn flush_full_sq(&mut self) -> bool {
        match self.ring.submit() {
            Ok(_) => {
                // A turn that sends to thousands of connections fills the SQ
                // several times; sends on loopback mostly complete inline, so
                // reaping now frees CQ room (and send budget) for the rest.
                self.reap_into_backlog();
                true
            }
            Err(e) => match e.raw_os_error() {
                // EBUSY: completions are piling up in the kernel's overflow list
                // and it refuses new work until the CQ is drained. EAGAIN: out
                // of memory for requests, which completing ones free. Both are
                // fixed by reaping; reaped completions wait in the backlog.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    self.reap_into_backlog();
                    true
                }
                Some(libc::EINTR) => true,
                _ => {
                    tracing::error!(error = %e, "io_uring submit failed; driver unusable");
                    self.fatal.get_or_insert(e);
                    false
                }
            },
        }
    }

    /// Reap outside `poll`; the completions wait in the backlog for the next `poll`.
    fn reap_into_backlog(&mut self) {
        let mut backlog = std::mem::take(&mut self.backlog);
        self.reap(&mut backlog);
        self.backlog = backlog;
    }

    /// Submit what the reap loop flagged for re-arming.
    fn pump(&mut self) {
        if self.accept.timer_wanted && !self.accept.timer_armed {
            self.accept.timer_wanted = false;
            self.arm_accept_timer();
        }
        if self.accept.rearm {
            self.accept.rearm = false;
            if !self.accept.armed {
                self.arm_accept();
            }
        }
        if self.wake.rearm {
            self.wake.rearm = false;
            if !self.wake.armed {
                self.arm_wake();
            }
        }
        self.rearm_recvs();
        self.submit_deferred_closes();
        self.submit_queued_sends();
    }

    /// Turn every available CQE into completions (or internal state changes).
    fn reap(&mut self, out: &mut Vec<Completion>) {
        self.check_overflow();
        let mut batch = std::mem::take(&mut self.cqes);
        let mut flushes = 0;
        loop {
            batch.clear();
            batch.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if batch.is_empty() {
                // CQEs that did not fit wait on the kernel's overflow list
                // until an enter asks for events; fetch them now rather than
                // a turn later (bounded: each flush moves up to a CQ's worth).
                if flushes < 4 && self.ring.submission().cq_overflow() {
                    flushes += 1;
                    // submit_and_wait passes GETEVENTS while the overflow flag is set.
                    match self.ring.submitter().submit_and_wait(0) {
                        Ok(_) => continue,
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EBUSY | libc::EINTR | libc::EAGAIN)
                            ) =>
                        {
                            continue
                        }
                        Err(_) => {}
                    }
                }
                break;
            }
            for &(user_data, res, flags) in &batch {
                self.dispatch(user_data, res, flags, out);
            }
        }
        self.cqes = batch;
    }

    fn dispatch(&mut self, user_data: u64, res: i32, flags: u32, out: &mut Vec<Completion>) {
        let Some((kind, id)) = token::decode(user_data) else {
            tracing::error!(user_data, res, "CQE with unknown user_data");
            return;
        };
        match kind {
            Kind::Accept => self.on_accept(res, flags, out),
            Kind::Recv => self.on_recv(id, res, flags, out),
            Kind::Send => self.on_send(id, res, out),
            Kind::Shutdown => self.on_shutdown(id, res, out),
            Kind::Cancel => self.on_cancel(id, res, out),
            Kind::Close => self.on_close(id, res, out),
            Kind::Wake => self.on_wake(res, flags, out),
            Kind::AcceptTimer => self.on_accept_timer(res),
        }
    }

    /// The final CQE of one of `conn`'s operations was reaped.
    fn op_done(&mut self, conn: ConnKey, out: &mut Vec<Completion>) {
        let st = self.conns.get_mut(conn);
        debug_assert!(st.pending() > 0, "op count underflow for {conn}");
        st.sub_pending();
        if st.pending() == 0 && st.has(CLOSE_DEFERRED) {
            // Everything else on the slot is done: now it may be closed. The
            // reap loop does not submit, so the close goes in with the next enter.
            st.clear(CLOSE_DEFERRED);
            self.deferred_close.push(conn);
            return;
        }
        if st.pending() == 0 && st.has(CLOSING) {
            *st = conns::ConnState::default();
            st.set(CLOSED);
            out.push(Completion::Closed { conn });
        }
    }

    /// With FEAT_NODROP an overflowing CQ loses nothing (the kernel queues the
    /// extra CQEs and we flush them by entering), but it is slow and means the
    /// CQ is too small for the load: say so once.
    fn check_overflow(&mut self) {
        if self.overflow_logged {
            return;
        }
        let flagged = self.ring.submission().cq_overflow();
        let dropped = self.ring.completion().overflow();
        if flagged || dropped > 0 {
            self.overflow_logged = true;
            tracing::warn!(
                dropped,
                cq_entries = self.ring.params().cq_entries(),
                "io_uring CQ overflowed; raise ring_entries"
            );
        }
    }

    /// Submit everything and wait for at least one CQE, up to `wait` (None:
    /// no limit). Returns false when interrupted by a signal.
    fn enter(&mut self, wait: Option<Duration>) -> io::Result<bool> {
        let res = match wait {
            None => self.ring.submit_and_wait(1),
            Some(d) if d.is_zero() => {
                // Not waiting: ask for many completions with a zero timeout.
                // On a DEFER_TASKRUN ring the kernel (6.13+) runs at most
                // max(20, wanted) items of deferred work (received data,
                // finished sends) per pass, two passes an enter; asked for
                // one, a shard of 56 rings took about 2,000 receives a turn
                // and fell seconds behind on its reads at 900,000
                // connections with its core a quarter idle.
                let ts = types::Timespec::new();
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring
                    .submitter()
                    .submit_with_args(COMPLETIONS_PER_ENTER, &args)
            }
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match res {
            Ok(_) => Ok(true),
            Err(e) => match e.raw_os_error() {
                // The wait timed out.
                Some(libc::ETIME) => Ok(true),
                // A signal: return to the shard, which may have work for it.
                Some(libc::EINTR) => Ok(false),
                // CQ overflow backlog / request memory: reaping fixes both.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(true),
                _ => Err(e),
            },
        }
    }
}

/// The likely cause of a failed ring setup, for the start-up log.
pub fn setup_failure_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "kernel without io_uring, or blocked by seccomp",
        Some(libc::EPERM) => "kernel.io_uring_disabled is set, or seccomp denies io_uring",
        Some(libc::ENOMEM) => "RLIMIT_MEMLOCK too low for the rings",
        _ => "see docs/operations.md",
    }
}

/// Deferred completions asked for by an enter that does not wait (see `enter`).
const COMPLETIONS_PER_ENTER: usize = 1024;

impl UringDriver {
    fn poll_inner(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Completion>,
    ) -> io::Result<()> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let start = out.len();
        out.append(&mut self.backlog);
        // A timeout too large to add to now is the same as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            self.pump();
            let ready = out.len() > start || !self.ring.completion().is_empty();
            let wait = if ready {
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            };
            let woken = self.enter(wait)?;
            self.reap(out);
            out.append(&mut self.backlog);
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            // CQEs that only changed internal state (a shutdown's, a cancel's)
            // are no reason to return: keep waiting out the timeout.
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if out.len() > start || !woken || expired {
                // Re-arms flagged by this reap go in with the next enter.
                self.pump();
                return Ok(());
            }
        }
    }
}

impl Driver for UringDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Uring
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        let res = self.poll_inner(timeout, out);
        // The completions are handed out: a later eventfd CQE (even one reaped
        // by a flush before the next poll) is a new wake-up to report.
        self.wake.reported = false;
        res
    }

    fn start_recv(&mut self, sock: Sock, conn: ConnKey) {
        let st = self.conns.get_mut(conn);
        if st.has(CLOSING) || st.has(RECV_ARMED) {
            // After close the slot may be reused by another accept; a second
            // multishot recv would report every byte twice.
            tracing::warn!(
                conn,
                flags = st.flags(),
                "start_recv on a closing or receiving connection; ignored"
            );
            return;
        }
        st.clear(CLOSED);
        st.set_slot(sock.0);
        st.set(RECV_WANTED);
        self.arm_recv(conn);
    }

    fn recv_buf(&mut self, buf: BufId, len: u32) -> &mut [u8] {
        self.bufs.slice_mut(buf.id, buf.offset, len)
    }

    fn release(&mut self, buf: BufId) {
        if !self.bufs.give_back(buf.id) {
            tracing::error!(
                buf = buf.id,
                "release of a buffer not lent to the shard; ignored"
            );
        }
    }

    fn send(&mut self, sock: Sock, conn: ConnKey, bufs: &[Bytes]) {
        self.submit_send(sock, conn, bufs);
    }

    fn shutdown_write(&mut self, sock: Sock, conn: ConnKey) {
        self.submit_shutdown(sock, conn);
    }

    fn close(&mut self, sock: Sock, conn: ConnKey) {
        self.submit_close(sock, conn);
    }

    fn open_sockets(&self) -> usize {
        self.open
    }

    fn reads_behind(&mut self) -> bool {
        self.has_work()
    }

    fn trim(&mut self) {
        self.bufs.trim();
        self.sends.shrink_if_idle();
        // One completion per connection after a heartbeat round or a broadcast.
        crate::alloc_trim::shrink_vec(&mut self.backlog);
        crate::alloc_trim::shrink_vec(&mut self.cqes);
        crate::alloc_trim::shrink_vec(&mut self.rearm_recv);
        crate::alloc_trim::shrink_vec(&mut self.deferred_close);
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // In-flight sends point into `sends` and recvs write into `bufs`. Cancel
        // every request and wait for them to finish before that memory goes.
        let cancel = self.ring.submitter().register_sync_cancel(
            Some(types::Timespec::from(TEARDOWN_WAIT)),
            types::CancelBuilder::any(),
        );
        match cancel {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                // Some request may still be running: leak its memory rather than
                // let the kernel write into freed pages.
                tracing::warn!(error = %e, in_flight = self.sends.in_flight(), "io_uring teardown incomplete; leaking buffers");
                std::mem::forget(std::mem::take(&mut self.sends));
                self.bufs.leak();
            }
        }
    }
}
