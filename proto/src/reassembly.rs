//! Per-connection decoder: bytes → frames → messages, with fragmentation,
//! interleaved control frames, size limits and incremental UTF-8 validation.
//!
//! Idle cost is one pointer: all partial state lives in a box that exists only
//! while a frame or a fragmented message is incomplete.
//!
//! A frame that arrives whole in one `feed` is unmasked in place and, when it is a whole
//! message, handed out straight from the input. Only what must outlive the call is copied:
//! the bytes of a cut-off header or frame, and the fragments of an unfinished message.
//! Message size is checked against each header before any payload byte is kept, so the
//! held data never exceeds `message_bytes_max`, plus at most 13 bytes of a cut-off header
//! or 124 bytes of a cut-off control frame.

use crate::close::parse_close_payload;
use crate::error::ProtoError;
use crate::frame::{FrameHeader, OpCode, Role, HEADER_BYTES_MAX};
use crate::mask::apply_mask;
use crate::utf8::{validate, Utf8Validator};

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

/// Everything that has to survive between two `feed` calls.
#[derive(Debug, Default)]
struct Partial {
    /// Bytes of a header cut off by the end of the input.
    head: [u8; HEADER_BYTES_MAX],
    head_len: u8,
    /// The frame whose payload is still arriving.
    frame: Option<OpenFrame>,
    /// Payload so far of a cut-off control frame (at most 125 bytes).
    control: Vec<u8>,
    /// A data message that is unfinished: fragmented, or its only frame is cut off.
    message: Option<OpenMessage>,
    /// The caller's stamp (see [`Decoder::feed_stamped`]) of the `feed` in which the
    /// oldest incomplete frame or message began.
    since: u32,
}

#[derive(Debug, Clone, Copy)]
struct OpenFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    len: usize,
    received: usize,
}

#[derive(Debug)]
struct OpenMessage {
    text: bool,
    buf: Vec<u8>,
    /// Sum of the payload lengths announced by this message's headers so far.
    announced: usize,
    utf8: Utf8Validator,
}

impl Partial {
    fn is_idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.message.is_none()
    }
}

/// Whether decoding may go on after a frame.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// A Close was delivered: the rest of the input is not ours to read (§5.5.1).
    Closed,
}

