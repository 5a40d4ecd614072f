//! Per-connection decoder: bytes → frames → messages, with fragmentation,
//! interleaved control frames, size limits and incremental UTF-8 validation.
//!
//! Idle cost is one pointer: all partial state lives in a box that exists only
//! while a frame or a fragmented message is incomplete.

use crate::error::ProtoError;
use crate::frame::Role;

/// Limits shared by every connection of a shard (kept out of the per-connection state).
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub role: Role,
    /// Largest message (sum of fragments) accepted; past it → [`ProtoError::MessageTooBig`] (1009).
    pub message_bytes_max: usize,
}

/// A complete message. Borrowed from the input or the decoder's own buffer; valid during the callback.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Validated UTF-8.
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// Code and reason, already validated (§7.4, UTF-8); None for an empty close payload.
    Close(Option<(u16, &'a str)>),
}

#[derive(Debug, Default)]
pub struct Decoder {
    partial: Option<Box<Partial>>,
}

#[derive(Debug, Default)]
struct Partial {}

impl Decoder {
    /// Decode as much of `input` as possible, calling `on_message` for each complete message
    /// in order. `input` is unmasked in place. Bytes of an incomplete frame are copied into
    /// the decoder and completed by later calls. After an error, or after a Close message,
    /// the caller must stop feeding this decoder.
    pub fn feed<F>(&mut self, cfg: &DecoderConfig, input: &mut [u8], mut on_message: F) -> Result<(), ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        let _ = (cfg, input, &mut on_message, &self.partial);
        todo!()
    }

    /// Bytes currently held for incomplete frames/messages.
    pub fn buffered_bytes(&self) -> usize {
        todo!()
    }
}
