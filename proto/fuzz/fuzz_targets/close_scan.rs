//! Arbitrary bytes into the close watch of a closing connection, cut into chunks.
//!
//! Input layout: bytes 0 and 1 are two chunk sizes used in turn (0 means "all
//! that is left"), the rest is the byte stream. Besides "never panics", it
//! checks that the outcome does not depend on how the stream was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast_proto::close_scan::{CloseScan, Scan};

fn scan(data: &[u8], a: usize, b: usize) -> Scan {
    let mut s = CloseScan::default();
    let mut rest = data;
    let mut turn = 0;
    while !rest.is_empty() {
        let want = if turn % 2 == 0 { a } else { b };
        let n = if want == 0 { rest.len() } else { want.min(rest.len()) };
        let r = s.feed(&rest[..n]);
        if r != Scan::More {
            return r;
        }
        rest = &rest[n..];
        turn += 1;
    }
    Scan::More
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (a, b) = (usize::from(input[0]), usize::from(input[1]));
    let data = &input[2..];
    let whole = scan(data, 0, 0);
    assert_eq!(scan(data, a, b), whole, "depends on the cut");
    assert_eq!(scan(data, 1, 1), whole, "depends on the cut");
});
