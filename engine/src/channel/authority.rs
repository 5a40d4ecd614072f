//! Who decides a channel's order: which offset a publication gets, which
//! history is kept, what a recovery is answered from. On a single node it is
//! the channel's owner shard (`channel::owner::Owner`); in cluster mode it is Redis,
//! and the owner shard relays between the bus and this node's shards.
//!
//! The rest of the engine asks the authority, never whether cluster mode is on:
//! a message to a channel's owner (`shard/inbox.rs`, `owner_msg`) is answered
//! by [`OwnerSide`], which borrows only the parts of the shard it needs and
//! routes each message by the authority: here for the owner shard's own
//! order, in `cluster/relay.rs` for Redis's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shardcast_proto::command::Since;

use crate::channel::owner::{Fanned, Owner, Positions};
use crate::cluster::{Bus, BusReq};
use crate::config::Config;
use crate::payload::{ConnRef, Member, ReadFor, Recovery, ShardId};
use crate::shard::mesh::{Peer, Published, ReplyTo, ShardMsg};
use crate::shard::router::{RefusalLog, Refused, Router};
use crate::stats::ShardStats;

/// Where every channel's order is decided, for the whole process.
#[derive(Debug, Clone)]
pub enum Authority {
    /// The owner shard assigns offsets, keeps history and answers recovery.
    Local,
    /// Redis does all three (cluster mode); this is the link to it.
    Redis(Arc<Bus>),
}

impl Authority {
    /// Redis when an address is configured (the link starts here), else local.
    pub fn start(redis: Option<SocketAddr>, prefix: &str, peers: &[Peer]) -> io::Result<Self> {
        Ok(match redis {
            Some(addr) => {
                let bus = Bus::start(addr, prefix, peers.to_vec())?;
                tracing::info!(redis = %addr, prefix = %prefix, "cluster mode");
                Authority::Redis(bus)
            }
            None => Authority::Local,
        })
    }

    /// What an owner knows of a channel it has not seen: everything when it
    /// assigns the offsets, nothing until Redis is read otherwise.
    pub fn positions(&self) -> Positions {
        match self {
            Authority::Local => Positions::Assigned,
            Authority::Redis(_) => Positions::Read,
        }
    }

    /// Whether the authority can be reached. Without it a subscriber could not
    /// be told what it misses, so the node takes no connections and is not ready.
    pub fn is_up(&self) -> bool {
        match self {
            Authority::Local => true,
            Authority::Redis(bus) => bus.is_up(),
        }
    }

    /// The state of the link to a remote authority, for metrics; None when
    /// there is no link to report on.
    pub fn link_up(&self) -> Option<bool> {
        match self {
            Authority::Local => None,
            Authority::Redis(bus) => Some(bus.is_up()),
        }
    }

    /// Hand a request to Redis; given back when it cannot be carried (the link
    /// is down, or there is no Redis to carry it to).
    pub(crate) fn send(&self, req: BusReq) -> Result<(), BusReq> {
        match self {
            Authority::Local => Err(req),
            Authority::Redis(bus) => bus.send(req),
        }
    }
}

/// The parts of a shard that answer as a channel's owner: the channel's
/// [`Owner`] state, the router to the shards (itself included), and the
/// [`Authority`] that orders the channel. Borrowed from the shard for one
/// message (`Core::owner_side`); it never reaches a connection.
pub(crate) struct OwnerSide<'a> {
    pub id: ShardId,
    pub owner: &'a mut Owner,
    pub router: &'a mut Router,
    pub refusals: &'a mut RefusalLog,
    pub authority: &'a Authority,
    pub cfg: &'a Config,
    pub stats: &'a ShardStats,
    pub now: Instant,
}

/// A publication the owner side did not take: the shard answers whoever
/// published it (`Core::refuse_publish`, `Core::publish_failed`).
pub(crate) enum Unpublished {
    /// A shard it would fan out to has no room: refused before it gets an offset.
    Refused(ReplyTo),
    /// The cluster bus could not carry it.
    BusDown(ReplyTo),
}

