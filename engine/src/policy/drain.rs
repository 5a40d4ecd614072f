//! Graceful drain: `/ready` turns 503 and new upgrades are refused (503 with
//! Retry-After), while `/health`, `/ready` and `/metrics` keep answering so the
//! load balancer can see the state. Open WebSockets are closed with 4001 in a
//! random order, paced evenly over the drain window, each told to wait a
//! jittered `reconnect_after_ms` so they do not reconnect as one herd. When the
//! last one is closed the shard stops and the process can exit.

use std::time::{Duration, Instant};

use crate::driver::ConnKey;

/// Which connections a draining shard closes, in which order, and when:
/// a random order, paced evenly over the window, each with its own jitter.
/// The shard applies it (`shard/stop.rs`).
#[derive(Debug)]
pub struct DrainPlan {
    order: Vec<(ConnKey, u32)>,
    start: Instant,
    window: Duration,
    next: usize,
    rng: u64,
}

impl DrainPlan {
    /// A plan to close `order` (connection keys and generations, shuffled
    /// here) evenly over `window` from `start`.
    pub fn new(
        mut order: Vec<(ConnKey, u32)>,
        start: Instant,
        window: Duration,
        seed: u64,
    ) -> DrainPlan {
        let mut plan = DrainPlan {
            order: Vec::new(),
            start,
            window,
            next: 0,
            rng: seed | 1,
        };
        for i in (1..order.len()).rev() {
            let j = (plan.rand() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        plan.order = order;
        plan
    }

    /// How many connections the plan closes.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How many connections should have been closed by `now`: rounded up, so
    /// the first goes at once and the last by the window's end.
    fn due(&self, now: Instant) -> usize {
        let n = self.order.len();
        let elapsed = now.saturating_duration_since(self.start);
        if self.window.is_zero() || elapsed >= self.window {
            n
        } else {
            ((n as u128 * elapsed.as_nanos()).div_ceil(self.window.as_nanos()) as usize).min(n)
        }
    }

    /// The next connection whose turn has come by `now`.
    pub fn next_due(&mut self, now: Instant) -> Option<(ConnKey, u32)> {
        if self.next >= self.due(now) {
            return None;
        }
        self.next += 1;
        Some(self.order[self.next - 1])
    }

    /// A reconnect delay for one closed connection, in ms below `spread_ms`.
    pub fn jitter(&mut self, spread_ms: u64) -> u64 {
        self.rand() % spread_ms.max(1)
    }

    /// Done when everyone was told and the window is over, or earlier when
    /// no WebSocket is left (a drain with nobody connected takes no time).
    pub fn finished(&self, now: Instant, none_left: bool) -> bool {
        let elapsed = now.saturating_duration_since(self.start);
        self.next == self.order.len() && (elapsed >= self.window || none_left)
    }

    fn rand(&mut self) -> u64 {
        // xorshift64: jitter only, no need for more.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}
