//! A shard's local subscriptions: channel → subscriber keys. Knows nothing about sockets.
//!
//! Each channel keeps a dense `Vec` of subscriber keys so a fan-out is a linear
//! scan. Removal is O(1) by swap-remove: the caller keeps, per subscription, the
//! slot it was given, and is told which subscriber moved into the freed slot.

use std::collections::HashMap;
use std::sync::Arc;

/// Index of a channel in this shard's registry.
pub type ChannelId = u32;
/// Position of a subscriber inside a channel's list.
pub type Slot = u32;
/// Channel ids stay below this: the two ids at the top mark a connection's
/// subscription list (channel/sublist.rs), never a channel.
pub const CHANNEL_ID_END: ChannelId = ChannelId::MAX - 1;

/// Where a channel stands with its owner shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Interest was requested; subscribers wait for the owner's acknowledgement.
    Pending,
    /// Publications flow; `offset` is the last one delivered here.
    Active { epoch: Arc<str>, offset: u64 },
}

/// A subscription waiting for the owner's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub key: u32,
    pub gen: u32,
    pub id: Option<u64>,
    pub since: Option<shardcast_proto::command::Since>,
}

#[derive(Debug)]
pub struct Channel {
    pub name: Arc<str>,
    pub subscribers: Vec<u32>,
    pub position: Position,
    pub waiters: Vec<Waiter>,
    /// Subscribers still replaying what they missed (their live pushes wait
    /// behind the replay, see `channel/replay.rs`); 0 keeps the fan-out loop plain.
    pub replaying: u32,
}

#[derive(Debug, Default)]
pub struct Registry {
    by_name: HashMap<Arc<str>, ChannelId>,
    channels: Vec<Option<Channel>>,
    free: Vec<ChannelId>,
    /// Bumped on every change, so snapshots are taken only when something changed.
    pub version: u64,
}

/// Result of removing a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    /// The subscriber now at the freed slot, which must update its own record.
    pub moved: Option<(u32, Slot)>,
    /// The channel has neither subscribers nor waiters left.
    pub now_empty: bool,
}

