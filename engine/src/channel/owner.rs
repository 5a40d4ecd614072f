//! The owner side of fan-out: per-channel offsets and epochs, and turning one
//! publication into one shared frame for every interested shard.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shardcast_proto::command::Since;
use shardcast_proto::{reply, PreparedFrame};

use crate::payload::{Member, Page, Recovery, ShardId, Snapshot, Window};
use crate::policy::auth::Namespace;

/// A publication kept for recovery and the `history` command.
#[derive(Debug, Clone)]
pub struct Kept {
    pub offset: u64,
    pub data: Bytes,
    /// The push exactly as first sent, replayed as is (no re-encoding).
    pub frame: PreparedFrame,
    at: Instant,
}

/// State of a channel this shard owns.
#[derive(Debug)]
struct Owned {
    offset: u64,
    epoch: Arc<str>,
    /// Bit i set: shard i has local subscribers.
    interest: u64,
    /// Oldest first; bounded by the namespace's `history_size` and `history_ttl_ms`.
    history: VecDeque<Kept>,
    members: Vec<Member>,
    /// Cluster mode: this node receives the channel from Redis (`watched`), and
    /// knows its position (`known`, after the first read); shards waiting for it.
    watched: bool,
    known: bool,
    waiting: u64,
    /// Starts of the Redis subscription so far; only the latest one's position counts.
    watch_seq: u64,
    /// When the channel was last used, on the owner's use counter: idle
    /// channels are forgotten oldest first.
    used: u64,
}

/// Cluster mode: what a change of interest asks of the bus.
#[derive(Debug, PartialEq, Eq)]
pub enum Watch {
    /// The position is known: acknowledge at once.
    Ack(Arc<str>, u64),
    /// Wait for the position; `start` (with its sequence number) when the bus
    /// must subscribe first.
    Wait {
        start: Option<u64>,
    },
    /// Nobody on this node listens any more: unsubscribe.
    Stop,
    Nothing,
}

/// Where a new channel's position (offset and epoch) comes from, as the
/// channel's authority decides (`channel/authority.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// This owner assigns every offset: a new channel starts at 0 in a fresh epoch.
    Assigned,
    /// Redis assigns them: unknown until this node has read it (`cluster_watched`).
    Read,
}

/// One publication ready to hand out.
#[derive(Debug)]
pub struct Fanned {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub frame: PreparedFrame,
    pub interest: u64,
}

/// The leading items of `items` that fit in `page_bytes` (at least one), and
/// whether any were left out.
fn cut<T>(
    items: impl Iterator<Item = T>,
    size: impl Fn(&T) -> usize,
    page_bytes: usize,
) -> (Vec<T>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        if !out.is_empty() && bytes + n > page_bytes {
            return (out, true);
        }
        bytes += n;
        out.push(item);
    }
    (out, false)
}

#[derive(Debug)]
pub struct Owner {
    shard: ShardId,
    channels: HashMap<Arc<str>, Owned>,
    epoch_seq: u64,
    boot_nanos: u64,
    idle_channels_max: usize,
    namespaces: Arc<HashMap<String, Namespace>>,
    /// Whether this owner assigns offsets, or keeps a node's view of Redis's.
    positions: Positions,
    /// Counts channel uses, so the least recently used idle ones go first.
    uses: u64,
}

impl Owner {
    pub fn new(
        shard: ShardId,
        idle_channels_max: usize,
        namespaces: Arc<HashMap<String, Namespace>>,
        positions: Positions,
    ) -> Owner {
        let boot_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Owner {
            shard,
            channels: HashMap::new(),
            epoch_seq: 0,
            boot_nanos,
            idle_channels_max,
            namespaces,
            positions,
            uses: 0,
        }
    }

    /// Epochs are derived from the boot time; the simulation fixes it so a
    /// seed replays the same bytes.
    pub(crate) fn set_boot_nanos(&mut self, nanos: u64) {
        self.boot_nanos = nanos;
    }

