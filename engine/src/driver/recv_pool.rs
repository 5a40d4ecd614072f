//! The epoll driver's receive buffers: one mapping, lent lowest id first.
//!
//! A read takes a whole buffer until the shard releases it, so a burst of
//! reads in one poll lends many buffers at once and writes the first page of
//! each. A heartbeat round is such a burst: every connection of a shard
//! answers its ping within the same few milliseconds. With one box per buffer
//! handed out from a stack, those pages stayed resident for good and later
//! reads kept cycling through them: 28 B a connection at 15,000 idle
//! connections on 2 shards, after the first heartbeat round.
//!
//! Here a buffer is lent lowest id first, so a quiet shard's reads keep to the
//! first few buffers; once none past `WARM` has been lent for `QUIET_TRIMS`
//! trims (about a second apart), their pages go back to the kernel with
//! `MADV_DONTNEED`. A shard that is busy every second keeps them.

use std::io;

use crate::driver::mapping::Mapping;

/// Buffers whose pages are never given back: what a quiet shard reads into.
const WARM: u16 = 8;
/// Trims in a row without a buffer past `WARM` lent before those pages go.
const QUIET_TRIMS: u8 = 5;
const PAGE_BYTES: usize = 4096;

pub(crate) struct RecvPool {
    map: Mapping,
    buf_bytes: usize,
    count: u16,
    /// Bit `i` set: buffer `i` is free (not lent to the shard).
    free: Vec<u64>,
    /// One past the highest id lent since the pages were last given back.
    high: u16,
    /// A buffer at or past `WARM` was lent since the last trim.
    tail_used: bool,
    quiet: u8,
}

impl RecvPool {
    pub(crate) fn new(count: u16, buf_bytes: u32) -> io::Result<RecvPool> {
        let buf_bytes = buf_bytes.max(1) as usize;
        let map = Mapping::new(usize::from(count).max(1) * buf_bytes)?;
        let words = usize::from(count).div_ceil(64);
        let mut free = vec![u64::MAX; words];
        let tail = usize::from(count) % 64;
        if tail != 0 {
            free[words - 1] = (1u64 << tail) - 1;
        }
        Ok(RecvPool {
            map,
            buf_bytes,
            count,
            free,
            high: 0,
            tail_used: false,
            quiet: 0,
        })
    }

    pub(crate) fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    /// Lend the free buffer with the lowest id; `None` when all are lent.
    pub(crate) fn take(&mut self) -> Option<u16> {
        let (w, word) = self.free.iter_mut().enumerate().find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros() as usize;
        *word &= !(1u64 << bit);
        let id = (w * 64 + bit) as u16;
        self.high = self.high.max(id + 1);
        if id >= WARM {
            self.tail_used = true;
        }
        Some(id)
    }

    /// Take back a lent buffer; false (and nothing changes) if it was not lent.
    pub(crate) fn give_back(&mut self, id: u16) -> bool {
        if id >= self.count {
            return false;
        }
        let (w, bit) = (usize::from(id) / 64, usize::from(id) % 64);
        if self.free[w] & (1u64 << bit) != 0 {
            return false;
        }
        self.free[w] |= 1u64 << bit;
        true
    }

    /// The first `len` bytes of buffer `id` (at most a whole buffer).
    pub(crate) fn slice_mut(&mut self, id: u16, len: usize) -> &mut [u8] {
        assert!(
            id < self.count && len <= self.buf_bytes,
            "buffer {id} len {len}"
        );
        let start = usize::from(id) * self.buf_bytes;
        // SAFETY: `start + len` lies inside the mapping (checked above), which
        // lives as long as `self`; the `&mut self` borrow makes the slice the only
        // reference into the pool while it is alive.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.add(start), len) }
    }

    fn lent_past_warm(&self) -> bool {
        (WARM..self.high).any(|id| {
            let (w, bit) = (usize::from(id) / 64, usize::from(id) % 64);
            self.free[w] & (1u64 << bit) == 0
        })
    }

