//! A WebSocket session's reading side: frames in, commands out. The
//! [`Session`] turns each message into what it asks for ([`Input`]: a command,
//! an error reply, a frame to send back, a close); the shard carries it out
//! (conn/commands.rs).

use bytes::Bytes;
use shardcast_proto::command::{self, error_code, Command};
use shardcast_proto::error::close_code;
use shardcast_proto::{msgpack, reply, DecoderConfig, Message, PreparedFrame, Role};

use crate::config::Config;

/// A WebSocket session's reading side: frames in, commands out. It owns the
/// decoder's settings and the buffer commands are parsed in (converted from
/// MessagePack first where the connection speaks it); what each message asks
/// for comes out as an [`Input`], which the shard carries out.
#[derive(Debug)]
pub(crate) struct Session {
    dec_cfg: DecoderConfig,
    scratch: Vec<u8>,
    /// `echo`: every data message is sent back as it came (benchmarks).
    echo: bool,
    message_bytes_max: usize,
}

/// What one message from a WebSocket asks of the shard.
#[derive(Debug)]
pub(crate) enum Input {
    /// A command to run (once the rate limit admits it).
    Command(Command),
    /// Not a command: the error reply to send.
    Refused(Vec<u8>),
    /// A data frame to send back (`echo`).
    Echo(Bytes),
    /// A control frame to send back (a pong).
    Pong(Bytes),
    /// The peer closes, with this code.
    Close(u16),
    /// Nothing to do (a pong).
    Nothing,
}

impl Session {
    pub(crate) fn new(cfg: &Config) -> Session {
        Session {
            dec_cfg: DecoderConfig {
                role: Role::Server,
                message_bytes_max: cfg.limits.message_bytes_max,
            },
            scratch: Vec::new(),
            echo: cfg.echo,
            message_bytes_max: cfg.limits.message_bytes_max,
        }
    }

    /// The decoder's settings (a copy, so the decoder's callback may use the shard).
    pub(crate) fn decoder_config(&self) -> DecoderConfig {
        self.dec_cfg.clone()
    }

    /// What `msg` asks for; `msgpack`: the connection speaks
    /// `shardcast.v1.msgpack`, so its binary messages are MessagePack.
    pub(crate) fn read(&mut self, msg: Message<'_>, msgpack: bool) -> Input {
        let is_binary = matches!(msg, Message::Binary(_));
        match msg {
            Message::Text(p) if self.echo => Input::Echo(PreparedFrame::text(p).into_bytes()),
            Message::Binary(p) if self.echo => Input::Echo(PreparedFrame::binary(p).into_bytes()),
            Message::Text(p) | Message::Binary(p) => self.command(p, is_binary && msgpack),
            // A client that pings without reading fills its queue with pongs.
            Message::Ping(p) => Input::Pong(PreparedFrame::pong(p).into_bytes()),
            Message::Pong(_) => Input::Nothing,
            // Echo the peer's code (RFC 6455 §5.5.1); an empty close gets 1000.
            Message::Close(c) => {
                Input::Close(c.map(|(code, _)| code).unwrap_or(close_code::NORMAL))
            }
        }
    }

    /// The command a data message holds, as JSON or MessagePack.
    fn command(&mut self, p: &[u8], msgpack: bool) -> Input {
        self.scratch.clear();
        if !msgpack {
            self.scratch.extend_from_slice(p);
        } else if let Err(e) = msgpack::msgpack_to_json(p, &mut self.scratch) {
            return Input::Refused(reply::error(None, error_code::MALFORMED, &e.to_string()));
        } else if self.scratch.len() > self.message_bytes_max {
            // JSON can be a few times longer than its MessagePack (escapes,
            // digits); what goes into pushes stays within the same limit.
            let max = self.message_bytes_max;
            let msg = format!("message is over {max} bytes as JSON");
            return Input::Refused(reply::error(None, error_code::LIMIT_EXCEEDED, &msg));
        }
        match command::parse_command(&mut self.scratch) {
            Ok(cmd) => Input::Command(cmd),
            Err(e) => Input::Refused(reply::error(e.id, e.code, &e.message)),
        }
    }
}
