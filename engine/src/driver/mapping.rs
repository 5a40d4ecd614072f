//! Anonymous private mappings for receive buffers: page-aligned, so pages a
//! burst touched can be given back to the kernel with `MADV_DONTNEED`, and
//! not populated, so a page costs RSS only once something is read into it.

use std::io;
use std::ptr;

/// Trims (about one a second) without a burst before a receive pool gives the
/// pages of the buffers past its warm ones back to the kernel (both drivers).
pub(crate) const QUIET_TRIMS: u8 = 5;

const PAGE_BYTES: usize = 4096;

/// An anonymous private mapping, unmapped on drop.
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    /// 0 once leaked on purpose: never unmapped then.
    pub(crate) len: usize,
}

impl Mapping {
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
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
            // Leaked on purpose (see `BufRing::leak` in the io_uring driver).
            return;
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once. The owner
        // guarantees no kernel operation still targets it (see `UringDriver::drop`;
        // the epoll driver's reads are synchronous).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl Mapping {
    /// Give the whole pages of `[start, end)` back to the kernel; they read as
    /// zeros on next touch. Returns the bytes given back.
    ///
    /// # Safety
    /// The range lies inside the mapping, and nothing (no slice of ours, no
    /// kernel operation) refers to any byte of it.
    pub(crate) unsafe fn discard(&self, start: usize, end: usize) -> usize {
        // Whole pages only: a partial page at either end stays resident.
        let start = start.next_multiple_of(PAGE_BYTES);
        let end = end / PAGE_BYTES * PAGE_BYTES;
        if end <= start {
            return 0;
        }
        // SAFETY: the caller guarantees the range is ours and unreferenced;
        // MADV_DONTNEED on a private anonymous mapping leaves it mapped and
        // zero-filled on next touch.
        let r =
            unsafe { libc::madvise(self.ptr.add(start).cast(), end - start, libc::MADV_DONTNEED) };
        if r == 0 {
            end - start
        } else {
            0
        }
    }
}
