//! The `shardcast.v1.msgpack` subprotocol: the JSON messages of v1, as MessagePack.
//!
//! The engine speaks JSON inside; a MessagePack connection is a JSON connection
//! with a transcoder at each edge. Both directions keep map order, so a push
//! reads `channel, offset, epoch, data` in either encoding.
//!
//! - [`json_to_msgpack`] walks simd-json's tape (document order) and writes the
//!   smallest MessagePack form of each value.
//! - [`msgpack_to_json`] reads untrusted bytes: no allocation from a claimed
//!   length (an element costs at least a byte, so a lying header runs out of
//!   input), nesting at most [`DEPTH_MAX`], and only what JSON can say — string
//!   map keys, finite floats, UTF-8 strings; `bin`, `ext` and reserved markers
//!   are refused.

use simd_json::StaticNode;

/// Deepest nesting accepted from a client (arrays and maps).
pub const DEPTH_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscodeError {
    /// Not valid JSON (or not representable: cannot happen for JSON the engine made).
    Json,
    /// Truncated, trailing bytes, or a type JSON cannot carry; the message says which.
    Msgpack(&'static str),
}

impl std::fmt::Display for TranscodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranscodeError::Json => f.write_str("malformed JSON"),
            TranscodeError::Msgpack(why) => write!(f, "malformed MessagePack: {why}"),
        }
    }
}

