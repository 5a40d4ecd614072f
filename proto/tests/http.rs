//! HTTP request parsing and the RFC 6455 opening handshake, both sides.

use proptest::prelude::*;
use shardcast_proto::handshake::{
    accept_key, client_key, client_request, upgrade_response, validate_upgrade, verify_response,
    ClientHandshakeError, Subprotocol, Upgrade, RESPONSE_HEAD_BYTES_MAX,
};
use shardcast_proto::http::{parse_request, reason_phrase, response, HttpError, Limits, Request};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    parse_request(buf, &Limits::default())
}

fn parse_ok(buf: &[u8]) -> Request {
    let (req, n) = parse(buf).expect("valid").expect("complete");
    assert_eq!(n, buf.len());
    req
}

fn status_of(buf: &[u8], limits: &Limits) -> u16 {
    parse_request(buf, limits)
        .expect_err("must be refused")
        .status
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The upgrade request of RFC 6455 §1.2, with `lines` replacing or adding headers.
fn upgrade_req(lines: &[&str]) -> Vec<u8> {
    let mut headers = vec![
        "Host: server.example.com".to_owned(),
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".to_owned(),
    ];
    for line in lines {
        let name = line.split(':').next().unwrap();
        headers.retain(|h| !h.starts_with(&format!("{name}:")));
        if !line.ends_with(":-") {
            headers.push((*line).to_owned());
        }
    }
    format!(
        "GET /ws?token=abc HTTP/1.1\r\n{}\r\n\r\n",
        headers.join("\r\n")
    )
    .into_bytes()
}

/// `Name:-` in `lines` removes that header.
fn validate(lines: &[&str]) -> Result<Upgrade, HttpError> {
    validate_upgrade(&parse_ok(&upgrade_req(lines)))
}

#[test]
fn rfc6455_accept_example() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn plain_request_with_query_and_headers() {
    let req = parse_ok(b"GET /sse?channels=a%2Cb,c&x=1+2&flag&e= HTTP/1.1\r\nHost: h\r\nX-Thing:  spaced value  \r\n\r\n");
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/sse");
    assert_eq!(req.query, "channels=a%2Cb,c&x=1+2&flag&e=");
    assert_eq!(req.query_param("channels").as_deref(), Some("a,b,c"));
    assert_eq!(req.query_param("x").as_deref(), Some("1 2"));
    assert_eq!(req.query_param("flag").as_deref(), Some(""));
    assert_eq!(req.query_param("e").as_deref(), Some(""));
    assert_eq!(req.query_param("missing"), None);
    assert_eq!(req.header("x-thing"), Some("spaced value"));
    assert_eq!(req.header("HOST"), Some("h"));
    assert_eq!(req.header("nope"), None);
    assert!(req.body.is_empty());
    assert!(!req.wants_upgrade());
    assert!(req.keep_alive());
}

#[test]
fn query_param_decoding_edges() {
    let req = parse_ok(b"GET /?a=%zz%4&b=%41%62&b=second&%74oken=t HTTP/1.1\r\nHost: h\r\n\r\n");
    // A broken escape is kept literally instead of failing the whole request.
    assert_eq!(req.query_param("a").as_deref(), Some("%zz%4"));
    assert_eq!(
        req.query_param("b").as_deref(),
        Some("Ab"),
        "first occurrence wins"
    );
    assert_eq!(
        req.query_param("token").as_deref(),
        Some("t"),
        "keys are decoded too"
    );
    let req = parse_ok(b"GET /path HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.query, "");
    assert_eq!(req.query_param(""), None);
}

#[test]
fn keep_alive_follows_connection_tokens() {
    let req = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n");
    assert!(!req.keep_alive());
    let req = parse_ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    assert!(req.keep_alive());
}

#[test]
fn body_by_content_length_and_pipelining() {
    let one = b"POST /api/publish HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    let mut two = one.to_vec();
    two.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
    let (req, n) = parse(&two).unwrap().unwrap();
    assert_eq!(n, one.len(), "only the first request is consumed");
    assert_eq!(req.method, "POST");
    assert_eq!(req.body, b"hello");
    let (req, _) = parse(&two[n..]).unwrap().unwrap();
    assert_eq!(req.path, "/health");
}

#[test]
fn identical_repeated_content_length_is_accepted() {
    let req = parse_ok(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(req.body, b"ok");
}

#[test]
fn every_split_point_is_partial_then_complete() {
    let full =
        b"POST /api/publish?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n{\"a\":[1,2]}";
    for i in 0..full.len() {
        assert_eq!(parse(&full[..i]), Ok(None), "split at {i}");
    }
    let req = parse_ok(full);
    assert_eq!(req.body, b"{\"a\":[1,2]}");
}

#[test]
fn http10_plain_is_accepted_but_not_with_upgrade() {
    let req = parse_ok(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(req.path, "/health");
    let limits = Limits::default();
    assert_eq!(
        status_of(
            b"GET /ws HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            &limits
        ),
        400
    );
}

#[test]
fn rejections_have_exact_statuses() {
    let l = Limits::default();
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", &l),
        400
    );
    assert_eq!(status_of(b"\x01GET / HTTP/1.1\r\n\r\n", &l), 400);
    assert_eq!(status_of(b"GET / HTTP/2.0\r\n\r\n", &l), 400);
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", &l),
        400
    );
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &l),
        400
    );
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", &l),
        400
    );
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nContent-Length: \r\n\r\n", &l),
        400
    );
    assert_eq!(
        status_of(
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &l
        ),
        400
    );
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &l),
        501
    );
    assert_eq!(
        status_of(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            &l
        ),
        501
    );
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", &l),
        413
    );
    assert_eq!(
        status_of(
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            &l
        ),
        413
    );
}

