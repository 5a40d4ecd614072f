//! The owner side in cluster mode: Redis assigns offsets, keeps history and
//! answers reads; this node's owner shard relays between the bus and the
//! node's shards, in Redis's order. Reached through `channel/authority.rs`
//! ([`OwnerSide`]: the owner's parts of the shard, never its connections).

use std::sync::Arc;

use crate::channel::authority::{OwnerSide, Unpublished};
use crate::channel::owner::Watch;
use crate::cluster::BusReq;
use crate::payload::{BusEvent, ReadFor, Snapshot, Window};
use crate::shard::mesh::{ReplyTo, ShardMsg};

impl OwnerSide<'_> {
    pub(crate) fn cluster_interest(&mut self, channel: Arc<str>, from: usize, on: bool) {
        match self.owner.cluster_interest(&channel, from, on) {
            Watch::Ack(epoch, offset) => self.router.send(
                from,
                ShardMsg::InterestAck {
                    channel,
                    epoch,
                    offset,
                },
            ),
            Watch::Wait { start: Some(seq) } => {
                let epoch = self.owner.new_epoch();
                if self
                    .authority
                    .send(BusReq::Watch {
                        channel: channel.clone(),
                        on: true,
                        epoch,
                        seq,
                    })
                    .is_err()
                {
                    // The bus is down: its loss closes every subscriber, this one too.
                    tracing::warn!(channel = %channel, "cluster: cannot subscribe, bus unavailable");
                }
            }
            Watch::Stop => {
                let _ = self.authority.send(BusReq::Watch {
                    channel,
                    on: false,
                    epoch: Arc::from(""),
                    seq: 0,
                });
            }
            Watch::Wait { start: None } | Watch::Nothing => {}
        }
    }

    pub(crate) fn cluster_publish(
        &mut self,
        channel: Arc<str>,
        data: bytes::Bytes,
        reply: ReplyTo,
    ) -> Result<(), Unpublished> {
        // Redis's offset cannot be refused once assigned: the room for this
        // node's shards is checked before asking (publications from other
        // nodes cannot be, see docs/ARCHITECTURE.md).
        if !self.router.all_have_room(self.owner.interest_of(&channel)) {
            return Err(Unpublished::Refused(reply));
        }
        let ns = self.cfg.namespace_of(&channel);
        let req = BusReq::Publish {
            channel,
            data,
            history_size: ns.history_size,
            history_ttl_ms: ns.history_ttl_ms,
            epoch: self.owner.new_epoch(),
            reply,
        };
        match self.authority.send(req) {
            Err(BusReq::Publish { reply, .. }) => Err(Unpublished::BusDown(reply)),
            _ => Ok(()),
        }
    }

    pub(crate) fn cluster_read(&mut self, channel: Arc<str>, then: ReadFor) {
        let ttl = self.cfg.namespace_of(&channel).history_ttl_ms;
        let page_bytes = self.cfg.recovery.page_bytes_max;
        // Redis sends one page at a time, as the owner shard does locally.
        let window = match &then {
            ReadFor::Recover { since, .. } => Window {
                after: Some(since.offset),
                count: u32::MAX as usize,
                page_bytes,
            },
            ReadFor::Replay { since, upto, .. } => Window {
                after: Some(since.offset),
                count: usize::try_from(upto.saturating_sub(since.offset)).unwrap_or(usize::MAX),
                page_bytes,
            },
            ReadFor::History { since, limit, .. } => Window {
                after: since.as_ref().map(|s| s.offset),
                count: *limit,
                page_bytes: self.cfg.history_page_bytes(),
            },
        };
        let req = BusReq::Read {
            channel: channel.clone(),
            history_ttl_ms: ttl,
            window,
            then: Box::new(then),
        };
        if let Err(BusReq::Read { then, .. }) = self.authority.send(req) {
            self.on_bus(channel, BusEvent::ReadFailed { then: *then });
        }
    }

    /// What Redis said about a channel, in the order it said it.
    pub(crate) fn on_bus(&mut self, channel: Arc<str>, event: BusEvent) {
        match event {
            BusEvent::Message {
                epoch,
                offset,
                data,
            } => {
                if let Some(fanned) = self.owner.cluster_message(&channel, epoch, offset, &data) {
                    self.fan_out(&channel, fanned);
                }
            }
            BusEvent::Watched { epoch, offset, seq } => {
                let mut bits = self
                    .owner
                    .cluster_watched(&channel, epoch.clone(), offset, seq);
                while bits != 0 {
                    let to = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let (channel, epoch) = (channel.clone(), epoch.clone());
                    self.router.send(
                        to,
                        ShardMsg::InterestAck {
                            channel,
                            epoch,
                            offset,
                        },
                    );
                }
            }
            BusEvent::Read { snapshot, then } => self.on_read(channel, &snapshot, then),
            BusEvent::ReadFailed { then } => self.on_read_failed(channel, then),
        }
    }

    /// A history read for a recovery, a replay page or a `history` command:
    /// answered as the owner shard answers from its own history.
    fn on_read(&mut self, channel: Arc<str>, snapshot: &Snapshot, then: ReadFor) {
        match then {
            ReadFor::Recover { since, conn } => {
                let recovery = crate::channel::owner::recover_from(&channel, snapshot, &since);
                self.answer_recovery(channel, conn, recovery);
            }
            ReadFor::Replay { since, conn, .. } => {
                let frames = crate::channel::owner::replay_from(&channel, snapshot, &since);
                self.answer_replay_page(channel, conn, frames);
            }
            ReadFor::History {
                since, conn, id, ..
            } => {
                let page = crate::channel::owner::history_from(snapshot, since.as_ref());
                self.router
                    .send(conn.shard, ShardMsg::HistoryPage { conn, id, page });
            }
        }
    }

    /// A read the bus could not carry out.
    fn on_read_failed(&mut self, channel: Arc<str>, then: ReadFor) {
        match then {
            // The bus's loss closes the subscriber too (4001); its replay
            // slot must come back all the same.
            ReadFor::Recover { conn, .. } => self
                .router
                .send(conn.shard, ShardMsg::RecoverFailed { channel, conn }),
            ReadFor::Replay { conn, .. } => self.answer_replay_page(channel, conn, None),
            ReadFor::History { conn, id, .. } => self.router.send(
                conn.shard,
                ShardMsg::PublishFailed {
                    reply: ReplyTo::Ws { conn, id },
                    code: shardcast_proto::command::error_code::INTERNAL,
                    message: "cluster bus unavailable".into(),
                },
            ),
        }
    }
}