    /// Cluster mode: shard `from` starts or stops wanting the channel.
    pub fn cluster_interest(&mut self, channel: &Arc<str>, from: ShardId, on: bool) -> Watch {
        let st = self.entry(channel);
        debug_assert_alternates(channel, st.interest, from, on);
        if on {
            st.interest |= 1 << from;
            if st.known {
                return Watch::Ack(st.epoch.clone(), st.offset);
            }
            st.waiting |= 1 << from;
            if st.watched {
                return Watch::Wait { start: None };
            }
            st.watched = true;
            st.watch_seq += 1;
            Watch::Wait {
                start: Some(st.watch_seq),
            }
        } else {
            st.interest &= !(1 << from);
            st.waiting &= !(1 << from);
            if st.interest == 0 && st.watched {
                st.watched = false;
                st.known = false;
                return Watch::Stop;
            }
            Watch::Nothing
        }
    }

    /// Cluster mode: the position after subscribe `seq`; returns the shards to acknowledge.
    pub fn cluster_watched(
        &mut self,
        channel: &Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        seq: u64,
    ) -> u64 {
        let Some(st) = self.channels.get_mut(channel) else {
            return 0;
        };
        // Unsubscribed meanwhile, or an earlier subscription's answer: what was
        // published between that unsubscribe and the next subscribe never came here.
        if !st.watched || seq != st.watch_seq {
            return 0;
        }
        st.known = true;
        st.epoch = epoch;
        st.offset = offset;
        std::mem::take(&mut st.waiting)
    }

    /// Cluster mode: a publication from Redis, framed once for this node; None
    /// before the position is known (it is older than that position) or for a
    /// repeat.
    pub fn cluster_message(
        &mut self,
        channel: &Arc<str>,
        epoch: Arc<str>,
        offset: u64,
        data: &Bytes,
    ) -> Option<Fanned> {
        let st = self.channels.get_mut(channel)?;
        if !st.known || (st.epoch == epoch && offset <= st.offset) {
            return None;
        }
        st.epoch = epoch;
        st.offset = offset;
        let frame = reply::push(channel, offset, &st.epoch, data);
        Some(Fanned {
            offset,
            epoch: st.epoch.clone(),
            frame,
            interest: st.interest,
        })
    }

    /// Cluster mode: the link to Redis is gone; every position is unknown again.
    pub fn cluster_reset(&mut self) {
        for st in self.channels.values_mut() {
            st.watched = false;
            st.known = false;
            st.waiting = 0;
        }
    }

    /// A fresh epoch: unique per process start, shard and channel incarnation, so a
    /// client that saw another epoch knows the history it holds a position in is gone.
    /// (In cluster mode, the epoch a channel gets if Redis has none for it yet.)
    pub fn new_epoch(&mut self) -> Arc<str> {
        self.epoch_seq += 1;
        let mut h = self.boot_nanos
            ^ (self.shard as u64).rotate_left(48)
            ^ self.epoch_seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        Arc::from(format!("{:08x}", h as u32))
    }

    fn namespace(&self, channel: &str) -> Namespace {
        self.namespaces
            .get(shardcast_proto::command::namespace(channel))
            .cloned()
            .unwrap_or_default()
    }

    fn entry(&mut self, channel: &Arc<str>) -> &mut Owned {
        self.uses += 1;
        let used = self.uses;
        if !self.channels.contains_key(channel) {
            let epoch = self.new_epoch();
            let st = Owned {
                offset: 0,
                epoch,
                interest: 0,
                history: VecDeque::new(),
                members: Vec::new(),
                watched: false,
                known: self.positions == Positions::Assigned,
                waiting: 0,
                watch_seq: 0,
                used,
            };
            self.channels.insert(channel.clone(), st);
        }
        let st = self.channels.get_mut(channel).expect("inserted above");
        st.used = used;
        st
    }

    /// The channel's state with expired history dropped.
    fn fresh(&mut self, channel: &Arc<str>, now: Instant) -> &mut Owned {
        let ttl = Duration::from_millis(self.namespace(channel).history_ttl_ms);
        let st = self.entry(channel);
        while st
            .history
            .front()
            .is_some_and(|k| now.saturating_duration_since(k.at) > ttl)
        {
            st.history.pop_front();
        }
        st
    }

