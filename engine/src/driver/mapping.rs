//! Anonymous private mappings for receive buffers: page-aligned, so pages a
//! burst touched can be given back to the kernel with `MADV_DONTNEED`, and
//! not populated, so a page costs RSS only once something is read into it.

use std::io;
use std::ptr;

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
