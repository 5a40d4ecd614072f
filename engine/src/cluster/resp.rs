//! The part of RESP3 (Redis's wire protocol) the bus needs: commands out as
//! arrays of bulk strings, and an incremental reader for every reply type, push
//! messages included (they arrive on the same connection, in order with replies).

/// One reply or push.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Resp>),
    /// Out-of-band data (`>`): pub/sub messages and subscribe confirmations.
    Push(Vec<Resp>),
    Null,
    /// Doubles, booleans, big numbers, verbatim strings: kept as text.
    Other(String),
}

impl Resp {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(b) => Some(b),
            Resp::Simple(s) | Resp::Other(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            other => std::str::from_utf8(other.as_bytes()?).ok()?.parse().ok(),
        }
    }
}

/// Append one command.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Nesting accepted in replies (ours are two deep).
const DEPTH_MAX: usize = 16;

/// One complete value at the start of `buf` and the bytes it used; None when more is needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    let mut at = 0;
    match value(buf, &mut at, 0)? {
        Some(v) => Ok(Some((v, at))),
        None => Ok(None),
    }
}

fn line<'a>(buf: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *at += end + 2;
    Some(&rest[..end])
}

fn number(l: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(l)))
}

fn value(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Resp>, String> {
    if depth > DEPTH_MAX {
        return Err("reply nested too deep".into());
    }
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let start = *at;
    *at += 1;
    let Some(l) = line(buf, at) else {
        *at = start;
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(l).into_owned();
    let v = match kind {
        b'+' => Resp::Simple(text()),
        b'-' => Resp::Error(text()),
        b':' => Resp::Int(number(l)?),
        b'_' => Resp::Null,
        b',' | b'#' | b'(' => Resp::Other(text()),
        b'$' | b'=' | b'!' => {
            let n = number(l)?;
            if n < 0 {
                Resp::Null
            } else {
                let n = n as usize;
                if buf.len() < *at + n + 2 {
                    *at = start;
                    return Ok(None);
                }
                let b = buf[*at..*at + n].to_vec();
                *at += n + 2;
                match kind {
                    b'!' => Resp::Error(String::from_utf8_lossy(&b).into_owned()),
                    _ => Resp::Bulk(b),
                }
            }
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let n = number(l)?;
            if n < 0 {
                Resp::Null
            } else {
                let items = if matches!(kind, b'%' | b'|') {
                    n * 2
                } else {
                    n
                };
                let mut v = Vec::new();
                for _ in 0..items {
                    match value(buf, at, depth + 1)? {
                        Some(x) => v.push(x),
                        None => {
                            *at = start;
                            return Ok(None);
                        }
                    }
                }
                match kind {
                    b'>' => Resp::Push(v),
                    // An attribute annotates the value after it: skip to that value.
                    b'|' => return value(buf, at, depth),
                    _ => Resp::Array(v),
                }
            }
        }
        other => return Err(format!("unknown reply type {:?}", other as char)),
    };
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies() {
        let mut out = Vec::new();
        command(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let push = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nE 1 x\r\n:1\r\n";
        let (v, n) = parse(push).unwrap().unwrap();
        assert_eq!(
            v,
            Resp::Push(vec![
                Resp::Bulk(b"message".to_vec()),
                Resp::Bulk(b"ch".to_vec()),
                Resp::Bulk(b"E 1 x".to_vec())
            ])
        );
        assert_eq!(parse(&push[n..]).unwrap().unwrap().0, Resp::Int(1));
        // Incomplete input asks for more, at every cut.
        for cut in 0..n {
            assert_eq!(parse(&push[..cut]).unwrap(), None, "cut {cut}");
        }
        let map = b"%1\r\n+server\r\n+redis\r\n";
        assert!(matches!(parse(map).unwrap().unwrap().0, Resp::Array(v) if v.len() == 2));
        assert_eq!(parse(b"_\r\n").unwrap().unwrap().0, Resp::Null);
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap().unwrap().0,
            Resp::Error("ERR no".into())
        );
        assert!(parse(b"?x\r\n").is_err());
    }
}