    /// About once a second: give back the pages of the buffers past `WARM`
    /// after `QUIET_TRIMS` trims in which none of them was lent. Returns the
    /// bytes given back.
    pub(crate) fn trim(&mut self) -> usize {
        if std::mem::take(&mut self.tail_used) {
            self.quiet = 0;
            return 0;
        }
        if self.high <= WARM || self.lent_past_warm() {
            return 0;
        }
        self.quiet += 1;
        if self.quiet < QUIET_TRIMS {
            return 0;
        }
        self.quiet = 0;
        // Whole pages only: a buffer size that is not a multiple of the page
        // leaves the page shared with buffer WARM - 1 resident.
        let start = (usize::from(WARM) * self.buf_bytes).next_multiple_of(PAGE_BYTES);
        let end = usize::from(self.high) * self.buf_bytes / PAGE_BYTES * PAGE_BYTES;
        self.high = WARM;
        if end <= start {
            return 0;
        }
        // SAFETY: the range lies inside the mapping, and no buffer in it is lent
        // (checked above), so no slice refers to it; MADV_DONTNEED on a private
        // anonymous mapping only makes those pages read as zeros next time.
        let r = unsafe {
            libc::madvise(
                self.map.ptr.add(start).cast(),
                end - start,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            end - start
        } else {
            0
        }
    }

    /// Pages of the pool resident now (for tests).
    #[cfg(test)]
    fn resident_pages(&self) -> usize {
        let len = self.map.len;
        let mut vec = vec![0u8; len.div_ceil(PAGE_BYTES)];
        // SAFETY: the whole mapping is queried; `vec` has one byte per page.
        let r = unsafe { libc::mincore(self.map.ptr.cast(), len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_lowest_first_and_refuses_a_double_release() {
        let mut p = RecvPool::new(100, 4096).unwrap();
        let ids: Vec<u16> = (0..100).map(|_| p.take().unwrap()).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert_eq!(p.take(), None, "all 100 lent");
        assert!(p.give_back(70));
        assert!(p.give_back(3));
        assert!(!p.give_back(3), "a double release is refused");
        assert!(!p.give_back(100), "no such buffer");
        assert_eq!(p.take(), Some(3), "the lowest free id comes first");
        assert_eq!(p.take(), Some(70));
    }

    #[test]
    fn a_burst_gives_its_pages_back_once_quiet_and_not_before() {
        let mut p = RecvPool::new(256, 16 * 1024).unwrap();
        // A burst: 200 buffers lent at once, the first page of each written.
        let burst: Vec<u16> = (0..200).map(|_| p.take().unwrap()).collect();
        for &id in &burst {
            p.slice_mut(id, 6).copy_from_slice(b"pong!!");
        }
        for &id in &burst {
            assert!(p.give_back(id));
        }
        assert!(p.resident_pages() >= 200);
        // Quiet: reads keep to the first buffers, and after QUIET_TRIMS
        // trims the burst's pages go back.
        let mut given = 0;
        for _ in 0..QUIET_TRIMS + 1 {
            let id = p.take().unwrap();
            assert_eq!(id, 0);
            p.slice_mut(id, 6).copy_from_slice(b"pong!!");
            assert!(p.give_back(id));
            given += p.trim();
        }
        assert_eq!(given, (200 - usize::from(WARM)) * 16 * 1024);
        assert!(
            p.resident_pages() <= usize::from(WARM),
            "{}",
            p.resident_pages()
        );
        // A given-back buffer reads as zeros and can be lent and written again.
        let again: Vec<u16> = (0..20).map(|_| p.take().unwrap()).collect();
        assert_eq!(p.slice_mut(19, 6), &[0u8; 6]);
        p.slice_mut(19, 6).copy_from_slice(b"pong!!");
        for id in again {
            assert!(p.give_back(id));
        }
    }

    #[test]
    fn a_busy_pool_keeps_its_pages() {
        let mut p = RecvPool::new(64, 4096).unwrap();
        for _ in 0..3 * QUIET_TRIMS {
            // Every second a burst past WARM: nothing is given back.
            let ids: Vec<u16> = (0..20).map(|_| p.take().unwrap()).collect();
            for &id in &ids {
                p.slice_mut(id, 1)[0] = 1;
                p.give_back(id);
            }
            assert_eq!(p.trim(), 0);
        }
        // A buffer past WARM still lent at trim time blocks the give-back too.
        let held: Vec<u16> = (0..10).map(|_| p.take().unwrap()).collect();
        for _ in 0..2 * QUIET_TRIMS {
            assert_eq!(p.trim(), 0);
        }
        for id in held {
            p.give_back(id);
        }
    }
}