/// Each message whose answer depends on who orders the channel: the owner
/// shard's own (below), or its relay to Redis (`cluster/relay.rs`).
impl OwnerSide<'_> {
    /// A shard's interest in a channel changed; it learns where to join.
    pub(crate) fn interest(&mut self, channel: Arc<str>, from: usize, on: bool) {
        match self.authority {
            Authority::Local => self.owner_interest(channel, from, on),
            Authority::Redis(_) => self.cluster_interest(channel, from, on),
        }
    }

    /// A publication gets its offset, is kept and fanned out.
    pub(crate) fn publish(
        &mut self,
        channel: Arc<str>,
        data: Bytes,
        reply: ReplyTo,
    ) -> Result<(), Unpublished> {
        match self.authority {
            Authority::Local => self.owner_publish(channel, data, reply),
            Authority::Redis(_) => self.cluster_publish(channel, data, reply),
        }
    }

    /// A subscribe with `since`: where to join and the first page it missed.
    pub(crate) fn recover(&mut self, channel: Arc<str>, since: Since, conn: ConnRef) {
        match self.authority {
            Authority::Local => self.serve_recovery(channel, since, conn),
            Authority::Redis(_) => self.cluster_read(channel, ReadFor::Recover { since, conn }),
        }
    }

    /// The next page of a replay, up to `upto`.
    pub(crate) fn replay_page(
        &mut self,
        channel: Arc<str>,
        since: Since,
        upto: u64,
        conn: ConnRef,
    ) {
        match self.authority {
            Authority::Local => self.serve_replay_page(channel, since, upto, conn),
            Authority::Redis(_) => {
                self.cluster_read(channel, ReadFor::Replay { since, upto, conn })
            }
        }
    }

    /// A `history` command's page.
    pub(crate) fn history(
        &mut self,
        channel: Arc<str>,
        since: Option<Since>,
        limit: usize,
        conn: ConnRef,
        id: Option<u64>,
    ) {
        match self.authority {
            Authority::Local => self.serve_history(channel, since, limit, conn, id),
            Authority::Redis(_) => {
                let then = ReadFor::History {
                    since,
                    limit,
                    conn,
                    id,
                };
                self.cluster_read(channel, then)
            }
        }
    }

    /// Who is present on a channel, for a `presence` query.
    pub(crate) fn presence_query(&mut self, channel: Arc<str>, conn: ConnRef, id: Option<u64>) {
        let members = self.owner.members(&channel);
        self.router
            .send(conn.shard, ShardMsg::PresenceList { conn, id, members });
    }

    /// A member joined or left: the owner tells every shard that listens. The
    /// member list changes whatever happens; the event is not sent to a shard
    /// with no room (counted, logged), as it has no offset and no answer.
    pub(crate) fn presence_change(&mut self, channel: Arc<str>, member: Member, join: bool) {
        if let Some((frame, mut bits)) = self.owner.presence(&channel, member, join) {
            while bits != 0 {
                let to = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let (channel, frame) = (channel.clone(), frame.clone());
                if self
                    .router
                    .try_send(to, ShardMsg::Event { channel, frame })
                    .is_err()
                {
                    self.refusals
                        .record(self.stats, self.id, Refused::Event, self.now);
                }
            }
        }
    }

    /// Hand one publication, framed once, to every shard with subscribers.
    pub(crate) fn fan_out(&mut self, channel: &Arc<str>, fanned: Fanned) {
        ShardStats::inc(&self.stats.publications);
        let mut bits = fanned.interest;
        while bits != 0 {
            let to = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.router.send(
                to,
                ShardMsg::Deliver {
                    channel: channel.clone(),
                    offset: fanned.offset,
                    epoch: fanned.epoch.clone(),
                    frame: fanned.frame.clone(),
                    published_at: self.now,
                },
            );
        }
    }

    /// Send a recovery's answer to the subscriber's shard (from the owner's
    /// history, or from Redis's in cluster mode).
    pub(crate) fn answer_recovery(&mut self, channel: Arc<str>, conn: ConnRef, recovery: Recovery) {
        let msg = ShardMsg::Recovered {
            channel,
            conn,
            recovery,
        };
        self.router.send(conn.shard, msg);
    }

    /// Send a replay page (`None`: the read failed) to the subscriber's shard.
    pub(crate) fn answer_replay_page(
        &mut self,
        channel: Arc<str>,
        conn: ConnRef,
        frames: Option<Vec<shardcast_proto::PreparedFrame>>,
    ) {
        let msg = ShardMsg::ReplayPageReady {
            channel,
            conn,
            frames,
        };
        self.router.send(conn.shard, msg);
    }
}

/// The owner shard's own order (single node).
impl OwnerSide<'_> {
    /// A shard's interest in a channel changed; a new one learns where to join.
    fn owner_interest(&mut self, channel: Arc<str>, from: usize, on: bool) {
        let (epoch, offset) = self.owner.interest(&channel, from, on);
        if on {
            self.router.send(
                from,
                ShardMsg::InterestAck {
                    channel,
                    epoch,
                    offset,
                },
            );
        }
    }

    /// The owner orders a publication, fans it out, and answers the publisher.
    /// A publication that a shard it fans out to has no room for is refused
    /// before it gets an offset: once it has one, every subscriber must get it.
    fn owner_publish(
        &mut self,
        channel: Arc<str>,
        data: Bytes,
        reply: ReplyTo,
    ) -> Result<(), Unpublished> {
        if !self.router.all_have_room(self.owner.interest_of(&channel)) {
            return Err(Unpublished::Refused(reply));
        }
        let fanned = self.owner.publish(&channel, &data, self.now);
        let result = Published {
            offset: fanned.offset,
            epoch: fanned.epoch.clone(),
        };
        self.fan_out(&channel, fanned);
        match reply {
            ReplyTo::Nobody => {}
            ReplyTo::External(tx) => {
                let _ = tx.try_send(result);
            }
            ReplyTo::Ws { conn, .. } | ReplyTo::Http { conn, .. } => self
                .router
                .send(conn.shard, ShardMsg::Published { reply, result }),
        }
        Ok(())
    }

    /// The owner side of `Recover`.
    fn serve_recovery(&mut self, channel: Arc<str>, since: Since, conn: ConnRef) {
        let page_bytes = self.cfg.recovery.page_bytes_max;
        let recovery = self.owner.recover(&channel, &since, page_bytes, self.now);
        self.answer_recovery(channel, conn, recovery);
    }

    fn serve_history(
        &mut self,
        channel: Arc<str>,
        since: Option<Since>,
        limit: usize,
        conn: ConnRef,
        id: Option<u64>,
    ) {
        let page_bytes = self.cfg.history_page_bytes();
        let page = self
            .owner
            .history(&channel, since.as_ref(), limit, page_bytes, self.now);
        self.router
            .send(conn.shard, ShardMsg::HistoryPage { conn, id, page });
    }

    /// The owner side of `ReplayPage`.
    fn serve_replay_page(&mut self, channel: Arc<str>, since: Since, upto: u64, conn: ConnRef) {
        let page_bytes = self.cfg.recovery.page_bytes_max;
        let frames = self
            .owner
            .replay(&channel, &since, upto, page_bytes, self.now);
        self.answer_replay_page(channel, conn, frames);
    }
}