/// Append the MessagePack form of the JSON document `json` to `out`.
pub fn json_to_msgpack(json: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
    let mut buf = json.to_vec();
    let tape = simd_json::to_tape(&mut buf).map_err(|_| TranscodeError::Json)?;
    out.reserve(json.len());
    // The tape lists values in document order, object keys as strings before their
    // values, so one pass writes the MessagePack document.
    for node in tape.0.iter() {
        match *node {
            simd_json::Node::Object { len, .. } => put_len(out, len, 0x80, 16, 0xde),
            simd_json::Node::Array { len, .. } => put_len(out, len, 0x90, 16, 0xdc),
            simd_json::Node::String(s) => put_str(out, s),
            simd_json::Node::Static(StaticNode::Null) => out.push(0xc0),
            simd_json::Node::Static(StaticNode::Bool(b)) => out.push(if b { 0xc3 } else { 0xc2 }),
            simd_json::Node::Static(StaticNode::U64(u)) => put_uint(out, u),
            simd_json::Node::Static(StaticNode::I64(i)) => put_int(out, i),
            simd_json::Node::Static(StaticNode::F64(f)) => {
                out.push(0xcb);
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
    }
    Ok(())
}

/// A map or array header: the fix form below `fix_max`, else 16 or 32 bits
/// (`wide` is the 16-bit marker; the 32-bit one follows it).
fn put_len(out: &mut Vec<u8>, len: usize, fix: u8, fix_max: usize, wide: u8) {
    if len < fix_max {
        out.push(fix | len as u8);
    } else if len <= 0xffff {
        out.push(wide);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(wide + 1);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn put_uint(out: &mut Vec<u8>, u: u64) {
    if u < 0x80 {
        out.push(u as u8);
    } else if u <= 0xff {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

fn put_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        return put_uint(out, i as u64);
    }
    if i >= -32 {
        out.push(i as i8 as u8); // negative fixint: 0xe0..=0xff
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// Append the JSON form of the MessagePack document `mp` (one value, nothing after it).
pub fn msgpack_to_json(mp: &[u8], out: &mut Vec<u8>) -> Result<(), TranscodeError> {
    let mut r = Reader { b: mp, at: 0 };
    r.value(out, 0)?;
    if r.at != mp.len() {
        return Err(TranscodeError::Msgpack("bytes after the value"));
    }
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TranscodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or(TranscodeError::Msgpack("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, TranscodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), TranscodeError> {
        let m = self.take(1)?[0];
        match m {
            0x00..=0x7f => write_u64(out, u64::from(m)),
            0x80..=0x8f => self.map(out, usize::from(m & 0x0f), depth)?,
            0x90..=0x9f => self.array(out, usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => self.string(out, usize::from(m & 0x1f))?,
            0xc0 => out.extend_from_slice(b"null"),
            0xc2 => out.extend_from_slice(b"false"),
            0xc3 => out.extend_from_slice(b"true"),
            0xca => {
                let f = f32::from_bits(self.be(4)? as u32);
                write_f64(out, f64::from(f))?;
            }
            0xcb => write_f64(out, f64::from_bits(self.be(8)?))?,
            0xcc => write_u64(out, self.be(1)?),
            0xcd => write_u64(out, self.be(2)?),
            0xce => write_u64(out, self.be(4)?),
            0xcf => write_u64(out, self.be(8)?),
            0xd0 => write_i64(out, i64::from(self.be(1)? as u8 as i8)),
            0xd1 => write_i64(out, i64::from(self.be(2)? as u16 as i16)),
            0xd2 => write_i64(out, i64::from(self.be(4)? as u32 as i32)),
            0xd3 => write_i64(out, self.be(8)? as i64),
            0xd9 => {
                let n = self.be(1)? as usize;
                self.string(out, n)?
            }
            0xda => {
                let n = self.be(2)? as usize;
                self.string(out, n)?
            }
            0xdb => {
                let n = self.be(4)? as usize;
                self.string(out, n)?
            }
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(out, n, depth)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(out, n, depth)?
            }
            0xde => {
                let n = self.be(2)? as usize;
                self.map(out, n, depth)?
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(out, n, depth)?
            }
            0xe0..=0xff => write_i64(out, i64::from(m as i8)),
            0xc4..=0xc6 => return Err(TranscodeError::Msgpack("bin has no JSON form")),
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(TranscodeError::Msgpack("ext has no JSON form"))
            }
            0xc1 => return Err(TranscodeError::Msgpack("reserved marker 0xc1")),
        }
        Ok(())
    }

    fn string(&mut self, out: &mut Vec<u8>, n: usize) -> Result<(), TranscodeError> {
        let s = self.take(n)?;
        let s = simdutf8::basic::from_utf8(s)
            .map_err(|_| TranscodeError::Msgpack("string is not UTF-8"))?;
        crate::reply::write_json_str(out, s);
        Ok(())
    }

    fn array(&mut self, out: &mut Vec<u8>, n: usize, depth: usize) -> Result<(), TranscodeError> {
        if depth >= DEPTH_MAX {
            return Err(TranscodeError::Msgpack("nested too deep"));
        }
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            self.value(out, depth + 1)?;
        }
        out.push(b']');
        Ok(())
    }

    fn map(&mut self, out: &mut Vec<u8>, n: usize, depth: usize) -> Result<(), TranscodeError> {
        if depth >= DEPTH_MAX {
            return Err(TranscodeError::Msgpack("nested too deep"));
        }
        out.push(b'{');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            let m = *self
                .b
                .get(self.at)
                .ok_or(TranscodeError::Msgpack("truncated"))?;
            if !matches!(m, 0xa0..=0xbf | 0xd9..=0xdb) {
                return Err(TranscodeError::Msgpack("map key is not a string"));
            }
            self.value(out, depth + 1)?;
            out.push(b':');
            self.value(out, depth + 1)?;
        }
        out.push(b'}');
        Ok(())
    }
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

fn write_f64(out: &mut Vec<u8>, f: f64) -> Result<(), TranscodeError> {
    if !f.is_finite() {
        return Err(TranscodeError::Msgpack(
            "NaN and infinity have no JSON form",
        ));
    }
    // Debug prints the shortest form that reads back as the same f64, with an
    // exponent for very large or small values and `.0` on whole numbers (so the
    // value stays a float for JSON readers that tell the two apart).
    out.extend_from_slice(format!("{f:?}").as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_mp(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        json_to_msgpack(json.as_bytes(), &mut out).unwrap();
        out
    }

    fn to_json(mp: &[u8]) -> Result<String, TranscodeError> {
        let mut out = Vec::new();
        msgpack_to_json(mp, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_push_round_trips_in_order() {
        let push = r#"{"channel":"news","offset":42,"epoch":"E","data":{"t":"hi","n":-3,"f":1.5,"ok":true,"z":null,"a":[1,2,300,70000,5000000000]}}"#;
        let mp = to_mp(push);
        // fixmap of 4, then "channel" as fixstr: order is kept.
        assert_eq!(&mp[..9], b"\x84\xa7channel");
        assert_eq!(to_json(&mp).unwrap(), push);
    }

    #[test]
    fn every_size_class_of_the_spec() {
        for json in [
            "0",
            "127",
            "128",
            "255",
            "256",
            "65535",
            "65536",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "-1",
            "-32",
            "-33",
            "-128",
            "-129",
            "-32768",
            "-32769",
            "-2147483648",
            "-2147483649",
            "-9223372036854775808",
            "0.5",
            "-1e+300",
        ] {
            assert_eq!(
                to_json(&to_mp(json)).unwrap(),
                json.replace("e+", "e"),
                "{json}"
            );
        }
        for n in [0, 31, 32, 255, 256, 65_535, 65_536] {
            let s = format!("\"{}\"", "x".repeat(n));
            assert_eq!(to_json(&to_mp(&s)).unwrap(), s);
            let a = format!("[{}]", vec!["1"; n.min(70_000)].join(","));
            assert_eq!(to_json(&to_mp(&a)).unwrap(), a);
        }
        let m = format!(
            "{{{}}}",
            (0..20)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(to_mp(&m)[0], 0xde, "16 keys or more take map16");
        assert_eq!(to_json(&to_mp(&m)).unwrap(), m);
        // Escapes survive both ways.
        let s = r#"{"q":"a\"b\\c\n\u0001é"}"#;
        let back = to_json(&to_mp(s)).unwrap();
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(s).unwrap(),
            serde_json::from_str(&back).unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn what_json_cannot_say_is_refused() {
        let bad: &[(&[u8], &str)] = &[
            (b"", "truncated"),
            (b"\x92\x01", "truncated"),
            (b"\xdd\xff\xff\xff\xff", "truncated"),
            (b"\x01\x02", "bytes after"),
            (b"\xc4\x01a", "bin"),
            (b"\xd4\x01\x00", "ext"),
            (b"\xc1", "reserved"),
            (b"\x81\x01\x02", "map key"),
            (b"\xa1\xff", "UTF-8"),
            (b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", "NaN"),
        ];
        for (mp, why) in bad {
            let e = to_json(mp).unwrap_err().to_string();
            assert!(e.contains(why), "{mp:?}: {e}");
        }
        let deep = [vec![0x91u8; DEPTH_MAX + 1], vec![0xc0]].concat();
        assert!(to_json(&deep).unwrap_err().to_string().contains("deep"));
        let ok = [vec![0x91u8; DEPTH_MAX], vec![0xc0]].concat();
        assert!(to_json(&ok).is_ok());
        assert_eq!(
            json_to_msgpack(b"{nope", &mut Vec::new()),
            Err(TranscodeError::Json)
        );
    }
}
