//! The subscriber side of recovery, history and presence.
//!
//! A subscribe with `since` always asks the owner (`ShardMsg::Recover`): the
//! owner's answer travels on the same ordered queue as its publications, so the
//! missed pushes plus the live ones after it form one gap-free, duplicate-free
//! sequence. The connection joins the channel when the answer arrives, right
//! after its reply; the missed pushes are then replayed page by page as the
//! connection drains its queue, with live pushes held behind them (`channel/replay.rs`),
//! so a whole history is recovered without tripping the slow-consumer rule.

use std::sync::Arc;

use shardcast_proto::command::{error_code, Since};
use shardcast_proto::reply;

use crate::channel::registry::{ChannelId, Position};
use crate::channel::replay::{Queued, Replay};
use crate::channel::subscriptions::waiter_done;
use crate::conn::{Enqueue, Phase};
use crate::driver::ConnKey;
use crate::payload::{ConnRef, Member, Page, Recovery};
use crate::shard::mesh::{owner_of, ShardMsg};
use crate::shard::Core;
use crate::stats::ShardStats;

/// Most publications one `history` reply carries.
const HISTORY_LIMIT_MAX: usize = 1000;

impl Core {
    /// Ask the owner what the connection missed since `since` (it waits
    /// meanwhile), once one of the shard's replay slots is free.
    pub(crate) fn request_recovery(&mut self, ch: ChannelId, key: ConnKey, since: Since) {
        let Some(conn) = self.conns.conn_ref(self.id, key) else {
            return;
        };
        let channel = self.subs.name(ch);
        if self
            .replays
            .take_slot(self.cfg.recovery.replays_per_shard_max)
        {
            self.send_recover(channel, since, conn);
        } else {
            self.replays.enqueue(Queued {
                channel,
                key,
                gen: conn.gen,
                since,
            });
        }
        self.replays.gauges(&self.stats);
    }

    fn send_recover(&mut self, channel: Arc<str>, since: Since, conn: ConnRef) {
        let owner = owner_of(&channel, self.shards);
        self.send_to(
            owner,
            ShardMsg::Recover {
                channel,
                since,
                conn,
            },
        );
    }

    /// A replay slot is free again: the first waiting recovery still wanted takes it.
    fn release_replay_slot(&mut self) {
        self.replays.release_slot();
        while let Some(q) = self.replays.next_queued() {
            let alive = self.conns.get_gen(q.key, q.gen).is_some();
            let Some(ch) = self.subs.lookup(&q.channel) else {
                continue;
            };
            if !alive {
                self.subs
                    .drop_waiter(ch, q.key, q.gen, &mut self.conns, &mut self.router);
                continue;
            }
            let waits = self.subs.channel(ch).is_some_and(|c| {
                c.waiters
                    .iter()
                    .any(|w| w.key == q.key && w.gen == q.gen && w.since.is_some())
            });
            if !waits {
                continue;
            }
            let taken = self
                .replays
                .take_slot(self.cfg.recovery.replays_per_shard_max);
            debug_assert!(taken, "a slot was just released");
            let conn = ConnRef {
                shard: self.id,
                key: q.key,
                gen: q.gen,
            };
            self.send_recover(q.channel, q.since, conn);
            break;
        }
        self.replays.gauges(&self.stats);
    }

    /// The owner answered a `since`: join (the reply goes first), then replay
    /// what was missed as the connection reads.
    pub(crate) fn on_recovered(&mut self, channel: &str, conn: ConnRef, r: Recovery) {
        if !self.begin_replay(channel, conn, r) {
            self.release_replay_slot();
        }
    }

