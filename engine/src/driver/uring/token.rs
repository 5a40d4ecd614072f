//! `user_data` encoding: what a CQE is about, without any lookup table.
//!
//! ```text
//!  63      56 55          32 31                     0
//! +----------+--------------+------------------------+
//! | op kind  |   always 0   |  id                    |
//! +----------+--------------+------------------------+
//! ```
//!
//! `id` is the shard's `ConnKey` for per-connection ops (recv, shutdown,
//! cancel, close), the send-slab index for sends (the slab entry records the
//! connection), and 0 for the ring-wide ops (accept, wake, accept back-off
//! timer). Kind 0 is never used, so a zeroed `user_data` cannot be mistaken for
//! one of ours.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Shutdown = 4,
    Cancel = 5,
    Close = 6,
    Wake = 7,
    AcceptTimer = 8,
}

const KIND_SHIFT: u32 = 56;

pub(super) fn encode(kind: Kind, id: u32) -> u64 {
    (u64::from(kind as u8) << KIND_SHIFT) | u64::from(id)
}

/// None for a value we never produced (a bug, logged by the caller).
pub(super) fn decode(user_data: u64) -> Option<(Kind, u32)> {
    let kind = match (user_data >> KIND_SHIFT) as u8 {
        1 => Kind::Accept,
        2 => Kind::Recv,
        3 => Kind::Send,
        4 => Kind::Shutdown,
        5 => Kind::Cancel,
        6 => Kind::Close,
        7 => Kind::Wake,
        8 => Kind::AcceptTimer,
        _ => return None,
    };
    if user_data & 0x00ff_ffff_0000_0000 != 0 {
        return None;
    }
    Some((kind, user_data as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [
            Kind::Accept,
            Kind::Recv,
            Kind::Send,
            Kind::Shutdown,
            Kind::Cancel,
            Kind::Close,
            Kind::Wake,
            Kind::AcceptTimer,
        ] {
            for id in [0, 1, 77, u32::MAX] {
                assert_eq!(decode(encode(kind, id)), Some((kind, id)));
            }
        }
        assert_eq!(decode(0), None);
        assert_eq!(decode(encode(Kind::Recv, 5) | 1 << 40), None);
    }
}
