//! shardcast: a thread-per-core WebSocket fan-out engine.
//!
//! Reading order: [`engine`] starts one [`shard`] per core; a shard owns a
//! [`driver`] (io_uring or epoll), a [`conn`] slab and a socket-agnostic
//! [`registry`]; [`fanout`] turns a publication into one shared frame that
//! [`mesh`] carries to every shard with subscribers; [`authority`] says
//! whether the owner shard or Redis ([`cluster`]) orders each channel. What
//! they hand each other is defined in [`payload`], which imports nothing else
//! from the engine.

pub mod alloc_trim;
pub mod auth;
pub mod authority;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
mod convert;
mod dispatch;
mod drain;
pub mod driver;
pub mod engine;
pub mod fanout;
mod heartbeat;
mod http_api;
mod lifecycle;
pub mod mesh;
pub mod metrics;
pub mod outq;
mod partial;
pub mod payload;
pub mod ratelimit;
mod recovery;
pub mod registry;
mod relay;
mod replay;
mod router;
mod session;
pub mod shard;
pub mod sim;
mod sse;
pub mod stats;
pub mod sublist;
pub mod timer;
mod trim;
pub mod users;

pub use config::{Config, IoConfig, Limits};
pub use driver::DriverKind;
pub use engine::{Engine, Handle, PublishError};
pub use mesh::Published;
pub use stats::Stats;
