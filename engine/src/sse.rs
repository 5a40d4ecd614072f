//! The Server-Sent Events fallback, `GET /sse?channels=a,b`.
//!
//! An SSE stream is a subscriber like a WebSocket: it lives in the `Ws` phase
//! with the `SSE` flag, joins channels through the same registry, and gets the
//! same shared push frames. Only the last step differs: a frame queued for a
//! stream is turned into an SSE event (`proto::sse`) instead. The conversion is
//! cached per shard, keyed by the frame buffer, so a publication fanned out to
//! many streams on a shard is converted once there, not once per stream.
//!
//! Everything that can be refused is refused before the stream starts, with an
//! HTTP status (401, 403, 400, 503): browsers' EventSource does not retry a
//! stream that did not start, and does retry one that ended.

use bytes::Bytes;
use shardcast_proto::command::{self, Since};
use shardcast_proto::error::close_code;
use shardcast_proto::http::{self, Request};
use shardcast_proto::sse;

use crate::auth::{self, AuthError};
use crate::conn::{flag, Phase};
use crate::driver::ConnKey;
use crate::shard::Core;
use crate::stats::ShardStats;

/// The last frame converted on this shard, and its event.
#[derive(Debug, Default)]
pub struct EventCache {
    frame: Option<Bytes>,
    event: Bytes,
}

impl EventCache {
    /// The SSE event for an unmasked server frame; None for a frame that is not
    /// a whole text frame (nothing else is queued for a stream).
    pub fn event_for(&mut self, frame: &Bytes) -> Option<Bytes> {
        if let Some(f) = &self.frame {
            // Same buffer, same bytes: the frame is immutable while it is held here.
            if f.as_ptr() == frame.as_ptr() && f.len() == frame.len() {
                return Some(self.event.clone());
            }
        }
        let json = sse::frame_payload(frame)?;
        let mut out = Vec::new();
        sse::write_event(&mut out, json);
        self.frame = Some(frame.clone());
        self.event = Bytes::from(out);
        Some(self.event.clone())
    }
}

impl Core {
    /// Open an event stream: check everything, answer 200 with the stream head,
    /// then subscribe (resuming the `Last-Event-ID` channel where it stopped).
    pub(crate) fn sse_open(&mut self, key: ConnKey, req: Request) {
        let list = req.query_param("channels").unwrap_or_default();
        let channels: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
        let max = self.cfg.limits.channels_per_conn_max;
        if channels.is_empty() {
            return self.refuse(key, 400, "channels: at least one channel is needed");
        }
        if channels.len() > max {
            return self.refuse(key, 400, &format!("channels: at most {max} per stream"));
        }
        if let Some(bad) = channels.iter().find(|c| !command::is_valid_channel(c)) {
            return self.refuse(key, 400, &format!("bad channel name: {bad}"));
        }
        let claims = match self.shared.verifier.as_ref() {
            None => None,
            Some(v) => {
                let token = req.query_param("token").or_else(|| {
                    req.header("authorization")
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(|t| t.trim().to_string())
                });
                match token.ok_or(AuthError::Invalid).and_then(|t| v.verify(&t)) {
                    Ok(c) => Some(c),
                    Err(AuthError::Invalid) => return self.refuse(key, 401, "unauthorized"),
                    Err(AuthError::Expired) => return self.refuse(key, 401, "token expired"),
                }
            }
        };
        let ns = &self.cfg.namespaces;
        if let Some(denied) = channels
            .iter()
            .find(|c| !auth::allowed(claims.as_ref(), ns, c, false))
        {
            return self.refuse(key, 403, &format!("permission denied: {denied}"));
        }
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
        // EventSource resends the id of the last event it saw; a first connection may
        // pass one in the query instead.
        let last = req
            .header("last-event-id")
            .map(str::to_string)
            .or_else(|| req.query_param("last_event_id"));
        let resume = last.as_deref().and_then(sse::parse_event_id).map(|id| {
            let since = Since {
                epoch: id.epoch.to_string(),
                offset: id.offset,
            };
            (id.channel.to_string(), since)
        });
        let channels: Vec<String> = channels.into_iter().map(str::to_string).collect();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.take_http();
        if let Some(c) = claims {
            conn.set_claims(c);
        }
        conn.phase = Phase::Ws;
        conn.set(flag::SSE, true);
        ShardStats::inc(&self.stats.ws_open);
        ShardStats::inc(&self.stats.sse_open);
        self.send_raw(key, sse::RESPONSE_HEAD.to_vec());
        if let Some(conn) = self.conns.get_mut(key) {
            conn.set(flag::RELEASE_WHEN_DRAINED, true);
        }
        self.heartbeat_start(key);
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

    /// The event a frame becomes on a stream (see [`EventCache`]).
    pub(crate) fn sse_event(&mut self, frame: &Bytes) -> Option<Bytes> {
        self.sse_cache.event_for(frame)
    }

    /// The stream's last event: `close` with the code and reason a WebSocket would
    /// get, after `retry:` when draining so the browser waits before it reconnects.
    pub(crate) fn sse_close_event(code: u16, reason: &str) -> Bytes {
        let retry = (code == close_code::DRAINING)
            .then(|| reason.strip_prefix("reconnect_after_ms="))
            .flatten()
            .and_then(|ms| ms.parse().ok());
        Bytes::from(sse::close_event(code, reason, retry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast_proto::reply;

    #[test]
    fn a_frame_is_converted_once_per_shard() {
        let mut cache = EventCache::default();
        let frame = reply::push("news", 7, "E", b"{}").into_bytes();
        let first = cache.event_for(&frame).unwrap();
        assert!(first.starts_with(b"id: news:E:7\n"));
        // Every further subscriber gets the same buffer, not a copy.
        for _ in 0..3 {
            let again = cache.event_for(&frame.clone()).unwrap();
            assert_eq!(again.as_ptr(), first.as_ptr());
        }
        // Equal bytes in another buffer are another frame: converted anew, same text.
        let other = Bytes::copy_from_slice(&frame);
        let e = cache.event_for(&other).unwrap();
        assert_ne!(e.as_ptr(), first.as_ptr());
        assert_eq!(e, first);
        // Not a whole server frame: nothing to send.
        assert!(cache.event_for(&frame.slice(..frame.len() - 1)).is_none());
    }
}
