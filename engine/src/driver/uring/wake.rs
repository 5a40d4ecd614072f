//! Cross-thread wake-ups: a multishot poll on the shard's eventfd.
//!
//! A multishot POLL_ADD posts a CQE each time the eventfd becomes readable, so
//! one SQE serves every wake-up. On each CQE the counter is read back to zero
//! (`Waker::drain`) so the next `wake` makes it readable again, and one
//! `Completion::Wake` is reported per `poll` however many wake-ups coalesced.

use io_uring::{cqueue, opcode, types};

use super::token::{self, Kind};
use super::UringDriver;
use crate::driver::{Completion, Waker};

impl UringDriver {
    pub(super) fn arm_wake(&mut self) {
        let sqe = opcode::PollAdd::new(types::Fd(self.wake_fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(token::encode(Kind::Wake, 0));
        self.wake.armed = true;
        self.push(&sqe);
    }

    pub(super) fn on_wake(&mut self, res: i32, flags: u32, out: &mut Vec<Completion>) {
        let more = cqueue::more(flags);
        if !more {
            self.wake.armed = false;
        }
        if res >= 0 {
            Waker::drain(self.wake_fd);
            if !self.wake.reported {
                self.wake.reported = true;
                out.push(Completion::Wake);
            }
            self.wake.rearm |= !more;
            return;
        }
        match -res {
            // Teardown.
            libc::ECANCELED => {}
            // The poll could not be kept (memory): arm a fresh one, and report a
            // wake in case one was missed meanwhile; a spurious Wake is harmless.
            libc::ENOMEM | libc::EAGAIN | libc::EINTR => {
                self.wake.rearm |= !more;
                if !self.wake.reported {
                    self.wake.reported = true;
                    out.push(Completion::Wake);
                }
            }
            // EBADF/EINVAL: the eventfd is gone. Re-arming would fail at once,
            // forever; the shard only loses cross-thread wake-ups.
            errno => tracing::error!(
                errno,
                fd = self.wake_fd,
                "wake-up poll failed; not re-armed"
            ),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct WakeState {
    pub(super) armed: bool,
    /// Arm again at the next `pump` (the multishot ended).
    pub(super) rearm: bool,
    /// A `Wake` was reported during the current `poll`.
    pub(super) reported: bool,
}
