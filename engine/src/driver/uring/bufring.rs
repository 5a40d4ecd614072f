//! The provided-buffer ring shared by every multishot recv of one ring.
//!
//! Two anonymous mappings: the ring of `io_uring_buf` descriptors the kernel
//! consumes from (page-aligned, as `IORING_REGISTER_PBUF_RING` requires) and one
//! contiguous block holding the buffers themselves.
//!
//! Where the kernel allows it (6.12 and later), the ring is registered for
//! incremental consumption (`IOU_PBUF_RING_INC`): a read takes only the bytes
//! it needs from the buffer at the ring's head, so the next read, from any
//! connection, lands right after it in the same buffer (a completion carrying
//! `IORING_CQE_F_BUF_MORE` says the kernel goes on using that buffer). A pong,
//! a subscribe or a handshake then costs its own few hundred bytes, not a whole
//! buffer: a heartbeat round's 7,500 pongs fit in 4 buffers instead of taking
//! 7,500, and the pool that is ever written stays a few pages. Without it, each
//! read takes a whole buffer, as before.
//!
//! A buffer is in the ring (the kernel may write into it: `kernel` bit set),
//! and/or lent to the shard in one or more slices (`refs`, one per `Recv`
//! completion not yet released); it goes back into the ring once the kernel is
//! done with it and every slice is released. So `recv_buf` never hands out bytes
//! the kernel could be writing, and a double `release` cannot put one buffer
//! into the ring twice.

use std::io;
use std::ptr;

use crate::driver::mapping::{Mapping, QUIET_TRIMS};
use std::sync::atomic::{AtomicU16, Ordering};

/// One descriptor, laid out as the kernel's `struct io_uring_buf` (uapi, 16 bytes).
/// The ring's tail lives in the `resv` field of entry 0 (the uapi union
/// `io_uring_buf_ring`), which is why entries are written field by field below and
/// never as whole structs.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<BufEntry>() == 16);

/// Byte offset of the tail inside the ring mapping (`resv` of entry 0).
const TAIL_OFFSET: usize = 14;

/// Buffers put in the ring at start; more are added, doubling, when a recv
/// finds the ring empty (see `BufRing::grow`), and taken out again once the
/// burst is over (see `BufRing::trim`). Each read takes a whole buffer...
const INITIAL_ACTIVE: u16 = 64;
/// ... unless buffers are consumed incrementally: then a buffer holds many reads.
const INITIAL_ACTIVE_INC: u16 = 4;

/// `IOU_PBUF_RING_INC` (uapi io_uring.h, kernel 6.12): incremental consumption.
const IOU_PBUF_RING_INC: u16 = 2;

/// The kernel caps a provided-buffer ring at 2^15 entries.
pub(super) const BUF_RING_MAX: u16 = 1 << 15;

pub(super) struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    buf_bytes: u32,
    count: u16,
    /// Buffers ever put in the ring (bids `0..active`); the rest were never
    /// touched. The kernel takes buffers in ring order and released ones go
    /// back at the tail, so every buffer in the ring gets written in turn:
    /// putting all `count` in at start would make the whole pool resident
    /// after `count` reads, whatever the load. Growing on demand keeps the
    /// resident part at what the shard's reads actually need at once.
    active: u16,
    mask: u16,
    /// Our copy of the tail we last published (free-running, wraps at 2^16).
    tail: u16,
    /// Reads take only what they need from a buffer (`IOU_PBUF_RING_INC`).
    inc: bool,
    /// Bit `bid` set: the buffer is in the ring; the kernel may write into it.
    kernel: Vec<u64>,
    in_ring: u32,
    /// Slices of each buffer lent to the shard (at most one without `inc`).
    refs: Vec<u16>,
    lent_count: u32,
    /// Bytes of each buffer the kernel has filled so far (with `inc`): where
    /// the next read into it starts.
    filled: Vec<u32>,
    /// Shrinking back to this many active buffers: the ones above it that come
    /// back from the shard are parked (in neither the ring nor the shard) until
    /// all are, then their pages are given back and `active` drops.
    shrink_to: Option<u16>,
    parked: Vec<u16>,
    /// A grow happened since the last trim; trims in a row without one.
    grew: bool,
    quiet_trims: u8,
}

