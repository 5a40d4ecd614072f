//! Rules the shards apply to connections: who may do what ([`auth`],
//! [`users`]), how fast ([`ratelimit`]), how long they may stay quiet
//! (`heartbeat`, on the clocks of [`timer`]), and in which order a draining
//! node closes its connections (`drain`).

pub mod auth;
pub(crate) mod drain;
pub(crate) mod heartbeat;
pub mod ratelimit;
pub mod timer;
pub mod users;