    /// Shard `from` wants (or no longer wants) publications; returns the current position.
    pub fn interest(&mut self, channel: &Arc<str>, from: ShardId, on: bool) -> (Arc<str>, u64) {
        let st = self.entry(channel);
        debug_assert_alternates(channel, st.interest, from, on);
        if on {
            st.interest |= 1 << from;
        } else {
            st.interest &= !(1 << from);
        }
        (st.epoch.clone(), st.offset)
    }

    /// The shards with subscribers to `channel` (bit i: shard i); 0 when unknown.
    pub fn interest_of(&self, channel: &str) -> u64 {
        self.channels.get(channel).map_or(0, |c| c.interest)
    }

    /// Assign the next offset, serialize the push once, and keep it for recovery.
    pub fn publish(&mut self, channel: &Arc<str>, data: &Bytes, now: Instant) -> Fanned {
        let size = self.namespace(channel).history_size;
        let st = self.fresh(channel, now);
        st.offset += 1;
        // Offsets rise by one: the newest kept publication is the previous one
        // (expiry and the size cap take from the front only).
        debug_assert!(
            st.history.back().is_none_or(|k| k.offset + 1 == st.offset),
            "channel {channel}: offset {} after kept {:?}",
            st.offset,
            st.history.back().map(|k| k.offset)
        );
        let frame = reply::push(channel, st.offset, &st.epoch, data);
        if size > 0 {
            if st.history.len() >= size {
                st.history.pop_front();
            }
            st.history.push_back(Kept {
                offset: st.offset,
                data: data.clone(),
                frame: frame.clone(),
                at: now,
            });
        }
        Fanned {
            offset: st.offset,
            epoch: st.epoch.clone(),
            frame,
            interest: st.interest,
        }
    }

    /// What a subscriber at `since` missed, if the epoch matches and history
    /// still holds all of it: the first page (about `page_bytes`) of it.
    pub fn recover(
        &mut self,
        channel: &Arc<str>,
        since: &Since,
        page_bytes: usize,
        now: Instant,
    ) -> Recovery {
        let (epoch, offset) = {
            let st = self.fresh(channel, now);
            (st.epoch.clone(), st.offset)
        };
        match self.replay(channel, since, offset, page_bytes, now) {
            Some(frames) => Recovery {
                epoch,
                offset,
                recovered: true,
                frames,
            },
            None => Recovery {
                epoch,
                offset,
                recovered: false,
                frames: Vec::new(),
            },
        }
    }

    /// The next page of a replay: pushes after `since` up to offset `upto`,
    /// about `page_bytes` of them, shared with history (no copy). None once
    /// history no longer reaches back to `since` (or the epoch changed).
    pub fn replay(
        &mut self,
        channel: &Arc<str>,
        since: &Since,
        upto: u64,
        page_bytes: usize,
        now: Instant,
    ) -> Option<Vec<PreparedFrame>> {
        let st = self.fresh(channel, now);
        let oldest = st.history.front().map(|k| k.offset);
        if !reachable(since, &st.epoch, st.offset, oldest) {
            return None;
        }
        let w = Window {
            after: Some(since.offset),
            count: usize::try_from(upto.saturating_sub(since.offset)).unwrap_or(usize::MAX),
            page_bytes,
        };
        let range = w.range(oldest.unwrap_or(st.offset + 1), st.history.len());
        let (frames, _) = cut(
            st.history.range(range).map(|k| k.frame.clone()),
            |f| f.bytes().len(),
            page_bytes,
        );
        Some(frames)
    }

    /// Publications after `since` (or the latest ones), at most `limit`, cut
    /// to about `page_bytes` with `next` saying where the rest starts.
    /// None when `since` is outside what history holds.
    pub fn history(
        &mut self,
        channel: &Arc<str>,
        since: Option<&Since>,
        limit: usize,
        page_bytes: usize,
        now: Instant,
    ) -> Option<Page> {
        let st = self.fresh(channel, now);
        let (epoch, offset) = (st.epoch.clone(), st.offset);
        let oldest = st.history.front().map(|k| k.offset);
        if let Some(s) = since {
            if !reachable(s, &epoch, offset, oldest) {
                return None;
            }
        }
        let w = Window {
            after: since.map(|s| s.offset),
            count: limit,
            page_bytes,
        };
        let range = w.range(oldest.unwrap_or(offset + 1), st.history.len());
        let (items, more) = cut(
            st.history.range(range).map(|k| (k.offset, k.data.clone())),
            |(_, d)| d.len() + 32,
            page_bytes,
        );
        Some(Page {
            epoch,
            offset,
            next: more.then(|| items.last().map_or(0, |i| i.0)),
            items,
        })
    }

