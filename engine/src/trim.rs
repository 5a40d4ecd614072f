//! Giving back what a burst left in the shard's own work lists.
//!
//! Every accepted connection puts an entry in `http_deadlines` (24 bytes) that
//! stays until its handshake deadline passes, and a heartbeat round puts every
//! connection in `due` and `dirty`. A ramp of 7,500 connections per shard left
//! those vectors at their peak capacity for good: about 30 bytes per idle
//! connection, resident, holding nothing. About once a second (with the
//! driver's trim) each list that is mostly empty shrinks back.

use crate::alloc_trim::{shrink_deque, shrink_vec};
use crate::shard::Core;

impl Core {
    /// Shrink the shard's work lists that a burst left mostly empty.
    pub(crate) fn trim_lists(&mut self) {
        shrink_deque(&mut self.http_deadlines);
        shrink_deque(&mut self.lingers);
        shrink_deque(&mut self.http_stalls);
        shrink_deque(&mut self.local);
        for q in &mut self.overflow {
            shrink_deque(q);
        }
        shrink_vec(&mut self.dirty);
        shrink_vec(&mut self.to_shutdown);
        shrink_vec(&mut self.to_close);
        shrink_vec(&mut self.due);
        shrink_vec(&mut self.delivered_at);
    }
}
