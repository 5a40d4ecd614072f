#![no_main]
//! Arbitrary bytes as a MessagePack command from a client: nothing may panic, and
//! whatever is accepted must be valid JSON that goes back to MessagePack and to the
//! very same JSON again (the two transcoders agree).
use libfuzzer_sys::fuzz_target;
use shardcast_proto::msgpack::{json_to_msgpack, msgpack_to_json};

fuzz_target!(|data: &[u8]| {
    let mut json = Vec::new();
    if msgpack_to_json(data, &mut json).is_err() {
        return;
    }
    let mut mp = Vec::new();
    json_to_msgpack(&json, &mut mp).expect("accepted MessagePack yields valid JSON");
    let mut again = Vec::new();
    msgpack_to_json(&mp, &mut again).expect("our own MessagePack reads back");
    assert_eq!(json, again);
});
