//! The shard's clocks. A hashed timer wheel for the deadlines few connections
//! have at a time (an incomplete message's, see conn/partial.rs): O(1) to
//! schedule, each connection in at most one slot. Heartbeats, which every
//! connection has, use no entries: the shard sweeps its slab once a tick of
//! the [`BeatClock`] (the sweep is policy/heartbeat.rs).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::alloc_trim::shrink_deque;
use crate::driver::ConnKey;

/// A scheduled visit: connection key and generation.
pub type Entry = (u32, u32);

/// Capacity a slot keeps once visited (entries; 512 bytes).
const SLOT_KEEP: usize = 64;

#[derive(Debug)]
pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    tick: Duration,
    start: Instant,
    /// The next tick to process.
    current: u64,
    len: usize,
}

impl Wheel {
    /// A wheel with `tick` resolution that can schedule up to `horizon` ahead
    /// (further deadlines are clamped and rescheduled at the visit).
    pub fn new(tick: Duration, horizon: Duration, start: Instant) -> Wheel {
        let tick = tick.max(Duration::from_millis(1));
        let n = (horizon.as_nanos() / tick.as_nanos()) as usize + 2;
        Wheel {
            slots: (0..n.next_power_of_two()).map(|_| Vec::new()).collect(),
            tick,
            start,
            current: 0,
            len: 0,
        }
    }

    /// The tick number of `now`.
    pub fn tick_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.tick.as_nanos()) as u64
    }

    pub fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() / self.tick.as_nanos()).max(1) as u64
    }

    /// Visit `e` at tick `at` (clamped into the wheel's window).
    pub fn schedule(&mut self, at: u64, e: Entry) {
        let last = self.current + self.slots.len() as u64 - 1;
        let at = at.clamp(self.current, last);
        let mask = self.slots.len() as u64 - 1;
        self.slots[(at & mask) as usize].push(e);
        self.len += 1;
    }

    /// Move every entry due at or before `now` into `out`.
    pub fn advance(&mut self, now: Instant, out: &mut Vec<Entry>) {
        let target = self.tick_of(now);
        let mask = self.slots.len() as u64 - 1;
        while self.current <= target {
            if self.len == 0 {
                self.current = target + 1;
                break;
            }
            let slot = &mut self.slots[(self.current & mask) as usize];
            self.len -= slot.len();
            out.append(slot);
            if slot.capacity() > SLOT_KEEP {
                // A slot filled by a burst of connections would keep that
                // capacity for good, and every slot sees such a burst in turn:
                // at 15,000 connections that was 60 bytes per connection.
                *slot = Vec::new();
            }
            self.current += 1;
        }
    }

    /// When the next non-empty tick is due (None when empty).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() as u64 - 1;
        let ahead = (0..self.slots.len() as u64)
            .find(|i| !self.slots[((self.current + i) & mask) as usize].is_empty())?;
        Some(self.start + self.tick * (self.current + ahead + 1) as u32)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the slots hold (capacity), for the memory tests.
    pub fn heap_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.capacity()).sum::<usize>() * std::mem::size_of::<Entry>()
            + self.slots.capacity() * std::mem::size_of::<Vec<Entry>>()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Heartbeat settings in ticks, derived once from the config.
#[derive(Debug, Clone, Copy)]
pub struct Beats {
    pub ping: u64,
    pub pong: u64,
    /// 0: no idle timeout.
    pub idle: u64,
}

/// The heartbeat's clock. Every tick the shard sweeps its slab once; a
/// connection's deadlines are computed from the ticks it keeps (`last_rx_tick`,
/// `last_msg_tick`), so it holds no timer entry at all.
///
/// Why a sweep and not a timer wheel: a wheel entry cost every idle connection
/// 8 bytes plus its slot's spare capacity (about 12 bytes in all), a third of
/// what was left above the 100-byte target. A sweep reads the slab in order,
/// which the prefetcher streams: at 83,000 connections a shard (1M on 12
/// shards) that is 4.6 MB a second with the default 1 s tick, well under a
/// millisecond, against one cache miss per visit for the wheel.
#[derive(Debug)]
pub struct BeatClock {
    start: Instant,
    tick: Duration,
    /// The next tick to sweep.
    pub(crate) next: u64,
}

impl BeatClock {
    pub fn new(tick: Duration, start: Instant) -> BeatClock {
        BeatClock {
            start,
            tick: tick.max(Duration::from_millis(1)),
            next: 1,
        }
    }

    /// The tick number of `now`.
    pub fn tick_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.tick.as_nanos()) as u64
    }

    /// Whole ticks in `d` (at least one).
    pub fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() / self.tick.as_nanos()).max(1) as u64
    }

    /// When the next sweep is due.
    pub fn deadline(&self) -> Instant {
        self.start + self.tick * self.next as u32
    }
}

/// The longest period (ping + pong, or idle) in ticks the config may set:
/// stamps are 16 bits, with room to spare for a late sweep.
pub const PERIOD_TICKS_MAX: u64 = 60_000;

/// Tick length: a tenth of the shortest heartbeat period, 10 ms to 1 s.
pub fn wheel_tick(ping_ms: u64, pong_ms: u64, idle_ms: u64) -> Duration {
    let shortest = [ping_ms, pong_ms, idle_ms]
        .into_iter()
        .filter(|&v| v > 0)
        .min()
        .unwrap_or(1000);
    Duration::from_millis((shortest / 10).clamp(10, 1000))
}

/// A kind of [`Deadlines`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// An HTTP-phase connection must send a complete request by then
    /// (`limits.handshake_timeout_ms`).
    Handshake,
    /// A backpressured HTTP connection must have read some answers by then
    /// (`limits.http_write_timeout_ms`).
    Stall,
    /// A closing connection's socket is closed by then, peer or not
    /// (`limits.close_linger_ms`).
    Linger,
}

