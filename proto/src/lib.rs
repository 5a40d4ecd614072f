//! Sans-IO protocol crate for shardcast.
//!
//! Everything here works on byte slices and returns values: no sockets, no clock,
//! no runtime. The engine, the load generator and the fuzz targets share it.
//!
//! One concern per module:
//! - [`http`]: HTTP/1.1 request parsing (plain requests and upgrades) and responses.
//! - [`handshake`]: the RFC 6455 opening handshake, server and client side.
//! - [`frame`]: frame headers, encoding, opcodes.
//! - [`mask`]: SIMD (un)masking with a scalar reference.
//! - [`utf8`]: incremental UTF-8 validation across fragments.
//! - [`close`]: close codes and close payloads.
//! - [`close_scan`]: after our close frame, watching for the peer's.
//! - [`reassembly`]: the per-connection decoder (frames → messages).
//! - [`prepared`]: encode-once frames shared by every subscriber.
//! - [`command`]: client → server control commands (simd-json).
//! - [`reply`]: server → client replies and pushes.
//! - [`msgpack`]: the same messages as MessagePack (`shardcast.v1.msgpack`).
//! - [`sse`]: the same messages as Server-Sent Events (the `/sse` fallback).
//! - [`error`]: protocol errors and how they map to close codes.

pub mod close;
pub mod close_scan;
pub mod command;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod msgpack;
pub mod prepared;
pub mod reassembly;
pub mod reply;
pub mod sse;
pub mod utf8;

pub use error::ProtoError;
pub use frame::{FrameHeader, OpCode, Role};
pub use prepared::PreparedFrame;
pub use reassembly::{Decoder, DecoderConfig, Message};
