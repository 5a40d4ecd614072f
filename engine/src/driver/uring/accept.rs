//! Multishot accept into direct descriptors, with back-off on errors.
//!
//! One SQE keeps accepting until the kernel ends it (final CQE without MORE).
//! Each accepted socket lands in a free slot of the ring's fixed-file table
//! (IORING_FILE_INDEX_ALLOC); the slot index is the `Sock`. Such a socket has no
//! ordinary fd, so it costs nothing in the process fd table.
//!
//! TCP_NODELAY: a direct descriptor cannot be passed to setsockopt(2), and an
//! io_uring SETSOCKOPT command per accept would cost an SQE and a CQE each.
//! Linux copies TCP_NODELAY from the listening socket to the sockets accept
//! returns, so `UringDriver::new` sets it on the listener once instead (it is
//! usually already set by whoever built the listener).

use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, types};

use super::token::{self, Kind};
use super::UringDriver;
use crate::driver::{Completion, Sock};

/// First back-off after an accept error, doubled on each further error.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between accept attempts while errors persist.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct AcceptState {
    /// The multishot accept is in the kernel.
    pub(super) armed: bool,
    /// Arm it at the next `pump` (its previous run ended without error).
    pub(super) rearm: bool,
    /// Start the back-off timer at the next `pump`.
    pub(super) timer_wanted: bool,
    /// The back-off timer is in the kernel.
    pub(super) timer_armed: bool,
    /// Current back-off; zero after a successful accept.
    pub(super) backoff: Duration,
    /// Boxed so its address survives a move of the driver between the push of
    /// the timeout SQE and the `io_uring_enter` that reads it.
    pub(super) timer_spec: Box<types::Timespec>,
}

impl UringDriver {
    pub(super) fn arm_accept(&mut self) {
        let sqe = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .allocate_file_index(true)
            .build()
            .user_data(token::encode(Kind::Accept, 0));
        self.accept.armed = true;
        self.push(&sqe);
    }

    pub(super) fn arm_accept_timer(&mut self) {
        *self.accept.timer_spec = types::Timespec::from(self.accept.backoff);
        let spec: *const types::Timespec = &*self.accept.timer_spec;
        let sqe = opcode::Timeout::new(spec)
            .build()
            .user_data(token::encode(Kind::AcceptTimer, 0));
        self.accept.timer_armed = true;
        self.push(&sqe);
    }

    pub(super) fn on_accept(&mut self, res: i32, flags: u32, out: &mut Vec<Completion>) {
        let more = cqueue::more(flags);
        if !more {
            self.accept.armed = false;
        }
        if res >= 0 {
            self.open += 1;
            self.accept.backoff = Duration::ZERO;
            out.push(Completion::Accepted {
                sock: Sock(res as u32),
            });
            self.accept.rearm |= !more;
            return;
        }
        match -res {
            // The peer gave up while queued, or a signal interrupted: nothing is
            // wrong with the listener, and re-arming waits for the next peer.
            libc::ECONNABORTED | libc::EINTR | libc::EAGAIN => {
                tracing::debug!(errno = -res, "accept: transient error");
                self.accept.rearm |= !more;
            }
            // The driver is being torn down.
            libc::ECANCELED => {}
            // ENFILE: the direct-descriptor table is full. EMFILE/ENOMEM/ENOBUFS:
            // kernel resources. EPERM: a firewall refused. Retrying at once would
            // spin, so wait, doubling the wait while the errors go on.
            errno => {
                self.accept.backoff = (self.accept.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                let reason = match errno {
                    libc::ENFILE => "direct-descriptor table full",
                    libc::EMFILE => "file limit reached",
                    libc::ENOMEM | libc::ENOBUFS => "out of kernel memory",
                    libc::EPERM => "refused by a firewall rule",
                    libc::EINVAL => "listener is not listening",
                    _ => "unexpected error",
                };
                tracing::warn!(
                    errno,
                    reason,
                    backoff_ms = self.accept.backoff.as_millis() as u64,
                    open = self.open,
                    "accept failed"
                );
                if !more && !self.accept.timer_armed {
                    self.accept.timer_wanted = true;
                }
            }
        }
    }

    /// The back-off timer fired (-ETIME) or was cancelled at teardown.
    pub(super) fn on_accept_timer(&mut self, res: i32) {
        self.accept.timer_armed = false;
        match -res {
            libc::ETIME | 0 => self.accept.rearm = !self.accept.armed,
            libc::ECANCELED => {}
            errno => {
                // The timer could not be set (should not happen): retrying the
                // accept now is better than never accepting again.
                tracing::warn!(errno, "accept back-off timer failed");
                self.accept.rearm = !self.accept.armed;
            }
        }
    }
}
