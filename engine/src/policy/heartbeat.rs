//! Heartbeats: ping connections that went quiet, close (4009) the ones that do
//! not answer, and optionally the ones that send no messages at all.
//!
//! Pings and closes are control frames and jump the data queue, so a busy
//! connection's pong is never mistaken for silence; any received byte counts
//! as life, since a client streaming data to us is evidently there.

use std::time::Instant;

use shardcast_proto::error::close_code;

use crate::conn::{flag, Phase, Slab};
use crate::driver::ConnKey;
use crate::policy::timer::{BeatClock, Beats, PERIOD_TICKS_MAX};

/// An empty unmasked ping frame, shared by every connection.
pub(crate) static PING_FRAME: [u8; 2] = [0x89, 0x00];

/// What one sweep step decided for a connection (the shard acts on it:
/// `shard/mod.rs`, `heartbeat_due`).
pub(crate) enum Beat {
    Nothing,
    Ping,
    SseComment,
    Close(u16, &'static str),
}

/// The current tick, as connections stamp it (mod 2^16).
fn tick_now(clock: &BeatClock, now: Instant) -> u16 {
    clock.tick_of(now) as u16
}

/// A connection became a WebSocket (or an SSE stream): its heartbeat
/// deadlines count from now.
pub(crate) fn start(conns: &mut Slab, key: ConnKey, clock: &BeatClock, now: Instant) {
    let t = tick_now(clock, now);
    if let Some(conn) = conns.get_mut(key) {
        conn.last_rx_tick = t;
        conn.last_msg_tick = t;
    }
}

/// Bytes arrived: the connection is alive.
pub(crate) fn rx(conns: &mut Slab, key: ConnKey, clock: &BeatClock, now: Instant) {
    let t = tick_now(clock, now);
    if let Some(conn) = conns.get_mut(key) {
        conn.last_rx_tick = t;
        conn.set(flag::PING_OUTSTANDING, false);
    }
}

/// A data message arrived (for the idle timeout).
pub(crate) fn msg(conns: &mut Slab, key: ConnKey, clock: &BeatClock, now: Instant) {
    let t = tick_now(clock, now);
    if let Some(conn) = conns.get_mut(key) {
        conn.last_msg_tick = t;
    }
}

/// Once a tick: the tick to sweep every connection at, or None when this
/// one was swept already.
pub(crate) fn sweep_tick(clock: &mut BeatClock, now: Instant) -> Option<u64> {
    let t = clock.tick_of(now);
    if t < clock.next {
        return None;
    }
    clock.next = t + 1;
    Some(t)
}

/// What a sweep knows of its shard while it checks each connection.
#[derive(Clone, Copy)]
pub(crate) struct Sweep {
    /// The tick swept.
    pub t: u64,
    /// Unix seconds, for token expiry.
    pub now_unix: u64,
    /// The shard has received data it has not read yet.
    pub reads_behind: bool,
    /// False once the sweep has queued its pings for this tick (see
    /// [`pings_per_tick_max`]); a connection due then is pinged at a later tick.
    pub may_ping: bool,
    /// The shard is draining: no pings and no heartbeat closes (the drain
    /// closes every connection within its window); token expiry still.
    pub draining: bool,
}

/// The deadlines of one connection at the sweep's tick. A stamp is the tick
/// an event fell in, so a deadline counts from the end of that tick
/// (`t > stamp + period`): never early, at most a tick late.
pub(crate) fn check(conns: &mut Slab, b: Beats, key: ConnKey, sw: Sweep) -> Beat {
    let Sweep {
        t,
        now_unix,
        reads_behind,
        may_ping,
        draining,
    } = sw;
    let Some(conn) = conns.get_mut(key) else {
        return Beat::Nothing;
    };
    if conn.phase != Phase::Ws {
        return Beat::Nothing;
    }
    // Idle connections give their queue's memory back between bursts: each
    // connection once a ping interval, spread over the interval by key.
    if (t + key as u64).is_multiple_of(b.ping) {
        if !conn.has(flag::SENDING) {
            conn.out.release_if_empty();
        }
        if conn.out.is_empty() {
            conn.set(flag::RELEASE_WHEN_DRAINED, true);
        }
    }
    if conn.has(flag::EXPIRES)
        && conn
            .claims()
            .and_then(|c| c.exp)
            .is_some_and(|exp| exp <= now_unix)
    {
        return Beat::Close(close_code::TOKEN_EXPIRED, "token expired");
    }
    if conn.has(flag::SSE) {
        // For a stream, `last_msg_tick` is when the last comment went out.
        if ago(t, conn.last_msg_tick) <= b.ping {
            return Beat::Nothing;
        }
        conn.last_msg_tick = t as u16;
        return Beat::SseComment;
    }
    if b.idle > 0 && ago(t, conn.last_msg_tick) > b.idle {
        return Beat::Close(close_code::IDLE_TIMEOUT, "idle timeout");
    }
    if draining {
        // Every connection gets its 4001 within the drain window; a ping now
        // is one more write for clients busy with their closes, and a 4009
        // would replace the 4001 and its reconnect delay. At a million,
        // 106,760 clients slow to answer during the drain were closed so.
        return Beat::Nothing;
    }
    if conn.has(flag::PING_OUTSTANDING) {
        // `last_rx_tick` is when the ping went out: nothing came since.
        let late = ago(t, conn.last_rx_tick);
        // A shard behind on its reads may hold the pong unread: it is not
        // the client's silence. Wait for it up to a second pong timeout,
        // so that an overloaded shard does not close the clients it has
        // not caught up with (and a close storm make it worse).
        if late > b.pong && !(reads_behind && late <= 2 * b.pong) {
            return Beat::Close(close_code::IDLE_TIMEOUT, "heartbeat timeout");
        }
        return Beat::Nothing;
    }
    let ping_after = if conn.has(flag::PINGED) {
        b.ping + later_ping_delay(key, conn.last_rx_tick, b.ping)
    } else {
        b.ping + first_ping_delay(key, b.ping)
    };
    if ago(t, conn.last_rx_tick) <= ping_after || !may_ping {
        return Beat::Nothing;
    }
    conn.set(flag::PINGED, true);
    conn.set(flag::PING_OUTSTANDING, true);
    conn.last_rx_tick = t as u16;
    // The ping is a one-off write: the queue can go once it drains.
    if conn.out.is_empty() {
        conn.set(flag::RELEASE_WHEN_DRAINED, true);
    }
    Beat::Ping
}

/// Pings one sweep queues at most: twice the shard's connections' share of a
/// tick, and at least 1,024. Past it, the connections due wait for the next
/// ticks (a ping never comes early, only late).
///
/// A bunch of connections due in one tick (their pongs were read in one
/// turn) was pinged in one turn's writes: 275,000 pings at a million, a
/// 2.8 s turn during which the pongs of the next bunch piled up unread, to be
/// stamped in one tick again; the cap spreads a bunch over ticks instead.
pub(crate) fn pings_per_tick_max(conns: usize, ping_ticks: u64) -> usize {
    (2 * conns).div_ceil(ping_ticks.max(1) as usize).max(1_024)
}

/// Extra ticks before a connection's first ping, spread by key over up to
/// half the interval.
///
/// Connections that arrive together (a ramp, or every client reconnecting
/// after a restart) would otherwise be pinged in the same tick, interval after
/// interval, for as long as they stay: a shard's whole population of pings,
/// pongs and their one-off queues at once. At 15,000 idle connections on 2
/// shards that peak left 17-28 bytes a connection resident after the first
/// round (the allocator keeps part of what a peak touched), and at a million
/// it is a CPU spike every 25 s. Delayed rather than advanced, so no client is
/// pinged, or closed for silence, sooner than the config says; after its first
/// pong each connection keeps its own phase. Capped so that ping + delay stays
/// within `PERIOD_TICKS_MAX` (the 16-bit stamps).
fn first_ping_delay(key: ConnKey, ping: u64) -> u64 {
    delay_within(u64::from(key), ping / 2, ping)
}

/// Extra ticks before a later ping: up to a fifth of the interval, drawn
/// from the connection and the tick its last bytes came in (the same at every
/// sweep until new bytes come).
///
/// A shard that falls behind for a moment (a fan-out to a million, a slow
/// turn) reads the pongs of many connections in one turn, so they all get the
/// same stamp, and without this they were pinged again in one tick, 25 s
/// later, in one turn's writes: measured at a million, 275,000 pings in one
/// turn of 2.8 s, whose pongs again arrived together, every 39 s for as long
/// as the run lasted. With it, each round spreads a bunch over a fifth of an
/// interval more. Delayed, never advanced, like the first ping's delay.
fn later_ping_delay(key: ConnKey, stamp: u16, ping: u64) -> u64 {
    delay_within(u64::from(key) << 16 | u64::from(stamp), ping / 5, ping)
}

/// A delay in `0..=max` ticks drawn from `seed`, capped so that the interval
/// `ping` plus the delay stays within `PERIOD_TICKS_MAX` (the 16-bit stamps).
/// Fibonacci hashing: consecutive seeds (a ramp's keys) land far apart.
fn delay_within(seed: u64, max: u64, ping: u64) -> u64 {
    let max = max.min(PERIOD_TICKS_MAX.saturating_sub(ping));
    let h = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    h % (max + 1)
}

/// Ticks from a 16-bit stamp to tick `t` (right while fewer than 2^16 passed).
fn ago(t: u64, stamp: u16) -> u64 {
    u64::from((t as u16).wrapping_sub(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pings_of_a_cohort_spread_over_half_the_interval() {
        // 7,500 connections that arrived together on a shard, 25-tick interval.
        let ping = 25;
        let mut per_tick = [0u32; 13];
        for key in 0..7_500u32 {
            let d = first_ping_delay(key, ping);
            assert!(d <= ping / 2, "delayed {d} ticks");
            per_tick[d as usize] += 1;
        }
        // Evenly: about 577 a tick, none more than twice that; before, all
        // 7,500 in one tick.
        let max = *per_tick.iter().max().unwrap();
        let min = *per_tick.iter().min().unwrap();
        assert!(max < 2 * 7_500 / 13, "{per_tick:?}");
        assert!(min > 7_500 / 13 / 2, "{per_tick:?}");
    }

    #[test]
    fn pongs_read_in_one_tick_are_pinged_again_over_a_fifth_of_the_interval() {
        // 100,000 connections whose pongs were read in the same tick.
        let ping = 25;
        let mut per_tick = [0u32; 6];
        for key in 0..100_000u32 {
            let d = later_ping_delay(key, 4_242, ping);
            assert!(d <= ping / 5, "delayed {d} ticks");
            per_tick[d as usize] += 1;
        }
        let max = *per_tick.iter().max().unwrap();
        assert!(max < 2 * 100_000 / 6, "{per_tick:?}");
        // The same connection and stamp: the same delay at every sweep.
        assert_eq!(later_ping_delay(7, 9, ping), later_ping_delay(7, 9, ping));
        for ping in [1, 4, PERIOD_TICKS_MAX] {
            assert!(
                ping + later_ping_delay(u32::MAX, u16::MAX, ping) <= PERIOD_TICKS_MAX.max(ping)
            );
        }
    }

    fn sweep(t: u64, may_ping: bool, draining: bool) -> Sweep {
        Sweep {
            t,
            now_unix: 0,
            reads_behind: false,
            may_ping,
            draining,
        }
    }

    #[test]
    fn a_sweep_pings_twice_its_share_of_a_tick_at_most() {
        assert_eq!(pings_per_tick_max(1_000_000, 25), 80_000);
        assert_eq!(pings_per_tick_max(10, 25), 1_024);
        assert_eq!(pings_per_tick_max(5_000, 0), 10_000);
        // A connection due when the sweep may not ping stays due, unflagged.
        let mut conns = Slab::with_capacity(1);
        let key = conns.insert(crate::driver::Sock(3));
        conns.get_mut(key).unwrap().phase = Phase::Ws;
        conns.get_mut(key).unwrap().set(flag::PINGED, true);
        let b = Beats {
            ping: 25,
            pong: 10,
            idle: 0,
        };
        let t = 100;
        assert!(matches!(
            check(&mut conns, b, key, sweep(t, false, false)),
            Beat::Nothing
        ));
        assert!(!conns.get(key).unwrap().has(flag::PING_OUTSTANDING));
        assert!(matches!(
            check(&mut conns, b, key, sweep(t + 1, true, false)),
            Beat::Ping
        ));
        assert!(conns.get(key).unwrap().has(flag::PING_OUTSTANDING));
        // Draining: a pong long overdue closes nothing.
        assert!(matches!(
            check(&mut conns, b, key, sweep(t + 30, true, true)),
            Beat::Nothing
        ));
        assert!(matches!(
            check(&mut conns, b, key, sweep(t + 30, true, false)),
            Beat::Close(..)
        ));
    }

    #[test]
    fn the_delay_keeps_the_first_ping_within_the_stamps_range() {
        for ping in [1, 2, 40_000, 59_999, PERIOD_TICKS_MAX] {
            for key in [0, 1, 7, 1_000_003, u32::MAX] {
                let d = first_ping_delay(key, ping);
                assert!(d <= ping / 2);
                assert!(ping + d <= PERIOD_TICKS_MAX.max(ping), "{ping} + {d}");
            }
        }
        assert_eq!(first_ping_delay(5, 1), 0, "a one-tick interval has no room");
    }
}
