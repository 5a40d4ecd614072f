//! This shard's subscriptions, both ways: channel → subscribers (the
//! [`Registry`]) and connection → channels (the record's [`SubRef`], with the
//! lists of connections holding two or more in [`MoreSubs`]). It keeps the two
//! in step, tells channels' owners when this shard starts and stops wanting a
//! channel (`Interest`), keeps each channel's position in its owner's order,
//! and fans a publication out to the local subscribers ([`Subscriptions::fan_local`],
//! the hottest loop of the engine).
//!
//! What a subscriber is told (replies, presence, recovery) is the caller's:
//! `conn/commands.rs` for the commands, `shard/inbox.rs` for the owner's
//! messages, `channel/recovery.rs` for `since`.
//!
//! [`SubRef`]: crate::channel::sublist::SubRef

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::registry::{Channel, ChannelId, Position, Registry, Slot, Waiter};
use crate::channel::replay::Replays;
use crate::channel::sublist::MoreSubs;
use crate::conn::outbound::Outbound;
use crate::conn::{Conn, Enqueue, Phase, Slab};
use crate::driver::ConnKey;
use crate::payload::ShardId;
use crate::shard::mesh::{owner_of, ShardMsg};
use crate::shard::router::Router;

/// A shard's subscriptions and the channels they are in.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    registry: Registry,
    /// Subscription lists of the connections holding two or more.
    more: MoreSubs,
    shard: ShardId,
    shards: usize,
}

/// Subscribers a fan-out could not simply queue to: those whose live push
/// waits behind their replay (to be pumped), and those past their budget (to
/// be closed). Both are empty, without allocating, in the common case.
#[derive(Debug, Default)]
pub(crate) struct Laggards {
    pub held: Vec<ConnKey>,
    pub slow: Vec<ConnKey>,
}

impl Subscriptions {
    pub(crate) fn new(shard: ShardId, shards: usize) -> Subscriptions {
        Subscriptions {
            registry: Registry::default(),
            more: MoreSubs::default(),
            shard,
            shards,
        }
    }

    pub(crate) fn lookup(&self, channel: &str) -> Option<ChannelId> {
        self.registry.lookup(channel)
    }

    pub(crate) fn channel(&self, ch: ChannelId) -> Option<&Channel> {
        self.registry.get(ch)
    }

    pub(crate) fn channel_mut(&mut self, ch: ChannelId) -> Option<&mut Channel> {
        self.registry.get_mut(ch)
    }

    /// The channel's name (it must exist).
    pub(crate) fn name(&self, ch: ChannelId) -> Arc<str> {
        self.registry.get(ch).expect("exists").name.clone()
    }