#[test]
fn body_at_the_limit_is_accepted() {
    let limits = Limits {
        body_bytes_max: 4,
        ..Limits::default()
    };
    let (req, _) = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", &limits)
        .unwrap()
        .unwrap();
    assert_eq!(req.body, b"abcd");
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", &limits),
        413
    );
}

#[test]
fn header_caps_give_431() {
    let limits = Limits {
        header_bytes_max: 64,
        ..Limits::default()
    };
    // An unfinished head that already fills the cap can never fit.
    let mut long = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    long.resize(64, b'a');
    assert_eq!(status_of(&long, &limits), 431);
    long.truncate(63);
    assert_eq!(
        parse_request(&long, &limits),
        Ok(None),
        "below the cap it may still finish"
    );
    // A complete head larger than the cap.
    let mut complete = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    complete.resize(100, b'a');
    complete.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status_of(&complete, &limits), 431);

    let limits = Limits {
        headers_max: 2,
        ..Limits::default()
    };
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &limits),
        431
    );
    assert!(
        parse_request(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", &limits)
            .unwrap()
            .is_some()
    );

    // More headers than fit on the stack take the heap path.
    let limits = Limits {
        headers_max: 100,
        ..Limits::default()
    };
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..90 {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (req, _) = parse_request(&many, &limits).unwrap().unwrap();
    assert_eq!(req.headers.len(), 90);
    assert_eq!(req.header("h89"), Some("v"));
}

#[test]
fn error_responses() {
    let r = HttpError {
        status: 400,
        message: "bad",
    }
    .response();
    assert_eq!(
        r,
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbad\n"
    );
    let r = HttpError {
        status: 426,
        message: "upgrade",
    }
    .response();
    assert!(r.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(contains(&r, "\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(contains(&r, "\r\nConnection: close\r\n"));
    let r = HttpError {
        status: 503,
        message: "draining",
    }
    .response_with(&[("Retry-After", "5")]);
    assert!(r.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
    assert!(contains(&r, "\r\nRetry-After: 5\r\n"));
    assert!(!contains(&r, "Sec-WebSocket-Version"));
    assert!(r.ends_with(b"\r\n\r\ndraining\n"));
}

#[test]
fn plain_responses() {
    let r = response(200, "application/json", &[("X-A", "1")], b"{}", true);
    assert_eq!(
        r,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n{}"
    );
    let r = response(204, "text/plain", &[], b"ignored", false);
    assert_eq!(r, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    // A value that echoes client input cannot inject a header.
    let r = response(
        404,
        "text/plain",
        &[("X-Echo", "a\r\nSet-Cookie: x")],
        b"",
        false,
    );
    assert!(contains(&r, "\r\nX-Echo: aSet-Cookie: x\r\n"));
}

#[test]
fn reason_phrases() {
    let expected = [
        (101, "Switching Protocols"),
        (200, "OK"),
        (204, "No Content"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (413, "Content Too Large"),
        (426, "Upgrade Required"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (501, "Not Implemented"),
        (503, "Service Unavailable"),
        (799, ""),
    ];
    for (code, phrase) in expected {
        assert_eq!(reason_phrase(code), phrase, "{code}");
    }
}

#[test]
fn valid_upgrade() {
    let req = parse_ok(&upgrade_req(&[]));
    assert!(req.wants_upgrade());
    let up = validate_upgrade(&req).unwrap();
    assert_eq!(
        up,
        Upgrade {
            accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned(),
            protocol: None
        }
    );
    assert_eq!(
        upgrade_response(&up),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    // Token lists and case are accepted as RFC 6455 §4.2.1 requires.
    assert!(validate(&["Connection: keep-alive, Upgrade", "Upgrade: WebSocket"]).is_ok());
    assert!(validate(&["Connection: keep-alive,upgrade"]).is_ok());
}

#[test]
fn upgrade_rejections() {
    let status = |lines: &[&str]| validate(lines).expect_err("must be refused").status;
    assert_eq!(status(&["Host:-"]), 400);
    assert_eq!(status(&["Upgrade:-"]), 400);
    assert_eq!(status(&["Upgrade: h2c"]), 400);
    assert_eq!(status(&["Connection:-"]), 400);
    assert_eq!(status(&["Connection: keep-alive"]), 400);
    assert_eq!(status(&["Connection: upgraded"]), 400);
    assert_eq!(status(&["Sec-WebSocket-Version:-"]), 400);
    assert_eq!(status(&["Sec-WebSocket-Key:-"]), 400);
    assert_eq!(
        status(&["Sec-WebSocket-Key: not base64 at all!!!!!!!"]),
        400
    );
    // 15 and 17 bytes of key.
    assert_eq!(status(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"]), 400);
    assert_eq!(
        status(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="]),
        400
    );
    let two_keys = [format!(
        "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Key: {KEY}"
    )];
    assert_eq!(status(&[two_keys[0].as_str()]), 400);

    let err = validate(&["Sec-WebSocket-Version: 8"]).unwrap_err();
    assert_eq!(err.status, 426);
    assert!(contains(
        &err.response(),
        "\r\nSec-WebSocket-Version: 13\r\n"
    ));

    let mut put = upgrade_req(&[]);
    put.splice(0..3, *b"PUT");
    assert_eq!(validate_upgrade(&parse_ok(&put)).unwrap_err().status, 400);
}

#[test]
fn subprotocol_negotiation() {
    let proto = |lines: &[&str]| validate(lines).unwrap().protocol;
    assert_eq!(proto(&[]), None);
    assert_eq!(
        proto(&["Sec-WebSocket-Protocol: shardcast.v1.json"]),
        Some(Subprotocol::Json)
    );
    assert_eq!(
        proto(&["Sec-WebSocket-Protocol: shardcast.v1.msgpack, shardcast.v1.json"]),
        Some(Subprotocol::Msgpack),
        "the client's order decides"
    );
    assert_eq!(
        proto(&["Sec-WebSocket-Protocol: chat,  shardcast.v1.json "]),
        Some(Subprotocol::Json)
    );
    assert_eq!(
        proto(&["Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: shardcast.v1.msgpack"]),
        Some(Subprotocol::Msgpack),
        "a list split over header lines"
    );
    assert_eq!(
        proto(&["Sec-WebSocket-Protocol: chat, SHARDCAST.V1.JSON"]),
        None,
        "names are case-sensitive"
    );

    let up = validate(&["Sec-WebSocket-Protocol: shardcast.v1.msgpack"]).unwrap();
    assert!(contains(
        &upgrade_response(&up),
        "\r\nSec-WebSocket-Protocol: shardcast.v1.msgpack\r\n"
    ));
    let up = validate(&["Sec-WebSocket-Protocol: chat"]).unwrap();
    assert!(!contains(&upgrade_response(&up), "Sec-WebSocket-Protocol"));
}

#[test]
fn client_key_is_base64_of_nonce() {
    assert_eq!(client_key(*b"the sample nonce"), KEY);
    assert_eq!(client_key([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
}

#[test]
fn client_server_round_trip() {
    let key = client_key([7; 16]);
    let req_bytes = client_request(
        "localhost:9000",
        "/ws?token=a%20b&subscribe=news,chat:7",
        &key,
        &["chat", "shardcast.v1.msgpack", "shardcast.v1.json"],
        &[("Authorization", "Bearer x.y.z")],
    );
    let req = parse_ok(&req_bytes);
    assert_eq!(req.path, "/ws");
    assert_eq!(req.query_param("token").as_deref(), Some("a b"));
    assert_eq!(req.query_param("subscribe").as_deref(), Some("news,chat:7"));
    assert_eq!(req.header("authorization"), Some("Bearer x.y.z"));
    assert_eq!(req.header("host"), Some("localhost:9000"));
    let up = validate_upgrade(&req).unwrap();
    assert_eq!(up.protocol, Some(Subprotocol::Msgpack));

    let mut resp = upgrade_response(&up);
    let head_len = resp.len();
    resp.extend_from_slice(&[0x81, 0x02, b'h', b'i']); // a frame sent right behind the head
    let (hs, n) = verify_response(&resp, &key).unwrap().unwrap();
    assert_eq!(n, head_len);
    assert_eq!(hs.protocol.as_deref(), Some("shardcast.v1.msgpack"));

    let plain = client_request("h", "/ws", &key, &[], &[]);
    let up = validate_upgrade(&parse_ok(&plain)).unwrap();
    assert!(!contains(&plain, "Sec-WebSocket-Protocol"));
    let (hs, _) = verify_response(&upgrade_response(&up), &key)
        .unwrap()
        .unwrap();
    assert_eq!(hs.protocol, None);
}

#[test]
fn verify_response_every_split_point() {
    let key = client_key([1; 16]);
    let up = Upgrade {
        accept: accept_key(&key),
        protocol: Some(Subprotocol::Json),
    };
    let resp = upgrade_response(&up);
    for i in 0..resp.len() {
        assert_eq!(verify_response(&resp[..i], &key), Ok(None), "split at {i}");
    }
    assert!(verify_response(&resp, &key).unwrap().is_some());
}

#[test]
fn verify_response_rejections() {
    let key = client_key([2; 16]);
    let accept = accept_key(&key);
    let check = |head: String| verify_response(head.as_bytes(), &key).unwrap_err();
    assert_eq!(
        check("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_owned()),
        ClientHandshakeError::Status(403)
    );
    assert_eq!(
        check(format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")),
        ClientHandshakeError::BadHeaders("Upgrade")
    );
    assert_eq!(
        check(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")),
        ClientHandshakeError::BadHeaders("Connection")
    );
    assert_eq!(
        check("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_owned()),
        ClientHandshakeError::BadHeaders("Sec-WebSocket-Accept")
    );
    assert_eq!(
        check(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_owned()
        ),
        ClientHandshakeError::BadHeaders("Sec-WebSocket-Accept")
    );
    assert_eq!(
        check("HTP/1.1 101 x\r\n\r\n".to_owned()),
        ClientHandshakeError::Malformed
    );
    let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
    endless.resize(RESPONSE_HEAD_BYTES_MAX, b'a');
    assert_eq!(
        verify_response(&endless, &key),
        Err(ClientHandshakeError::Malformed)
    );
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn query_param_round_trips(key in "[a-z]{1,8}", value in any::<String>()) {
        let head = format!("GET /ws?x=1&{}={} HTTP/1.1\r\nHost: h\r\n\r\n", key, percent_encode(&value));
        let req = parse_ok(head.as_bytes());
        let want = if key == "x" { "1".to_owned() } else { value };
        prop_assert_eq!(req.query_param(&key), Some(want));
    }

    #[test]
    fn parse_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits { header_bytes_max: 256, body_bytes_max: 64, headers_max: 4 };
        if let Ok(Some((req, n))) = parse_request(&bytes, &limits) {
            prop_assert!(n <= bytes.len());
            prop_assert!(req.body.len() <= 64);
            let _ = validate_upgrade(&req);
        }
    }
}

#[test]
fn switching_protocols_response_leaves_connection_to_the_caller() {
    let r = response(
        101,
        "text/plain",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        b"",
        true,
    );
    assert_eq!(
        r,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    );
}

#[test]
fn expect_100_continue_is_recognised_until_the_body_arrives() {
    use shardcast_proto::http::{expects_continue, Limits};
    let l = Limits::default();
    let head = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    assert!(expects_continue(head, &l));
    let mut full = head.to_vec();
    full.extend_from_slice(b"hello");
    assert!(!expects_continue(&full, &l), "the body is here");
    assert!(!expects_continue(&head[..20], &l), "head incomplete");
    let plain = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
    assert!(!expects_continue(plain, &l), "no Expect header");
    let old = b"POST /api/publish HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    assert!(
        !expects_continue(old, &l),
        "HTTP/1.0 clients are never sent 1xx"
    );
}

#[test]
fn the_head_awaiting_continue_carries_what_a_refusal_needs() {
    use shardcast_proto::http::{awaiting_continue, Limits};
    let l = Limits::default();
    let head = b"POST /api/publish?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhe";
    let req = awaiting_continue(head, &l).expect("the body is not all here");
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/api/publish")
    );
    assert_eq!(req.query, "x=1");
    assert_eq!(req.header("authorization"), Some("Bearer k"));
    assert!(req.body.is_empty());
    let mut full = head.to_vec();
    full.extend_from_slice(b"llo");
    assert!(awaiting_continue(&full, &l).is_none());
}
