//! Messages from the inbox: the owner's side of fan-out and the answers it sends back.

use std::sync::Arc;

use shardcast_proto::{reply, PreparedFrame};

use crate::mesh::{Published, ReplyTo, ShardMsg};
use crate::registry::Position;
use crate::shard::Core;
use crate::stats::ShardStats;

impl Core {
    pub(crate) fn handle_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Interest { channel, from, on } => {
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
            ShardMsg::InterestAck {
                channel,
                epoch,
                offset,
            } => self.interest_ack(channel, epoch, offset),
            ShardMsg::Publish {
                channel,
                data,
                reply,
            } => {
                let fanned = self.owner.publish(&channel, &data, self.now);
                ShardStats::inc(&self.stats.publications);
                let mut bits = fanned.interest;
                while bits != 0 {
                    let to = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let frame = fanned.frame.clone();
                    let (channel, epoch) = (channel.clone(), fanned.epoch.clone());
                    self.send_to(
                        to,
                        ShardMsg::Deliver {
                            channel,
                            offset: fanned.offset,
                            epoch,
                            frame,
                            published_at: self.now,
                        },
                    );
                }
                let result = Published {
                    offset: fanned.offset,
                    epoch: fanned.epoch,
                };
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
            ShardMsg::Published { reply, result } => match reply {
                ReplyTo::Ws { conn, id } => {
                    if self.conns.get_gen(conn.key, conn.gen).is_some() {
                        self.send_json(conn.key, &reply::ok_publish(id, result.offset));
                    }
                }
                ReplyTo::Http { conn, req, index } => self.http_result(conn, req, index, result),
                ReplyTo::Nobody | ReplyTo::External(_) => {}
            },
            ShardMsg::Recover {
                channel,
                since,
                conn,
            } => self.serve_recovery(channel, since, conn),
            ShardMsg::Recovered {
                channel,
                conn,
                recovery,
            } => self.on_recovered(&channel, conn, recovery),
            ShardMsg::History {
                channel,
                since,
                limit,
                conn,
                id,
            } => self.serve_history(channel, since, limit, conn, id),
            ShardMsg::HistoryPage { conn, id, page } => self.on_history_page(conn, id, page),
            ShardMsg::PresenceQuery { channel, conn, id } => {
                let members = self.owner.members(&channel);
                self.send_to(conn.shard, ShardMsg::PresenceList { conn, id, members });
            }
            ShardMsg::PresenceList { conn, id, members } => {
                self.on_presence_list(conn, id, members)
            }
            ShardMsg::PresenceChange {
                channel,
                member,
                join,
            } => {
                if let Some((frame, mut bits)) = self.owner.presence(&channel, member, join) {
                    while bits != 0 {
                        let to = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        let (channel, frame) = (channel.clone(), frame.clone());
                        self.send_to(to, ShardMsg::Event { channel, frame });
                    }
                }
            }
            ShardMsg::Event { channel, frame } => {
                if let Some(ch) = self.registry.lookup(&channel) {
                    self.fan_local(ch, frame.into_bytes());
                }
            }
            ShardMsg::Shutdown => self.stop(),
            ShardMsg::Drain { window } => self.begin_drain(window),
        }
    }

    /// The owner acknowledged this shard's interest: waiting subscribers join at `offset`.
    fn interest_ack(&mut self, channel: Arc<str>, epoch: Arc<str>, offset: u64) {
        let Some(ch) = self.registry.lookup(&channel) else {
            return;
        };
        let c = self.registry.get_mut(ch).expect("looked up");
        c.position = Position::Active {
            epoch: epoch.clone(),
            offset,
        };
        // Waiters with `since` keep waiting for their recovery answer.
        let (plain, recovering): (Vec<_>, Vec<_>) = std::mem::take(&mut c.waiters)
            .into_iter()
            .partition(|w| w.since.is_none());
        c.waiters = recovering;
        for w in plain {
            self.join_channel(ch, &w, &epoch, offset, None);
        }
        if self
            .registry
            .get(ch)
            .is_some_and(|c| c.subscribers.is_empty() && c.waiters.is_empty())
        {
            self.release_channel(ch);
        }
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
        let Some(ch) = self.registry.lookup(channel) else {
            return false;
        };
        let c = self.registry.get_mut(ch).expect("looked up");
        match &c.position {
            // Sent before our interest was acknowledged: older than the ack's offset.
            Position::Pending => return false,
            Position::Active {
                offset: last,
                epoch: e,
            } if *e == epoch && *last >= offset => return false,
            Position::Active { .. } => {}
        }
        c.position = Position::Active { epoch, offset };
        self.fan_local(ch, frame.into_bytes());
        true
    }
}
