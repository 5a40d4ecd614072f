//! Connections per user (`limits.conns_per_user_max`), counted across the
//! node's shards. Touched only when an authenticated connection opens or
//! closes, never per message, so a lock split 64 ways is cheap enough.

use std::collections::HashMap;
use std::sync::Mutex;

const PARTS: usize = 64;

#[derive(Debug)]
pub struct UserConns {
    parts: Vec<Mutex<HashMap<String, u32>>>,
}

impl Default for UserConns {
    fn default() -> Self {
        UserConns {
            parts: (0..PARTS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl UserConns {
    fn part(&self, user: &str) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        let h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        self.parts[(h % PARTS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Count one more connection for `user` unless it already has `max`.
    pub fn acquire(&self, user: &str, max: u32) -> bool {
        let mut p = self.part(user);
        let n = p.entry(user.to_string()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                p.remove(user);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, user: &str) {
        let mut p = self.part(user);
        if let Some(n) = p.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                p.remove(user);
            }
        }
    }

    /// Open connections of `user` (tests, metrics).
    pub fn count(&self, user: &str) -> u32 {
        self.part(user).get(user).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_at_most_max_and_a_slot_back_on_release() {
        let u = UserConns::default();
        assert!(u.acquire("alice", 2) && u.acquire("alice", 2));
        assert!(!u.acquire("alice", 2));
        assert!(u.acquire("bob", 2), "others are not affected");
        u.release("alice");
        assert_eq!(u.count("alice"), 1);
        assert!(u.acquire("alice", 2));
        u.release("alice");
        u.release("alice");
        assert_eq!(u.count("alice"), 0);
        assert!(!u.acquire("carol", 0) && u.count("carol") == 0);
    }
}
