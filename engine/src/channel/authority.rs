//! Who decides a channel's order: which offset a publication gets, which
//! history is kept, what a recovery is answered from. On a single node it is
//! the channel's owner shard (`channel::owner::Owner`); in cluster mode it is Redis,
//! and the owner shard relays between the bus and this node's shards.
//!
//! The rest of the engine asks the authority, never whether cluster mode is on
//! (the owner shard's messages are routed by it in `shard/inbox.rs`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::channel::owner::Positions;
use crate::cluster::{Bus, BusReq};
use crate::shard::mesh::Peer;

/// Where every channel's order is decided, for the whole process.
#[derive(Debug, Clone)]
pub enum Authority {
    /// The owner shard assigns offsets, keeps history and answers recovery.
    Local,
    /// Redis does all three (cluster mode); this is the link to it.
    Redis(Arc<Bus>),
}

impl Authority {
    /// Redis when an address is configured (the link starts here), else local.
    pub fn start(redis: Option<SocketAddr>, prefix: &str, peers: &[Peer]) -> io::Result<Self> {
        Ok(match redis {
            Some(addr) => {
                let bus = Bus::start(addr, prefix, peers.to_vec())?;
                tracing::info!(redis = %addr, prefix = %prefix, "cluster mode");
                Authority::Redis(bus)
            }
            None => Authority::Local,
        })
    }

    /// What an owner knows of a channel it has not seen: everything when it
    /// assigns the offsets, nothing until Redis is read otherwise.
    pub fn positions(&self) -> Positions {
        match self {
            Authority::Local => Positions::Assigned,
            Authority::Redis(_) => Positions::Read,
        }
    }

    /// Whether the authority can be reached. Without it a subscriber could not
    /// be told what it misses, so the node takes no connections and is not ready.
    pub fn is_up(&self) -> bool {
        match self {
            Authority::Local => true,
            Authority::Redis(bus) => bus.is_up(),
        }
    }

    /// The state of the link to a remote authority, for metrics; None when
    /// there is no link to report on.
    pub fn link_up(&self) -> Option<bool> {
        match self {
            Authority::Local => None,
            Authority::Redis(bus) => Some(bus.is_up()),
        }
    }

    /// Hand a request to Redis; given back when it cannot be carried (the link
    /// is down, or there is no Redis to carry it to).
    pub(crate) fn send(&self, req: BusReq) -> Result<(), BusReq> {
        match self {
            Authority::Local => Err(req),
            Authority::Redis(bus) => bus.send(req),
        }
    }
}