impl Decoder {
    /// Decode as much of `input` as possible, calling `on_message` for each complete message
    /// in order. `input` is unmasked in place. Bytes of an incomplete frame are copied into
    /// the decoder and completed by later calls. After an error, or after a Close message,
    /// the caller must stop feeding this decoder.
    ///
    /// Bytes after a Close frame in the same input are ignored. On error or Close the held
    /// state is released at once, so a dead connection keeps no buffer.
    pub fn feed<F>(
        &mut self,
        cfg: &DecoderConfig,
        input: &mut [u8],
        on_message: F,
    ) -> Result<(), ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        self.feed_stamped(cfg, input, 0, on_message)
    }

    /// [`Decoder::feed`], remembering `stamp` (an opaque value, typically the
    /// caller's clock tick) as the start of an incomplete frame or message that
    /// begins in this input; [`Decoder::incomplete_since`] reports it until that
    /// message completes. The decoder itself reads no clock.
    pub fn feed_stamped<F>(
        &mut self,
        cfg: &DecoderConfig,
        input: &mut [u8],
        stamp: u32,
        mut on_message: F,
    ) -> Result<(), ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        let mut restarted = false;
        match self.run(cfg, input, &mut on_message, &mut restarted) {
            Ok(Flow::Continue) => {
                match self.partial.as_deref_mut() {
                    Some(p) if p.is_idle() => self.partial = None,
                    // What is held now began in this input, not in an earlier one.
                    Some(p) if restarted => p.since = stamp,
                    _ => {}
                }
                Ok(())
            }
            Ok(Flow::Closed) => {
                self.partial = None;
                Ok(())
            }
            Err(e) => {
                self.partial = None;
                Err(e)
            }
        }
    }

    /// The stamp of the input in which the incomplete frame or message held now
    /// began; `None` when nothing is incomplete (between messages).
    pub fn incomplete_since(&self) -> Option<u32> {
        self.partial.as_ref().map(|p| p.since)
    }

    /// Bytes currently held for incomplete frames/messages.
    /// Nothing is held between two reads: the decoder is one null pointer.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| {
            usize::from(p.head_len)
                + p.control.len()
                + p.message.as_ref().map_or(0, |m| m.buf.len())
        })
    }

    /// `restarted` is set when the decoder was, at some frame boundary of this
    /// input, holding nothing: whatever it holds at the end began in this input.
    fn run<F>(
        &mut self,
        cfg: &DecoderConfig,
        input: &mut [u8],
        on_message: &mut F,
        restarted: &mut bool,
    ) -> Result<Flow, ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        let mut pos = 0;
        loop {
            if let Some(p) = self.partial.as_deref_mut().filter(|p| p.frame.is_some()) {
                match p.continue_frame(input, &mut pos, on_message)? {
                    Some(Flow::Continue) => {}
                    Some(Flow::Closed) => return Ok(Flow::Closed),
                    None => return Ok(Flow::Continue),
                }
            }
            // At a frame boundary: nothing held means a fresh start.
            if self.partial.as_ref().is_none_or(|p| p.is_idle()) {
                *restarted = true;
            }
            if pos == input.len() {
                return Ok(Flow::Continue);
            }
            let Some(header) = self.next_header(cfg.role, input, &mut pos)? else {
                return Ok(Flow::Continue);
            };
            self.check_sequence(cfg, &header)?;
            // check_sequence bounded data frames by message_bytes_max, and parse bounded
            // control frames by 125, so the length fits in memory we are willing to use.
            let len = header.payload_len as usize;
            if input.len() - pos < len {
                self.open_frame(&header, len);
                continue;
            }
            let payload = &mut input[pos..pos + len];
            pos += len;
            if let Some(key) = header.mask {
                apply_mask(payload, key, 0);
            }
            if self.whole_frame(&header, payload, on_message)? == Flow::Closed {
                return Ok(Flow::Closed);
            }
        }
    }

    /// The next header, from the held bytes plus the input or from the input alone.
    /// `None` when the input ran out first; the bytes seen so far are then held.
    fn next_header(
        &mut self,
        role: Role,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtoError> {
        if let Some(p) = self.partial.as_deref_mut().filter(|p| p.head_len > 0) {
            let held = usize::from(p.head_len);
            let take = (HEADER_BYTES_MAX - held).min(input.len() - *pos);
            p.head[held..held + take].copy_from_slice(&input[*pos..*pos + take]);
            return Ok(match FrameHeader::parse(&p.head[..held + take], role)? {
                None => {
                    p.head_len = (held + take) as u8;
                    *pos += take;
                    None
                }
                Some((header, n)) => {
                    // `held` alone was too short to parse, so the header ends past it.
                    p.head_len = 0;
                    *pos += n - held;
                    Some(header)
                }
            });
        }
        match FrameHeader::parse(&input[*pos..], role)? {
            None => {
                // Shorter than the header it starts, hence under HEADER_BYTES_MAX.
                let rest = &input[*pos..];
                let p = self.partial.get_or_insert_with(Box::default);
                p.head[..rest.len()].copy_from_slice(rest);
                p.head_len = rest.len() as u8;
                *pos = input.len();
                Ok(None)
            }
            Some((header, n)) => {
                *pos += n;
                Ok(Some(header))
            }
        }
    }

    /// Fragmentation order (§5.4) and the size limit, decided from the header alone.
    fn check_sequence(&self, cfg: &DecoderConfig, header: &FrameHeader) -> Result<(), ProtoError> {
        if header.opcode.is_control() {
            return Ok(());
        }
        let open = self.partial.as_ref().and_then(|p| p.message.as_ref());
        match (header.opcode, open) {
            (OpCode::Continuation, None) | (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtoError::BadContinuation)
            }
            _ => {}
        }
        let prior = open.map_or(0, |m| m.announced) as u64;
        if prior.saturating_add(header.payload_len) > cfg.message_bytes_max as u64 {
            return Err(ProtoError::MessageTooBig {
                limit_bytes: cfg.message_bytes_max,
            });
        }
        Ok(())
    }

    /// A frame whose payload is all in the input, already unmasked.
    fn whole_frame<F>(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        on_message: &mut F,
    ) -> Result<Flow, ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        if header.opcode.is_control() {
            return deliver_control(header.opcode, payload, on_message);
        }
        if header.fin && header.opcode != OpCode::Continuation {
            // A whole single-frame message: hand it out from the input, no copy.
            if header.opcode == OpCode::Text {
                if !validate(payload) {
                    return Err(ProtoError::InvalidUtf8);
                }
                on_message(Message::Text(payload));
            } else {
                on_message(Message::Binary(payload));
            }
            return Ok(Flow::Continue);
        }
        let p = self.partial.get_or_insert_with(Box::default);
        p.begin_data_frame(header, payload.len());
        p.message_piece(payload, true, header.fin, on_message)?;
        Ok(Flow::Continue)
    }

    /// Start holding a frame whose payload runs past the end of the input.
    fn open_frame(&mut self, header: &FrameHeader, len: usize) {
        let p = self.partial.get_or_insert_with(Box::default);
        p.frame = Some(OpenFrame {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            len,
            received: 0,
        });
        if header.opcode.is_control() {
            p.control.reserve_exact(len);
        } else {
            p.begin_data_frame(header, len);
        }
    }
}

