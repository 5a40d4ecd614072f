//! shardcast-loadgen: open many WebSocket connections to loopback servers and
//! measure what they do, with one epoll event loop per thread and, for counts past
//! the per-process descriptor limit, several worker processes.
//!
//! Reading order: [`cli`] (options and the loopback-only rule) → [`run`] (the
//! coordinator's phases) → [`fleet`] (threads or processes) → [`worker`] (one
//! event loop) → [`conn`] (one connection). [`stats`] holds what is counted and
//! how it merges; [`report`] and [`svg`] present it. See docs/loadgen.md.

pub mod cli;
pub mod conn;
pub mod fleet;
pub mod mem;
pub mod procs;
pub mod publisher;
pub mod push;
pub mod report;
pub mod run;
pub mod sio;
pub mod sse;
pub mod stats;
pub mod suite;
pub mod svg;
pub mod sys;
pub mod track;
pub mod worker;

pub use cli::{Opts, Plan, Protocol, Scenario};
pub use report::Report;
pub use run::{run, run_with};
pub use suite::Hooks;
