//! Small containers that cost one pointer (or two) while empty, because most
//! connections are idle most of the time.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::registry::{ChannelId, Slot};

/// A connection's outbound queue: no allocation until something is queued, and
/// the allocation is given back once idle (see [`OutQueue::release_if_empty`]).
#[derive(Debug, Default)]
// The box is the point: an empty queue is one null pointer instead of a
// 32-byte `VecDeque` header in every connection.
#[allow(clippy::box_collection)]
pub struct OutQueue(Option<Box<VecDeque<Bytes>>>);

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    fn q(&mut self) -> &mut VecDeque<Bytes> {
        self.0.get_or_insert_with(Default::default)
    }

    pub fn push_back(&mut self, b: Bytes) {
        self.q().push_back(b);
    }

    pub fn insert(&mut self, at: usize, b: Bytes) {
        self.q().insert(at, b);
    }

    pub fn pop_front(&mut self) -> Option<Bytes> {
        self.0.as_mut()?.pop_front()
    }

    pub fn pop_back(&mut self) -> Option<Bytes> {
        self.0.as_mut()?.pop_back()
    }

    pub fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.0.as_mut()?.front_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter().flat_map(|q| q.iter())
    }

    pub fn get(&self, i: usize) -> Option<&Bytes> {
        self.0.as_ref()?.get(i)
    }

    /// Free the queue's memory when nothing is queued (idle connections).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// Free it only if a burst left it large; keeps the common small case allocation-free.
    pub fn trim_after_burst(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|q| q.is_empty() && q.capacity() > 32)
        {
            self.0 = None;
        }
    }
}

/// A connection's subscriptions: (channel, slot in that channel's list).
///
/// Most connections subscribe to one channel, so that one is kept inline (no
/// allocation); none is an empty boxed slice (no allocation either), and two
/// or more a boxed slice of exact size (subscriptions change rarely). 16 bytes.
#[derive(Debug)]
pub enum SubList {
    One((ChannelId, Slot)),
    Many(Box<[(ChannelId, Slot)]>),
}

impl Default for SubList {
    fn default() -> SubList {
        SubList::Many(Box::default())
    }
}

impl SubList {
    pub fn push(&mut self, e: (ChannelId, Slot)) {
        *self = match std::mem::take(self) {
            SubList::Many(b) if b.is_empty() => SubList::One(e),
            SubList::One(x) => SubList::Many(Box::new([x, e])),
            SubList::Many(b) => {
                let mut v = b.into_vec();
                v.push(e);
                SubList::Many(v.into_boxed_slice())
            }
        };
    }

    pub fn swap_remove(&mut self, i: usize) -> (ChannelId, Slot) {
        let mut v = std::mem::take(self).take_vec();
        let e = v.swap_remove(i);
        *self = match v.len() {
            1 => SubList::One(v[0]),
            _ => SubList::Many(v.into_boxed_slice()),
        };
        e
    }

    pub fn take(&mut self) -> Vec<(ChannelId, Slot)> {
        std::mem::take(self).take_vec()
    }

    fn take_vec(self) -> Vec<(ChannelId, Slot)> {
        match self {
            SubList::One(x) => vec![x],
            SubList::Many(b) => b.into_vec(),
        }
    }

    /// Whether the list lives on the heap (two subscriptions or more).
    pub fn is_heap(&self) -> bool {
        matches!(self, SubList::Many(b) if !b.is_empty())
    }
}

impl std::ops::Deref for SubList {
    type Target = [(ChannelId, Slot)];
    fn deref(&self) -> &Self::Target {
        match self {
            SubList::One(x) => std::slice::from_ref(x),
            SubList::Many(b) => b,
        }
    }
}

impl std::ops::DerefMut for SubList {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            SubList::One(x) => std::slice::from_mut(x),
            SubList::Many(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_queue_holds_no_allocation() {
        let mut q = OutQueue::default();
        assert!(q.is_empty());
        q.push_back(Bytes::from_static(b"a"));
        q.insert(0, Bytes::from_static(b"b"));
        assert_eq!(
            q.iter().map(|b| &b[..]).collect::<Vec<_>>(),
            vec![&b"b"[..], b"a"]
        );
        q.release_if_empty();
        assert_eq!(q.len(), 2, "not released while holding data");
        q.pop_front();
        q.pop_back();
        q.release_if_empty();
        assert!(q.0.is_none());
    }

    #[test]
    fn sub_list_push_and_swap_remove() {
        let mut s = SubList::default();
        s.push((1, 0));
        s.push((2, 5));
        s.push((3, 7));
        assert_eq!(s.swap_remove(0), (1, 0));
        assert_eq!(&*s, &[(3, 7), (2, 5)]);
        s.iter_mut().for_each(|e| e.1 += 1);
        assert_eq!(s.take(), vec![(3, 8), (2, 6)]);
        assert!(s.is_empty());
    }

    #[test]
    fn one_subscription_is_inline() {
        assert_eq!(std::mem::size_of::<SubList>(), 16);
        let mut s = SubList::default();
        assert!(s.is_empty() && !s.is_heap());
        s.push((4, 9));
        assert!(matches!(s, SubList::One((4, 9))), "no allocation for one");
        s[0].1 = 10;
        assert_eq!(&*s, &[(4, 10)]);
        s.push((5, 1));
        assert!(s.is_heap());
        assert_eq!(s.swap_remove(0), (4, 10));
        assert!(matches!(s, SubList::One((5, 1))), "back inline at one");
        assert_eq!(s.swap_remove(0), (5, 1));
        assert!(s.is_empty() && !s.is_heap());
        s.push((6, 2));
        assert_eq!(s.take(), vec![(6, 2)]);
        assert!(s.is_empty());
    }
}