impl Registry {
    pub fn lookup(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(id as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.channels.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// The channel's id, creating it in `Pending` state when absent (second value: created).
    pub fn get_or_create(&mut self, name: &str) -> (ChannelId, bool) {
        if let Some(id) = self.lookup(name) {
            return (id, false);
        }
        let name: Arc<str> = Arc::from(name);
        let ch = Channel {
            name: name.clone(),
            subscribers: Vec::new(),
            position: Position::Pending,
            waiters: Vec::new(),
            replaying: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.channels[id as usize] = Some(ch);
                id
            }
            None => {
                self.channels.push(Some(ch));
                (self.channels.len() - 1) as ChannelId
            }
        };
        // Two ids at the top mark a connection's subscription list (channel/sublist.rs);
        // `channels_per_shard_max` keeps the registry far below them.
        assert!(id < CHANNEL_ID_END, "channel ids exhausted");
        self.by_name.insert(name, id);
        self.version += 1;
        (id, true)
    }

    /// Add a subscriber; returns its slot.
    pub fn add(&mut self, id: ChannelId, key: u32) -> Slot {
        self.version += 1;
        let ch = self.get_mut(id).expect("channel exists");
        ch.subscribers.push(key);
        (ch.subscribers.len() - 1) as Slot
    }

    /// Remove the subscriber at `slot` (which must hold `key`).
    pub fn remove(&mut self, id: ChannelId, slot: Slot, key: u32) -> Removed {
        self.version += 1;
        let ch = self.get_mut(id).expect("channel exists");
        debug_assert_eq!(ch.subscribers.get(slot as usize), Some(&key));
        ch.subscribers.swap_remove(slot as usize);
        let moved = ch.subscribers.get(slot as usize).map(|&k| (k, slot));
        Removed {
            moved,
            now_empty: ch.subscribers.is_empty() && ch.waiters.is_empty(),
        }
    }

    /// Forget a channel (no subscribers, no waiters).
    pub fn drop_channel(&mut self, id: ChannelId) -> Option<Channel> {
        let ch = self.channels.get_mut(id as usize)?.take()?;
        self.by_name.remove(&ch.name);
        self.free.push(id);
        self.version += 1;
        Some(ch)
    }

    /// Interest bits match the registry, this shard's half: the registry holds
    /// a channel (and so this shard's interest bit is set at its owner, see
    /// `debug_assert_alternates` in channel/owner.rs) only while someone here wants
    /// it. An active channel with nobody left would receive every publication
    /// for nothing, its release lost; a pending one with subscribers joined
    /// them before the owner said where they start. The owner's bits live on
    /// another thread, so the two sets are not compared directly: each side
    /// checks what it can, and the FIFO queue between them does the rest.
    pub fn assert_held_while_wanted(&self) {
        for c in self.iter() {
            match c.position {
                Position::Active { .. } => assert!(
                    !c.subscribers.is_empty() || !c.waiters.is_empty(),
                    "channel {} is active with no subscriber or waiter",
                    c.name
                ),
                Position::Pending => assert!(
                    c.subscribers.is_empty(),
                    "channel {} has subscribers before its acknowledgement",
                    c.name
                ),
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_remove_reports_the_moved_subscriber() {
        let mut r = Registry::default();
        let (id, created) = r.get_or_create("news");
        assert!(created);
        let s1 = r.add(id, 10);
        let _s2 = r.add(id, 11);
        let _s3 = r.add(id, 12);
        let rem = r.remove(id, s1, 10);
        assert_eq!(rem.moved, Some((12, 0)));
        assert!(!rem.now_empty);
        assert_eq!(r.get(id).unwrap().subscribers, vec![12, 11]);
        let rem = r.remove(id, 1, 11);
        assert_eq!(rem.moved, None);
        let rem = r.remove(id, 0, 12);
        assert!(rem.now_empty);
        assert!(r.drop_channel(id).is_some());
        assert_eq!(r.lookup("news"), None);
        let (id2, created) = r.get_or_create("other");
        assert!(created);
        assert_eq!(id2, id, "freed ids are reused");
    }

    #[test]
    fn waiters_keep_a_channel_alive() {
        let mut r = Registry::default();
        let (id, _) = r.get_or_create("a");
        r.get_mut(id).unwrap().waiters.push(Waiter {
            key: 1,
            gen: 0,
            id: None,
            since: None,
        });
        let s = r.add(id, 2);
        assert!(!r.remove(id, s, 2).now_empty);
    }

    fn activate(r: &mut Registry, id: ChannelId) {
        r.get_mut(id).unwrap().position = Position::Active {
            epoch: "e".into(),
            offset: 0,
        };
    }

    #[test]
    fn channels_wanted_here_pass_the_interest_check() {
        let mut r = Registry::default();
        let (a, _) = r.get_or_create("a");
        activate(&mut r, a);
        r.add(a, 1);
        r.get_or_create("pending-and-empty"); // released when its ack comes
        r.assert_held_while_wanted();
    }

    #[test]
    #[should_panic(expected = "active with no subscriber or waiter")]
    fn an_active_channel_left_empty_fails_the_interest_check() {
        let mut r = Registry::default();
        let (a, _) = r.get_or_create("a");
        activate(&mut r, a);
        let s = r.add(a, 1);
        assert!(r.remove(a, s, 1).now_empty);
        // Not dropped: its owner would keep sending it here.
        r.assert_held_while_wanted();
    }

    #[test]
    #[should_panic(expected = "subscribers before its acknowledgement")]
    fn a_pending_channel_with_subscribers_fails_the_interest_check() {
        let mut r = Registry::default();
        let (a, _) = r.get_or_create("a");
        r.add(a, 1);
        r.assert_held_while_wanted();
    }
}
