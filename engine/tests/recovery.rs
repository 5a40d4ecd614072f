//! Recovery after a reconnect, history and presence, on both drivers.

mod common;

use std::time::Duration;

use common::*;
use shardcast::policy::auth::Namespace;
use shardcast::DriverKind;

fn start_with_history(d: DriverKind) -> shardcast::Handle {
    let mut cfg = config(d);
    let history = Namespace {
        history_size: 100,
        ..Namespace::default()
    };
    cfg.namespaces.insert(String::new(), history);
    let presence = Namespace {
        presence: true,
        ..Namespace::default()
    };
    cfg.namespaces.insert("room".into(), presence);
    start(cfg)
}

fn publish(h: &shardcast::Handle, channel: &str, n: u64) {
    h.publish(channel, format!("{{\"n\":{n}}}"), Duration::from_secs(5))
        .unwrap();
}

fn reconnect_recovers_exactly_what_was_missed(d: DriverKind) {
    let h = start_with_history(d);
    let addr = h.local_addr();
    // One channel per owner shard, so recovery crosses shards whichever shard we land on.
    for ch in [
        channel_owned_by("feed", 0, 2),
        channel_owned_by("feed", 1, 2),
    ] {
        let mut first = ws(addr, "/ws");
        let r = subscribe(&mut first, 1, &ch);
        let epoch = r["ok"]["epoch"].as_str().unwrap().to_string();
        for n in 1..=3 {
            publish(&h, &ch, n);
        }
        for n in 1..=3 {
            assert_eq!(recv_json(&mut first)["offset"], n);
        }
        drop(first);
        for n in 4..=7 {
            publish(&h, &ch, n);
        }
        let mut again = ws(addr, "/ws");
        send(
            &mut again,
            &format!(
                r#"{{"id":2,"op":"subscribe","channel":"{ch}","since":{{"epoch":"{epoch}","offset":3}}}}"#
            ),
        );
        let r = recv_json(&mut again);
        assert_eq!(r["ok"]["recovered"], true, "{r}");
        assert_eq!(r["ok"]["offset"], 7);
        publish(&h, &ch, 8);
        for n in 4..=8 {
            let p = recv_json(&mut again);
            assert_eq!(
                (p["offset"].as_u64(), p["data"]["n"].as_u64()),
                (Some(n), Some(n)),
                "{p}"
            );
        }
        // Up to date: nothing to replay. Unknown epoch: recovered false, live only.
        let mut current = ws(addr, "/ws");
        send(
            &mut current,
            &format!(
                r#"{{"id":3,"op":"subscribe","channel":"{ch}","since":{{"epoch":"{epoch}","offset":8}}}}"#
            ),
        );
        let r = recv_json(&mut current);
        assert_eq!(
            (r["ok"]["recovered"].as_bool(), r["ok"]["offset"].as_u64()),
            (Some(true), Some(8))
        );
        let mut stale = ws(addr, "/ws");
        send(
            &mut stale,
            &format!(
                r#"{{"id":4,"op":"subscribe","channel":"{ch}","since":{{"epoch":"gone","offset":2}}}}"#
            ),
        );
        let r = recv_json(&mut stale);
        assert_eq!(r["ok"]["recovered"], false, "{r}");
        publish(&h, &ch, 9);
        assert_eq!(recv_json(&mut current)["offset"], 9);
        assert_eq!(
            recv_json(&mut stale)["offset"],
            9,
            "a stale position gets live pushes, no replay"
        );
    }
    h.shutdown();
}

fn history_pages_and_unrecoverable_positions(d: DriverKind) {
    let h = start_with_history(d);
    let mut c = ws(h.local_addr(), "/ws");
    for n in 1..=5 {
        publish(&h, "log", n);
    }
    send(
        &mut c,
        r#"{"id":1,"op":"history","channel":"log","limit":2}"#,
    );
    let r = recv_json(&mut c);
    let offsets: Vec<u64> = r["ok"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![4, 5], "{r}");
    assert_eq!(
        r["ok"]["publications"][1]["data"],
        serde_json::json!({"n":5})
    );
    assert_eq!(r["ok"]["offset"], 5);
    let epoch = r["ok"]["epoch"].as_str().unwrap().to_string();
    send(
        &mut c,
        &format!(
            r#"{{"id":2,"op":"history","channel":"log","since":{{"epoch":"{epoch}","offset":3}}}}"#
        ),
    );
    let r = recv_json(&mut c);
    assert_eq!(r["ok"]["publications"].as_array().unwrap().len(), 2, "{r}");
    send(
        &mut c,
        r#"{"id":3,"op":"history","channel":"log","since":{"epoch":"nope","offset":1}}"#,
    );
    assert_eq!(recv_json(&mut c)["error"]["code"], 112);
    h.shutdown();
}

fn presence_lists_members_and_pushes_join_leave(d: DriverKind) {
    let h = start_with_history(d);
    let addr = h.local_addr();
    let mut a = ws(addr, "/ws");
    subscribe(&mut a, 1, "room:1");
    let own_join = recv_json(&mut a);
    assert!(own_join["join"]["conn"].is_string(), "{own_join}");
    send(&mut a, r#"{"id":2,"op":"presence","channel":"room:1"}"#);
    let r = recv_json(&mut a);
    assert_eq!(r["ok"]["members"].as_array().unwrap().len(), 1, "{r}");
    let mut b = ws(addr, "/ws");
    subscribe(&mut b, 1, "room:1");
    let join = recv_json(&mut a);
    assert_eq!(join["channel"], "room:1");
    let b_conn = join["join"]["conn"].as_str().unwrap().to_string();
    drop(b);
    let leave = recv_json(&mut a);
    assert_eq!(leave["leave"]["conn"], b_conn.as_str(), "{leave}");
    send(&mut a, r#"{"id":3,"op":"presence","channel":"nopresence"}"#);
    assert_eq!(recv_json(&mut a)["error"]["code"], 103);
    h.shutdown();
}

both_drivers!(
    reconnect_recovers_exactly_what_was_missed,
    history_pages_and_unrecoverable_positions,
    presence_lists_members_and_pushes_join_leave,
);
