//! The subscriber side of recovery, history and presence.
//!
//! A subscribe with `since` always asks the owner (`ShardMsg::Recover`): the
//! owner's answer travels on the same ordered queue as its publications, so the
//! missed pushes it returns plus the live ones after it form one gap-free,
//! duplicate-free sequence. The connection joins the channel only when the
//! answer arrives, right after sending its reply and the missed pushes.

use std::sync::Arc;

use bytes::Bytes;
use shardcast_proto::command::{error_code, Since};
use shardcast_proto::reply;

use crate::conn::Enqueue;
use crate::driver::ConnKey;
use crate::fanout::{Member, Page, Recovery};
use crate::mesh::{owner_of, ConnRef, ShardMsg};
use crate::registry::{ChannelId, Position, Waiter};
use crate::shard::Core;

/// Most publications one `history` reply carries.
const HISTORY_LIMIT_MAX: usize = 1000;

impl Core {
    pub(crate) fn namespace_of(&self, channel: &str) -> crate::auth::Namespace {
        let ns = shardcast_proto::command::namespace(channel);
        self.cfg.namespaces.get(ns).cloned().unwrap_or_default()
    }

    fn conn_ref(&self, key: ConnKey) -> Option<ConnRef> {
        let conn = self.conns.get(key)?;
        Some(ConnRef {
            shard: self.id,
            key,
            gen: conn.gen,
        })
    }

    /// The connection becomes a subscriber of `ch`: record it, reply, announce it.
    pub(crate) fn join_channel(
        &mut self,
        ch: ChannelId,
        w: &Waiter,
        epoch: &str,
        offset: u64,
        recovered: Option<bool>,
    ) {
        let Some(conn) = self.conns.get_gen(w.key, w.gen) else {
            return;
        };
        if conn.phase != crate::conn::Phase::Ws {
            return;
        }
        let slot = self.registry.add(ch, w.key);
        if let Some(conn) = self.conns.get_mut(w.key) {
            conn.subs.push((ch, slot));
        }
        let name = self.registry.get(ch).expect("exists").name.clone();
        self.send_json(
            w.key,
            &reply::ok_subscribe(w.id, &name, epoch, offset, recovered),
        );
        self.presence_change(&name, w.key, true);
    }

    /// Ask the owner what the connection missed since `since` (it waits meanwhile).
    pub(crate) fn request_recovery(&mut self, ch: ChannelId, key: ConnKey, since: Since) {
        let Some(conn) = self.conn_ref(key) else {
            return;
        };
        let name = self.registry.get(ch).expect("exists").name.clone();
        let owner = owner_of(&name, self.shards);
        self.send_to(
            owner,
            ShardMsg::Recover {
                channel: name,
                since,
                conn,
            },
        );
    }

    /// The owner answered a `since`: reply, replay the missed pushes, then join.
    pub(crate) fn on_recovered(&mut self, channel: &str, conn: ConnRef, r: Recovery) {
        let Some(ch) = self.registry.lookup(channel) else {
            return;
        };
        let c = self.registry.get_mut(ch).expect("looked up");
        let Some(i) = c
            .waiters
            .iter()
            .position(|w| w.key == conn.key && w.gen == conn.gen && w.since.is_some())
        else {
            return;
        };
        let w = c.waiters.swap_remove(i);
        let active = matches!(c.position, Position::Active { .. });
        self.waiter_done(&w);
        if active {
            self.join_channel(ch, &w, &r.epoch, r.offset, Some(r.recovered));
            for frame in r.frames {
                self.send_frame(w.key, frame.into_bytes());
            }
        }
        if self
            .registry
            .get(ch)
            .is_some_and(|c| c.subscribers.is_empty() && c.waiters.is_empty())
        {
            self.release_channel(ch);
        }
    }

    /// The owner side of `Recover`.
    pub(crate) fn serve_recovery(&mut self, channel: Arc<str>, since: Since, conn: ConnRef) {
        let recovery = self.owner.recover(&channel, &since, self.now);
        self.send_to(
            conn.shard,
            ShardMsg::Recovered {
                channel,
                conn,
                recovery,
            },
        );
    }

    pub(crate) fn history_cmd(
        &mut self,
        key: ConnKey,
        id: Option<u64>,
        channel: String,
        since: Option<Since>,
        limit: Option<u32>,
    ) {
        let Some(conn) = self.conn_ref(key) else {
            return;
        };
        if !self.permitted(key, id, &channel, false) {
            return;
        }
        let limit = limit.map_or(HISTORY_LIMIT_MAX, |l| (l as usize).min(HISTORY_LIMIT_MAX));
        let channel: Arc<str> = Arc::from(channel);
        let owner = owner_of(&channel, self.shards);
        self.send_to(
            owner,
            ShardMsg::History {
                channel,
                since,
                limit,
                conn,
                id,
            },
        );
    }

