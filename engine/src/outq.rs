//! Small containers that cost one pointer (or two) while empty, because most
//! connections are idle most of the time.

use std::collections::VecDeque;

use bytes::Bytes;

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
}
