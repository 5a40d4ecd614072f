//! Messages from the inbox (`handle_msg`): to a channel's owner (its side of
//! fan-out, routed by the authority) and to the subscribers' shard (joins,
//! deliveries, answers).

use std::sync::Arc;

use bytes::Bytes;

use shardcast_proto::{reply, PreparedFrame};

use crate::channel::authority::Authority;
use crate::channel::owner::Fanned;
use crate::channel::registry::ChannelId;
use crate::channel::subscriptions::waiter_done;
use crate::payload::{ConnRef, Member, ReadFor};
use crate::shard::mesh::{Published, ReplyTo, ShardMsg};
use crate::shard::router::Refused;
use crate::shard::Core;
use crate::stats::ShardStats;
use shardcast_proto::command::Since;

impl Core {
    /// One message from the inbox: to this shard as a channel's owner, as
    /// the shard of subscribers and publishers, or about the shard itself.
    pub(crate) fn handle_msg(&mut self, msg: ShardMsg) {
        match msg {
            m @ (ShardMsg::Interest { .. }
            | ShardMsg::Publish { .. }
            | ShardMsg::Recover { .. }
            | ShardMsg::History { .. }
            | ShardMsg::ReplayPage { .. }
            | ShardMsg::PresenceQuery { .. }
            | ShardMsg::PresenceChange { .. }) => self.owner_msg(m),
            m @ (ShardMsg::InterestAck { .. }
            | ShardMsg::Deliver { .. }
            | ShardMsg::Event { .. }
            | ShardMsg::Published { .. }
            | ShardMsg::PublishFailed { .. }
            | ShardMsg::Recovered { .. }
            | ShardMsg::RecoverFailed { .. }
            | ShardMsg::HistoryPage { .. }
            | ShardMsg::ReplayPageReady { .. }
            | ShardMsg::PresenceList { .. }) => self.subscriber_msg(m),
            ShardMsg::Bus { channel, event } => self.on_bus(channel, *event),
            ShardMsg::BusLost => self.bus_lost(),
            ShardMsg::Shutdown => self.stop(),
            ShardMsg::Drain { window } => self.begin_drain(window),
        }
    }

    /// A message to the owner of a channel, answered by the [`Authority`].
    fn owner_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Interest { channel, from, on } => self.authority_interest(channel, from, on),
            ShardMsg::Publish {
                channel,
                data,
                reply,
            } => self.authority_publish(channel, data, reply),
            ShardMsg::Recover {
                channel,
                since,
                conn,
            } => self.authority_recover(channel, since, conn),
            ShardMsg::History {
                channel,
                since,
                limit,
                conn,
                id,
            } => self.authority_history(channel, since, limit, conn, id),
            ShardMsg::ReplayPage {
                channel,
                since,
                upto,
                conn,
            } => self.authority_replay_page(channel, since, upto, conn),
            ShardMsg::PresenceQuery { channel, conn, id } => {
                let members = self.owner.members(&channel);
                self.send_to(conn.shard, ShardMsg::PresenceList { conn, id, members });
            }
            ShardMsg::PresenceChange {
                channel,
                member,
                join,
            } => self.owner_presence_change(channel, member, join),
            other => unreachable!("not for an owner: {other:?}"),
        }
    }

    /// A message to this shard's subscribers or publishers: what an owner
    /// sends out and answers.
    fn subscriber_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::InterestAck {
                channel,
                epoch,
                offset,
            } => self.interest_ack(channel, epoch, offset),
            ShardMsg::Deliver {
                channel,
                offset,
                epoch,
                frame,
                published_at,
            } => {
                if self.deliver(&channel, offset, epoch, frame) {
                    self.delivered_at.push(published_at);
                }
            }
            ShardMsg::Event { channel, frame } => {
                if let Some(ch) = self.subs.lookup(&channel) {
                    self.fan_local(ch, frame.into_bytes());
                }
            }
            ShardMsg::Published { reply, result } => self.on_published(reply, result),
            ShardMsg::PublishFailed {
                reply,
                code,
                message,
            } => self.publish_failed(reply, code, &message),
            ShardMsg::Recovered {
                channel,
                conn,
                recovery,
            } => self.on_recovered(&channel, conn, recovery),
            ShardMsg::RecoverFailed { channel, conn } => self.on_recover_failed(&channel, conn),
            ShardMsg::HistoryPage { conn, id, page } => self.on_history_page(conn, id, page),
            ShardMsg::ReplayPageReady {
                channel,
                conn,
                frames,
            } => self.on_replay_page(&channel, conn, frames),
            ShardMsg::PresenceList { conn, id, members } => {
                self.on_presence_list(conn, id, members)
            }
            other => unreachable!("not for subscribers: {other:?}"),
        }
    }

    /// A shard's interest in a channel changed; a new one learns where to join.
    pub(crate) fn owner_interest(&mut self, channel: Arc<str>, from: usize, on: bool) {
        let (epoch, offset) = self.owner.interest(&channel, from, on);
        if on {
            self.send_to(
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
    pub(crate) fn owner_publish(&mut self, channel: Arc<str>, data: bytes::Bytes, reply: ReplyTo) {
        if !self.router.all_have_room(self.owner.interest_of(&channel)) {
            return self.refuse_publish(reply, Refused::Fanout);
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
            ReplyTo::Ws { conn, .. } | ReplyTo::Http { conn, .. } => {
                self.send_to(conn.shard, ShardMsg::Published { reply, result })
            }
        }
    }

    /// The owner's answer to a publish from one of this shard's connections.
    fn on_published(&mut self, reply: ReplyTo, result: Published) {
        match reply {
            ReplyTo::Ws { conn, id } => {
                if self.conns.get_gen(conn.key, conn.gen).is_some() {
                    self.send_json(conn.key, &reply::ok_publish(id, result.offset));
                }
            }
            ReplyTo::Http { conn, req, index } => self.http_result(conn, req, index, result),
            ReplyTo::Nobody | ReplyTo::External(_) => {}
        }
    }

    /// A member joined or left: the owner tells every shard that listens. The
    /// member list changes whatever happens; the event is not sent to a shard
    /// with no room (counted, logged), as it has no offset and no answer.
    fn owner_presence_change(&mut self, channel: Arc<str>, member: Member, join: bool) {
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
                    self.refused(Refused::Event);
                }
            }
        }
    }

    /// The owner acknowledged this shard's interest: waiting subscribers join at `offset`.
    fn interest_ack(&mut self, channel: Arc<str>, epoch: Arc<str>, offset: u64) {
        let Some(ch) = self.subs.acknowledged(&channel, &epoch, offset) else {
            return;
        };
        while let Some(w) = self.subs.next_joining(ch) {
            waiter_done(&mut self.conns, &w);
            self.join_channel(ch, &w, &epoch, offset, None);
        }
        self.subs.release_if_unused(ch, &mut self.router);
    }

    /// Hand one shared frame to every local subscriber; close the ones that cannot keep up.
    /// Returns whether anyone here received it.
    fn deliver(
        &mut self,
        channel: &str,
        offset: u64,
        epoch: Arc<str>,
        frame: PreparedFrame,
    ) -> bool {
        let Some(ch) = self.subs.advance(channel, epoch, offset) else {
            return false;
        };
        self.fan_local(ch, frame.into_bytes());
        true
    }

    /// Give `bytes` to every local subscriber of the channel
    /// ([`Subscriptions::fan_local`]); pump the replays that hold it, close
    /// the subscribers that cannot keep up.
    ///
    /// [`Subscriptions::fan_local`]: crate::channel::subscriptions::Subscriptions::fan_local
    fn fan_local(&mut self, ch: ChannelId, bytes: Bytes) {
        let held_max = self.cfg.recovery.held_bytes_max;
        let lag = self.subs.fan_local(
            ch,
            &bytes,
            &mut self.conns,
            &mut self.out,
            &mut self.replays,
            held_max,
        );
        for key in lag.held {
            self.pump_replays(key);
        }
        for key in lag.slow {
            self.slow_consumer(key);
        }
    }
}

