#![no_main]
//! Arbitrary bytes as a `Last-Event-ID` (untrusted, from the request) and as JSON
//! turned into an event: nothing may panic, a parsed id round-trips, and an event
//! never holds a line break that is not one of its own field separators.
use libfuzzer_sys::fuzz_target;
use shardcast_proto::prepared::payload_of;
use shardcast_proto::sse::{parse_event_id, write_event};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(id) = parse_event_id(s) {
            let again = format!("{}:{}:{}", id.channel, id.epoch, id.offset);
            assert_eq!(parse_event_id(&again), Some(id));
        }
    }
    let _ = payload_of(data);
    let mut out = Vec::new();
    write_event(&mut out, data);
    assert!(out.ends_with(b"\n\n"));
    // Every line is a field (or the blank line that ends the event): no CR survives.
    assert!(!out.contains(&b'\r'));
    let body = &out[..out.len() - 1];
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with(b"data: ") || line.starts_with(b"id: ") || line.starts_with(b"event: "),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
});
