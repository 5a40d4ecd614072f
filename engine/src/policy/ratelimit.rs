//! Per-connection command rate limit (a token bucket kept in six bytes of the
//! connection) and the per-shard accept-rate limit.

use std::time::Instant;

/// Outcome of taking one token.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Ok,
    /// Over the rate: refuse this command (error 111).
    Refused,
    /// Refused `burst` commands in a row without a refill: close (1008).
    Abusive,
}

/// Refill `tokens` for the time since `stamp_ms`, then take one.
/// Negative tokens count commands refused since the bucket ran dry.
pub fn take(tokens: &mut i16, stamp_ms: &mut u32, now_ms: u32, per_sec: u32, burst: u32) -> Take {
    let elapsed = now_ms.wrapping_sub(*stamp_ms) as u64;
    let refill = elapsed * per_sec as u64 / 1000;
    if refill > 0 {
        let base = (*tokens).max(0) as u64;
        *tokens = (base + refill).min(burst as u64) as i16;
        // Keep the remainder: advance the stamp only by the time the tokens cost.
        *stamp_ms = stamp_ms.wrapping_add((refill * 1000 / per_sec as u64) as u32);
    }
    if *tokens > burst as i16 {
        *tokens = burst as i16;
    }
    if *tokens > 0 {
        *tokens -= 1;
        return Take::Ok;
    }
    *tokens = tokens.saturating_sub(1);
    if -(*tokens as i32) >= burst as i32 {
        Take::Abusive
    } else {
        Take::Refused
    }
}

/// A shard's accept budget: a token bucket refilled per second.
#[derive(Debug)]
pub struct AcceptBudget {
    tokens: f64,
    at: Instant,
}

impl AcceptBudget {
    pub fn new(now: Instant) -> AcceptBudget {
        // Starts full: the limit is a rate, not a warm-up.
        AcceptBudget {
            tokens: f64::INFINITY,
            at: now,
        }
    }

    /// May one more connection be accepted now (`per_sec` 0: unlimited)?
    pub fn admit(&mut self, now: Instant, per_sec: u32) -> bool {
        if per_sec == 0 {
            return true;
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        // A one-second burst allowance.
        self.tokens = (self.tokens + dt * per_sec as f64).min(per_sec as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate_then_flags_abuse() {
        let (mut t, mut s) = (3i16, 0u32);
        for _ in 0..3 {
            assert_eq!(take(&mut t, &mut s, 0, 10, 3), Take::Ok);
        }
        assert_eq!(take(&mut t, &mut s, 0, 10, 3), Take::Refused);
        // 100 ms at 10/s buys exactly one token.
        assert_eq!(take(&mut t, &mut s, 100, 10, 3), Take::Ok);
        assert_eq!(take(&mut t, &mut s, 100, 10, 3), Take::Refused);
        assert_eq!(take(&mut t, &mut s, 100, 10, 3), Take::Refused);
        assert_eq!(take(&mut t, &mut s, 100, 10, 3), Take::Abusive);
    }

    #[test]
    fn partial_refill_time_is_not_lost() {
        let (mut t, mut s) = (0i16, 0u32);
        assert_eq!(take(&mut t, &mut s, 150, 10, 5), Take::Ok); // 1 token, 50 ms carried
        assert_eq!(take(&mut t, &mut s, 200, 10, 5), Take::Ok); // +50 ms = another token
    }

    #[test]
    fn accept_budget_caps_per_second() {
        let t0 = Instant::now();
        let mut b = AcceptBudget::new(t0);
        let t1 = t0 + std::time::Duration::from_secs(1);
        let admitted = (0..50).filter(|_| b.admit(t1, 20)).count();
        assert_eq!(admitted, 20);
        assert!(b.admit(t0, 0), "0 means unlimited");
    }
}
