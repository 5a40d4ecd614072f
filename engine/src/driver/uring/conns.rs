//! Per-connection bookkeeping: 8 bytes per key, no allocation per connection.
//!
//! The driver must know when no further CQE can arrive for a connection, so it
//! counts the operations in flight for it: the multishot recv while armed, the
//! send, any shutdown, and the cancel and close issued by `close`. `Closed` is
//! emitted when that count drops to zero after `close`.

use super::super::ConnKey;

/// The multishot recv is in the kernel (its final CQE has not arrived).
pub(super) const RECV_ARMED: u8 = 1 << 0;
/// The shard wants data: set by `start_recv`, cleared by `RecvClosed` or `close`.
pub(super) const RECV_WANTED: u8 = 1 << 1;
/// The connection is in the re-arm list (recv ended with ENOBUFS or without MORE).
pub(super) const REARM_QUEUED: u8 = 1 << 2;
/// `close` was called; only `Sent` and finally `Closed` are still reported.
pub(super) const CLOSING: u8 = 1 << 3;
/// The slot's `Close` waits until every other op on it has completed.
pub(super) const CLOSE_DEFERRED: u8 = 1 << 4;
/// A send waits in the driver's queue for room in the CQ (not yet submitted).
pub(super) const SEND_QUEUED: u8 = 1 << 5;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ConnState {
    /// Direct-descriptor slot of the socket.
    pub(super) slot: u32,
    /// Operations in flight whose final CQE has not been reaped.
    pub(super) pending: u16,
    pub(super) flags: u8,
}

impl ConnState {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

pub(super) struct ConnTable {
    states: Vec<ConnState>,
}

impl ConnTable {
    /// Reserved for `conns_max` keys but written only as the shard uses them
    /// (it reuses freed keys before taking new ones), so a shard sized for
    /// 20,000 that holds 100 has 100 entries' pages resident, and the table
    /// never doubles (a doubling left the old copy in the allocator: about
    /// 4 bytes per connection of slack at 15,000).
    pub(super) fn new(conns_max: u32) -> ConnTable {
        ConnTable {
            states: Vec::with_capacity(conns_max as usize),
        }
    }

    /// The state for `conn`, growing the table when the shard uses a key beyond
    /// the configured maximum (the shard owns key allocation, not us).
    pub(super) fn get_mut(&mut self, conn: ConnKey) -> &mut ConnState {
        let i = conn as usize;
        if i >= self.states.len() {
            self.states.resize(i + 1, ConnState::default());
        }
        &mut self.states[i]
    }
}
