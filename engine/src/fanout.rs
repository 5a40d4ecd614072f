//! The owner side of fan-out: per-channel offsets and epochs, and turning one
//! publication into one shared frame for every interested shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shardcast_proto::{reply, PreparedFrame};

use crate::mesh::ShardId;

/// State of a channel this shard owns.
#[derive(Debug)]
struct Owned {
    offset: u64,
    epoch: Arc<str>,
    /// Bit i set: shard i has local subscribers.
    interest: u64,
}

/// One publication ready to hand out.
#[derive(Debug)]
pub struct Fanned {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub frame: PreparedFrame,
    pub interest: u64,
}

#[derive(Debug)]
pub struct Owner {
    shard: ShardId,
    channels: HashMap<Arc<str>, Owned>,
    epoch_seq: u64,
    boot_nanos: u64,
    idle_channels_max: usize,
}

impl Owner {
    pub fn new(shard: ShardId, idle_channels_max: usize) -> Owner {
        let boot_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Owner {
            shard,
            channels: HashMap::new(),
            epoch_seq: 0,
            boot_nanos,
            idle_channels_max,
        }
    }

    /// A fresh epoch: unique per process start, shard and channel incarnation, so a
    /// client that saw another epoch knows the history it holds a position in is gone.
    fn new_epoch(&mut self) -> Arc<str> {
        self.epoch_seq += 1;
        let mut h = self.boot_nanos
            ^ (self.shard as u64).rotate_left(48)
            ^ self.epoch_seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        Arc::from(format!("{:08x}", h as u32))
    }

    fn entry(&mut self, channel: &Arc<str>) -> &mut Owned {
        if !self.channels.contains_key(channel) {
            let epoch = self.new_epoch();
            self.channels.insert(
                channel.clone(),
                Owned {
                    offset: 0,
                    epoch,
                    interest: 0,
                },
            );
        }
        self.channels.get_mut(channel).expect("inserted above")
    }

    /// Shard `from` wants (or no longer wants) publications; returns the current position.
    pub fn interest(&mut self, channel: &Arc<str>, from: ShardId, on: bool) -> (Arc<str>, u64) {
        let st = self.entry(channel);
        if on {
            st.interest |= 1 << from;
        } else {
            st.interest &= !(1 << from);
        }
        (st.epoch.clone(), st.offset)
    }

    /// Assign the next offset and serialize the push once.
    pub fn publish(&mut self, channel: &Arc<str>, data: &Bytes) -> Fanned {
        let st = self.entry(channel);
        st.offset += 1;
        let frame = reply::push(channel, st.offset, &st.epoch, data);
        Fanned {
            offset: st.offset,
            epoch: st.epoch.clone(),
            frame,
            interest: st.interest,
        }
    }

    /// Forget channels nobody listens to once there are too many of them.
    /// Their next publication starts a new epoch, which tells clients why.
    pub fn trim_idle(&mut self) {
        let idle = self.channels.values().filter(|c| c.interest == 0).count();
        if idle > self.idle_channels_max {
            self.channels.retain(|_, c| c.interest != 0);
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_rise_by_one_and_interest_is_tracked() {
        let mut o = Owner::new(0, 10);
        let ch: Arc<str> = Arc::from("news");
        let (epoch, offset) = o.interest(&ch, 1, true);
        assert_eq!(offset, 0);
        let a = o.publish(&ch, &Bytes::from_static(b"1"));
        let b = o.publish(&ch, &Bytes::from_static(b"2"));
        assert_eq!((a.offset, b.offset), (1, 2));
        assert_eq!(a.epoch, epoch);
        assert_eq!(a.interest, 0b10);
        let (_, offset) = o.interest(&ch, 1, false);
        assert_eq!(offset, 2);
        assert_eq!(o.publish(&ch, &Bytes::from_static(b"3")).interest, 0);
    }

    #[test]
    fn forgotten_channels_come_back_with_a_new_epoch() {
        let mut o = Owner::new(0, 0);
        let ch: Arc<str> = Arc::from("a");
        let first = o.publish(&ch, &Bytes::from_static(b"1")).epoch;
        o.trim_idle();
        let again = o.publish(&ch, &Bytes::from_static(b"1"));
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, first);
    }
}