impl Partial {
    /// Feed the held frame from the input. `None` when the input ran out first.
    fn continue_frame<F>(
        &mut self,
        input: &mut [u8],
        pos: &mut usize,
        on_message: &mut F,
    ) -> Result<Option<Flow>, ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        let Some(mut frame) = self.frame else {
            return Ok(Some(Flow::Continue));
        };
        let n = (frame.len - frame.received).min(input.len() - *pos);
        let chunk = &mut input[*pos..*pos + n];
        *pos += n;
        if let Some(key) = frame.mask {
            apply_mask(chunk, key, frame.received);
        }
        frame.received += n;
        let done = frame.received == frame.len;
        self.frame = if done { None } else { Some(frame) };
        if frame.opcode.is_control() {
            self.control.extend_from_slice(chunk);
            if !done {
                return Ok(None);
            }
            let flow = deliver_control(frame.opcode, &self.control, on_message)?;
            self.control.clear();
            return Ok(Some(flow));
        }
        self.message_piece(chunk, done, frame.fin, on_message)?;
        Ok(done.then_some(Flow::Continue))
    }

    /// Open the message for a Text/Binary frame, and count the frame against it.
    fn begin_data_frame(&mut self, header: &FrameHeader, len: usize) {
        let message = self.message.get_or_insert_with(|| OpenMessage {
            text: header.opcode == OpCode::Text,
            buf: Vec::new(),
            announced: 0,
            utf8: Utf8Validator::default(),
        });
        message.announced += len;
    }

    /// Append payload bytes to the open message (validating text as it comes, to fail
    /// fast), and deliver the message when its last frame is complete.
    fn message_piece<F>(
        &mut self,
        piece: &[u8],
        frame_done: bool,
        fin: bool,
        on_message: &mut F,
    ) -> Result<(), ProtoError>
    where
        F: FnMut(Message<'_>),
    {
        let Some(message) = self.message.as_mut() else {
            return Ok(());
        };
        if message.text {
            message
                .utf8
                .feed(piece)
                .map_err(|()| ProtoError::InvalidUtf8)?;
        }
        reserve_within(&mut message.buf, piece.len(), message.announced);
        message.buf.extend_from_slice(piece);
        if !(frame_done && fin) {
            return Ok(());
        }
        let Some(mut message) = self.message.take() else {
            return Ok(());
        };
        if message.text {
            message
                .utf8
                .finish()
                .map_err(|()| ProtoError::InvalidUtf8)?;
            on_message(Message::Text(&message.buf));
        } else {
            on_message(Message::Binary(&message.buf));
        }
        Ok(())
    }
}

/// Grow `buf` for `extra` more bytes, doubling for amortized appends but never past
/// `ceiling` (what the headers announced), so capacity stays within the size limit.
fn reserve_within(buf: &mut Vec<u8>, extra: usize, ceiling: usize) {
    let need = buf.len() + extra;
    if need > buf.capacity() {
        let target = need.max(buf.capacity().saturating_mul(2).min(ceiling));
        buf.reserve_exact(target - buf.len());
    }
}

