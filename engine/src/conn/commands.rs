//! What an open WebSocket's messages do on its shard: bytes decoded
//! (`on_ws_bytes`), each message read by the `Session` (conn/session.rs) and
//! carried out (`on_message`), commands executed (`on_command`: subscribe,
//! publish, history, presence, refresh), with the subscriptions' side in
//! channel/subscriptions.rs and the command rate limit applied here.

use std::sync::Arc;

use shardcast_proto::command::{error_code, Command, Op, Since};
use shardcast_proto::error::close_code;
use shardcast_proto::{reply, Message};

use crate::channel::registry::{ChannelId, Position, Waiter};
use crate::conn::session::Input;
use crate::conn::{flag, Phase};
use crate::driver::ConnKey;
use crate::payload::ConnRef;
use crate::policy::{auth, ratelimit};
use crate::shard::mesh::{owner_of, ReplyTo, ShardMsg};
use crate::shard::router::Refused;
use crate::stats::ShardStats;

impl crate::shard::Core {
    pub(crate) fn on_ws_bytes(&mut self, key: ConnKey, data: &mut [u8]) {
        self.heartbeat_rx(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // The decoder leaves the connection while it runs, so message handlers
        // may use the whole shard; it is put back afterwards.
        let mut decoder = conn.take_decoder();
        let before = decoder.buffered_bytes();
        let cfg = self.session.decoder_config();
        let stamp = self.partials.stamp(self.now);
        let result = decoder.feed_stamped(&cfg, data, stamp, |msg| self.on_message(key, msg));
        // Put back only while the connection reads on; a closing one drops
        // what it held (it is never fed again).
        let mut after = 0;
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.phase == Phase::Ws && result.is_ok() {
                after = decoder.buffered_bytes();
                conn.put_decoder(decoder);
            }
        }
        self.partials.changed(before, after);
        match result {
            Ok(()) => self.partial_check(key),
            Err(e) => {
                ShardStats::inc(&self.stats.protocol_closes);
                tracing::debug!(shard = self.id, conn = key, error = %e, "protocol violation");
                self.close_ws(key, e.close_code(), &e.to_string());
            }
        }
    }