    pub(crate) fn serve_history(
        &mut self,
        channel: Arc<str>,
        since: Option<Since>,
        limit: usize,
        conn: ConnRef,
        id: Option<u64>,
    ) {
        let page = self
            .owner
            .history(&channel, since.as_ref(), limit, self.now);
        self.send_to(conn.shard, ShardMsg::HistoryPage { conn, id, page });
    }

    /// `{"id":5,"ok":{"publications":[{"offset":42,"data":…},…],"epoch":"E","offset":45}}`
    pub(crate) fn on_history_page(&mut self, conn: ConnRef, id: Option<u64>, page: Option<Page>) {
        if self.conns.get_gen(conn.key, conn.gen).is_none() {
            return;
        }
        let Some(page) = page else {
            let e = reply::error(id, error_code::NOT_RECOVERABLE, "position not recoverable");
            return self.send_json(conn.key, &e);
        };
        let mut out =
            Vec::with_capacity(64 + page.items.iter().map(|(_, d)| d.len() + 32).sum::<usize>());
        open_ok(&mut out, id);
        out.extend_from_slice(b"\"publications\":[");
        for (i, (offset, data)) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("{{\"offset\":{offset},\"data\":").as_bytes());
            out.extend_from_slice(data);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"epoch\":");
        reply::write_json_str(&mut out, &page.epoch);
        out.extend_from_slice(format!(",\"offset\":{}}}}}", page.offset).as_bytes());
        self.send_json(conn.key, &out);
    }

    pub(crate) fn presence_cmd(&mut self, key: ConnKey, id: Option<u64>, channel: String) {
        let Some(conn) = self.conn_ref(key) else {
            return;
        };
        if !self.permitted(key, id, &channel, false) {
            return;
        }
        if !self.namespace_of(&channel).presence {
            let e = reply::error(
                id,
                error_code::PERMISSION_DENIED,
                "presence is off for this namespace",
            );
            return self.send_json(key, &e);
        }
        let channel: Arc<str> = Arc::from(channel);
        let owner = owner_of(&channel, self.shards);
        self.send_to(owner, ShardMsg::PresenceQuery { channel, conn, id });
    }

    /// `{"id":6,"ok":{"members":[{"user":"u1","conn":"c9"}]}}`
    pub(crate) fn on_presence_list(
        &mut self,
        conn: ConnRef,
        id: Option<u64>,
        members: Vec<Member>,
    ) {
        if self.conns.get_gen(conn.key, conn.gen).is_none() {
            return;
        }
        let mut out = Vec::with_capacity(32 + members.len() * 48);
        open_ok(&mut out, id);
        out.extend_from_slice(b"\"members\":[");
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"user\":");
            reply::write_json_str(&mut out, &m.user);
            out.extend_from_slice(b",\"conn\":");
            reply::write_json_str(&mut out, &m.conn);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}}");
        self.send_json(conn.key, &out);
    }

    /// Tell the owner a member joined or left, when the namespace tracks presence.
    pub(crate) fn presence_change(&mut self, channel: &Arc<str>, key: ConnKey, join: bool) {
        if !self.namespace_of(channel).presence {
            return;
        }
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let user: Arc<str> = Arc::from(conn.claims().map_or("", |c| c.sub.as_str()));
        let member = Member {
            user,
            conn: Arc::from(format!("{}.{}.{}", self.id, key, conn.gen)),
        };
        let owner = owner_of(channel, self.shards);
        self.send_to(
            owner,
            ShardMsg::PresenceChange {
                channel: channel.clone(),
                member,
                join,
            },
        );
    }

    /// Give `frame` to every local subscriber of the channel; close the ones that cannot keep up.
    pub(crate) fn fan_local(&mut self, ch: ChannelId, bytes: Bytes) {
        let Some(c) = self.registry.get_mut(ch) else {
            return;
        };
        let subscribers = std::mem::take(&mut c.subscribers);
        let mut slow = Vec::new();
        for &key in &subscribers {
            if self.send_frame_no_close(key, bytes.clone()) == Enqueue::Backpressure {
                slow.push(key);
            }
        }
        if let Some(c) = self.registry.get_mut(ch) {
            c.subscribers = subscribers;
        }
        for key in slow {
            self.slow_consumer(key);
        }
    }
}

fn open_ok(out: &mut Vec<u8>, id: Option<u64>) {
    out.push(b'{');
    if let Some(id) = id {
        out.extend_from_slice(format!("\"id\":{id},").as_bytes());
    }
    out.extend_from_slice(b"\"ok\":{");
}
