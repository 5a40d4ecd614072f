#![no_main]
//! Arbitrary bytes as an HTTP request and as a handshake response: nothing may panic,
//! and whatever the server accepts, its own response must satisfy a client.
use libfuzzer_sys::fuzz_target;
use shardcast_proto::handshake::{upgrade_response, validate_upgrade, verify_response};
use shardcast_proto::http::{parse_request, Limits};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    // Small caps so that the 431/413 paths are reached by short inputs.
    let limits = Limits {
        header_bytes_max: 1024,
        body_bytes_max: 256,
        headers_max: 16,
    };
    match parse_request(data, &limits) {
        Ok(Some((req, n))) => {
            assert!(n <= data.len());
            assert!(req.body.len() <= limits.body_bytes_max);
            // Whatever follows the request does not change how it parses.
            assert_eq!(
                parse_request(&data[..n], &limits),
                Ok(Some((req.clone(), n)))
            );
            let _ = req.query_param("token");
            let _ = req.keep_alive();
            match validate_upgrade(&req) {
                Ok(up) => {
                    let key = req
                        .header("sec-websocket-key")
                        .expect("validated upgrade has a key");
                    let resp = upgrade_response(&up);
                    let (hs, used) = verify_response(&resp, key)
                        .expect("own response verifies")
                        .expect("complete");
                    assert_eq!(used, resp.len());
                    assert_eq!(hs.protocol.as_deref(), up.protocol.map(|p| p.as_str()));
                }
                Err(e) => assert!(!e.response().is_empty()),
            }
        }
        Ok(None) => assert!(data.len() < limits.header_bytes_max + limits.body_bytes_max + 1),
        Err(e) => assert!(e.response().starts_with(b"HTTP/1.1 ")),
    }
    if let Ok(Some((_, n))) = verify_response(data, KEY) {
        assert!(n <= data.len());
    }
});