    fn on_message(&mut self, key: ConnKey, msg: Message<'_>) {
        // Frames after our close frame (or a violation) are not acted on.
        let Some(conn) = self.conns.get(key).filter(|c| c.phase == Phase::Ws) else {
            return;
        };
        let msgpack = conn.has(flag::MSGPACK);
        ShardStats::inc(&self.stats.msgs_in);
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            self.heartbeat_msg(key);
        }
        match self.session.read(msg, msgpack) {
            Input::Command(cmd) => {
                if self.admit_command(key, cmd.id) {
                    self.on_command(key, cmd);
                }
            }
            Input::Refused(e) => self.send_json(key, &e),
            Input::Echo(frame) => self.send_frame(key, frame),
            Input::Pong(frame) => {
                self.send_control(key, frame);
            }
            Input::Close(code) => self.close_ws_echo(key, code),
            Input::Nothing => {}
        }
    }

    fn on_command(&mut self, key: ConnKey, cmd: Command) {
        let id = cmd.id;
        match cmd.op {
            Op::Subscribe { channel, since } => self.subscribe(key, id, &channel, since),
            Op::Unsubscribe { channel } => self.unsubscribe(key, id, &channel),
            Op::Publish { channel, data } => {
                if !self.permitted(key, id, &channel, true) {
                    return;
                }
                let Some(conn) = self.conns.get(key) else {
                    return;
                };
                let conn = ConnRef {
                    shard: self.id,
                    key,
                    gen: conn.gen,
                };
                let channel: Arc<str> = Arc::from(channel);
                let owner = owner_of(&channel, self.shards);
                let reply = ReplyTo::Ws { conn, id };
                if self.router.room(owner) == 0 {
                    return self.refuse_publish(reply, Refused::Publish);
                }
                self.send_to(
                    owner,
                    ShardMsg::Publish {
                        channel,
                        data,
                        reply,
                    },
                );
            }
            Op::Ping => self.send_json(key, &reply::pong(id)),
            Op::Refresh { token } => self.refresh(key, id, &token),
            Op::History {
                channel,
                since,
                limit,
            } => self.history_cmd(key, id, channel, since, limit),
            Op::Presence { channel } => self.presence_cmd(key, id, channel),
        }
    }

    /// May the connection subscribe to (or publish on) `channel`? Replies 103 when not.
    pub(crate) fn permitted(
        &mut self,
        key: ConnKey,
        id: Option<u64>,
        channel: &str,
        publish: bool,
    ) -> bool {
        let claims = self.conns.get(key).and_then(|c| c.claims());
        if auth::allowed(claims, &self.cfg.namespaces, channel, publish) {
            return true;
        }
        let e = reply::error(id, error_code::PERMISSION_DENIED, "permission denied");
        self.send_json(key, &e);
        false
    }

    /// Replace the connection's token before it expires; the identity must not change.
    fn refresh(&mut self, key: ConnKey, id: Option<u64>, token: &str) {
        let Some(verifier) = self.shared.verifier.as_ref() else {
            return self.send_json(key, &reply::ok_empty(id)); // anonymous: nothing expires
        };
        let result = verifier.verify(token);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let reply = match result {
            Ok(c) if conn.claims().is_none_or(|old| old.sub == c.sub) => {
                conn.set_claims(c);
                reply::ok_empty(id)
            }
            Ok(_) => reply::error(id, error_code::UNAUTHORIZED, "token is for another user"),
            Err(auth::AuthError::Expired) => {
                reply::error(id, error_code::TOKEN_EXPIRED, "token expired")
            }
            Err(auth::AuthError::Invalid) => {
                reply::error(id, error_code::UNAUTHORIZED, "invalid token")
            }
        };
        self.send_json(key, &reply);
    }

    /// Subscribe now when this shard already receives the channel, else ask its
    /// owner and answer when the owner acknowledges (`shard/inbox.rs`).
    pub(crate) fn subscribe(
        &mut self,
        key: ConnKey,
        id: Option<u64>,
        channel: &str,
        since: Option<Since>,
    ) {
        if !self.permitted(key, id, channel, false) {
            return;
        }
        let Some(gen) = self.conns.get(key).map(|c| c.gen) else {
            return;
        };
        if let Some(e) = self.subscribe_refused(key, id, gen, channel) {
            return self.send_json(key, &e);
        }
        let (ch, created) = self.subs.open(channel);
        if created {
            self.subs.want(ch, &mut self.router);
        }
        let waiter = Waiter {
            key,
            gen,
            id,
            since,
        };
        if let Some(since) = waiter.since.clone() {
            // Only the owner knows what was missed; the answer follows the interest.
            self.subs.add_waiter(&mut self.conns, ch, waiter);
            return self.request_recovery(ch, key, since);
        }
        match self.subs.channel(ch).expect("open").position.clone() {
            Position::Active { epoch, offset } => {
                self.join_channel(ch, &waiter, &epoch, offset, None);
            }
            Position::Pending => self.subs.add_waiter(&mut self.conns, ch, waiter),
        }
    }

    /// Why a subscription is refused (as the error reply), if it is: the
    /// connection's or the shard's channel cap, or a subscription it has.
    fn subscribe_refused(
        &self,
        key: ConnKey,
        id: Option<u64>,
        gen: u32,
        channel: &str,
    ) -> Option<Vec<u8>> {
        let conn = self.conns.get(key)?;
        let max = self.cfg.limits.channels_per_conn_max;
        // Subscriptions still waiting for the owner count too: a burst of
        // subscribes in one read is all pending, and would pass a cap on joins.
        if self.subs.of(conn).len() + conn.pending_subs as usize >= max {
            let msg = format!(
                "channel limit reached ({max} per connection, limits.channels_per_conn_max)"
            );
            return Some(reply::error(id, error_code::LIMIT_EXCEEDED, &msg));
        }
        let Some(ch) = self.subs.lookup(channel) else {
            let shard_max = self.cfg.limits.channels_per_shard_max;
            if self.subs.registry().len() < shard_max {
                return None;
            }
            // Bounds the registry (and the owners' state behind it) whatever the
            // number of connections: many connections each at their own cap add up.
            let msg = format!(
                "channel limit reached ({shard_max} per shard, limits.channels_per_shard_max)"
            );
            return Some(reply::error(id, error_code::LIMIT_EXCEEDED, &msg));
        };
        let c = self.subs.channel(ch).expect("looked up");
        let already = self.subs.of(conn).iter().any(|(s, _)| *s == ch)
            || c.waiters.iter().any(|w| w.key == key && w.gen == gen);
        already.then(|| reply::error(id, error_code::ALREADY_SUBSCRIBED, "already subscribed"))
    }

    /// The connection becomes a subscriber of `ch`: record it, reply, announce
    /// it. False when the connection is gone.
    pub(crate) fn join_channel(
        &mut self,
        ch: ChannelId,
        w: &Waiter,
        epoch: &str,
        offset: u64,
        recovered: Option<bool>,
    ) -> bool {
        let Some(name) = self.subs.join(&mut self.conns, ch, w) else {
            return false;
        };
        self.send_json(
            w.key,
            &reply::ok_subscribe(w.id, &name, epoch, offset, recovered),
        );
        self.presence_change(&name, w.key, true);
        // The reply may have found the queue full and closed the connection
        // (4008), which left the channel again.
        self.conns
            .get_gen(w.key, w.gen)
            .is_some_and(|c| c.phase == crate::conn::Phase::Ws)
    }

    fn unsubscribe(&mut self, key: ConnKey, id: Option<u64>, channel: &str) {
        let ch = self.subs.lookup(channel);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some((ch, slot)) = ch.and_then(|ch| Some((ch, self.subs.forget(conn, ch)?))) else {
            return self.send_json(
                key,
                &reply::error(id, error_code::ALREADY_SUBSCRIBED, "not subscribed"),
            );
        };
        self.remove_subscriber(ch, slot, key);
        self.send_json(key, &reply::ok_empty(id));
    }

    /// Leave every channel (the connection is closing).
    pub(crate) fn unsubscribe_all(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        for (ch, slot) in self.subs.forget_all(conn) {
            self.remove_subscriber(ch, slot, key);
        }
    }

    fn remove_subscriber(&mut self, ch: ChannelId, slot: u32, key: ConnKey) {
        if self.subs.channel(ch).is_some_and(|c| c.replaying > 0) {
            self.end_replay(key, ch);
        }
        if let Some(name) = self.subs.channel(ch).map(|c| c.name.clone()) {
            self.presence_change(&name, key, false);
        }
        if self.subs.leave(&mut self.conns, ch, slot, key) {
            self.subs.release(ch, &mut self.router);
        }
    }
}