/// What the owner sends out in both modes (`cluster/relay.rs` is cluster mode's own part).
impl Core {
    /// Hand one publication, framed once, to every shard with subscribers.
    pub(crate) fn fan_out(&mut self, channel: &Arc<str>, fanned: Fanned) {
        ShardStats::inc(&self.stats.publications);
        let mut bits = fanned.interest;
        while bits != 0 {
            let to = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            self.send_to(
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

    /// A publication (or a read) that did not happen: the bus could not carry
    /// it out, or the router refused it. An embedding-API caller learns it from
    /// its reply channel closing (`PublishError::Overloaded`).
    pub(crate) fn publish_failed(&mut self, reply: ReplyTo, code: u16, message: &str) {
        match reply {
            ReplyTo::Ws { conn, id } if conn.shard == self.id => {
                if self.conns.get_gen(conn.key, conn.gen).is_some() {
                    let e = shardcast_proto::reply::error(id, code, message);
                    self.send_json(conn.key, &e);
                }
            }
            ReplyTo::Http { conn, req, .. } if conn.shard == self.id => {
                self.http_failed(conn, req, code, message)
            }
            reply => {
                if let Some(shard) = reply.conn_shard() {
                    let message = message.to_string();
                    let msg = ShardMsg::PublishFailed {
                        reply,
                        code,
                        message,
                    };
                    self.send_to(shard, msg);
                }
            }
        }
    }
}

/// The owner's side of each message whose answer depends on who orders the
/// channel ([`Authority`]): the owner shard's own (above, and
/// `channel/recovery.rs`), or its relay to Redis (`cluster/relay.rs`).
impl Core {
    /// A shard's interest in a channel changed; it learns where to join.
    pub(crate) fn authority_interest(&mut self, channel: Arc<str>, from: usize, on: bool) {
        match self.shared.authority {
            Authority::Local => self.owner_interest(channel, from, on),
            Authority::Redis(_) => self.cluster_interest(channel, from, on),
        }
    }

    /// A publication gets its offset, is kept and fanned out.
    pub(crate) fn authority_publish(&mut self, channel: Arc<str>, data: Bytes, reply: ReplyTo) {
        match self.shared.authority {
            Authority::Local => self.owner_publish(channel, data, reply),
            Authority::Redis(_) => self.cluster_publish(channel, data, reply),
        }
    }

    /// A subscribe with `since`: where to join and the first page it missed.
    pub(crate) fn authority_recover(&mut self, channel: Arc<str>, since: Since, conn: ConnRef) {
        match self.shared.authority {
            Authority::Local => self.serve_recovery(channel, since, conn),
            Authority::Redis(_) => self.cluster_read(channel, ReadFor::Recover { since, conn }),
        }
    }

    /// The next page of a replay, up to `upto`.
    pub(crate) fn authority_replay_page(
        &mut self,
        channel: Arc<str>,
        since: Since,
        upto: u64,
        conn: ConnRef,
    ) {
        match self.shared.authority {
            Authority::Local => self.serve_replay_page(channel, since, upto, conn),
            Authority::Redis(_) => {
                self.cluster_read(channel, ReadFor::Replay { since, upto, conn })
            }
        }
    }

    /// A `history` command's page.
    pub(crate) fn authority_history(
        &mut self,
        channel: Arc<str>,
        since: Option<Since>,
        limit: usize,
        conn: ConnRef,
        id: Option<u64>,
    ) {
        match self.shared.authority {
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
}
