//! Reading shardcast's Server-Sent Events fallback (`--protocol sse`): the
//! request, the response head, and events split out of the byte stream.

/// `GET path?channels=a,b` for an event stream.
pub fn request(host: &str, path: &str, channels: &[&str]) -> Vec<u8> {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!(
        "GET {path}{sep}channels={} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n",
        channels.join(",")
    )
    .into_bytes()
}

/// The response head: Some((status, head length)) once complete.
pub fn response_head(buf: &[u8]) -> Result<Option<(u16, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some((r.code.unwrap_or(0), n))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad response head: {e}")),
    }
}

/// One event: its type (None: the default `message`) and its data lines joined
/// (borrowed when there is one line, as for every push the loadgen reads).
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub kind: Option<&'a [u8]>,
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// The complete events at the front of `buf`, and how many bytes they took.
/// This is every subscriber's hot path: a SIMD search for the blank line that
/// ends an event, and no copy of the data in the common one-line case.
pub fn events(buf: &[u8]) -> (Vec<Event<'_>>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(end) = memchr::memmem::find(&buf[start..], b"\n\n") {
        let block = &buf[start..start + end];
        start += end + 2;
        let mut kind = None;
        let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
        for line in block.split(|&b| b == b'\n') {
            if let Some(d) = line.strip_prefix(b"data: ") {
                data = Some(match data {
                    None => std::borrow::Cow::Borrowed(d),
                    Some(prev) => {
                        let mut v = prev.into_owned();
                        v.push(b'\n');
                        v.extend_from_slice(d);
                        std::borrow::Cow::Owned(v)
                    }
                });
            } else if let Some(k) = line.strip_prefix(b"event: ") {
                kind = Some(k);
            }
            // `id:`, `retry:` and `:` comments carry nothing the loadgen counts.
        }
        if let Some(data) = data {
            out.push(Event { kind, data });
        }
    }
    (out, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_at_any_cut() {
        let stream = b"event: reply\ndata: {\"ok\":{}}\n\n:\n\nid: a:E:1\ndata: {\"x\":\ndata: 1}\n\nretry: 5\n\n";
        for cut in 0..stream.len() {
            let mut got: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
            let (first, used) = events(&stream[..cut]);
            got.extend(
                first
                    .iter()
                    .map(|e| (e.kind.map(<[u8]>::to_vec), e.data.to_vec())),
            );
            let rest = [&stream[used..cut], &stream[cut..]].concat();
            let (second, used2) = events(&rest);
            got.extend(
                second
                    .iter()
                    .map(|e| (e.kind.map(<[u8]>::to_vec), e.data.to_vec())),
            );
            assert_eq!(used2, rest.len());
            assert_eq!(
                got,
                vec![
                    (Some(b"reply".to_vec()), b"{\"ok\":{}}".to_vec()),
                    (None, b"{\"x\":\n1}".to_vec()),
                ],
                "cut {cut}"
            );
        }
        assert_eq!(
            request("h:1", "/sse", &["a", "b"]),
            b"GET /sse?channels=a,b HTTP/1.1\r\nHost: h:1\r\nAccept: text/event-stream\r\n\r\n"
        );
        assert_eq!(
            response_head(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nrest").unwrap(),
            Some((200, 25))
        );
    }
}
