//! Giving memory back to the OS after a burst.
//!
//! mimalloc (the `shardcast` binary's allocator) returns freed pages to the OS
//! only after a delay and only when the thread calls into it again, so a shard
//! that goes quiet after a burst (a backlog written and freed, a crowd of
//! connections closed) kept its peak resident: measured 848 MiB after the
//! connection that caused it had closed. The binary installs its allocator's
//! collect function here and every shard calls it about once a second; an
//! embedding application with another allocator installs nothing.

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
