//! Giving back what a burst left in the shard's own work lists.
//!
//! Every accepted connection puts a handshake entry in `deadlines` (24 bytes), and a
//! heartbeat round puts every connection in `due` and `dirty`. A ramp of 7,500
//! connections per shard left those vectors at their peak capacity for good:
//! about 30 bytes per idle connection, resident, holding nothing. About once a
//! second (with the driver's trim) each list that is mostly empty shrinks back.
//!
//! A deadline entry is stale as soon as its connection upgrades (or closes,
//! or re-arms its deadline for the next request), but the deque only pops
//! from the front: with the default 10 s handshake timeout, a ramp's entries
//! stayed resident for 10 s after it, 26 bytes per connection on the idle
//! benchmark's first sample. The trim drops the stale ones first.

use std::time::Instant;

use crate::alloc_trim::shrink_vec;
use crate::conn::outbound::Outbound;
use crate::conn::partial::Partials;
use crate::conn::{Phase, Slab};
use crate::policy::timer::Deadlines;
use crate::shard::router::Router;

/// Shrink the shard's work lists that a burst left mostly empty.
pub(crate) fn trim_lists(
    deadlines: &mut Deadlines,
    conns: &Slab,
    router: &mut Router,
    out: &mut Outbound,
    partials: &mut Partials,
    delivered_at: &mut Vec<Instant>,
) {
    drop_stale_deadlines(deadlines, conns);
    deadlines.trim();
    router.trim();
    out.trim();
    partials.trim();
    shrink_vec(delivered_at);
}

/// Keep only the deadline entries that still stand: the connection is in
/// its HTTP phase and this is its current deadline. Order is kept, so the
/// front is still the earliest; O(entries), once a second.
fn drop_stale_deadlines(deadlines: &mut Deadlines, conns: &Slab) {
    deadlines.retain_handshakes(|deadline, key, gen| {
        conns.get(key).is_some_and(|c| {
            c.gen == gen
                && c.phase == Phase::Http
                && c.http().is_some_and(|h| h.deadline == Some(deadline))
        })
    });
}
