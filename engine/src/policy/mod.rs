//! Rules the shards apply to connections: who may do what ([`auth`],
//! [`users`]), how fast ([`ratelimit`]), how long they may stay quiet
//! ([`heartbeat`], with [`timer`] for the rarer deadlines), and how the node
//! empties itself before it stops ([`drain`]).

pub mod auth;
pub(crate) mod drain;
pub(crate) mod heartbeat;
pub mod ratelimit;
pub mod timer;
pub mod users;
