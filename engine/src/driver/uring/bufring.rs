//! The provided-buffer ring shared by every multishot recv of one ring.
//!
//! Two anonymous mappings: the ring of `io_uring_buf` descriptors the kernel
//! consumes from (page-aligned, as `IORING_REGISTER_PBUF_RING` requires) and one
//! contiguous block holding the buffers themselves. A buffer is in exactly one
//! of two places: in the ring (the kernel may write into it at any time) or lent
//! to the shard (reported by a `Recv` completion, not yet released). The `lent`
//! bitset tracks the second state so that `recv_buf` never hands out a slice the
//! kernel could be writing, and a double `release` cannot put one buffer into the
//! ring twice.

use std::io;
use std::ptr;
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
/// finds the ring empty (see `BufRing::grow`).
const INITIAL_ACTIVE: u16 = 64;

/// The kernel caps a provided-buffer ring at 2^15 entries.
pub(super) const BUF_RING_MAX: u16 = 1 << 15;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: anonymous private mapping with no address hint; the kernel picks a
        // page-aligned range that nothing else in the process uses.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // Not populated: a page becomes resident when the kernel
                // first writes a read into it, so a shard that receives
                // little (most of them, with many shards) costs little.
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len == 0 {
            // Leaked on purpose (see `BufRing::leak`).
            return;
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once. The owner
        // guarantees no kernel operation still targets it (see `UringDriver::drop`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

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
    /// Bit `bid` set: the buffer is lent to the shard.
    lent: Vec<u64>,
    lent_count: u32,
}

impl BufRing {
    /// Map `count` buffers of `buf_bytes` and fill the ring with all of them.
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
        let mut br = BufRing {
            ring,
            bufs,
            buf_bytes,
            count,
            active: 0,
            mask: count - 1,
            tail: 0,
            lent: vec![0; usize::from(count).div_ceil(64)],
            lent_count: 0,
        };
        br.grow_to(count.min(INITIAL_ACTIVE));
        Ok(br)
    }

    /// A recv found the ring empty (ENOBUFS): put up to as many untouched
    /// buffers in again as are active, up to `count`. Returns false when all are in use.
    pub(super) fn grow(&mut self) -> bool {
        if self.active == self.count {
            return false;
        }
        self.grow_to(self.active.saturating_mul(2).min(self.count));
        true
    }

    fn grow_to(&mut self, active: u16) {
        for bid in self.active..active {
            self.write_entry(bid);
        }
        self.active = active;
        self.publish_tail();
    }

    /// Buffers put in the ring so far (the rest of the pool was never touched).
    #[cfg(test)]
    pub(super) fn active(&self) -> u16 {
        self.active
    }

    /// Register the ring with the kernel under `bgid`.
    pub(super) fn register(
        &self,
        submitter: &io_uring::Submitter<'_>,
        bgid: u16,
    ) -> io::Result<()> {
        // SAFETY: the ring mapping is page-aligned, holds `count` entries and lives as
        // long as `self`; the driver drops the io_uring (unregistering everything)
        // before this BufRing, so the kernel never reads it after it is unmapped.
        unsafe { submitter.register_buf_ring_with_flags(self.ring.ptr as u64, self.count, bgid, 0) }
    }

    /// Never unmap the memory: used when the kernel may still write into it.
    pub(super) fn leak(&mut self) {
        self.ring.len = 0;
        self.bufs.len = 0;
    }

    /// Buffers currently in the ring, available to the kernel.
    pub(super) fn available(&self) -> u32 {
        u32::from(self.active) - self.lent_count
    }

    /// A completion reported that the kernel filled `bid`: it now belongs to us.
    pub(super) fn take(&mut self, bid: u16) {
        assert!(
            bid < self.active,
            "kernel reported buffer id {bid} beyond the ring"
        );
        let (word, bit) = (usize::from(bid / 64), bid % 64);
        debug_assert!(
            self.lent[word] & (1 << bit) == 0,
            "buffer {bid} reported twice"
        );
        if self.lent[word] & (1 << bit) == 0 {
            self.lent[word] |= 1 << bit;
            self.lent_count += 1;
        }
    }

    /// Put a lent buffer back at the ring's tail. Returns false (and does nothing)
    /// when `bid` is not lent: a double release must not put it in the ring twice.
    pub(super) fn give_back(&mut self, bid: u16) -> bool {
        if !self.is_lent(bid) {
            return false;
        }
        let (word, bit) = (usize::from(bid / 64), bid % 64);
        self.lent[word] &= !(1 << bit);
        self.lent_count -= 1;
        self.write_entry(bid);
        self.publish_tail();
        true
    }

    pub(super) fn is_lent(&self, bid: u16) -> bool {
        bid < self.active && self.lent[usize::from(bid / 64)] & (1 << (bid % 64)) != 0
    }

    /// The first `len` bytes of a lent buffer.
    pub(super) fn slice_mut(&mut self, bid: u16, len: u32) -> &mut [u8] {
        assert!(
            self.is_lent(bid),
            "recv_buf({bid}) on a buffer not lent to the shard"
        );
        assert!(
            len <= self.buf_bytes,
            "recv_buf length {len} beyond buffer size"
        );
        let offset = usize::from(bid) * self.buf_bytes as usize;
        // SAFETY: `bid < count` and `len <= buf_bytes`, so the range lies inside the
        // buffer mapping. The buffer is lent: it is not in the ring, so the kernel
        // does not write it until `give_back`, and the `&mut self` borrow keeps any
        // other slice of it from coexisting.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.add(offset), len as usize) }
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
        assert_eq!((br.active(), br.available()), (64, 64));
        for bid in 0..64 {
            br.take(bid);
        }
        assert_eq!(br.available(), 0);
        assert!(br.grow());
        assert_eq!((br.active(), br.available()), (128, 64));
        assert!(br.give_back(3));
        assert_eq!(br.available(), 65);
        while br.grow() {}
        assert_eq!((br.active(), br.available()), (1024, 1024 - 63));
        let mut small = BufRing::new(16, 512).unwrap();
        assert_eq!(small.active(), 16);
        assert!(!small.grow());
    }
}
