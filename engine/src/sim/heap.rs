//! The engine's live heap in a simulation run, counted exactly.
//!
//! A simulation's engine and its clients share one thread, so a plain
//! counting allocator would mix the engine's bytes with the harness's (each
//! client's record, the positions seen, the trace). [`Tagging`] instead puts
//! a 16-byte header before every block, naming the counter of the scope that
//! allocated it ([`Scope::enter`]), and takes the block's bytes off that
//! counter when it is freed, on whatever thread and in whatever scope. So a
//! scope's counter is the bytes allocated inside it and not yet freed: a
//! publication the harness builds and a shard frees is never counted, and a
//! queue a shard grows and a client's read frees is counted until then.
//!
//! A test binary installs it (`#[global_allocator] static A: Tagging =
//! Tagging;`, as `engine/tests/sim.rs` and `engine/examples/sim.rs` do);
//! without it every counter stays 0 and [`installed`] says so.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// Bytes before each block: the counter's address, and room for alignment.
const HEADER: usize = 16;

thread_local! {
    /// The counter of the scope this thread is in (null: none).
    static CURRENT: Cell<*const Live> = const { Cell::new(std::ptr::null()) };
}

/// What a scope allocated and has not freed: bytes (as asked, without the
/// header) and blocks.
#[derive(Debug, Default)]
pub struct Live {
    bytes: AtomicI64,
    blocks: AtomicI64,
}

fn current() -> *const Live {
    CURRENT.try_with(|c| c.get()).unwrap_or(std::ptr::null())
}

/// One counted scope: the engine of one simulation run.
#[derive(Debug)]
pub struct Scope {
    /// Leaked on purpose (8 bytes a run): a block freed after the run ends
    /// still finds its counter.
    live: &'static Live,
}

impl Scope {
    pub fn new() -> Scope {
        Scope {
            live: Box::leak(Box::default()),
        }
    }

    /// Run `f` with its allocations counted to this scope (scopes nest).
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        /// Restores the outer scope, also when `f` panics.
        struct Leave(*const Live);
        impl Drop for Leave {
            fn drop(&mut self) {
                let _ = CURRENT.try_with(|c| c.set(self.0));
            }
        }
        let _leave = Leave(CURRENT.with(|c| c.replace(self.live)));
        f()
    }

    /// Bytes allocated inside the scope and not yet freed.
    pub fn live(&self) -> i64 {
        self.live.bytes.load(Relaxed)
    }

    /// Blocks allocated inside the scope and not yet freed.
    pub fn blocks(&self) -> i64 {
        self.live.blocks.load(Relaxed)
    }
}

impl Default for Scope {
    fn default() -> Scope {
        Scope::new()
    }
}

/// Whether [`Tagging`] is the global allocator (a counted allocation shows).
pub fn installed() -> bool {
    let s = Scope::new();
    let b = s.enter(|| std::hint::black_box(Box::new([0u8; 64])));
    let seen = s.live() >= 64;
    drop(std::hint::black_box(b));
    seen
}

/// The counting allocator: the system's, with a header naming the scope.
pub struct Tagging;

/// The block's layout with its header, and the header's size (a multiple of
/// the alignment, so the caller's pointer stays aligned).
fn outer(l: Layout) -> (Layout, usize) {
    let head = HEADER.max(l.align());
    let layout = Layout::from_size_align(l.size() + head, head).expect("layout");
    (layout, head)
}

/// Where the counter's address sits for the caller's block `p`.
fn slot(p: *mut u8) -> *mut *const Live {
    p.wrapping_sub(8).cast()
}

/// Count a block in (`sign` 1) or out (-1); a reallocation is one of each.
fn add(counter: *const Live, bytes: usize, sign: i64) {
    // SAFETY: a non-null counter is a leaked `&'static Live` (`Scope::new`).
    if let Some(c) = unsafe { counter.as_ref() } {
        c.bytes.fetch_add(sign * bytes as i64, Relaxed);
        c.blocks.fetch_add(sign, Relaxed);
    }
}

// SAFETY: every block is the system allocator's, `head` bytes larger than
// asked and aligned to at least the caller's alignment; the caller gets the
// address `head` bytes in, whose preceding 8 bytes (inside the header) hold
// the counter. Deallocation and reallocation undo the same offset with the
// same layout. The bookkeeping never allocates.
unsafe impl GlobalAlloc for Tagging {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let (o, head) = outer(l);
        // SAFETY: `o` has a non-zero size (at least the header).
        let p = unsafe { System.alloc(o) };
        if p.is_null() {
            return p;
        }
        // SAFETY: `head` < `o.size()`, so the result is inside the block.
        let user = unsafe { p.add(head) };
        let c = current();
        // SAFETY: the slot is the header's last 8 bytes, inside the block and
        // aligned to 8 (`head` is a multiple of 16, the block aligned to 16).
        unsafe { slot(user).write(c) };
        add(c, l.size(), 1);
        user
    }

    unsafe fn dealloc(&self, user: *mut u8, l: Layout) {
        let (o, head) = outer(l);
        // SAFETY: `user` came from `alloc`/`realloc` above with this layout,
        // so its header holds the counter it was counted to.
        let c = unsafe { slot(user).read() };
        add(c, l.size(), -1);
        // SAFETY: the block starts `head` bytes before `user`, with layout `o`.
        unsafe { System.dealloc(user.sub(head), o) }
    }

    unsafe fn realloc(&self, user: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`.
        let old = unsafe { slot(user).read() };
        let (o, head) = outer(l);
        if head != HEADER {
            // Over-aligned: a new block, the bytes copied, the old one freed.
            let nl = Layout::from_size_align(new, l.align()).expect("layout");
            // SAFETY: forwarded to `alloc` and `dealloc` above.
            let q = unsafe { self.alloc(nl) };
            if !q.is_null() {
                // SAFETY: both blocks are live and at least `min` bytes long.
                unsafe { std::ptr::copy_nonoverlapping(user, q, l.size().min(new)) };
                // SAFETY: `user` was allocated with `l`.
                unsafe { self.dealloc(user, l) };
            }
            return q;
        }
        // SAFETY: the block starts `head` bytes before `user`, with layout
        // `o`; the new size keeps the header.
        let p = unsafe { System.realloc(user.sub(head), o, new + head) };
        if p.is_null() {
            return p;
        }
        add(old, l.size(), -1);
        let c = current();
        // SAFETY: as in `alloc`.
        let q = unsafe { p.add(head) };
        // SAFETY: as in `alloc`.
        unsafe { slot(q).write(c) };
        add(c, new, 1);
        q
    }
}
