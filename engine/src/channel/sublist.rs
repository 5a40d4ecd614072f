//! A connection's subscriptions. Most connections hold one: it sits in the
//! connection's record, 8 bytes, with no allocation. Two or more live in the
//! shard's [`MoreSubs`], a slab of exact-size lists that the record points
//! into by index, so neither the record nor its rarely-needed box grows for
//! the common case.

use crate::channel::registry::{ChannelId, Slot, CHANNEL_ID_END};

/// `SubRef::pair.0` when the connection has no subscription.
const NONE: ChannelId = ChannelId::MAX;
/// `SubRef::pair.0` when its subscriptions are in `MoreSubs` at `pair.1`.
const MANY: ChannelId = CHANNEL_ID_END;

/// In the connection's record: its one subscription (channel, slot in the
/// channel's subscriber list), none, or where its list is in `MoreSubs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRef {
    pair: (ChannelId, Slot),
}

impl Default for SubRef {
    fn default() -> SubRef {
        SubRef { pair: (NONE, 0) }
    }
}

/// The lists of the shard's connections that hold two or more subscriptions.
#[derive(Debug, Default)]
pub struct MoreSubs {
    lists: Vec<Box<[(ChannelId, Slot)]>>,
    free: Vec<u32>,
}

impl MoreSubs {
    /// The subscriptions of the connection whose record holds `r`.
    pub fn get<'a>(&'a self, r: &'a SubRef) -> &'a [(ChannelId, Slot)] {
        match r.pair.0 {
            NONE => &[],
            MANY => &self.lists[r.pair.1 as usize],
            _ => std::slice::from_ref(&r.pair),
        }
    }

    pub fn get_mut<'a>(&'a mut self, r: &'a mut SubRef) -> &'a mut [(ChannelId, Slot)] {
        match r.pair.0 {
            NONE => &mut [],
            MANY => &mut self.lists[r.pair.1 as usize],
            _ => std::slice::from_mut(&mut r.pair),
        }
    }

    pub fn push(&mut self, r: &mut SubRef, e: (ChannelId, Slot)) {
        debug_assert!(e.0 < CHANNEL_ID_END, "a channel id collides with a marker");
        match r.pair.0 {
            NONE => r.pair = e,
            MANY => {
                // Subscriptions change rarely: an exact-size list, rebuilt.
                let list = &mut self.lists[r.pair.1 as usize];
                let mut v = std::mem::take(list).into_vec();
                v.push(e);
                *list = v.into_boxed_slice();
            }
            _ => {
                let list: Box<[_]> = Box::new([r.pair, e]);
                let at = match self.free.pop() {
                    Some(i) => {
                        self.lists[i as usize] = list;
                        i
                    }
                    None => {
                        self.lists.push(list);
                        (self.lists.len() - 1) as u32
                    }
                };
                r.pair = (MANY, at);
            }
        }
    }

    /// Remove the `i`th subscription (the last takes its place).
    pub fn swap_remove(&mut self, r: &mut SubRef, i: usize) -> (ChannelId, Slot) {
        match r.pair.0 {
            NONE => panic!("no subscription {i}"),
            MANY => {
                let at = r.pair.1;
                let list = &mut self.lists[at as usize];
                let mut v = std::mem::take(list).into_vec();
                let e = v.swap_remove(i);
                if v.len() == 1 {
                    // Back to one: into the record again.
                    r.pair = v[0];
                    self.free.push(at);
                } else {
                    *list = v.into_boxed_slice();
                }
                e
            }
            _ => {
                assert_eq!(i, 0, "one subscription");
                std::mem::replace(&mut r.pair, (NONE, 0))
            }
        }
    }

    /// Every subscription, leaving none.
    pub fn take(&mut self, r: &mut SubRef) -> Vec<(ChannelId, Slot)> {
        match std::mem::replace(&mut r.pair, (NONE, 0)) {
            (NONE, _) => Vec::new(),
            (MANY, at) => {
                self.free.push(at);
                std::mem::take(&mut self.lists[at as usize]).into_vec()
            }
            one => vec![one],
        }
    }

    /// Connections holding a list here.
    pub fn len(&self) -> usize {
        self.lists.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subscription_is_in_the_record_and_more_go_to_the_shard() {
        assert_eq!(std::mem::size_of::<SubRef>(), 8);
        let mut more = MoreSubs::default();
        let mut r = SubRef::default();
        assert!(more.get(&r).is_empty());
        more.push(&mut r, (4, 9));
        assert!(more.is_empty(), "no list for one");
        more.get_mut(&mut r)[0].1 = 10;
        assert_eq!(more.get(&r), &[(4, 10)]);
        more.push(&mut r, (5, 1));
        more.push(&mut r, (6, 2));
        assert_eq!(more.get(&r), &[(4, 10), (5, 1), (6, 2)]);
        assert_eq!(more.len(), 1);
        assert_eq!(more.swap_remove(&mut r, 0), (4, 10));
        assert_eq!(more.get(&r), &[(6, 2), (5, 1)]);
        assert_eq!(more.swap_remove(&mut r, 1), (5, 1));
        assert_eq!(more.get(&r), &[(6, 2)]);
        assert!(more.is_empty(), "back in the record at one");
        // A second connection reuses the freed list slot.
        let mut r2 = SubRef::default();
        more.push(&mut r2, (1, 1));
        more.push(&mut r2, (2, 2));
        assert_eq!(more.lists.len(), 1);
        more.push(&mut r, (7, 3));
        assert_eq!(more.take(&mut r), vec![(6, 2), (7, 3)]);
        assert_eq!(more.take(&mut r2), vec![(1, 1), (2, 2)]);
        assert!(more.get(&r).is_empty() && more.is_empty());
        more.push(&mut r, (8, 4));
        assert_eq!(more.swap_remove(&mut r, 0), (8, 4));
        assert!(more.get(&r).is_empty());
    }
}
