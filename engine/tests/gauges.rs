//! Gauges that operators alert on must add up: what is queued is counted when it
//! is queued and uncounted when it is written, control frames included.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use shardcast::DriverKind;
use shardcast_proto::frame::OpCode;

fn pongs_waiting_for_a_reader_count_as_queued_bytes(d: DriverKind) {
    let h = start(config(d));
    let mut c = Raw::connect(h.local_addr());
    // Ping without reading: 1,500 pongs (150 KiB) fit the control budget.
    let mut batch = Vec::new();
    for _ in 0..1500 {
        shardcast_proto::frame::encode_frame(
            &mut batch,
            OpCode::Ping,
            true,
            &[7u8; 100],
            Some([1, 2, 3, 4]),
        );
    }
    c.s.write_all(&batch).unwrap();
    eventually("pongs the client has not read are counted", || {
        h.stats().queued_bytes > 0
    });
    // Once it reads them all, the gauge is back at zero (not below it).
    c.pongs(1500);
    eventually("written pongs are uncounted", || {
        h.stats().queued_bytes == 0
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.stats().queued_bytes, 0);
    h.shutdown();
}

both_drivers!(pongs_waiting_for_a_reader_count_as_queued_bytes);
