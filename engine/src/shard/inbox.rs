//! Messages from the inbox (`handle_msg`): to a channel's owner (answered by
//! its `OwnerSide`, `channel/authority.rs`, routed by the authority) and to
//! the subscribers' shard (joins, deliveries, answers).

use std::sync::Arc;

use bytes::Bytes;

use shardcast_proto::{reply, PreparedFrame};

use crate::channel::authority::Unpublished;
use crate::channel::registry::ChannelId;
use crate::channel::subscriptions::waiter_done;
use crate::shard::mesh::{Published, ReplyTo, ShardMsg};
use crate::shard::router::Refused;
use crate::shard::Core;

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
            ShardMsg::Bus { channel, event } => self.owner_side().on_bus(channel, *event),
            ShardMsg::BusLost => self.bus_lost(),
            ShardMsg::Shutdown => self.stop(),
            ShardMsg::Drain { window } => self.begin_drain(window),
        }
    }

    /// A message to the owner of a channel, answered by the parts of the
    /// shard that stand for it ([`OwnerSide`]), as the [`Authority`] routes it.
    ///
    /// [`OwnerSide`]: crate::channel::authority::OwnerSide
    /// [`Authority`]: crate::channel::authority::Authority
    fn owner_msg(&mut self, msg: ShardMsg) {
        let mut side = self.owner_side();
        match msg {
            ShardMsg::Interest { channel, from, on } => side.interest(channel, from, on),
            ShardMsg::Publish {
                channel,
                data,
                reply,
            } => {
                if let Err(unpublished) = side.publish(channel, data, reply) {
                    self.unpublished(unpublished);
                }
            }
            ShardMsg::Recover {
                channel,
                since,
                conn,
            } => side.recover(channel, since, conn),
            ShardMsg::History {
                channel,
                since,
                limit,
                conn,
                id,
            } => side.history(channel, since, limit, conn, id),
            ShardMsg::ReplayPage {
                channel,
                since,
                upto,
                conn,
            } => side.replay_page(channel, since, upto, conn),
            ShardMsg::PresenceQuery { channel, conn, id } => side.presence_query(channel, conn, id),
            ShardMsg::PresenceChange {
                channel,
                member,
                join,
            } => side.presence_change(channel, member, join),
            other => unreachable!("not for an owner: {other:?}"),
        }
    }

    /// Answer the publisher of a publication the owner side did not take.
    fn unpublished(&mut self, unpublished: Unpublished) {
        match unpublished {
            Unpublished::Refused(reply) => self.refuse_publish(reply, Refused::Fanout),
            Unpublished::BusDown(reply) => {
                let internal = shardcast_proto::command::error_code::INTERNAL;
                self.publish_failed(reply, internal, "cluster bus unavailable");
            }
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