impl BufRing {
    /// Map `count` buffers of `buf_bytes`; none is in the ring until
    /// [`BufRing::register`] (or `start`) puts the first ones in.
    pub(super) fn new(count: u16, buf_bytes: u32) -> io::Result<BufRing> {
        if count == 0 || !count.is_power_of_two() || count > BUF_RING_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("recv_bufs must be a power of two in 1..=32768, got {count}"),
            ));
        }
        if buf_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "recv_buf_bytes must be > 0",
            ));
        }
        let ring = Mapping::new(usize::from(count) * std::mem::size_of::<BufEntry>())?;
        let bufs_len = usize::from(count)
            .checked_mul(buf_bytes as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "recv buffers overflow"))?;
        let bufs = Mapping::new(bufs_len)?;
        let br = BufRing {
            ring,
            bufs,
            buf_bytes,
            count,
            active: 0,
            mask: count - 1,
            tail: 0,
            inc: false,
            kernel: vec![0; usize::from(count).div_ceil(64)],
            in_ring: 0,
            refs: vec![0; usize::from(count)],
            lent_count: 0,
            filled: vec![0; usize::from(count)],
            shrink_to: None,
            parked: Vec::new(),
            grew: false,
            quiet_trims: 0,
        };
        Ok(br)
    }

    /// Choose the mode and put the first buffers in the ring.
    pub(super) fn start(&mut self, inc: bool) {
        self.inc = inc;
        self.grow_to(self.count.min(self.warm()));
    }

    /// Buffers kept in the ring when reads are quiet.
    fn warm(&self) -> u16 {
        if self.inc {
            INITIAL_ACTIVE_INC
        } else {
            INITIAL_ACTIVE
        }
    }

    /// Whether reads take only what they need from a buffer.
    pub(super) fn incremental(&self) -> bool {
        self.inc
    }

    /// A recv found the ring empty (ENOBUFS): put up to as many untouched
    /// buffers in again as are active, up to `count`. Returns false when all are in use.
    pub(super) fn grow(&mut self) -> bool {
        self.grew = true;
        if self.shrink_to.take().is_some() && !self.parked.is_empty() {
            // A burst while shrinking: the parked buffers go back in first.
            for bid in std::mem::take(&mut self.parked) {
                self.put_in_ring(bid);
            }
            self.publish_tail();
            return true;
        }
        if self.active == self.count {
            return false;
        }
        self.grow_to(self.active.saturating_mul(2).min(self.count));
        true
    }

    /// About once a second. The kernel takes buffers in ring order, so every
    /// active buffer gets written in turn and stays resident: after a burst
    /// (a heartbeat round's pongs, say) grew the ring to hundreds, an idle
    /// shard would keep hundreds of pages. Once no grow has happened for
    /// `QUIET_TRIMS` trims, the buffers above the initial count are taken out
    /// as they come back (`give_back`), and their pages freed.
    pub(super) fn trim(&mut self) {
        if std::mem::take(&mut self.grew) {
            self.quiet_trims = 0;
            return;
        }
        self.quiet_trims = self.quiet_trims.saturating_add(1);
        let warm = self.count.min(self.warm());
        if self.quiet_trims >= QUIET_TRIMS && self.active > warm && self.shrink_to.is_none() {
            self.shrink_to = Some(warm);
        }
    }

    /// Every buffer above `target` is parked: none is in the ring or lent, so
    /// the kernel holds no reference to them (each came back through a
    /// completion) and their pages can go.
    fn finish_shrink(&mut self, target: u16) {
        let start = usize::from(target) * self.buf_bytes as usize;
        let len = usize::from(self.active - target) * self.buf_bytes as usize;
        // SAFETY: the range lies inside the buffer mapping (`active <= count`).
        // No buffer in it is in the ring or lent to the shard, so neither the
        // kernel nor a slice of ours refers to it.
        unsafe { self.bufs.discard(start, start + len) };
        self.active = target;
        self.parked.clear();
        self.shrink_to = None;
    }

    fn grow_to(&mut self, active: u16) {
        for bid in self.active..active {
            self.put_in_ring(bid);
        }
        self.active = active;
        self.publish_tail();
    }

    fn put_in_ring(&mut self, bid: u16) {
        self.kernel[usize::from(bid / 64)] |= 1 << (bid % 64);
        self.in_ring += 1;
        self.filled[usize::from(bid)] = 0;
        self.write_entry(bid);
    }

    fn in_kernel(&self, bid: u16) -> bool {
        self.kernel[usize::from(bid / 64)] & (1 << (bid % 64)) != 0
    }

    /// Buffers put in the ring so far (the rest of the pool was never touched).
    #[cfg(test)]
    pub(super) fn active(&self) -> u16 {
        self.active
    }

    /// Register the ring with the kernel under `bgid`, for incremental
    /// consumption when `inc` is asked and the kernel has it, and put the
    /// first buffers in.
    pub(super) fn register(
        &mut self,
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
        inc: bool,
    ) -> io::Result<()> {
        let flag = IOU_PBUF_RING_INC;
        // SAFETY: the ring mapping is page-aligned, holds `count` entries and lives as
        // long as `self`; the driver drops the io_uring (unregistering everything)
        // before this BufRing, so the kernel never reads it after it is unmapped.
        let with_inc = inc
            && unsafe {
                submitter.register_buf_ring_with_flags(self.ring.ptr as u64, self.count, bgid, flag)
            }
            .is_ok();
        if !with_inc {
            // SAFETY: as above.
            unsafe {
                submitter.register_buf_ring_with_flags(self.ring.ptr as u64, self.count, bgid, 0)
            }?;
        }
        self.start(with_inc);
        Ok(())
    }

    /// Never unmap the memory: used when the kernel may still write into it.
    pub(super) fn leak(&mut self) {
        self.ring.len = 0;
        self.bufs.len = 0;
    }

    /// Buffers currently in the ring, available to the kernel.
    pub(super) fn available(&self) -> u32 {
        self.in_ring
    }

    /// A completion reported that the kernel put `len` bytes into `bid`, and
    /// whether it goes on using that buffer (`IORING_CQE_F_BUF_MORE`): the
    /// bytes are lent to the shard. Returns where they start in the buffer.
    pub(super) fn take(&mut self, bid: u16, len: u32, more: bool) -> u32 {
        assert!(
            bid < self.active,
            "kernel reported buffer id {bid} beyond the ring"
        );
        debug_assert!(self.in_kernel(bid), "buffer {bid} reported twice");
        let i = usize::from(bid);
        let start = self.filled[i];
        if self.inc && more {
            self.filled[i] += len;
        } else if self.in_kernel(bid) {
            self.kernel[i / 64] &= !(1 << (bid % 64));
            self.in_ring -= 1;
        }
        self.refs[i] += 1;
        self.lent_count += 1;
        start
    }

    /// A slice of `bid` is released. The buffer goes back at the ring's tail
    /// once the kernel is done with it and no slice is lent. Returns false (and
    /// does nothing) when nothing of `bid` is lent: a double release must not
    /// put it in the ring twice.
    pub(super) fn give_back(&mut self, bid: u16) -> bool {
        if !self.is_lent(bid) {
            return false;
        }
        let i = usize::from(bid);
        self.refs[i] -= 1;
        self.lent_count -= 1;
        if self.refs[i] > 0 || self.in_kernel(bid) {
            return true;
        }
        if let Some(target) = self.shrink_to.filter(|&t| bid >= t) {
            self.parked.push(bid);
            if self.parked.len() == usize::from(self.active - target) {
                self.finish_shrink(target);
            }
            return true;
        }
        self.put_in_ring(bid);
        self.publish_tail();
        true
    }

    pub(super) fn is_lent(&self, bid: u16) -> bool {
        bid < self.active && self.refs[usize::from(bid)] > 0
    }

    /// `len` lent bytes of `bid` from `offset` (as `take` returned it).
    pub(super) fn slice_mut(&mut self, bid: u16, offset: u32, len: u32) -> &mut [u8] {
        assert!(
            self.is_lent(bid),
            "recv_buf({bid}) on a buffer not lent to the shard"
        );
        assert!(
            u64::from(offset) + u64::from(len) <= u64::from(self.buf_bytes),
            "recv_buf range {offset}+{len} beyond buffer size"
        );
        let start = usize::from(bid) * self.buf_bytes as usize + offset as usize;
        // SAFETY: `bid < count` and `offset + len <= buf_bytes`, so the range lies
        // inside the buffer mapping. These bytes were reported by a completion and
        // are lent: the kernel writes only past what it has filled (or, without
        // `inc`, not at all until the buffer is back in the ring), and the
        // `&mut self` borrow keeps any other slice from coexisting.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.add(start), len as usize) }
    }

    /// Write the descriptor for `bid` at the slot after our tail and advance our
    /// copy of the tail (not yet visible to the kernel).
    fn write_entry(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        let addr = self.bufs.ptr as u64 + u64::from(bid) * u64::from(self.buf_bytes);
        // SAFETY: `slot < count`, inside the ring mapping. The slot lies past the
        // published tail, so the kernel does not read it until the next
        // `publish_tail`. Fields are written one by one so entry 0's `resv` (the tail
        // the kernel reads concurrently) is never touched here.
        unsafe {
            let e = self.ring.ptr.cast::<BufEntry>().add(slot);
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.buf_bytes);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every entry written so far visible to the kernel.
    fn publish_tail(&self) {
        // SAFETY: the tail is a naturally aligned u16 inside the live ring mapping,
        // shared with the kernel, which only reads it; accessing it atomically is
        // what the uapi expects. Release orders the descriptor writes before it.
        let tail = unsafe { AtomicU16::from_ptr(self.ring.ptr.add(TAIL_OFFSET).cast::<u16>()) };
        tail.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_put_in_the_ring_as_reads_need_it() {
        let mut br = BufRing::new(1024, 4096).unwrap();
        br.start(false);
        assert_eq!((br.active(), br.available()), (64, 64));
        for bid in 0..64 {
            br.take(bid, 100, false);
        }
        assert_eq!(br.available(), 0);
        assert!(br.grow());
        assert_eq!((br.active(), br.available()), (128, 64));
        assert!(br.give_back(3));
        assert_eq!(br.available(), 65);
        while br.grow() {}
        assert_eq!((br.active(), br.available()), (1024, 1024 - 63));
        let mut small = BufRing::new(16, 512).unwrap();
        small.start(false);
        assert_eq!(small.active(), 16);
        assert!(!small.grow());
    }

    /// Take every buffer the ring holds, as the kernel would (in ring order).
    fn drain_ring(br: &mut BufRing, taken: &mut Vec<u16>) {
        let mut head = br.tail.wrapping_sub(br.available() as u16);
        while br.available() > 0 {
            let slot = usize::from(head & br.mask);
            // SAFETY: test only; `slot < count`, inside the ring mapping.
            let bid = unsafe { (*br.ring.ptr.cast::<BufEntry>().add(slot)).bid };
            br.take(bid, 100, false);
            taken.push(bid);
            head = head.wrapping_add(1);
        }
    }

    #[test]
    fn after_a_burst_the_ring_shrinks_back_and_a_new_burst_regrows_it() {
        let mut br = BufRing::new(1024, 4096).unwrap();
        br.start(false);
        let mut taken = Vec::new();
        // A burst: the ring runs dry three times.
        for _ in 0..3 {
            drain_ring(&mut br, &mut taken);
            assert!(br.grow());
        }
        assert_eq!(br.active(), 512);
        for bid in taken.drain(..) {
            assert!(br.give_back(bid));
        }
        for _ in 0..=QUIET_TRIMS {
            br.trim();
        }
        assert_eq!(
            br.active(),
            512,
            "nothing is freed until the buffers come back"
        );
        // Reads go on: each buffer is written once more and returned.
        let mut rounds = 0;
        while br.active() > 64 {
            drain_ring(&mut br, &mut taken);
            for bid in taken.drain(..) {
                assert!(bid < br.active(), "a freed buffer was reported");
                br.give_back(bid);
            }
            rounds += 1;
            assert!(rounds < 4, "shrinks within a round of the ring");
        }
        assert_eq!((br.active(), br.available()), (64, 64));
        // A burst in the middle of a shrink puts the parked buffers back.
        for _ in 0..3 {
            drain_ring(&mut br, &mut taken);
            assert!(br.grow());
        }
        assert_eq!(br.active(), 512);
        for bid in taken.drain(..) {
            br.give_back(bid);
        }
        for _ in 0..=QUIET_TRIMS {
            br.trim();
        }
        drain_ring(&mut br, &mut taken);
        let half = taken.len() / 2;
        for bid in taken.drain(..half) {
            br.give_back(bid);
        }
        assert!(br.available() < 512);
        assert!(br.grow(), "the parked buffers return");
        for bid in taken.drain(..) {
            br.give_back(bid);
        }
        assert_eq!((br.active(), br.available()), (512, 512));
    }

    #[test]
    fn incremental_reads_share_a_buffer_until_the_kernel_is_done_with_it() {
        let mut br = BufRing::new(16, 1000).unwrap();
        br.start(true);
        assert_eq!((br.active(), br.available()), (4, 4));
        // Three reads into buffer 0, the last one filling it.
        assert_eq!(br.take(0, 300, true), 0);
        assert_eq!(br.take(0, 500, true), 300);
        assert_eq!(br.available(), 4, "still the kernel's");
        assert_eq!(br.take(0, 200, false), 800);
        assert_eq!(br.available(), 3);
        br.slice_mut(0, 800, 200).fill(7);
        assert!(br.give_back(0));
        assert!(br.give_back(0));
        assert_eq!(br.available(), 3, "a slice is still lent");
        assert!(br.give_back(0));
        assert!(!br.give_back(0), "double release");
        assert_eq!(br.available(), 4, "back in the ring");
        // Put back, it starts from its beginning again.
        let mut head = br.tail.wrapping_sub(4);
        let mut order = Vec::new();
        for _ in 0..4 {
            // SAFETY: test only; inside the ring mapping.
            order.push(unsafe {
                (*br.ring
                    .ptr
                    .cast::<BufEntry>()
                    .add(usize::from(head & br.mask)))
                .bid
            });
            head = head.wrapping_add(1);
        }
        assert_eq!(order, vec![1, 2, 3, 0]);
        assert_eq!(br.take(0, 10, true), 0);
    }
}
