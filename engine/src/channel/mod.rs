//! Channels: who orders them and who on this shard listens to them.
//!
//! - [`owner`]: the owner shard's side (offsets, epochs, history, presence),
//!   one shared frame per publication;
//! - [`authority`]: whether that owner or Redis ([`crate::cluster`]) orders a
//!   channel;
//! - [`registry`]: this shard's local subscribers per channel, socket-agnostic;
//! - [`sublist`]: a connection's own list of subscriptions;
//! - `subscriptions`: both kept in step: subscribe, join, leave, release,
//!   the owner's acknowledgement, and the fan-out to local subscribers;
//! - `recovery` and `replay`: the subscriber's side of recovery, history
//!   and presence, and the paced replay of missed publications.

pub mod authority;
pub mod owner;
pub(crate) mod recovery;
pub mod registry;
pub(crate) mod replay;
pub mod sublist;
pub(crate) mod subscriptions;
