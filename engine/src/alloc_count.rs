//! A counting allocator around mimalloc (feature `alloc-count`, off by default):
//! live allocations and bytes by size, written every 5 s to the file named by
//! `SHARDCAST_ALLOC_REPORT`. It is how docs/ARCHITECTURE.md ("Small
//! connections") accounts for every byte of an idle connection, in the real
//! binary under the real load generator. It costs a few atomic adds per
//! allocation, which is why it is not built in normally.

use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use mimalloc::MiMalloc;

/// Exact sizes up to this get their own counter; larger ones go by power of two.
const SMALL: usize = 1024;
const BUCKETS: usize = SMALL + 1 + 64;

pub struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static USABLE: AtomicI64 = AtomicI64::new(0);
static COUNT: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];
static BYTES: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];

extern "C" {
    fn mi_usable_size(p: *const u8) -> usize;
}

fn bucket(size: usize) -> usize {
    if size <= SMALL {
        size
    } else {
        SMALL + 1 + (usize::BITS - (size - 1).leading_zeros()) as usize
    }
}

fn note(p: *const u8, size: usize, sign: i64) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` is a live block from mimalloc (just allocated, or about to be freed).
    let usable = unsafe { mi_usable_size(p) };
    LIVE.fetch_add(sign * size as i64, Relaxed);
    USABLE.fetch_add(sign * usable as i64, Relaxed);
    let b = bucket(size);
    COUNT[b].fetch_add(sign, Relaxed);
    BYTES[b].fetch_add(sign * size as i64, Relaxed);
}

// SAFETY: every call goes unchanged to mimalloc; the bookkeeping only reads
// the block's usable size and adds to atomics, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { MiMalloc.alloc(l) };
        note(p, l.size(), 1);
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { MiMalloc.alloc_zeroed(l) };
        note(p, l.size(), 1);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(p, l.size(), -1);
        // SAFETY: as above.
        unsafe { MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(p, l.size(), -1);
        // SAFETY: as above.
        let q = unsafe { MiMalloc.realloc(p, l, new) };
        if q.is_null() {
            note(p, l.size(), 1);
        } else {
            note(q, new, 1);
        }
        q
    }
}

fn report() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "live {} B requested, {} B usable",
        LIVE.load(Relaxed),
        USABLE.load(Relaxed)
    );
    for b in 0..BUCKETS {
        let n = COUNT[b].load(Relaxed);
        if n == 0 {
            continue;
        }
        let label = if b <= SMALL {
            format!("{b} B")
        } else {
            format!("<= {} B", 1u64 << (b - SMALL - 1))
        };
        let _ = writeln!(s, "{label}\t{n}\t{}", BYTES[b].load(Relaxed));
    }
    s
}

/// Start the reporting thread when `SHARDCAST_ALLOC_REPORT` names a file.
pub fn start_reporter() {
    let Some(path) = std::env::var_os("SHARDCAST_ALLOC_REPORT") else {
        return;
    };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(5));
        let _ = std::fs::write(&path, report());
    });
}
