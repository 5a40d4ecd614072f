//! Graceful drain: `/ready` turns 503 and new upgrades are refused (503 with
//! Retry-After), while `/health`, `/ready` and `/metrics` keep answering so the
//! load balancer can see the state. Open WebSockets are closed with 4001 in a
//! random order, paced evenly over the drain window, each told to wait a
//! jittered `reconnect_after_ms` so they do not reconnect as one herd. When the
//! last one is closed the shard stops and the process can exit.

use std::time::{Duration, Instant};

use shardcast_proto::error::close_code;

use crate::conn::Phase;
use crate::driver::ConnKey;
use crate::shard::Core;

#[derive(Debug)]
pub struct DrainPlan {
    order: Vec<(ConnKey, u32)>,
    start: Instant,
    window: Duration,
    next: usize,
    rng: u64,
}

impl DrainPlan {
    fn rand(&mut self) -> u64 {
        // xorshift64: jitter only, no need for more.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl Core {
    pub(crate) fn begin_drain(&mut self, window: Duration) {
        if self.drain.is_some() || self.stopping {
            return;
        }
        let mut order: Vec<(ConnKey, u32)> = self
            .conns
            .keys()
            .filter_map(|k| {
                self.conns
                    .get(k)
                    .filter(|c| c.phase == Phase::Ws)
                    .map(|c| (k, c.gen))
            })
            .collect();
        let seed = self.now.elapsed().as_nanos() as u64
            ^ (self.id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut plan = DrainPlan {
            order: Vec::new(),
            start: self.now,
            window,
            next: 0,
            rng: seed | 1,
        };
        for i in (1..order.len()).rev() {
            let j = (plan.rand() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        plan.order = order;
        tracing::info!(
            shard = self.id,
            connections = plan.order.len(),
            window_ms = window.as_millis() as u64,
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
        let n = plan.order.len();
        let elapsed = self.now.saturating_duration_since(plan.start);
        let due = if plan.window.is_zero() || elapsed >= plan.window {
            n
        } else {
            // Rounded up, so the first connection goes at once and the last by the window's end.
            ((n as u128 * elapsed.as_nanos()).div_ceil(plan.window.as_nanos()) as usize).min(n)
        };
        let spread = self.cfg.limits.reconnect_spread_ms.max(1);
        while plan.next < due {
            let (key, gen) = plan.order[plan.next];
            plan.next += 1;
            if self
                .conns
                .get_gen(key, gen)
                .is_some_and(|c| c.phase == Phase::Ws)
            {
                let reason = format!("reconnect_after_ms={}", plan.rand() % spread);
                self.close_ws(key, close_code::DRAINING, &reason);
            }
        }
        // Done when everyone was told and the window is over, or earlier when no
        // WebSocket is left (a drain with nobody connected takes no time).
        let none_left = self
            .stats
            .ws_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0;
        if plan.next == n && (elapsed >= plan.window || none_left) {
            self.stop();
        } else {
            self.drain = Some(plan);
        }
    }
}
