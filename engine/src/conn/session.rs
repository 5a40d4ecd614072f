//! An open WebSocket: frames in, commands executed, replies out.

use std::sync::Arc;

use shardcast_proto::command::{self, error_code, Command, Op, Since};
use shardcast_proto::error::close_code;
use shardcast_proto::{msgpack, reply, Message, PreparedFrame};

use crate::channel::registry::{Position, Waiter};
use crate::conn::{flag, Phase};
use crate::driver::ConnKey;
use crate::payload::ConnRef;
use crate::policy::auth;
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
        let cfg = self.dec_cfg.clone();
        let stamp = self.frame_stamp();
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
        self.partial_bytes_changed(before, after);
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
        if self.conns.get(key).map(|c| c.phase) != Some(Phase::Ws) {
            return;
        }
        ShardStats::inc(&self.stats.msgs_in);
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            self.heartbeat_msg(key);
        }
        let is_binary = matches!(msg, Message::Binary(_));
        match msg {
            Message::Text(p) if self.cfg.echo => {
                self.send_frame(key, PreparedFrame::text(p).into_bytes())
            }
            Message::Binary(p) if self.cfg.echo => {
                self.send_frame(key, PreparedFrame::binary(p).into_bytes())
            }
            Message::Text(p) | Message::Binary(p) => {
                self.scratch.clear();
                let msgpack =
                    is_binary && self.conns.get(key).is_some_and(|c| c.has(flag::MSGPACK));
                if !msgpack {
                    self.scratch.extend_from_slice(p);
                } else if let Err(e) = msgpack::msgpack_to_json(p, &mut self.scratch) {
                    let e = reply::error(None, error_code::MALFORMED, &e.to_string());
                    return self.send_json(key, &e);
                } else if self.scratch.len() > self.cfg.limits.message_bytes_max {
                    // JSON can be a few times longer than its MessagePack (escapes,
                    // digits); what goes into pushes stays within the same limit.
                    let max = self.cfg.limits.message_bytes_max;
                    let msg = format!("message is over {max} bytes as JSON");
                    let e = reply::error(None, error_code::LIMIT_EXCEEDED, &msg);
                    return self.send_json(key, &e);
                }
                let mut buf = std::mem::take(&mut self.scratch);
                match command::parse_command(&mut buf) {
                    Ok(cmd) => {
                        if self.admit_command(key, cmd.id) {
                            self.on_command(key, cmd);
                        }
                    }
                    Err(e) => self.send_json(key, &reply::error(e.id, e.code, &e.message)),
                }
                self.scratch = buf;
            }
            Message::Ping(p) => {
                // A client that pings without reading fills its queue with pongs.
                self.send_control(key, PreparedFrame::pong(p).into_bytes());
            }
            Message::Pong(_) => {}
            Message::Close(c) => {
                // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets 1000.
                let code = c.map(|(code, _)| code).unwrap_or(close_code::NORMAL);
                self.close_ws(key, code, "");
            }
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
    /// owner and answer when the owner acknowledges (see `interest_ack`).
    pub(crate) fn subscribe(
        &mut self,
        key: ConnKey,
        id: Option<u64>,
        channel: &str,
        since: Option<Since>,
    ) {
        let max = self.cfg.limits.channels_per_conn_max;
        if !self.permitted(key, id, channel, false) {
            return;
        }
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let gen = conn.gen;
        // Subscriptions still waiting for the owner count too: a burst of
        // subscribes in one read is all pending, and would pass a cap on joins.
        if self.more_subs.get(&conn.subs).len() + conn.pending_subs as usize >= max {
            let msg = format!(
                "channel limit reached ({max} per connection, limits.channels_per_conn_max)"
            );
            return self.send_json(key, &reply::error(id, error_code::LIMIT_EXCEEDED, &msg));
        }
        let shard_max = self.cfg.limits.channels_per_shard_max;
        if self.registry.lookup(channel).is_none() && self.registry.len() >= shard_max {
            // Bounds the registry (and the owners' state behind it) whatever the
            // number of connections: many connections each at their own cap add up.
            let msg = format!(
                "channel limit reached ({shard_max} per shard, limits.channels_per_shard_max)"
            );
            return self.send_json(key, &reply::error(id, error_code::LIMIT_EXCEEDED, &msg));
        }
        let (ch, created) = self.registry.get_or_create(channel);
        let c = self.registry.get(ch).expect("just created");
        let already = self.more_subs.get(&conn.subs).iter().any(|(s, _)| *s == ch)
            || c.waiters.iter().any(|w| w.key == key && w.gen == gen);
        if already {
            return self.send_json(
                key,
                &reply::error(id, error_code::ALREADY_SUBSCRIBED, "already subscribed"),
            );
        }
        let waiter = Waiter {
            key,
            gen,
            id,
            since,
        };
        let position = c.position.clone();
        let name = c.name.clone();
        if created {
            let owner = owner_of(&name, self.shards);
            let from = self.id;
            self.send_to(
                owner,
                ShardMsg::Interest {
                    channel: name,
                    from,
                    on: true,
                },
            );
        }
        if let Some(since) = waiter.since.clone() {
            // Only the owner knows what was missed; the answer follows the interest.
            self.add_waiter(ch, waiter);
            return self.request_recovery(ch, key, since);
        }
        match position {
            Position::Active { epoch, offset } => {
                self.join_channel(ch, &waiter, &epoch, offset, None);
            }
            Position::Pending => self.add_waiter(ch, waiter),
        }
    }

    /// Park a subscription until the owner answers, counted against the
    /// connection's channel cap meanwhile (see [`Core::waiter_done`]).
    fn add_waiter(&mut self, ch: u32, w: Waiter) {
        if let Some(conn) = self.conns.get_gen(w.key, w.gen) {
            conn.pending_subs += 1;
        }
        self.registry.get_mut(ch).expect("exists").waiters.push(w);
    }

    /// A waiter left its channel's list (joined, or dropped): it no longer
    /// counts as pending. Every removal from `waiters` must call this once.
    pub(crate) fn waiter_done(&mut self, w: &Waiter) {
        if let Some(conn) = self.conns.get_gen(w.key, w.gen) {
            conn.pending_subs = conn.pending_subs.saturating_sub(1);
        }
    }

    fn unsubscribe(&mut self, key: ConnKey, id: Option<u64>, channel: &str) {
        let Some(ch) = self.registry.lookup(channel) else {
            return self.send_json(
                key,
                &reply::error(id, error_code::ALREADY_SUBSCRIBED, "not subscribed"),
            );
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(pos) = self
            .more_subs
            .get(&conn.subs)
            .iter()
            .position(|(c, _)| *c == ch)
        else {
            return self.send_json(
                key,
                &reply::error(id, error_code::ALREADY_SUBSCRIBED, "not subscribed"),
            );
        };
        let (_, slot) = self.more_subs.swap_remove(&mut conn.subs, pos);
        self.remove_subscriber(ch, slot, key);
        self.send_json(key, &reply::ok_empty(id));
    }

    /// Leave every channel (the connection is closing).
    pub(crate) fn unsubscribe_all(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let subs = self.more_subs.take(&mut conn.subs);
        for (ch, slot) in subs {
            self.remove_subscriber(ch, slot, key);
        }
    }

    fn remove_subscriber(&mut self, ch: u32, slot: u32, key: ConnKey) {
        if self.registry.get(ch).is_some_and(|c| c.replaying > 0) {
            self.end_replay(key, ch);
        }
        if let Some(name) = self.registry.get(ch).map(|c| c.name.clone()) {
            self.presence_change(&name, key, false);
        }
        let removed = self.registry.remove(ch, slot, key);
        if let Some((moved, new_slot)) = removed.moved {
            if let Some(m) = self.conns.get_mut(moved) {
                if let Some(s) = self
                    .more_subs
                    .get_mut(&mut m.subs)
                    .iter_mut()
                    .find(|(c, _)| *c == ch)
                {
                    s.1 = new_slot;
                }
            }
        }
        if removed.now_empty {
            self.release_channel(ch);
        }
    }

    /// Forget an empty, active channel and tell its owner to stop sending it here.
    pub(crate) fn release_channel(&mut self, ch: u32) {
        let Some(c) = self.registry.get(ch) else {
            return;
        };
        if c.position == Position::Pending {
            return; // released when the acknowledgement arrives
        }
        if let Some(c) = self.registry.drop_channel(ch) {
            let owner = owner_of(&c.name, self.shards);
            self.send_to(
                owner,
                ShardMsg::Interest {
                    channel: c.name,
                    from: self.id,
                    on: false,
                },
            );
        }
    }
}