    /// True when a replay now holds the slot of this recovery.
    fn begin_replay(&mut self, channel: &str, conn: ConnRef, r: Recovery) -> bool {
        let Some(ch) = self.subs.lookup(channel) else {
            return false;
        };
        let c = self.subs.channel_mut(ch).expect("looked up");
        let Some(i) = c
            .waiters
            .iter()
            .position(|w| w.key == conn.key && w.gen == conn.gen && w.since.is_some())
        else {
            return false;
        };
        let w = c.waiters.swap_remove(i);
        let active = matches!(c.position, Position::Active { .. });
        waiter_done(&mut self.conns, &w);
        let mut started = false;
        if active && self.join_channel(ch, &w, &r.epoch, r.offset, Some(r.recovered)) {
            let since = w.since.as_ref().map_or(r.offset, |s| s.offset);
            if r.recovered && since < r.offset {
                self.subs.channel_mut(ch).expect("joined").replaying += 1;
                let replay = Replay {
                    ch,
                    gen: w.gen,
                    epoch: r.epoch,
                    cursor: since,
                    upto: r.offset,
                    page: r.frames.into_iter().map(|f| f.into_bytes()).collect(),
                    fetching: false,
                    held: Default::default(),
                    held_bytes: 0,
                    progress_at: self.now,
                };
                self.replays.start(w.key, replay);
                self.pump_replays(w.key);
                started = true;
            }
        }
        self.subs.release_if_unused(ch, &mut self.router);
        started
    }

    /// Queue what the connection's replays have ready, up to half its queue
    /// budget (the other half stays free for its live channels), and ask for the
    /// next page where one ran out. A finished replay hands over to live pushes.
    pub(crate) fn pump_replays(&mut self, key: ConnKey) {
        let mut rs = self.replays.take(key);
        if rs.is_empty() {
            return;
        }
        let fill_bytes = self.cfg.limits.queue_bytes_max / 2;
        let fill_frames = self.cfg.limits.queue_frames_max / 2;
        let mut slow = false;
        let mut finished = Vec::new();
        for r in rs.iter_mut() {
            while let Some(conn) = self
                .conns
                .get(key)
                .filter(|c| c.gen == r.gen && c.phase == Phase::Ws)
            {
                let (queued, frames) = (conn.queued_bytes(), conn.out.len());
                let next = match (r.page.front(), r.replayed()) {
                    (Some(f), _) => f.len(),
                    (None, false) => {
                        self.fetch_page(key, r);
                        break;
                    }
                    (None, true) => match r.held.front() {
                        Some(f) => f.len(),
                        None => {
                            finished.push(r.ch);
                            break;
                        }
                    },
                };
                if frames > 0 && (queued + next > fill_bytes || frames >= fill_frames) {
                    break;
                }
                let frame = match r.page.pop_front() {
                    Some(f) => {
                        r.cursor += 1;
                        f
                    }
                    None => {
                        let f = r.held.pop_front().expect("checked above");
                        r.held_bytes -= f.len();
                        f
                    }
                };
                if self.send_frame_no_close(key, frame) == Enqueue::Backpressure {
                    slow = true;
                    break;
                }
            }
        }
        self.replays.put(key, rs);
        for ch in finished {
            self.end_replay(key, ch);
            ShardStats::inc(&self.stats.replays_done);
        }
        if slow {
            self.slow_consumer(key);
        }
    }

    fn fetch_page(&mut self, key: ConnKey, r: &mut Replay) {
        if r.fetching {
            return;
        }
        let Some(channel) = self.subs.channel(r.ch).map(|c| c.name.clone()) else {
            return;
        };
        r.fetching = true;
        let owner = owner_of(&channel, self.shards);
        let since = Since {
            epoch: r.epoch.to_string(),
            offset: r.cursor,
        };
        let conn = ConnRef {
            shard: self.id,
            key,
            gen: r.gen,
        };
        let upto = r.upto;
        self.send_to(
            owner,
            ShardMsg::ReplayPage {
                channel,
                since,
                upto,
                conn,
            },
        );
    }

    /// The connection's replay of `ch` ends (done, or its subscription ended).
    pub(crate) fn end_replay(&mut self, key: ConnKey, ch: ChannelId) {
        if self.replays.remove(key, ch).is_none() {
            return;
        }
        if let Some(c) = self.subs.channel_mut(ch) {
            c.replaying -= 1;
        }
        self.release_replay_slot();
    }

    /// The owner sent the next page of a replay (None: history moved past it).
    pub(crate) fn on_replay_page(
        &mut self,
        channel: &str,
        conn: ConnRef,
        frames: Option<Vec<shardcast_proto::PreparedFrame>>,
    ) {
        let Some(ch) = self.subs.lookup(channel) else {
            return;
        };
        let Some(r) = self
            .replays
            .get_mut(conn.key, ch)
            .filter(|r| r.gen == conn.gen)
        else {
            return;
        };
        r.fetching = false;
        // Waiting for a page is not the reader's stall.
        r.progress_at = self.now;
        match frames {
            Some(frames) if !frames.is_empty() => {
                r.page.extend(frames.into_iter().map(|f| f.into_bytes()));
                self.pump_replays(conn.key);
            }
            // Publications outran the reader until history no longer reaches
            // back to it: it reconnects and learns `recovered:false`.
            _ => self.close_ws(
                conn.key,
                shardcast_proto::error::close_code::SLOW_CONSUMER,
                "replay fell out of history",
            ),
        }
    }

