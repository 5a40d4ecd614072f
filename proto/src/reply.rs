//! Server → client JSON: replies to commands, and pushes (serialized once per publication).

use crate::prepared::PreparedFrame;

/// The push frame for one publication, byte-identical for every subscriber:
/// `{"channel":"news","offset":42,"epoch":"E","data":<raw data>}` in one text frame.
pub fn push(channel: &str, offset: u64, epoch: &str, data: &[u8]) -> PreparedFrame {
    todo!("{channel} {offset} {epoch} {data:?}")
}

/// The JSON text of a push (no frame header), for SSE and tests.
pub fn push_json(channel: &str, offset: u64, epoch: &str, data: &[u8]) -> Vec<u8> {
    todo!("{channel} {offset} {epoch} {data:?}")
}

/// `{"id":1,"ok":{"channel":"news","epoch":"E","offset":41}}`; with `recovered` when given.
pub fn ok_subscribe(id: Option<u64>, channel: &str, epoch: &str, offset: u64, recovered: Option<bool>) -> Vec<u8> {
    todo!("{id:?} {channel} {epoch} {offset} {recovered:?}")
}

/// `{"id":3,"ok":{}}`.
pub fn ok_empty(id: Option<u64>) -> Vec<u8> {
    todo!("{id:?}")
}

/// `{"id":4,"ok":{"offset":12}}`.
pub fn ok_publish(id: Option<u64>, offset: u64) -> Vec<u8> {
    todo!("{id:?} {offset}")
}

/// `{"id":9,"error":{"code":103,"message":"permission denied","temporary":false}}`
/// (`temporary` from [`crate::command::error_code::is_temporary`]).
pub fn error(id: Option<u64>, code: u16, message: &str) -> Vec<u8> {
    todo!("{id:?} {code} {message}")
}

/// `{"op":"pong"}`, or `{"id":N,"op":"pong"}` when the ping had an id.
pub fn pong(id: Option<u64>) -> Vec<u8> {
    todo!("{id:?}")
}

/// Append `s` as a JSON string literal (quotes and escapes) to `out`.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    todo!("{out:?} {s}")
}
