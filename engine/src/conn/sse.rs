//! The Server-Sent Events fallback, `GET /sse?channels=a,b`.
//!
//! An SSE stream is a subscriber like a WebSocket: it lives in the `Ws` phase
//! with the `SSE` flag, joins channels through the same registry, and gets the
//! same shared push frames. Only the last step differs: a frame queued for a
//! stream is turned into an SSE event (`proto::sse`) instead, once per shard
//! and publication (`crate::conn::convert`).
//!
//! Everything that can be refused is refused before the stream starts, with an
//! HTTP status (401, 403, 400, 503): browsers' EventSource does not retry a
//! stream that did not start, and does retry one that ended.

use bytes::Bytes;
use shardcast_proto::command::{self, Since};
use shardcast_proto::error::close_code;
use shardcast_proto::http::{self, Request};
use shardcast_proto::sse;

use crate::config::Config;
use crate::conn::{flag, Phase};
use crate::driver::ConnKey;
use crate::policy::auth::{self, AuthError};
use crate::policy::heartbeat;
use crate::shard::Core;
use crate::stats::ShardStats;

impl Core {
    /// Open an event stream: check everything, answer 200 with the stream head,
    /// then subscribe (resuming the `Last-Event-ID` channel where it stopped).
    pub(crate) fn sse_open(&mut self, key: ConnKey, req: Request) {
        let list = req.query_param("channels").unwrap_or_default();
        let channels: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
        let claims = match admissible(&self.cfg, self.shared.verifier.as_ref(), &req, &channels) {
            Ok(claims) => claims,
            Err((status, why)) => return self.refuse(key, status, &why),
        };
        if self.over_capacity() {
            ShardStats::inc(&self.stats.rejected_full);
            let resp = http::response(
                503,
                "text/plain",
                &[("Retry-After", "5")],
                b"server full",
                false,
            );
            self.send_raw(key, resp);
            return self.close_after_response(key);
        }
        let resume = resume_from(&req);
        let channels: Vec<String> = channels.into_iter().map(str::to_string).collect();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.take_http();
        if let Some(c) = claims {
            conn.set_claims(c);
        }
        if !conn.admit_user(&self.shared.users, self.cfg.limits.conns_per_user_max) {
            return self.refuse(key, 429, "too many connections for this user");
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.phase = Phase::Ws;
        conn.set(flag::SSE, true);
        ShardStats::inc(&self.stats.ws_open);
        ShardStats::inc(&self.stats.sse_open);
        self.send_raw(key, sse::RESPONSE_HEAD.to_vec());
        if let Some(conn) = self.conns.get_mut(key) {
            conn.set(flag::RELEASE_WHEN_DRAINED, true);
        }
        heartbeat::start(&mut self.conns, key, &self.beat_clock, self.now);
        for channel in &channels {
            let since = resume
                .as_ref()
                .filter(|(c, _)| c == channel)
                .map(|(_, s)| s.clone());
            self.subscribe(key, None, channel, since);
        }
    }

    /// Refuse a stream before it starts.
    fn refuse(&mut self, key: ConnKey, status: u16, message: &str) {
        ShardStats::inc(&self.stats.rejected_bad_request);
        let resp = http::response(status, "text/plain", &[], message.as_bytes(), false);
        self.send_raw(key, resp);
        self.close_after_response(key);
    }
}

/// The stream's channels and token checked, in the order a client fixes
/// them: its claims (None: anonymous), or the status and reason to refuse.
fn admissible(
    cfg: &Config,
    verifier: Option<&auth::Verifier>,
    req: &Request,
    channels: &[&str],
) -> Result<Option<auth::Claims>, (u16, String)> {
    let max = cfg.limits.channels_per_conn_max;
    if channels.is_empty() {
        return Err((400, "channels: at least one channel is needed".into()));
    }
    if channels.len() > max {
        let why = format!("channels: at most {max} per stream (limits.channels_per_conn_max)");
        return Err((400, why));
    }
    if let Some(bad) = channels.iter().find(|c| !command::is_valid_channel(c)) {
        return Err((400, format!("bad channel name: {bad}")));
    }
    let claims = match verifier {
        None => None,
        Some(v) => {
            let token = req.query_param("token").or_else(|| {
                req.header("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_string())
            });
            match token.ok_or(AuthError::Invalid).and_then(|t| v.verify(&t)) {
                Ok(c) => Some(c),
                Err(AuthError::Invalid) => return Err((401, "unauthorized".into())),
                Err(AuthError::Expired) => return Err((401, "token expired".into())),
            }
        }
    };
    let ns = &cfg.namespaces;
    if let Some(denied) = channels
        .iter()
        .find(|c| !auth::allowed(claims.as_ref(), ns, c, false))
    {
        return Err((403, format!("permission denied: {denied}")));
    }
    Ok(claims)
}

/// The stream's last event: `close` with the code and reason a WebSocket would
/// get, after `retry:` when draining so the browser waits before it reconnects.
pub(crate) fn close_event(code: u16, reason: &str) -> Bytes {
    let retry = (code == close_code::DRAINING)
        .then(|| reason.strip_prefix("reconnect_after_ms="))
        .flatten()
        .and_then(|ms| ms.parse().ok());
    Bytes::from(sse::close_event(code, reason, retry))
}

/// Where a stream resumes: EventSource resends the id of the last event it
/// saw; a first connection may pass one in the query instead.
fn resume_from(req: &Request) -> Option<(String, Since)> {
    let last = req
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| req.query_param("last_event_id"));
    last.as_deref().and_then(sse::parse_event_id).map(|id| {
        let since = Since {
            epoch: id.epoch.to_string(),
            offset: id.offset,
        };
        (id.channel.to_string(), since)
    })
}

#[cfg(test)]
mod tests {
    use shardcast_proto::{prepared::payload_of, reply, sse};

    #[test]
    fn a_push_frame_becomes_an_event_with_its_id() {
        let frame = reply::push("news", 7, "E", b"{}").into_bytes();
        let mut out = Vec::new();
        sse::write_event(&mut out, payload_of(&frame).unwrap());
        assert!(out.starts_with(b"id: news:E:7\ndata: {"));
        assert!(payload_of(&frame[..frame.len() - 1]).is_none());
    }
}
