//! Recovery of a whole history at production sizes, paced by the reader: far
//! more than the outbound queue holds, with publications going on, and readers
//! that stop. Both drivers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shardcast::policy::auth::Namespace;
use shardcast::{Config, DriverKind};

const HISTORY: usize = 1000;

fn history_config(d: DriverKind) -> Config {
    let mut cfg = config(d);
    cfg.namespaces.insert(
        String::new(),
        Namespace {
            history_size: HISTORY,
            ..Namespace::default()
        },
    );
    cfg
}

/// A JSON publication of about `size` bytes carrying `n`.
fn payload(n: u64, size: usize) -> String {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

fn publish_many(h: &shardcast::Handle, ch: &str, from: u64, to: u64, size: usize) -> String {
    let mut epoch = String::new();
    for n in from..=to {
        let p = h
            .publish(ch, payload(n, size), Duration::from_secs(10))
            .unwrap();
        assert_eq!(p.offset, n);
        epoch = p.epoch.to_string();
    }
    epoch
}

fn subscribe_since(ws: &mut Ws, ch: &str, epoch: &str, offset: u64) -> serde_json::Value {
    send(
        ws,
        &format!(
            r#"{{"id":9,"op":"subscribe","channel":"{ch}","since":{{"epoch":"{epoch}","offset":{offset}}}}}"#
        ),
    );
    let r = recv_json(ws);
    assert_eq!(r["id"], 9, "{r}");
    r
}

/// Read pushes `from..=to` and assert each is the next offset with its own data.
fn expect_in_order(ws: &mut Ws, from: u64, to: u64, size: usize) {
    for n in from..=to {
        let p = recv_json(ws);
        assert_eq!(
            p["offset"], n,
            "push {n} expected, in order, no gap: {}",
            p["offset"]
        );
        assert_eq!(p["data"]["n"], n, "push {n} carries its own data");
        assert!(
            p["data"]["pad"].as_str().unwrap().len() + 32 >= size,
            "payload kept whole"
        );
    }
}

fn whole_history_recovers(d: DriverKind, size: usize) {
    let h = start(history_config(d));
    let ch = channel_owned_by("whole", 1, 2);
    let epoch = publish_many(&h, &ch, 1, HISTORY as u64, size);
    let mut c = ws(h.local_addr(), "/ws");
    let r = subscribe_since(&mut c, &ch, &epoch, 0);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    assert_eq!(r["ok"]["offset"], HISTORY as u64);
    expect_in_order(&mut c, 1, HISTORY as u64, size);
    // Then live pushes follow the replay without a gap.
    publish_many(&h, &ch, HISTORY as u64 + 1, HISTORY as u64 + 3, size);
    expect_in_order(&mut c, HISTORY as u64 + 1, HISTORY as u64 + 3, size);
    let s = h.stats();
    assert_eq!(s.slow_consumer_closes, 0);
    assert_eq!(s.replays_done, 1);
    eventually("the replay slot is given back", || {
        h.stats().replays_active == 0
    });
    h.shutdown();
}

fn whole_history_of_1_kib_pushes_recovers(d: DriverKind) {
    whole_history_recovers(d, 1024);
}

fn whole_history_of_16_kib_pushes_recovers(d: DriverKind) {
    whole_history_recovers(d, 16 * 1024);
}

/// 1,000 × 1 KiB missed while publications go on at 100/s: the replay and the
/// live pushes behind it form one sequence.
fn recovery_while_publications_continue(d: DriverKind) {
    let mut cfg = history_config(d);
    // Room for the 1,000 missed plus those published while it recovers.
    cfg.namespaces.get_mut("").unwrap().history_size = 2 * HISTORY;
    let h = Arc::new(start(cfg));
    let ch = channel_owned_by("busy", 0, 2);
    let epoch = publish_many(&h, &ch, 1, HISTORY as u64, 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(HISTORY as u64));
    let publisher = {
        let (h, ch, stop, last) = (h.clone(), ch.clone(), stop.clone(), last.clone());
        std::thread::spawn(move || {
            let mut n = HISTORY as u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                h.publish(&ch, payload(n, 1024), Duration::from_secs(10))
                    .unwrap();
                last.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut c = ws(h.local_addr(), "/ws");
    let r = subscribe_since(&mut c, &ch, &epoch, 0);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    let joined_at = r["ok"]["offset"].as_u64().unwrap();
    assert!(joined_at > HISTORY as u64, "publications went on: {r}");
    expect_in_order(&mut c, 1, joined_at + 50, 1024);
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let end = last.load(Ordering::Relaxed);
    expect_in_order(&mut c, joined_at + 51, end, 1024);
    assert_eq!(h.stats().slow_consumer_closes, 0);
    Arc::try_unwrap(h).ok().unwrap().shutdown();
}

/// A reader that stops mid-replay is a slow consumer after `stall_timeout_ms`
/// (checked every 250 ms), and gives its replay slot back.
fn a_reader_that_stops_mid_replay_is_closed(d: DriverKind) {
    let mut cfg = history_config(d);
    cfg.recovery.stall_timeout_ms = 1000;
    let h = start(cfg);
    let ch = channel_owned_by("stall", 1, 2);
    let epoch = publish_many(&h, &ch, 1, HISTORY as u64, 16 * 1024);
    let mut c = ws(h.local_addr(), "/ws");
    let r = subscribe_since(&mut c, &ch, &epoch, 0);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    expect_in_order(&mut c, 1, 10, 16 * 1024);
    let stopped = Instant::now();
    // 16 MB do not fit in the socket buffers: the server's writes stall.
    eventually("the stalled reader is closed as a slow consumer", || {
        h.stats().slow_consumer_closes == 1
    });
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "closed after {after:?}, stall_timeout_ms is 1000"
    );
    eventually("its replay slot is free", || h.stats().replays_active == 0);
    // What was written before the close still arrives, then the stream ends
    // (with 4008 if the close frame fit, as it does once the reader reads).
    let mut next = 11;
    loop {
        match c.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let p: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(p["offset"], next, "no gap before the close");
                next += 1;
            }
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 4008);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(next < HISTORY as u64, "the replay did not finish: {next}");
    h.shutdown();
}

/// A live channel published faster than a replaying reader takes it: the pushes
/// held behind the replay are bounded by `held_bytes_max`, then 4008.
fn live_pushes_held_behind_a_replay_are_bounded(d: DriverKind) {
    let mut cfg = history_config(d);
    cfg.recovery.held_bytes_max = 64 * 1024;
    let h = start(cfg);
    let ch = channel_owned_by("held", 1, 2);
    let epoch = publish_many(&h, &ch, 1, HISTORY as u64, 16 * 1024);
    let mut c = ws(h.local_addr(), "/ws");
    let r = subscribe_since(&mut c, &ch, &epoch, 0);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    // The client reads nothing more; 5 live 16 KiB pushes pass the 64 KiB bound.
    publish_many(&h, &ch, HISTORY as u64 + 1, HISTORY as u64 + 5, 16 * 1024);
    eventually("the reader that cannot keep up is closed", || {
        h.stats().slow_consumer_closes == 1
    });
    eventually("its replay slot is free", || h.stats().replays_active == 0);
    h.shutdown();
}

/// `history` asked for more than the outbound queue holds: one page, and `next`
/// to continue from, until everything was read; never a 4008.
fn a_large_history_comes_in_pages(d: DriverKind) {
    let h = start(history_config(d));
    let ch = channel_owned_by("pages", 0, 2);
    let epoch = publish_many(&h, &ch, 1, 300, 1024);
    let mut c = ws(h.local_addr(), "/ws");
    let mut got = Vec::new();
    let mut since = format!(r#""since":{{"epoch":"{epoch}","offset":0}},"#);
    let mut pages = 0;
    loop {
        send(
            &mut c,
            &format!(r#"{{"id":5,"op":"history","channel":"{ch}",{since}"limit":300}}"#),
        );
        let r = recv_json(&mut c);
        let pubs = r["ok"]["publications"].as_array().expect("a page");
        assert!(!pubs.is_empty());
        pages += 1;
        for p in pubs {
            got.push(p["offset"].as_u64().unwrap());
            assert_eq!(p["data"]["n"], p["offset"]);
        }
        let Some(next) = r["ok"].get("next") else {
            break;
        };
        assert_eq!(next["epoch"], epoch.as_str());
        assert_eq!(next["offset"].as_u64(), got.last().copied());
        since = format!(r#""since":{},"#, next);
    }
    assert_eq!(got, (1..=300).collect::<Vec<u64>>());
    assert!(pages >= 3, "300 KiB in pages of at most 128 KiB: {pages}");
    // Without `since`, the newest 300 (here: all), first page first.
    send(
        &mut c,
        &format!(r#"{{"id":6,"op":"history","channel":"{ch}","limit":300}}"#),
    );
    let r = recv_json(&mut c);
    assert_eq!(r["ok"]["publications"][0]["offset"], 1);
    assert!(r["ok"].get("next").is_some(), "{}", r["ok"]["next"]);
    assert_eq!(h.stats().slow_consumer_closes, 0);
    h.shutdown();
}

/// More recovering subscribers than replay slots: they wait their turn and all
/// recover everything.
fn recoveries_past_the_slot_cap_wait_their_turn(d: DriverKind) {
    let mut cfg = history_config(d);
    cfg.recovery.replays_per_shard_max = 1;
    let h = start(cfg);
    let ch = channel_owned_by("queue", 1, 2);
    let epoch = publish_many(&h, &ch, 1, 300, 1024);
    let addr = h.local_addr();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (ch, epoch) = (ch.clone(), epoch.clone());
            std::thread::spawn(move || {
                let mut c = ws(addr, "/ws");
                let r = subscribe_since(&mut c, &ch, &epoch, 0);
                assert_eq!(r["ok"]["recovered"], true, "{r}");
                expect_in_order(&mut c, 1, 300, 1024);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(h.stats().replays_done, 8);
    eventually("no replay left waiting", || {
        let s = h.stats();
        s.replays_active == 0 && s.replays_waiting == 0
    });
    h.shutdown();
}

both_drivers!(
    whole_history_of_1_kib_pushes_recovers,
    whole_history_of_16_kib_pushes_recovers,
    recovery_while_publications_continue,
    a_reader_that_stops_mid_replay_is_closed,
    live_pushes_held_behind_a_replay_are_bounded,
    a_large_history_comes_in_pages,
    recoveries_past_the_slot_cap_wait_their_turn,
);
