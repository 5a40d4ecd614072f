//! The epoll driver's receive buffers: one mapping, reads packed one after
//! another into the current buffer.
//!
//! A read used to take a whole buffer until the shard released it, so a burst
//! of reads in one poll lent many buffers at once and wrote the first page of
//! each: a heartbeat round, where every connection of a shard answers its ping
//! within the same few milliseconds, or a ramp's handshakes, touched up to
//! 1,024 buffers a shard (4 MiB of pages, 300 B a connection at 15,000 on 2
//! shards) for a few bytes each. Here, as with io_uring's incremental buffers,
//! a read lands right after the previous one in the current buffer while at
//! least `MIN_ROOM` is left there, so 7,500 pongs of 6 bytes take 45 KB. A
//! buffer is free again once every read in it is released (the current one
//! starts over from its beginning then); a new current buffer is the free one
//! with the lowest id, so a quiet shard keeps to the first few. Once none past
//! `WARM` has been used for `QUIET_TRIMS` trims (about a second apart), their
//! pages go back to the kernel with `MADV_DONTNEED`. A shard that is busy
//! every second keeps them.

use std::io;

use crate::driver::mapping::{Mapping, QUIET_TRIMS};

/// Buffers whose pages are never given back: what a quiet shard reads into.
const WARM: u16 = 2;
#[cfg(test)]
const PAGE_BYTES: usize = 4096;

