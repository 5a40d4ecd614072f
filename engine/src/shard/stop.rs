//! How a shard stops: at once ([`Core::stop`]: every connection closed with
//! 1001, bounded in time), or drained over a window (`begin_drain`, then
//! `drain_step` each loop turn, following a [`DrainPlan`]); when it may exit
//! (`may_exit`); and how it closes every WebSocket when the cluster bus is
//! lost (`bus_lost`, 4001).
//!
//! An API request already handed to the owners is answered before its
//! connection closes: its publication may already be out, and a client that
//! saw the connection close unanswered would publish it again.
//!
//! A drain: `/ready` turns 503 and new upgrades are refused (503 with
//! Retry-After), while `/health`, `/ready` and `/metrics` keep answering so
//! the load balancer can see the state. Open WebSockets are closed with 4001
//! in a random order, paced evenly over the drain window, each told to wait a
//! jittered `reconnect_after_ms` so they do not reconnect as one herd. When
//! the last one is closed the shard stops and the process can exit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shardcast_proto::error::close_code;

use crate::conn::Phase;
use crate::driver::ConnKey;
use crate::policy::drain::DrainPlan;
use crate::shard::Core;

impl Core {
    /// Begin a graceful stop: close every connection with 1001. An HTTP
    /// connection with API requests in flight closes after their answers
    /// (`http/api.rs`), within the same bound.
    pub fn stop(&mut self) {
        self.stopping = true;
        let bound = Duration::from_millis(2 * self.cfg.limits.close_linger_ms + 1_000);
        self.stop_by = Some(self.now + bound);
        let keys: Vec<ConnKey> = self.conns.keys().collect();
        for key in keys {
            if self.answers_to_come(key) {
                continue;
            }
            self.close_ws(
                key,
                shardcast_proto::error::close_code::GOING_AWAY,
                "server shutting down",
            );
        }
    }

    /// Whether a stopping shard may leave its loop: its connections are gone,
    /// and so are every other shard's. Until then it keeps serving its inbox:
    /// another shard may still forward it the publication of an API request
    /// it is answering, and that request must get its offset.
    pub(crate) fn may_exit(&mut self) -> bool {
        if !self.stopping || !self.conns.is_empty() {
            return false;
        }
        if !self.left_work {
            self.left_work = true;
            self.shared.shards_at_work.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.shards_at_work.load(Ordering::Acquire) == 0
    }

    pub(crate) fn begin_drain(&mut self, window: Duration) {
        if self.drain.is_some() || self.stopping {
            return;
        }
        let order: Vec<(ConnKey, u32)> = self
            .conns
            .keys()
            .filter_map(|k| {
                self.conns
                    .get(k)
                    .filter(|c| c.phase == Phase::Ws)
                    .map(|c| (k, c.gen))
            })
            .collect();
        // Uptime, read from the shard's clock (simulated time replays exactly).
        let seed = self.now.duration_since(self.started).as_nanos() as u64
            ^ (self.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let plan = DrainPlan::new(order, self.now, window, seed);
        tracing::info!(
            shard = self.id,
            connections = plan.len(),
            window_ms = plan.window().as_millis() as u64,
            "draining"
        );
        self.drain = Some(plan);
        self.drain_step();
    }

    /// Close the connections whose turn has come; stop when all have been told.
    pub(crate) fn drain_step(&mut self) {
        let Some(mut plan) = self.drain.take() else {
            return;
        };
        let spread = self.cfg.limits.reconnect_spread_ms;
        while let Some((key, gen)) = plan.next_due(self.now) {
            if self
                .conns
                .get_gen(key, gen)
                .is_some_and(|c| c.phase == Phase::Ws)
            {
                let reason = format!("reconnect_after_ms={}", plan.jitter(spread));
                self.close_ws(key, close_code::DRAINING, &reason);
            }
        }
        let none_left = self.stats.ws_open.load(Ordering::Relaxed) == 0;
        if plan.finished(self.now, none_left) {
            self.stop();
        } else {
            self.drain = Some(plan);
        }
    }

    /// The link to Redis is lost: this node cannot tell what it misses from now
    /// on, so its subscribers reconnect (4001) and recover from Redis with `since`.
    pub(crate) fn bus_lost(&mut self) {
        self.owner.cluster_reset();
        let spread = self.cfg.limits.reconnect_spread_ms.max(1);
        let keys: Vec<_> = self
            .conns
            .keys()
            .filter(|&k| self.conns.get(k).is_some_and(|c| c.phase == Phase::Ws))
            .collect();
        for (i, key) in keys.into_iter().enumerate() {
            let jitter = (key as u64 ^ (i as u64).wrapping_mul(0x9e37_79b9)) % spread;
            let reason = format!("reconnect_after_ms={jitter}");
            self.close_ws(key, close_code::DRAINING, &reason);
        }
    }
}
