//! Giving memory back to the OS after a burst.
//!
//! mimalloc (the `shardcast` binary's allocator) returns freed pages to the OS
//! only after a delay and only when the thread calls into it again, so a shard
//! that goes quiet after a burst (a backlog written and freed, a crowd of
//! connections closed) kept its peak resident: measured 848 MiB after the
//! connection that caused it had closed. The binary installs its allocator's
//! collect function here and every shard calls it about once a second; an
//! embedding application with another allocator installs nothing.

use std::collections::VecDeque;
use std::sync::OnceLock;

static HOOK: OnceLock<fn()> = OnceLock::new();

/// Install the allocator's "return what is free" function (first call wins).
pub fn set_trim_hook(f: fn()) {
    let _ = HOOK.set(f);
}

/// Run the installed hook, if any, on the calling (shard) thread.
pub(crate) fn trim() {
    if let Some(f) = HOOK.get() {
        f();
    }
}

/// Entries a list keeps whatever its use (no reallocation in the common case).
const KEEP: usize = 256;

/// Shrink `v` if it holds less than a quarter of its capacity. Here, beside
/// the allocator hook, rather than with the shard's lists (`shard/trim.rs`), so the
/// drivers can use it without importing the shard.
pub(crate) fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > KEEP && v.len() < v.capacity() / 4 {
        v.shrink_to((v.len() * 2).max(KEEP));
    }
}

pub(crate) fn shrink_deque<T>(v: &mut VecDeque<T>) {
    if v.capacity() > KEEP && v.len() < v.capacity() / 4 {
        v.shrink_to((v.len() * 2).max(KEEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mostly_empty_lists_shrink_and_small_ones_stay() {
        let mut v: Vec<u64> = (0..10_000).collect();
        v.truncate(10);
        shrink_vec(&mut v);
        assert!(v.capacity() <= 2 * KEEP, "{}", v.capacity());
        assert_eq!(v.len(), 10);
        let mut d: VecDeque<u64> = (0..10_000).collect();
        d.drain(..9_000);
        shrink_deque(&mut d);
        assert!(d.capacity() >= 1_000, "a list still in use keeps its room");
        d.clear();
        shrink_deque(&mut d);
        assert!(d.capacity() <= 2 * KEEP, "{}", d.capacity());
        let mut small: Vec<u64> = Vec::with_capacity(KEEP);
        shrink_vec(&mut small);
        assert_eq!(small.capacity(), KEEP);
    }
}