/// The deadlines that every connection of a kind gets with the same timeout,
/// so each kind's queue is in deadline order: a FIFO per kind, no wheel. An
/// entry may be stale (the connection moved on, or its deadline was re-armed):
/// whoever pops it checks the connection's generation and state.
#[derive(Debug, Default)]
pub struct Deadlines {
    handshakes: VecDeque<(Instant, ConnKey, u32)>,
    stalls: VecDeque<(Instant, ConnKey, u32)>,
    lingers: VecDeque<(Instant, ConnKey, u32)>,
}

impl Deadlines {
    fn queue(&mut self, kind: Deadline) -> &mut VecDeque<(Instant, ConnKey, u32)> {
        match kind {
            Deadline::Handshake => &mut self.handshakes,
            Deadline::Stall => &mut self.stalls,
            Deadline::Linger => &mut self.lingers,
        }
    }

    /// Connection `key` (generation `gen`) has a `kind` deadline at `at`.
    pub fn push(&mut self, kind: Deadline, at: Instant, key: ConnKey, gen: u32) {
        self.queue(kind).push_back((at, key, gen));
    }

    /// The next `kind` entry due by `now`, taken out.
    pub fn pop_due(&mut self, kind: Deadline, now: Instant) -> Option<(ConnKey, u32)> {
        let q = self.queue(kind);
        let &(at, key, gen) = q.front()?;
        if at > now {
            return None;
        }
        q.pop_front();
        Some((key, gen))
    }

    /// The earliest deadline of any kind.
    pub fn next(&self) -> Option<Instant> {
        [
            self.handshakes.front(),
            self.lingers.front(),
            self.stalls.front(),
        ]
        .into_iter()
        .flatten()
        .map(|(t, _, _)| *t)
        .min()
    }

    /// Keep only the handshake entries for which `keep` holds (order kept).
    pub fn retain_handshakes(&mut self, mut keep: impl FnMut(Instant, ConnKey, u32) -> bool) {
        self.handshakes.retain(|&(at, key, gen)| keep(at, key, gen));
    }

    /// Give back what a burst left in the queues.
    pub fn trim(&mut self) {
        shrink_deque(&mut self.handshakes);
        shrink_deque(&mut self.lingers);
        shrink_deque(&mut self.stalls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_once_at_their_tick() {
        let t0 = Instant::now();
        let mut w = Wheel::new(Duration::from_millis(10), Duration::from_millis(100), t0);
        w.schedule(3, (1, 1));
        w.schedule(5, (2, 1));
        let mut out = Vec::new();
        w.advance(t0 + Duration::from_millis(29), &mut out);
        assert!(out.is_empty());
        w.advance(t0 + Duration::from_millis(35), &mut out);
        assert_eq!(out, vec![(1, 1)]);
        out.clear();
        w.advance(t0 + Duration::from_millis(1000), &mut out);
        assert_eq!(out, vec![(2, 1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn visited_slots_give_back_a_burst() {
        let t0 = Instant::now();
        let mut w = Wheel::new(Duration::from_millis(10), Duration::from_millis(100), t0);
        let empty = w.heap_bytes();
        for k in 0..10_000 {
            w.schedule(2, (k, 1));
        }
        let mut out = Vec::new();
        w.advance(t0 + Duration::from_millis(30), &mut out);
        assert_eq!(out.len(), 10_000);
        assert!(w.is_empty());
        assert_eq!(w.heap_bytes(), empty, "the burst's slot was freed");
    }

    #[test]
    fn far_deadlines_are_clamped_not_lost() {
        let t0 = Instant::now();
        let mut w = Wheel::new(Duration::from_millis(10), Duration::from_millis(50), t0);
        w.schedule(1_000, (7, 1));
        let mut out = Vec::new();
        w.advance(t0 + Duration::from_millis(200), &mut out);
        assert_eq!(
            out,
            vec![(7, 1)],
            "visited at the horizon, to be rescheduled by the caller"
        );
    }

    #[test]
    fn past_deadlines_fire_at_the_next_tick() {
        let t0 = Instant::now();
        let mut w = Wheel::new(Duration::from_millis(10), Duration::from_millis(50), t0);
        let mut out = Vec::new();
        w.advance(t0 + Duration::from_millis(100), &mut out);
        w.schedule(2, (9, 9));
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(120)));
        w.advance(t0 + Duration::from_millis(100), &mut out);
        assert!(out.is_empty());
        w.advance(t0 + Duration::from_millis(115), &mut out);
        assert_eq!(out, vec![(9, 9)]);
    }

    #[test]
    fn deadlines_come_due_in_order_per_kind() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        assert_eq!(d.next(), None);
        d.push(Deadline::Handshake, t0 + ms(10), 1, 0);
        d.push(Deadline::Handshake, t0 + ms(20), 2, 0);
        d.push(Deadline::Linger, t0 + ms(5), 3, 7);
        assert_eq!(d.next(), Some(t0 + ms(5)));
        assert_eq!(d.pop_due(Deadline::Handshake, t0 + ms(5)), None);
        assert_eq!(d.pop_due(Deadline::Linger, t0 + ms(5)), Some((3, 7)));
        assert_eq!(d.pop_due(Deadline::Handshake, t0 + ms(15)), Some((1, 0)));
        assert_eq!(d.pop_due(Deadline::Handshake, t0 + ms(15)), None);
        d.retain_handshakes(|_, key, _| key != 2);
        assert_eq!(d.next(), None);
        assert_eq!(d.pop_due(Deadline::Stall, t0 + ms(100)), None);
    }
}
