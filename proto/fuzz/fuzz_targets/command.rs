#![no_main]
//! Arbitrary bytes as a control command and as HTTP API bodies: nothing may panic, and any
//! `data` that is accepted must be valid JSON on its own, since it is spliced into pushes.
use libfuzzer_sys::fuzz_target;
use shardcast_proto::command::{parse_broadcast_body, parse_command, parse_publish_body, Op};

/// `data` is valid JSON exactly when it parses (with simd-json, inside `parse_command`) as
/// the data of a minimal publish command, and the raw span found there is `data` again.
fn assert_valid_json(data: &[u8]) {
    let mut doc = br#"{"op":"publish","channel":"c","data":"#.to_vec();
    doc.extend_from_slice(data);
    doc.push(b'}');
    match parse_command(&mut doc) {
        Ok(cmd) => match cmd.op {
            Op::Publish { data: again, .. } => assert_eq!(again.as_ref(), data),
            op => panic!("re-parsed as {op:?}"),
        },
        Err(e) => panic!(
            "accepted data is not valid JSON: {e:?} {:?}",
            String::from_utf8_lossy(data)
        ),
    }
}

/// The message `parse_command` gives when simd-json sees a `data` member that the raw-span
/// scanner missed: a disagreement between the two, which must never happen.
const SCANNER_MISSED_DATA: &str = "malformed field 'data'";

fuzz_target!(|data: &[u8]| {
    match parse_command(&mut data.to_vec()) {
        Ok(cmd) => {
            if let Op::Publish { data: raw, .. } = cmd.op {
                assert_valid_json(&raw);
            }
        }
        Err(e) => assert_ne!(
            e.message,
            SCANNER_MISSED_DATA,
            "{:?}",
            String::from_utf8_lossy(data)
        ),
    }
    match parse_publish_body(&mut data.to_vec()) {
        Ok(req) => assert_valid_json(&req.data),
        Err(e) => assert_ne!(e.message, SCANNER_MISSED_DATA),
    }
    match parse_broadcast_body(&mut data.to_vec()) {
        Ok(req) => {
            assert!(!req.channels.is_empty());
            assert_valid_json(&req.data);
        }
        Err(e) => assert_ne!(e.message, SCANNER_MISSED_DATA),
    }
});