    /// The owner could not read what a `since` missed (cluster bus down).
    pub(crate) fn on_recover_failed(&mut self, channel: &str, conn: ConnRef) {
        if let Some(ch) = self.subs.lookup(channel) {
            let id = self.subs.channel(ch).and_then(|c| {
                c.waiters
                    .iter()
                    .find(|w| w.key == conn.key && w.gen == conn.gen)
                    .map(|w| w.id)
            });
            self.subs
                .drop_waiter(ch, conn.key, conn.gen, &mut self.conns, &mut self.router);
            if let Some(id) = id {
                let e = reply::error(id, error_code::INTERNAL, "cluster bus unavailable");
                self.send_json(conn.key, &e);
            }
        }
        self.release_replay_slot();
    }

    /// Close replaying connections whose sockets took nothing for `stall_timeout_ms`:
    /// they stopped reading, and must not hold a replay slot (or memory) for long.
    pub(crate) fn close_stalled_replays(&mut self) {
        if self.replays.slots_used() == 0 {
            return;
        }
        let stall = std::time::Duration::from_millis(self.cfg.recovery.stall_timeout_ms);
        let Some(before) = self.now.checked_sub(stall) else {
            return;
        };
        for key in self.replays.stalled(before) {
            self.slow_consumer(key);
        }
    }

    pub(crate) fn history_cmd(
        &mut self,
        key: ConnKey,
        id: Option<u64>,
        channel: String,
        since: Option<Since>,
        limit: Option<u32>,
    ) {
        let Some(conn) = self.conns.conn_ref(self.id, key) else {
            return;
        };
        if !self.permitted(key, id, &channel, false) {
            return;
        }
        let limit = limit.map_or(HISTORY_LIMIT_MAX, |l| (l as usize).min(HISTORY_LIMIT_MAX));
        let channel: Arc<str> = Arc::from(channel);
        let owner = owner_of(&channel, self.shards);
        let msg = ShardMsg::History {
            channel,
            since,
            limit,
            conn,
            id,
        };
        if self.router.try_send(owner, msg).is_err() {
            self.refuse_request(key, id);
        }
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
        let items = page.items.iter().map(|(o, d)| (*o, &d[..]));
        let out = reply::ok_history(id, items, page.next, &page.epoch, page.offset);
        self.send_json(conn.key, &out);
    }

    pub(crate) fn presence_cmd(&mut self, key: ConnKey, id: Option<u64>, channel: String) {
        let Some(conn) = self.conns.conn_ref(self.id, key) else {
            return;
        };
        if !self.permitted(key, id, &channel, false) {
            return;
        }
        if !self.cfg.namespace_of(&channel).presence {
            let e = reply::error(
                id,
                error_code::PERMISSION_DENIED,
                "presence is off for this namespace",
            );
            return self.send_json(key, &e);
        }
        let channel: Arc<str> = Arc::from(channel);
        let owner = owner_of(&channel, self.shards);
        let msg = ShardMsg::PresenceQuery { channel, conn, id };
        if self.router.try_send(owner, msg).is_err() {
            self.refuse_request(key, id);
        }
    }

    /// A query the owner's shard has no room for: error 111, try again later.
    fn refuse_request(&mut self, key: ConnKey, id: Option<u64>) {
        self.refused(crate::shard::router::Refused::Request);
        let e = reply::error(id, error_code::TOO_MANY_REQUESTS, crate::shard::OVERLOADED);
        self.send_json(key, &e);
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
        let out = reply::ok_presence(id, members.iter().map(|m| (&*m.user, &*m.conn)));
        self.send_json(conn.key, &out);
    }

    /// Tell the owner a member joined or left, when the namespace tracks presence.
    pub(crate) fn presence_change(&mut self, channel: &Arc<str>, key: ConnKey, join: bool) {
        if !self.cfg.namespace_of(channel).presence {
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
}
