//! Per-subscription delivery bookkeeping: missing, duplicated and out-of-order offsets.
//!
//! Offsets rise by exactly one per publication in a channel (PROTOCOL.md). A tracker
//! remembers the highest offset seen and which of the 64 offsets below it arrived,
//! so a late arrival is told apart from a duplicate within that window. An offset
//! older than the window is counted as out of order.

/// One subscriber's view of one channel.
#[derive(Debug, Clone)]
pub struct Track {
    highest: u64,
    /// Bit i set: offset `highest - i` was received (or precedes the subscription).
    window: u64,
    /// Hash of the epoch the offsets belong to (0: not known yet).
    epoch: u64,
    pub missing: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub epoch_changes: u64,
}

/// Cheap stable hash of an epoch string (FNV-1a), never 0.
pub fn epoch_hash(e: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in e {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

impl Track {
    /// Subscribed when the channel's last offset was `baseline`: the next expected one is `baseline + 1`.
    pub fn new(baseline: u64, epoch: u64) -> Track {
        Track {
            highest: baseline,
            window: u64::MAX,
            epoch,
            missing: 0,
            duplicate: 0,
            out_of_order: 0,
            epoch_changes: 0,
        }
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Account for one delivery of `offset` in `epoch` (0: the protocol has no epochs).
    pub fn see(&mut self, offset: u64, epoch: u64) {
        if epoch != 0 && self.epoch != 0 && epoch != self.epoch {
            // History was lost: offsets start over; nothing before this one is owed.
            self.epoch_changes += 1;
            self.epoch = epoch;
            self.highest = offset;
            self.window = u64::MAX;
            return;
        }
        if self.epoch == 0 {
            self.epoch = epoch;
        }
        if offset > self.highest {
            let step = offset - self.highest;
            self.missing += step - 1;
            self.window = if step >= 64 {
                1
            } else {
                (self.window << step) | 1
            };
            self.highest = offset;
            return;
        }
        let back = self.highest - offset;
        if back < 64 {
            let bit = 1u64 << back;
            if self.window & bit != 0 {
                self.duplicate += 1;
                return;
            }
            self.window |= bit;
        }
        self.out_of_order += 1;
        self.missing = self.missing.saturating_sub(1);
    }

    /// At the end: everything up to `last` (the last offset the publisher was given) was owed.
    pub fn finish(&mut self, last: u64) {
        self.missing += last.saturating_sub(self.highest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_clean() {
        let mut t = Track::new(10, 5);
        for o in 11..=200 {
            t.see(o, 5);
        }
        t.finish(200);
        assert_eq!(
            (t.missing, t.duplicate, t.out_of_order, t.epoch_changes),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn gaps_dups_reorders_and_tail() {
        let mut t = Track::new(0, 0);
        for o in [1, 2, 4, 3, 3, 6, 9, 1] {
            t.see(o, 0);
        }
        // 3 late (ooo), 3 again (dup), 1 again (dup); 5, 7, 8 never came; 10..12 owed at the end.
        t.finish(12);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.duplicate, 2);
        assert_eq!(t.missing, 3 + 3);
    }

    #[test]
    fn far_jump_and_epoch_change() {
        let mut t = Track::new(0, epoch_hash(b"A"));
        t.see(1, epoch_hash(b"A"));
        t.see(1000, epoch_hash(b"A"));
        assert_eq!(t.missing, 998);
        t.see(500, epoch_hash(b"A"));
        assert_eq!((t.out_of_order, t.missing), (1, 997));
        t.see(3, epoch_hash(b"B"));
        t.see(4, epoch_hash(b"B"));
        t.finish(4);
        assert_eq!((t.epoch_changes, t.missing), (1, 997));
    }
}
