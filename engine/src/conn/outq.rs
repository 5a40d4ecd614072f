//! Small containers that cost one pointer (or two) while empty, because most
//! connections are idle most of the time.

use std::collections::VecDeque;

use bytes::Bytes;

/// A connection's outbound queue: no allocation until something is queued, and
/// the allocation is given back once idle (see [`OutQueue::release_if_empty`]).
/// It counts its own bytes, and the frames at its front that nothing may be
/// queued ahead of, so an idle connection's record holds neither.
#[derive(Debug, Default)]
pub struct OutQueue(Option<Box<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames`, always equal to their sum.
    bytes: u32,
    /// Entries at the front that nothing may be queued ahead of: those in the
    /// write in flight, a partly written frame, and control frames already
    /// placed ahead of data (so control frames keep their order).
    pinned: u8,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.frames.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.frames.len())
    }

    /// Bytes queued.
    pub fn bytes(&self) -> u32 {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    pub fn pinned(&self) -> u8 {
        self.0.as_ref().map_or(0, |q| q.pinned)
    }

    pub fn set_pinned(&mut self, n: u8) {
        match self.0.as_mut() {
            Some(q) => q.pinned = n,
            None => debug_assert_eq!(n, 0, "frames pinned in an empty queue"),
        }
    }

    fn q(&mut self) -> &mut Queue {
        // Room for one frame at first: most queues hold a one-off write (a
        // ping, a reply) and go once it drains; a vector's default first
        // growth is four frames (128 bytes), three of them never used.
        self.0.get_or_insert_with(|| {
            Box::new(Queue {
                frames: VecDeque::with_capacity(1),
                ..Queue::default()
            })
        })
    }

    pub fn push_back(&mut self, b: Bytes) {
        let q = self.q();
        q.bytes += b.len() as u32;
        q.frames.push_back(b);
        self.check();
    }

    pub fn insert(&mut self, at: usize, b: Bytes) {
        let q = self.q();
        q.bytes += b.len() as u32;
        q.frames.insert(at, b);
        self.check();
    }

    pub fn pop_front(&mut self) -> Option<Bytes> {
        let q = self.0.as_mut()?;
        let b = q.frames.pop_front()?;
        q.bytes -= b.len() as u32;
        self.check();
        Some(b)
    }

    pub fn pop_back(&mut self) -> Option<Bytes> {
        let q = self.0.as_mut()?;
        let b = q.frames.pop_back()?;
        q.bytes -= b.len() as u32;
        self.check();
        Some(b)
    }

    /// The front frame's first `n` bytes were written (fewer than its length).
    pub fn advance_front(&mut self, n: usize) {
        if let Some(q) = self.0.as_mut() {
            if let Some(front) = q.frames.front_mut() {
                debug_assert!(n < front.len());
                bytes::Buf::advance(front, n);
                q.bytes -= n as u32;
            }
        }
        self.check();
    }

    pub fn front_len(&self) -> Option<usize> {
        self.0.as_ref()?.frames.front().map(|b| b.len())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter().flat_map(|q| q.frames.iter())
    }

    pub fn get(&self, i: usize) -> Option<&Bytes> {
        self.0.as_ref()?.frames.get(i)
    }

    /// The invariant the byte count rests on (and the shard's queued-bytes
    /// gauge with it): it equals the sum of the frames. Debug builds check it
    /// after every change; the sum walks the queue, which release builds skip.
    fn check(&self) {
        debug_assert_eq!(
            self.iter().map(|b| b.len()).sum::<usize>(),
            self.bytes() as usize,
            "queued bytes drifted from the queue"
        );
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
            .is_some_and(|q| q.frames.is_empty() && q.frames.capacity() > 32)
        {
            self.0 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_off_write_allocates_room_for_one_frame() {
        let mut q = OutQueue::default();
        q.push_back(Bytes::from_static(&[0x89, 0x00]));
        assert_eq!(q.0.as_ref().unwrap().frames.capacity(), 1);
        for i in 0..5u8 {
            q.push_back(Bytes::copy_from_slice(&[i]));
        }
        assert_eq!(q.len(), 6);
        assert_eq!(q.bytes(), 7);
        assert_eq!(&q.pop_front().unwrap()[..], &[0x89, 0x00]);
        for i in 0..5u8 {
            assert_eq!(&q.pop_front().unwrap()[..], &[i]);
        }
    }

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
    fn byte_count_follows_every_change() {
        let mut q = OutQueue::default();
        q.push_back(Bytes::from_static(b"abcd"));
        q.insert(0, Bytes::from_static(b"pp"));
        q.push_back(Bytes::from_static(b"xyz"));
        assert_eq!(q.bytes(), 9);
        q.pop_front();
        assert_eq!(q.bytes(), 7);
        q.advance_front(3);
        assert_eq!(q.bytes(), 4);
        assert_eq!(q.front_len(), Some(1));
        q.pop_back();
        assert_eq!(q.bytes(), 1);
        q.pop_front();
        assert_eq!((q.bytes(), q.len()), (0, 0));
    }
}
