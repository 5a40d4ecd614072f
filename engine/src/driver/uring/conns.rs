//! Per-connection bookkeeping: 4 bytes per key, no allocation per connection.
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
/// `Closed` was reported: the key may come back only through `start_recv` (a
/// new connection) or `close` (one refused at accept). A send or shutdown on
/// it is a shard bug (the invariant "a key is never used after its Closed").
pub(super) const CLOSED: u8 = 1 << 6;

/// A connection's driver state in 4 bytes: the direct-descriptor slot (the
/// kernel caps a ring's table at 2^20 entries), the operations in flight whose
/// final CQE has not been reaped (a multishot recv, a send, a shutdown, a
/// cancel and a close: at most 5, room for 15) and the flags above.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ConnState(u32);

const SLOT_BITS: u32 = 20;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const PENDING_SHIFT: u32 = SLOT_BITS;
const PENDING_MAX: u32 = 15;
const FLAGS_SHIFT: u32 = 24;

impl ConnState {
    pub(super) fn slot(&self) -> u32 {
        self.0 & SLOT_MASK
    }

    pub(super) fn set_slot(&mut self, slot: u32) {
        assert!(slot <= SLOT_MASK, "direct descriptor slot {slot} past 2^20");
        self.0 = (self.0 & !SLOT_MASK) | slot;
    }

    pub(super) fn pending(&self) -> u32 {
        (self.0 >> PENDING_SHIFT) & PENDING_MAX
    }

    pub(super) fn add_pending(&mut self) {
        assert!(
            self.pending() < PENDING_MAX,
            "operations in flight overflow"
        );
        self.0 += 1 << PENDING_SHIFT;
    }

    pub(super) fn sub_pending(&mut self) {
        if self.pending() > 0 {
            self.0 -= 1 << PENDING_SHIFT;
        }
    }

    pub(super) fn flags(&self) -> u8 {
        (self.0 >> FLAGS_SHIFT) as u8
    }

    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }

    pub(super) fn set(&mut self, flag: u8) {
        self.0 |= u32::from(flag) << FLAGS_SHIFT;
    }

    pub(super) fn clear(&mut self, flag: u8) {
        self.0 &= !(u32::from(flag) << FLAGS_SHIFT);
    }
}

pub(super) struct ConnTable {
    states: Vec<ConnState>,
    /// By key: 1 + the send-slab id of the send in the kernel, or 0. With it
    /// `close` cancels that send by its user_data (one hash lookup in the
    /// kernel) instead of by descriptor, which scans every request pending
    /// on the ring. (Every cancel also scans the io-wq work of the thread,
    /// which only write shutdowns create: docs/ARCHITECTURE.md, "Orderly close".)
    sends: Vec<u32>,
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
            sends: Vec::with_capacity(conns_max as usize),
        }
    }

    /// `conn` has send `id` in the kernel (`None`: no longer).
    pub(super) fn set_send(&mut self, conn: ConnKey, id: Option<u32>) {
        let i = conn as usize;
        if i >= self.sends.len() {
            self.sends.resize(i + 1, 0);
        }
        self.sends[i] = id.map_or(0, |id| id + 1);
    }

    /// The send of `conn` in the kernel, if any.
    pub(super) fn send_of(&self, conn: ConnKey) -> Option<u32> {
        match self.sends.get(conn as usize) {
            Some(&v) if v > 0 => Some(v - 1),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_fields_do_not_overlap() {
        assert_eq!(std::mem::size_of::<ConnState>(), 4);
        let mut st = ConnState::default();
        st.set_slot((1 << 20) - 1);
        for _ in 0..5 {
            st.add_pending();
        }
        st.set(CLOSING | SEND_QUEUED);
        assert_eq!((st.slot(), st.pending()), ((1 << 20) - 1, 5));
        assert!(st.has(CLOSING) && st.has(SEND_QUEUED) && !st.has(RECV_ARMED));
        st.clear(CLOSING);
        st.sub_pending();
        st.set_slot(7);
        assert_eq!((st.slot(), st.pending(), st.flags()), (7, 4, SEND_QUEUED));
    }
}
