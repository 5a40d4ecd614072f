//! Where a shard reads the time: the system's monotonic clock, or a virtual
//! one the deterministic simulation (`sim.rs`) moves by hand.
//!
//! Only differences between instants matter to the engine, so a virtual
//! clock is a fixed real `Instant` (taken once) plus a count of simulated
//! nanoseconds: every deadline, heartbeat and drain step then runs on
//! simulated time, and a replay of the same seed sees the same durations.
//! The real clock is the default and costs one branch over `Instant::now()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `Instant::now()`.
    #[default]
    Real,
    /// Simulated time, shared by every shard of a simulated engine.
    Virtual(Arc<VirtualClock>),
}

impl Clock {
    #[inline]
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Virtual(v) => v.now(),
        }
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct VirtualClock {
    base: Instant,
    nanos: AtomicU64,
}

impl Default for VirtualClock {
    fn default() -> Self {
        VirtualClock {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }
}

impl VirtualClock {
    pub fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// Simulated time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_advanced() {
        let v = Arc::new(VirtualClock::default());
        let c = Clock::Virtual(v.clone());
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        v.advance(Duration::from_millis(1500));
        assert_eq!(c.now().duration_since(t0), Duration::from_millis(1500));
    }
}
