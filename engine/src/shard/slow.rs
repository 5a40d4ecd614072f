//! Slow loop turns, reported. A shard that spends seconds in one turn reads
//! nothing, pings nobody and answers no request meanwhile, and its clients see
//! it only as late pongs and stalled deliveries; the log line names the step
//! that took the time (its completions, inbox, timers, writes or trim), so an
//! operator (or a benchmark) can tell which.

use std::time::{Duration, Instant};

/// A turn that took at least this long (not counting its sleep) is reported.
const SLOW_TURN: Duration = Duration::from_millis(500);
/// At most one report per shard this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The steps of a turn after the driver's poll, in order (indices for `lap`).
pub(crate) const COMPLETIONS: usize = 0;
pub(crate) const INBOX: usize = 1;
pub(crate) const TIMERS: usize = 2;
pub(crate) const WRITES: usize = 3;
pub(crate) const BOOKKEEPING: usize = 4;
pub(crate) const TRIM: usize = 5;
const STEPS: usize = 6;

/// Where the time of the current turn went.
pub(crate) struct TurnClock {
    start: Instant,
    last: Instant,
    spent: [Duration; STEPS],
    reported_at: Option<Instant>,
}

impl TurnClock {
    pub(crate) fn new(now: Instant) -> TurnClock {
        TurnClock {
            start: now,
            last: now,
            spent: [Duration::ZERO; STEPS],
            reported_at: None,
        }
    }

    /// The poll returned at `now`: the turn's work starts.
    pub(crate) fn begin(&mut self, now: Instant) {
        self.start = now;
        self.last = now;
        self.spent = [Duration::ZERO; STEPS];
    }

    /// Step `i` (`COMPLETIONS` .. `TRIM`) ended at `now`.
    pub(crate) fn lap(&mut self, i: usize, now: Instant) {
        self.spent[i] += now.saturating_duration_since(self.last);
        self.last = now;
    }

    /// The turn ended: a warning if it was slow (at most one per `REPORT_EVERY`).
    /// `writes`: (urgent, bulk) writes the turn started.
    /// `pings`: pings this turn's heartbeat sweep queued.
    pub(crate) fn end(
        &mut self,
        shard: usize,
        completions: usize,
        writes: (usize, usize),
        pings: usize,
    ) {
        let took = self.last.saturating_duration_since(self.start);
        if took < SLOW_TURN
            || self
                .reported_at
                .is_some_and(|t| self.last.saturating_duration_since(t) < REPORT_EVERY)
        {
            return;
        }
        self.reported_at = Some(self.last);
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::warn!(
            shard,
            took_ms = ms(took),
            completions,
            completions_ms = ms(self.spent[COMPLETIONS]),
            inbox_ms = ms(self.spent[INBOX]),
            timers_ms = ms(self.spent[TIMERS]),
            writes_ms = ms(self.spent[WRITES]),
            pings,
            urgent_writes = writes.0,
            bulk_writes = writes.1,
            bookkeeping_ms = ms(self.spent[BOOKKEEPING]),
            trim_ms = ms(self.spent[TRIM]),
            "slow loop turn: reads, pings and requests waited meanwhile"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_to_the_turn() {
        let t0 = Instant::now();
        let mut c = TurnClock::new(t0);
        c.begin(t0);
        c.lap(0, t0 + Duration::from_millis(5));
        c.lap(3, t0 + Duration::from_millis(705));
        c.lap(5, t0 + Duration::from_millis(706));
        assert_eq!(c.spent[0], Duration::from_millis(5));
        assert_eq!(c.spent[3], Duration::from_millis(700));
        assert_eq!(c.spent.iter().sum::<Duration>(), Duration::from_millis(706));
        c.end(0, 1, (0, 0), 0);
        assert!(c.reported_at.is_some(), "a 706 ms turn is reported");
        let t1 = t0 + Duration::from_secs(2);
        c.begin(t1);
        c.lap(3, t1 + Duration::from_secs(1));
        c.end(0, 1, (0, 0), 0);
        assert_eq!(
            c.reported_at,
            Some(t0 + Duration::from_millis(706)),
            "rate-limited"
        );
    }
}
