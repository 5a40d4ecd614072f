//! shardcast: a thread-per-core WebSocket fan-out engine.
//!
//! Reading order: [`engine`] starts one [`shard`] per core; a shard owns a
//! [`driver`] (io_uring or epoll), a [`conn`] slab and a socket-agnostic
//! [`channel::registry`]; [`channel::owner`] turns a publication into one
//! shared frame that [`shard::mesh`] carries to every shard with subscribers;
//! [`channel::authority`] says whether the owner shard or Redis ([`cluster`])
//! orders each channel. What they hand each other is defined in [`payload`],
//! which imports nothing else from the engine.
//!
//! The folders:
//!
//! - [`driver`]: the io drivers (io_uring, epoll) and their buffers;
//! - [`shard`]: a shard's loop, its inbox ([`shard::mesh`]), the router that
//!   sends to other shards, the messages it receives, how it stops, and what
//!   all shards share ([`shard::shared`]);
//! - [`conn`]: a connection's record, its queue, its life (lifecycle, session)
//!   and its framings (SSE, MessagePack); the shard's outbound side (what it
//!   has to write, every queued byte counted);
//! - [`channel`]: channel owners, the local subscriptions (registry, each
//!   connection's list, the fan-out to local subscribers), recovery, history
//!   and presence;
//! - [`http`]: the backend API and `/metrics`;
//! - [`policy`]: heartbeats, timers, drain, rate limits, auth, users;
//! - [`cluster`]: Redis as the authority, and the owner shard's relay to it.

pub mod alloc_trim;
pub mod channel;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod driver;
pub mod engine;
pub mod http;
pub mod payload;
pub mod policy;
pub mod shard;
pub mod sim;
pub mod stats;

pub use config::{Config, IoConfig, Limits};
pub use driver::DriverKind;
pub use engine::{Engine, Handle, PublishError};
pub use shard::mesh::Published;
pub use stats::Stats;
