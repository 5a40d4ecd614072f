//! shardcast: a thread-per-core WebSocket fan-out engine.

pub mod driver;