/// The command rate limit (`policy/ratelimit.rs`) applied.
impl crate::shard::Core {
    /// Milliseconds since the shard started (wraps after 49 days; used with wrapping math).
    pub(crate) fn now_ms(&self) -> u32 {
        self.now.saturating_duration_since(self.started).as_millis() as u32
    }

    /// Charge one command to the connection; false when it must not run.
    pub(crate) fn admit_command(&mut self, key: ConnKey, id: Option<u64>) -> bool {
        let (per_sec, burst) = (
            self.cfg.limits.commands_per_sec,
            self.cfg.limits.commands_burst,
        );
        let now_ms = self.now_ms();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match ratelimit::take(
            &mut conn.rl_tokens,
            &mut conn.rl_stamp_ms,
            now_ms,
            per_sec,
            burst,
        ) {
            ratelimit::Take::Ok => true,
            ratelimit::Take::Refused => {
                ShardStats::inc(&self.stats.rate_limited);
                self.send_json(
                    key,
                    &reply::error(id, error_code::TOO_MANY_REQUESTS, "too many requests"),
                );
                false
            }
            ratelimit::Take::Abusive => {
                ShardStats::inc(&self.stats.rate_limited);
                self.close_ws(key, close_code::POLICY, "command rate limit exceeded");
                false
            }
        }
    }
}