    /// The registry, to read (snapshots, checks).
    /// Connections holding a list of two or more subscriptions here.
    pub(crate) fn more_lists(&self) -> usize {
        self.more.len()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The channels the connection is in, with its slot in each.
    pub(crate) fn of<'a>(&'a self, conn: &'a Conn) -> &'a [(ChannelId, Slot)] {
        self.more.get(&conn.subs)
    }

    /// The channel, created `Pending` when absent; the owner hears of a new
    /// one when the caller calls [`Subscriptions::want`].
    pub(crate) fn open(&mut self, channel: &str) -> (ChannelId, bool) {
        self.registry.get_or_create(channel)
    }

    /// Tell the channel's owner that this shard wants it.
    pub(crate) fn want(&mut self, ch: ChannelId, router: &mut Router) {
        let channel = self.name(ch);
        let owner = owner_of(&channel, self.shards);
        let from = self.shard;
        router.send(
            owner,
            ShardMsg::Interest {
                channel,
                from,
                on: true,
            },
        );
    }

    /// Park a subscription until the owner answers, counted against the
    /// connection's channel cap meanwhile (see [`waiter_done`]).
    pub(crate) fn add_waiter(&mut self, conns: &mut Slab, ch: ChannelId, w: Waiter) {
        if let Some(conn) = conns.get_gen(w.key, w.gen) {
            conn.pending_subs += 1;
        }
        self.registry.get_mut(ch).expect("exists").waiters.push(w);
    }

    /// The connection becomes a subscriber of `ch` (both sides recorded);
    /// the channel's name, or None when the connection is gone or closing.
    pub(crate) fn join(&mut self, conns: &mut Slab, ch: ChannelId, w: &Waiter) -> Option<Arc<str>> {
        let conn = conns.get_gen(w.key, w.gen)?;
        if conn.phase != Phase::Ws {
            return None;
        }
        let slot = self.registry.add(ch, w.key);
        self.more.push(&mut conn.subs, (ch, slot));
        Some(self.name(ch))
    }

    /// Take `ch` out of the connection's own list; its slot in the channel's
    /// list, which the caller then passes to [`Subscriptions::leave`].
    pub(crate) fn forget(&mut self, conn: &mut Conn, ch: ChannelId) -> Option<Slot> {
        let pos = self
            .more
            .get(&conn.subs)
            .iter()
            .position(|(c, _)| *c == ch)?;
        Some(self.more.swap_remove(&mut conn.subs, pos).1)
    }

    /// Take every channel out of the connection's own list (it is closing).
    pub(crate) fn forget_all(&mut self, conn: &mut Conn) -> Vec<(ChannelId, Slot)> {
        self.more.take(&mut conn.subs)
    }

    /// Remove the subscriber at `slot` of `ch` and tell the one moved into
    /// that slot; true when the channel has nobody left (the caller releases it).
    pub(crate) fn leave(
        &mut self,
        conns: &mut Slab,
        ch: ChannelId,
        slot: Slot,
        key: ConnKey,
    ) -> bool {
        let removed = self.registry.remove(ch, slot, key);
        if let Some((moved, new_slot)) = removed.moved {
            if let Some(m) = conns.get_mut(moved) {
                if let Some(s) = self
                    .more
                    .get_mut(&mut m.subs)
                    .iter_mut()
                    .find(|(c, _)| *c == ch)
                {
                    s.1 = new_slot;
                }
            }
        }
        removed.now_empty
    }

    /// Forget an empty, active channel and tell its owner to stop sending it here.
    pub(crate) fn release(&mut self, ch: ChannelId, router: &mut Router) {
        let Some(c) = self.registry.get(ch) else {
            return;
        };
        if c.position == Position::Pending {
            return; // released when the acknowledgement arrives
        }
        if let Some(c) = self.registry.drop_channel(ch) {
            let owner = owner_of(&c.name, self.shards);
            router.send(
                owner,
                ShardMsg::Interest {
                    channel: c.name,
                    from: self.shard,
                    on: false,
                },
            );
        }
    }

    /// [`Subscriptions::release`] the channel if nobody subscribes or waits.
    pub(crate) fn release_if_unused(&mut self, ch: ChannelId, router: &mut Router) {
        if self
            .registry
            .get(ch)
            .is_some_and(|c| c.subscribers.is_empty() && c.waiters.is_empty())
        {
            self.release(ch, router);
        }
    }

    /// Forget a closed connection's pending subscription (and the channel, if
    /// nothing else holds it).
    pub(crate) fn drop_waiter(
        &mut self,
        ch: ChannelId,
        key: ConnKey,
        gen: u32,
        conns: &mut Slab,
        router: &mut Router,
    ) {
        let mut gone = Vec::new();
        if let Some(c) = self.channel_mut(ch) {
            c.waiters.retain(|w| {
                let mine = w.key == key && w.gen == gen;
                if mine {
                    gone.push(w.clone());
                }
                !mine
            });
        }
        for w in &gone {
            waiter_done(conns, w);
        }
        self.release_if_unused(ch, router);
    }

    /// The owner acknowledged this shard's interest: the channel is active
    /// from `offset`. Returns its id; the waiters that join now (those
    /// without `since`: the others keep waiting for their recovery answer)
    /// are then taken one at a time with [`Subscriptions::next_joining`].
    /// They stay waiters until their turn: a join can close its own
    /// connection (its reply finds the queue full: 4008), and a channel with
    /// no subscriber and no waiter left is released, so the ones still to
    /// join must keep it (the simulation found a shard panicking, "channel
    /// exists", when they had all been taken out first: seed 2446).
    pub(crate) fn acknowledged(
        &mut self,
        channel: &str,
        epoch: &Arc<str>,
        offset: u64,
    ) -> Option<ChannelId> {
        let ch = self.registry.lookup(channel)?;
        let c = self.registry.get_mut(ch).expect("looked up");
        c.position = Position::Active {
            epoch: epoch.clone(),
            offset,
        };
        let (plain, recovering): (Vec<_>, Vec<_>) = std::mem::take(&mut c.waiters)
            .into_iter()
            .partition(|w| w.since.is_none());
        c.waiters = recovering;
        // Last to first, so `next_joining` pops them in their order.
        c.waiters.extend(plain.into_iter().rev());
        Some(ch)
    }

    /// The next waiter of an acknowledged channel to join (see `acknowledged`).
    pub(crate) fn next_joining(&mut self, ch: ChannelId) -> Option<Waiter> {
        self.registry
            .get_mut(ch)?
            .waiters
            .pop_if(|w| w.since.is_none())
    }

    /// A publication at `offset` of `epoch` arrived: the channel to fan it
    /// out on, or None when nobody here listens or it is older than what was
    /// delivered (sent before this shard's interest was acknowledged).
    pub(crate) fn advance(
        &mut self,
        channel: &str,
        epoch: Arc<str>,
        offset: u64,
    ) -> Option<ChannelId> {
        let ch = self.registry.lookup(channel)?;
        let c = self.registry.get_mut(ch).expect("looked up");
        match &c.position {
            // Sent before our interest was acknowledged: older than the ack's offset.
            Position::Pending => return None,
            Position::Active {
                offset: last,
                epoch: e,
            } if *e == epoch && *last >= offset => return None,
            Position::Active {
                offset: last,
                epoch: e,
            } => {
                // Offsets rise by exactly one within an epoch: a gap here would be
                // a lost publication that no subscriber could notice.
                debug_assert!(
                    *e != epoch || offset == *last + 1,
                    "channel {channel}: offset {offset} after {last}"
                );
            }
        }
        c.position = Position::Active { epoch, offset };
        Some(ch)
    }

    /// Give `bytes` (one shared frame) to every local subscriber of the
    /// channel: queued to each (one reference count each, no copy), or held
    /// behind a subscriber's replay (bounded by `held_max`). Those it could
    /// not simply queue to come back for the caller to pump or close.
    pub(crate) fn fan_local(
        &mut self,
        ch: ChannelId,
        bytes: &Bytes,
        conns: &mut Slab,
        out: &mut Outbound,
        replays: &mut Replays,
        held_max: usize,
    ) -> Laggards {
        let mut lag = Laggards::default();
        let Some(c) = self.registry.get(ch) else {
            return lag;
        };
        let replaying = c.replaying > 0;
        for &key in &c.subscribers {
            if replaying {
                // Behind a replay, a live push waits its turn (bounded).
                if let Some(r) = replays.get_mut(key, ch) {
                    r.held_bytes += bytes.len();
                    r.held.push_back(bytes.clone());
                    if r.held_bytes > held_max {
                        lag.slow.push(key);
                    } else {
                        lag.held.push(key);
                    }
                    continue;
                }
            }
            if out.queue_frame(conns, key, bytes.clone()) == Enqueue::Backpressure {
                lag.slow.push(key);
            }
        }
        lag
    }
}

/// A waiter left its channel's list (joined, or dropped): it no longer
/// counts as pending. Every removal from `waiters` must call this once.
pub(crate) fn waiter_done(conns: &mut Slab, w: &Waiter) {
    if let Some(conn) = conns.get_gen(w.key, w.gen) {
        conn.pending_subs = conn.pending_subs.saturating_sub(1);
    }
}