fn deliver_control<F>(
    opcode: OpCode,
    payload: &[u8],
    on_message: &mut F,
) -> Result<Flow, ProtoError>
where
    F: FnMut(Message<'_>),
{
    match opcode {
        OpCode::Ping => on_message(Message::Ping(payload)),
        OpCode::Pong => on_message(Message::Pong(payload)),
        OpCode::Close => {
            on_message(Message::Close(parse_close_payload(payload)?));
            return Ok(Flow::Closed);
        }
        OpCode::Continuation | OpCode::Text | OpCode::Binary => {
            unreachable!("not a control opcode")
        }
    }
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn cfg() -> DecoderConfig {
        DecoderConfig {
            role: Role::Server,
            message_bytes_max: 1 << 16,
        }
    }

    #[test]
    fn idle_decoder_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Decoder>(), 8);
    }

    #[test]
    fn box_exists_only_while_something_is_incomplete() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, OpCode::Text, false, b"Hel", Some([1, 2, 3, 4]));
        encode_frame(
            &mut wire,
            OpCode::Continuation,
            true,
            b"lo",
            Some([5, 6, 7, 8]),
        );
        let mut decoder = Decoder::default();
        let mut got = Vec::new();

        // Whole frames in one input: nothing is kept.
        let mut whole = wire.clone();
        decoder
            .feed(&cfg(), &mut whole, |m| got.push(format!("{m:?}")))
            .unwrap();
        assert!(decoder.partial.is_none());

        // Cut inside the header, then inside the payload, then between fragments.
        for cut in [1, 5, 7, 9] {
            let mut input = wire.clone();
            let (a, b) = input.split_at_mut(cut);
            decoder
                .feed(&cfg(), a, |m| got.push(format!("{m:?}")))
                .unwrap();
            assert!(decoder.partial.is_some(), "cut {cut}");
            assert!(decoder.buffered_bytes() > 0);
            decoder
                .feed(&cfg(), b, |m| got.push(format!("{m:?}")))
                .unwrap();
            assert!(
                decoder.partial.is_none(),
                "cut {cut}: box kept after the message completed"
            );
            assert_eq!(decoder.buffered_bytes(), 0);
        }
        assert_eq!(got.len(), 5);
        assert!(
            got.iter().all(|m| m == "Text([72, 101, 108, 108, 111])"),
            "{got:?}"
        );
    }

    fn masked(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        encode_frame(&mut wire, opcode, fin, payload, Some([1, 2, 3, 4]));
        wire
    }

    fn feed_at(d: &mut Decoder, bytes: &[u8], stamp: u32) -> usize {
        let mut n = 0;
        let mut input = bytes.to_vec();
        d.feed_stamped(&cfg(), &mut input, stamp, |_| n += 1)
            .unwrap();
        n
    }

    #[test]
    fn incomplete_since_is_the_stamp_of_the_input_that_began_the_message() {
        let a = masked(OpCode::Text, true, b"first message");
        let b = masked(OpCode::Text, true, b"second message");
        let mut d = Decoder::default();
        assert_eq!(d.incomplete_since(), None);
        // One byte at a time: the stamp of the first byte holds until the end.
        for (i, byte) in a.iter().enumerate() {
            let done = feed_at(&mut d, &[*byte], 10 + i as u32);
            if i + 1 < a.len() {
                assert_eq!(d.incomplete_since(), Some(10), "byte {i}");
            } else {
                assert_eq!(done, 1);
                assert_eq!(d.incomplete_since(), None);
            }
        }
        // The end of one message and the start of the next in one input: the
        // held bytes are the next message's, begun in this input.
        feed_at(&mut d, &a[..3], 100);
        let mut rest = a[3..].to_vec();
        rest.extend_from_slice(&b[..4]);
        assert_eq!(feed_at(&mut d, &rest, 200), 1);
        assert_eq!(d.incomplete_since(), Some(200));
        assert_eq!(feed_at(&mut d, &b[4..], 300), 1);
        assert_eq!(d.incomplete_since(), None);
    }

    #[test]
    fn a_fragmented_message_keeps_the_stamp_of_its_first_fragment() {
        let mut d = Decoder::default();
        feed_at(&mut d, &masked(OpCode::Text, false, b"one "), 5);
        assert_eq!(d.incomplete_since(), Some(5));
        // A whole middle fragment and a ping in between do not restart the clock.
        let mut more = masked(OpCode::Continuation, false, b"two ");
        more.extend(masked(OpCode::Ping, true, b"p"));
        assert_eq!(feed_at(&mut d, &more, 6), 1, "the ping");
        assert_eq!(d.incomplete_since(), Some(5));
        assert_eq!(d.buffered_bytes(), 8);
        assert_eq!(
            feed_at(&mut d, &masked(OpCode::Continuation, true, b"three"), 7),
            1
        );
        assert_eq!(d.incomplete_since(), None);
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn message_buffer_capacity_never_exceeds_what_was_announced() {
        let mut buf = Vec::new();
        let mut announced = 0;
        for piece in [3usize, 1, 1, 7, 50, 1, 1, 1] {
            announced += piece;
            reserve_within(&mut buf, piece, announced);
            buf.extend(std::iter::repeat_n(0u8, piece));
            assert!(
                buf.capacity() <= announced,
                "{} > {announced}",
                buf.capacity()
            );
        }
    }
}