pub(crate) struct RecvPool {
    map: Mapping,
    buf_bytes: usize,
    /// Least room a read is offered: below it the next read takes a new buffer.
    min_room: usize,
    count: u16,
    /// Bit `i` set: buffer `i` is free (neither current nor holding a read).
    free: Vec<u64>,
    /// Reads lent out of each buffer and not yet released.
    refs: Vec<u32>,
    /// The buffer reads go into, and where the next one starts.
    cur: Option<(u16, usize)>,
    /// One past the highest id used since the pages were last given back.
    high: u16,
    /// A buffer at or past `WARM` was used since the last trim.
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
            // A quarter of a buffer: big messages still come in reads of 4 KiB
            // or more (16 KiB buffers), small ones share pages.
            min_room: (buf_bytes / 4).max(1),
            count,
            free,
            refs: vec![0; usize::from(count)],
            cur: None,
            high: 0,
            tail_used: false,
            quiet: 0,
        })
    }

    /// Where the next read goes: a buffer, an offset in it, and its room
    /// (at least `min_room`, at most a whole buffer). `None`: every buffer
    /// holds reads not yet released.
    pub(crate) fn room(&mut self) -> Option<(u16, usize, usize)> {
        if let Some((id, off)) = self.cur {
            if self.buf_bytes - off >= self.min_room {
                return Some((id, off, self.buf_bytes - off));
            }
            // Full enough: it is freed once its reads are released.
            self.cur = None;
            if self.refs[usize::from(id)] == 0 {
                self.set_free(id);
            }
        }
        let id = self.take_lowest()?;
        self.cur = Some((id, 0));
        self.high = self.high.max(id + 1);
        if id >= WARM {
            self.tail_used = true;
        }
        Some((id, 0, self.buf_bytes))
    }

    /// A read of `len` bytes (> 0) landed where [`room`](Self::room) said.
    pub(crate) fn filled(&mut self, id: u16, len: usize) {
        if let Some((cur, off)) = self.cur.as_mut() {
            if *cur == id {
                *off += len;
            }
        }
        self.refs[usize::from(id)] += 1;
    }

    fn take_lowest(&mut self) -> Option<u16> {
        let (w, word) = self.free.iter_mut().enumerate().find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros() as usize;
        *word &= !(1u64 << bit);
        Some((w * 64 + bit) as u16)
    }

    fn set_free(&mut self, id: u16) {
        let (w, bit) = (usize::from(id) / 64, usize::from(id) % 64);
        self.free[w] |= 1u64 << bit;
    }

    fn is_free(&self, id: u16) -> bool {
        let (w, bit) = (usize::from(id) / 64, usize::from(id) % 64);
        self.free[w] & (1u64 << bit) != 0
    }

    /// Release one read of buffer `id`; false (and nothing changes) if the
    /// buffer holds no read.
    pub(crate) fn release(&mut self, id: u16) -> bool {
        let Some(refs) = self.refs.get_mut(usize::from(id)) else {
            return false;
        };
        if *refs == 0 {
            return false;
        }
        *refs -= 1;
        if *refs == 0 {
            // Nothing in it is lent: free, and if it was the current buffer the
            // next read takes the lowest free one (this one again, from its
            // beginning, unless a lower one is free: after a burst, reads come
            // back down to the first buffers).
            if self.cur.is_some_and(|(cur, _)| cur == id) {
                self.cur = None;
            }
            self.set_free(id);
        }
        true
    }

    /// `len` bytes of buffer `id` from `offset` (inside one buffer).
    pub(crate) fn slice_mut(&mut self, id: u16, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            id < self.count && offset + len <= self.buf_bytes,
            "buffer {id} offset {offset} len {len}"
        );
        let start = usize::from(id) * self.buf_bytes + offset;
        // SAFETY: `start + len` lies inside the mapping (checked above), which
        // lives as long as `self`; the `&mut self` borrow makes the slice the only
        // reference into the pool while it is alive.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.add(start), len) }
    }

    fn used_past_warm(&self) -> bool {
        (WARM..self.high).any(|id| !self.is_free(id))
    }

    /// About once a second: give back the pages of the buffers past `WARM`
    /// after `QUIET_TRIMS` trims in which none of them was used. Returns the
    /// bytes given back.
    pub(crate) fn trim(&mut self) -> usize {
        // A current buffer no read landed in (the recv found nothing) holds nothing.
        if let Some((id, _)) = self.cur {
            if self.refs[usize::from(id)] == 0 {
                self.cur = None;
                self.set_free(id);
            }
        }
        if std::mem::take(&mut self.tail_used) {
            self.quiet = 0;
            return 0;
        }
        if self.high <= WARM || self.used_past_warm() {
            return 0;
        }
        self.quiet += 1;
        if self.quiet < QUIET_TRIMS {
            return 0;
        }
        self.quiet = 0;
        let start = usize::from(WARM) * self.buf_bytes;
        let end = usize::from(self.high) * self.buf_bytes;
        self.high = WARM;
        // SAFETY: the range lies inside the mapping (`high <= count`), and every
        // buffer in it is free (checked above), so no slice refers to it.
        unsafe { self.map.discard(start, end) }
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

    /// Read `data` the way the driver does: ask for room, write, report it.
    fn read(p: &mut RecvPool, data: &[u8]) -> (u16, usize) {
        let (id, off, room) = p.room().expect("room");
        let n = data.len().min(room);
        p.slice_mut(id, off, n).copy_from_slice(&data[..n]);
        p.filled(id, n);
        (id, off)
    }

    #[test]
    fn small_reads_share_a_buffer_and_it_starts_over_once_released() {
        let mut p = RecvPool::new(16, 4096).unwrap();
        let reads: Vec<(u16, usize)> = (0..100).map(|_| read(&mut p, b"pong!!")).collect();
        assert!(
            reads.iter().all(|&(id, _)| id == 0),
            "100 pongs in one buffer"
        );
        let offsets: Vec<usize> = reads.iter().map(|&(_, o)| o).collect();
        assert_eq!(offsets, (0..100).map(|i| i * 6).collect::<Vec<_>>());
        for (i, &(id, off)) in reads.iter().enumerate() {
            assert_eq!(p.slice_mut(id, off, 6), b"pong!!", "read {i} intact");
        }
        for &(id, _) in &reads {
            assert!(p.release(id));
        }
        assert!(!p.release(0), "a release with no read left is refused");
        assert_eq!(read(&mut p, b"x"), (0, 0), "starts over at the beginning");
    }

    #[test]
    fn a_full_buffer_is_left_and_freed_once_its_reads_are_released() {
        let mut p = RecvPool::new(4, 4096).unwrap();
        let big = [7u8; 4096];
        let a = read(&mut p, &big[..3500]);
        // 596 bytes left is under a quarter: the next read takes buffer 1.
        let b = read(&mut p, &big);
        assert_eq!((a.0, b.0), (0, 1));
        let c = read(&mut p, &big);
        assert_eq!(c.0, 2, "buffer 1 is full: buffer 2");
        assert!(p.release(a.0));
        // Buffer 0 is free again and the lowest: the next new buffer.
        let d = read(&mut p, &big);
        assert_eq!(d.0, 0);
        let e = read(&mut p, &big);
        assert_eq!(e.0, 3);
        assert_eq!(p.room(), None, "every buffer holds an unreleased read");
        for id in [b.0, c.0, d.0, e.0] {
            assert!(p.release(id));
        }
        assert!(p.room().is_some());
    }

    #[test]
    fn a_burst_gives_its_pages_back_once_quiet_and_not_before() {
        let mut p = RecvPool::new(256, 16 * 1024).unwrap();
        // A burst of big reads held at once: 200 buffers written in full.
        let burst: Vec<(u16, usize)> = (0..200).map(|_| read(&mut p, &[1u8; 16 * 1024])).collect();
        for &(id, _) in &burst {
            assert!(p.release(id));
        }
        assert!(p.resident_pages() >= 200 * 4);
        // Quiet: reads keep to buffer 0, and after QUIET_TRIMS trims the
        // burst's pages go back.
        let mut given = 0;
        for _ in 0..QUIET_TRIMS + 1 {
            let (id, _) = read(&mut p, b"pong!!");
            assert!(id < WARM, "{id}");
            assert!(p.release(id));
            given += p.trim();
        }
        assert_eq!(given, (200 - usize::from(WARM)) * 16 * 1024);
        assert!(
            p.resident_pages() <= usize::from(WARM) * 4,
            "{}",
            p.resident_pages()
        );
        // A given-back buffer reads as zeros and can be used again.
        let again: Vec<(u16, usize)> = (0..20).map(|_| read(&mut p, &[2u8; 16 * 1024])).collect();
        assert!(again.iter().any(|&(id, _)| id >= WARM));
        for (id, _) in again {
            assert!(p.release(id));
        }
    }

    #[test]
    fn a_busy_pool_keeps_its_pages() {
        let mut p = RecvPool::new(64, 4096).unwrap();
        for _ in 0..3 * QUIET_TRIMS {
            // Every second a burst past WARM: nothing is given back.
            let ids: Vec<(u16, usize)> = (0..20).map(|_| read(&mut p, &[1u8; 4096])).collect();
            for (id, _) in ids {
                assert!(p.release(id));
            }
            assert_eq!(p.trim(), 0);
        }
        // A buffer past WARM still holding a read blocks the give-back too.
        let held: Vec<(u16, usize)> = (0..10).map(|_| read(&mut p, &[1u8; 4096])).collect();
        for _ in 0..2 * QUIET_TRIMS {
            assert_eq!(p.trim(), 0);
        }
        for (id, _) in held {
            assert!(p.release(id));
        }
    }
}