    /// Add or remove a presence member; returns the event to fan out and where.
    pub fn presence(
        &mut self,
        channel: &Arc<str>,
        member: Member,
        join: bool,
    ) -> Option<(PreparedFrame, u64)> {
        let st = self.entry(channel);
        if join {
            if st.members.contains(&member) {
                return None;
            }
            st.members.push(member.clone());
        } else {
            let i = st.members.iter().position(|m| m.conn == member.conn)?;
            st.members.swap_remove(i);
        }
        let json = reply::presence_event(channel, join, &member.user, &member.conn);
        Some((PreparedFrame::text(&json), st.interest))
    }

    pub fn members(&mut self, channel: &Arc<str>) -> Vec<Member> {
        self.channels
            .get(channel)
            .map(|c| c.members.clone())
            .unwrap_or_default()
    }

    /// Forget the channels nobody listens to past `idle_channels_max`, least
    /// recently used first. Their next publication starts a new epoch, which
    /// tells clients why.
    pub fn trim_idle(&mut self) {
        let idle = self.channels.values().filter(|c| c.interest == 0).count();
        if idle <= self.idle_channels_max {
            return;
        }
        let mut by_use: Vec<(u64, Arc<str>)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.interest == 0)
            .map(|(k, c)| (c.used, k.clone()))
            .collect();
        let excess = idle - self.idle_channels_max;
        by_use.select_nth_unstable_by_key(excess - 1, |e| e.0);
        for (_, k) in &by_use[..excess] {
            self.channels.remove(k);
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// Interest bits match the registries, the half the owner can see: a shard
/// announces interest when its registry creates the channel and withdraws it
/// when the registry drops it (`Subscriptions::want`, `Subscriptions::release`), one of each in
/// turn, over a FIFO queue; so an announcement always flips the shard's bit.
/// The same bit twice means the registry and this set disagree. (The other
/// half, that a registry holds a channel only while it has subscribers or
/// waiters, is checked on each shard: `Registry::assert_held_while_wanted`.)
fn debug_assert_alternates(channel: &str, interest: u64, from: ShardId, on: bool) {
    debug_assert_eq!(
        interest & (1 << from) != 0,
        !on,
        "channel {channel}: shard {from} announced interest {on} twice"
    );
}

/// Can a client at `since` be told everything after it? Same epoch, not ahead
/// of the channel, and history (oldest kept offset `oldest`) reaches back to it.
fn reachable(since: &Since, epoch: &str, offset: u64, oldest: Option<u64>) -> bool {
    *since.epoch == *epoch
        && since.offset <= offset
        && since.offset + 1 >= oldest.unwrap_or(offset + 1)
}

/// Cluster mode: the pushes of a Redis read (a window after `since`, see
/// [`Window`]), if history reaches back to `since` (the rule of [`Owner::replay`]).
pub fn replay_from(channel: &str, snap: &Snapshot, since: &Since) -> Option<Vec<PreparedFrame>> {
    if !reachable(since, &snap.epoch, snap.offset, Some(snap.oldest)) {
        return None;
    }
    let frames = snap
        .items
        .iter()
        .filter(|(o, _)| *o > since.offset)
        .map(|(o, d)| reply::push(channel, *o, &snap.epoch, d))
        .collect();
    Some(frames)
}

/// Cluster mode: the first answer to a `since`, from a Redis read.
pub fn recover_from(channel: &str, snap: &Snapshot, since: &Since) -> Recovery {
    let frames = replay_from(channel, snap, since);
    Recovery {
        epoch: snap.epoch.clone(),
        offset: snap.offset,
        recovered: frames.is_some(),
        frames: frames.unwrap_or_default(),
    }
}

/// Cluster mode: a history page from a Redis read (the rule of [`Owner::history`]).
pub fn history_from(snap: &Snapshot, since: Option<&Since>) -> Option<Page> {
    if let Some(s) = since {
        if !reachable(s, &snap.epoch, snap.offset, Some(snap.oldest)) {
            return None;
        }
    }
    Some(Page {
        epoch: snap.epoch.clone(),
        offset: snap.offset,
        next: snap.more.then(|| snap.items.last().map_or(0, |i| i.0)),
        items: snap.items.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(history_size: usize) -> Owner {
        owner_with(history_size, Positions::Assigned)
    }

    fn owner_with(history_size: usize, positions: Positions) -> Owner {
        let mut ns = HashMap::new();
        ns.insert(
            String::new(),
            Namespace {
                history_size,
                ..Namespace::default()
            },
        );
        Owner::new(0, 10, Arc::new(ns), positions)
    }

    #[test]
    fn offsets_rise_by_one_and_interest_is_tracked() {
        let mut o = owner(0);
        let now = Instant::now();
        let ch: Arc<str> = Arc::from("news");
        let (epoch, offset) = o.interest(&ch, 1, true);
        assert_eq!(offset, 0);
        let a = o.publish(&ch, &Bytes::from_static(b"1"), now);
        let b = o.publish(&ch, &Bytes::from_static(b"2"), now);
        assert_eq!((a.offset, b.offset), (1, 2));
        assert_eq!(a.epoch, epoch);
        assert_eq!(a.interest, 0b10);
        let (_, offset) = o.interest(&ch, 1, false);
        assert_eq!(offset, 2);
        assert_eq!(o.publish(&ch, &Bytes::from_static(b"3"), now).interest, 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "shard 1 announced interest true twice")]
    fn interest_announced_twice_is_caught() {
        let mut o = owner(0);
        let ch: Arc<str> = Arc::from("news");
        o.interest(&ch, 1, true);
        o.interest(&ch, 1, true);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "offset 2 after kept Some(5)")]
    fn a_gap_in_offsets_is_caught_at_the_owner() {
        let mut o = owner(10);
        let now = Instant::now();
        let ch: Arc<str> = Arc::from("news");
        o.publish(&ch, &Bytes::from_static(b"1"), now);
        let st = o.channels.get_mut(&ch).unwrap();
        st.history.back_mut().unwrap().offset = 5;
        o.publish(&ch, &Bytes::from_static(b"2"), now);
    }

    #[test]
    fn forgotten_channels_come_back_with_a_new_epoch() {
        let mut o = owner(0);
        o.idle_channels_max = 0;
        let now = Instant::now();
        let ch: Arc<str> = Arc::from("a");
        let first = o.publish(&ch, &Bytes::from_static(b"1"), now).epoch;
        o.trim_idle();
        let again = o.publish(&ch, &Bytes::from_static(b"1"), now);
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, first);
    }

    #[test]
    fn only_the_least_recently_used_idle_channels_past_the_cap_are_forgotten() {
        let mut o = owner(0);
        o.idle_channels_max = 2;
        let now = Instant::now();
        let b = Bytes::from_static(b"1");
        let names: Vec<Arc<str>> = ["a", "b", "c", "d"].iter().map(|n| Arc::from(*n)).collect();
        let epochs: Vec<_> = names.iter().map(|c| o.publish(c, &b, now).epoch).collect();
        o.publish(&names[0], &b, now); // "a" is used again: "b" and "c" are the oldest
        let live: Arc<str> = Arc::from("live");
        o.interest(&live, 0, true);
        o.trim_idle();
        assert_eq!(o.len(), 3, "two idle kept, the listened-to one too");
        assert_eq!(o.publish(&names[0], &b, now).epoch, epochs[0], "kept");
        assert_eq!(o.publish(&names[3], &b, now).epoch, epochs[3], "kept");
        assert_ne!(o.publish(&names[1], &b, now).epoch, epochs[1], "forgotten");
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed_within_history() {
        let mut o = owner(3);
        let now = Instant::now();
        let ch: Arc<str> = Arc::from("r");
        let frames: Vec<_> = (1..=5)
            .map(|i| o.publish(&ch, &Bytes::from(i.to_string()), now))
            .collect();
        let epoch = frames[0].epoch.to_string();
        let r = o.recover(
            &ch,
            &Since {
                epoch: epoch.clone(),
                offset: 3,
            },
            usize::MAX,
            now,
        );
        assert!(r.recovered);
        assert_eq!(r.offset, 5);
        assert_eq!(
            r.frames,
            vec![frames[3].frame.clone(), frames[4].frame.clone()]
        );
        // A 3-entry history holds 3..=5: since=2 needs exactly those, since=1 also needs 2.
        assert!(
            o.recover(
                &ch,
                &Since {
                    epoch: epoch.clone(),
                    offset: 2
                },
                usize::MAX,
                now
            )
            .recovered
        );
        assert!(
            !o.recover(
                &ch,
                &Since {
                    epoch: epoch.clone(),
                    offset: 1
                },
                usize::MAX,
                now
            )
            .recovered
        );
        assert!(
            !o.recover(
                &ch,
                &Since {
                    epoch: "other".into(),
                    offset: 5
                },
                usize::MAX,
                now
            )
            .recovered
        );
        let nothing_missed = o.recover(
            &ch,
            &Since {
                epoch: epoch.clone(),
                offset: 5,
            },
            usize::MAX,
            now,
        );
        assert!(nothing_missed.recovered && nothing_missed.frames.is_empty());
        let page = o.history(&ch, None, 2, usize::MAX, now).unwrap();
        assert_eq!(
            page.items.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(o
            .history(&ch, Some(&Since { epoch, offset: 0 }), 10, usize::MAX, now)
            .is_none());
    }

    #[test]
    fn replay_and_history_come_in_pages_that_cover_everything_once() {
        let mut o = owner(1000);
        let now = Instant::now();
        let ch: Arc<str> = Arc::from("p");
        let data = Bytes::from(vec![b'1'; 1000]);
        let mut epoch = String::new();
        for _ in 0..1000 {
            epoch = o.publish(&ch, &data, now).epoch.to_string();
        }
        // A replay from 0 to 1000, 64 KiB at a time.
        let first = o.recover(
            &ch,
            &Since {
                epoch: epoch.clone(),
                offset: 0,
            },
            64 * 1024,
            now,
        );
        assert!(first.recovered);
        let per_page = first.frames.len();
        assert!(per_page > 1 && per_page < 100, "{per_page}");
        let mut cursor = per_page as u64;
        while cursor < 1000 {
            let since = Since {
                epoch: epoch.clone(),
                offset: cursor,
            };
            let page = o.replay(&ch, &since, 1000, 64 * 1024, now).unwrap();
            assert!(!page.is_empty());
            let text = std::str::from_utf8(&page[0].bytes()[4..]).unwrap();
            assert!(
                text.contains(&format!("\"offset\":{}", cursor + 1)),
                "pages continue where the last ended"
            );
            cursor += page.len() as u64;
        }
        assert_eq!(cursor, 1000);
        // A page never passes `upto`, even with room to spare.
        let since = Since {
            epoch: epoch.clone(),
            offset: 10,
        };
        assert_eq!(o.replay(&ch, &since, 12, usize::MAX, now).unwrap().len(), 2);
        // One frame always fits, so a page bigger than the budget still progresses.
        assert_eq!(o.replay(&ch, &since, 1000, 1, now).unwrap().len(), 1);
        // History pages say where to continue.
        let since = Since {
            epoch: epoch.clone(),
            offset: 0,
        };
        let mut got = Vec::new();
        let mut at = Some(since);
        while let Some(s) = at.take() {
            let p = o.history(&ch, Some(&s), 1000, 100 * 1024, now).unwrap();
            got.extend(p.items.iter().map(|(o, _)| *o));
            at = p.next.map(|n| Since {
                epoch: epoch.clone(),
                offset: n,
            });
        }
        assert_eq!(got, (1..=1000).collect::<Vec<u64>>());
        // Newest 300, cut: the page starts at the window's start.
        let p = o.history(&ch, None, 300, 100 * 1024, now).unwrap();
        assert_eq!(p.items[0].0, 701);
        assert_eq!(p.next, Some(p.items.last().unwrap().0));
        // History moved past a cursor: the replay cannot go on.
        for _ in 0..5 {
            o.publish(&ch, &data, now);
        }
        let since = Since { epoch, offset: 2 };
        assert!(o.replay(&ch, &since, 1000, 64 * 1024, now).is_none());
    }

    #[test]
    fn windows_pick_the_right_range() {
        let w = |after, count| Window {
            after,
            count,
            page_bytes: 0,
        };
        assert_eq!(w(Some(10), 5).range(1, 100), 10..15);
        assert_eq!(w(Some(0), 500).range(1, 100), 0..100);
        assert_eq!(w(None, 30).range(1, 100), 70..100);
        assert_eq!(w(None, 300).range(1, 100), 0..100);
        assert_eq!(w(Some(200), 5).range(1, 100), 100..100, "ahead: nothing");
    }

    #[test]
    fn history_expires_after_its_ttl() {
        let mut ns = HashMap::new();
        ns.insert(
            String::new(),
            Namespace {
                history_size: 10,
                history_ttl_ms: 1000,
                ..Namespace::default()
            },
        );
        let mut o = Owner::new(0, 10, Arc::new(ns), Positions::Assigned);
        let t0 = Instant::now();
        let ch: Arc<str> = Arc::from("t");
        let epoch = o
            .publish(&ch, &Bytes::from_static(b"1"), t0)
            .epoch
            .to_string();
        let later = t0 + Duration::from_secs(2);
        assert!(
            !o.recover(&ch, &Since { epoch, offset: 0 }, usize::MAX, later)
                .recovered
        );
    }

    #[test]
    fn presence_events_for_join_and_leave() {
        let mut o = owner(0);
        let ch: Arc<str> = Arc::from("chat:1");
        o.interest(&ch, 0, true);
        let m = Member {
            user: Arc::from("u1"),
            conn: Arc::from("0.1.1"),
        };
        let (join, to) = o.presence(&ch, m.clone(), true).unwrap();
        assert_eq!(
            &join.bytes()[2..],
            br#"{"channel":"chat:1","join":{"user":"u1","conn":"0.1.1"}}"#
        );
        assert_eq!(to, 1);
        assert_eq!(o.members(&ch), vec![m.clone()]);
        let (leave, _) = o.presence(&ch, m, false).unwrap();
        assert!(std::str::from_utf8(&leave.bytes()[2..])
            .unwrap()
            .contains(r#""leave":{"user":"u1""#));
        assert!(o.members(&ch).is_empty());
    }

    #[test]
    fn cluster_positions_come_from_the_latest_subscribe_only() {
        let mut o = owner_with(0, Positions::Read);
        let ch: Arc<str> = Arc::from("c");
        let b = Bytes::from_static(b"1");
        assert_eq!(
            o.cluster_interest(&ch, 1, true),
            Watch::Wait { start: Some(1) }
        );
        assert_eq!(
            o.cluster_interest(&ch, 0, true),
            Watch::Wait { start: None }
        );
        // Before the position is known, a message is older than it: dropped.
        assert!(o.cluster_message(&ch, "E".into(), 5, &b).is_none());
        assert_eq!(o.cluster_interest(&ch, 1, false), Watch::Nothing);
        assert_eq!(o.cluster_interest(&ch, 0, false), Watch::Stop);
        assert_eq!(
            o.cluster_interest(&ch, 1, true),
            Watch::Wait { start: Some(2) }
        );
        // The first subscription's answer comes late: what was published while
        // unsubscribed never came here, so its position must not be used.
        assert_eq!(o.cluster_watched(&ch, "E".into(), 7, 1), 0);
        assert_eq!(o.cluster_watched(&ch, "E".into(), 9, 2), 1 << 1);
        assert_eq!(o.cluster_interest(&ch, 0, true), Watch::Ack("E".into(), 9));
        assert!(
            o.cluster_message(&ch, "E".into(), 9, &b).is_none(),
            "already counted"
        );
        let f = o.cluster_message(&ch, "E".into(), 10, &b).unwrap();
        assert_eq!((f.offset, f.interest), (10, 0b11));
        // A new epoch (Redis lost the channel) starts over.
        assert_eq!(o.cluster_message(&ch, "F".into(), 1, &b).unwrap().offset, 1);
        o.cluster_reset();
        assert!(
            o.cluster_message(&ch, "F".into(), 2, &b).is_none(),
            "unknown after a loss"
        );
    }
}
