//! Cluster mode: nodes sharing channels through a real Redis (a `redis-server`
//! started by the test on a free loopback port, without persistence).
//!
//! Without `redis-server` on the PATH these tests say so and pass, unless
//! `SHARDCAST_REQUIRE_REDIS=1` (set by `.ci/run`, which installs Redis).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use shardcast::policy::auth::Namespace;
use shardcast::DriverKind;

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start_on(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("SHARDCAST_REQUIRE_REDIS").as_deref() != Ok("1"),
                    "redis-server is required here (SHARDCAST_REQUIRE_REDIS=1): {e}"
                );
                eprintln!("SKIPPED: redis-server not found ({e}); install it to test cluster mode");
                return None;
            }
        };
        let mut r = Redis { port, child };
        eventually("redis-server accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // What answered must be our server, not another one on the same port.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            matches!(r.child.try_wait(), Ok(None)),
            "redis-server on port {port} exited at start"
        );
        Some(r)
    }

    /// A Redis on a port of its own. Ports come from below the kernel's
    /// ephemeral range (so no engine or client socket is handed one), each used
    /// once per test process: a test that stops its Redis and starts it again on
    /// the same port cannot meet another test's server there.
    fn start() -> Option<Redis> {
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let base = 21_000 + (std::process::id() % 40) as u16 * 250;
        loop {
            let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(i < 250, "no free port for redis-server");
            let port = base + i;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Redis::start_on(port);
            }
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node(d: DriverKind, redis: &Redis, prefix: &str) -> shardcast::Handle {
    let mut cfg = config(d);
    cfg.cluster.redis = Some(format!("127.0.0.1:{}", redis.port));
    cfg.cluster.key_prefix = prefix.into();
    cfg.limits.reconnect_spread_ms = 200;
    cfg.namespaces.insert(
        String::new(),
        Namespace {
            history_size: 100,
            ..Namespace::default()
        },
    );
    start(cfg)
}

fn unique(tag: &str) -> String {
    format!(
        "t{}-{tag}-{}:",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

fn api_publish(addr: std::net::SocketAddr, channel: &str, n: u64) -> Value {
    let body = json!({"channel": channel, "data": {"n": n}}).to_string();
    let (st, resp) = http(addr, "POST", "/api/publish", &[], body.as_bytes());
    assert_eq!(st, 200, "{resp}");
    serde_json::from_str(body_of(&resp)).unwrap()
}

fn two_nodes_share_channels_with_redis_offsets(d: DriverKind) {
    let Some(redis) = Redis::start() else { return };
    let prefix = unique("share");
    let (a, b) = (node(d, &redis, &prefix), node(d, &redis, &prefix));
    // Whichever shard owns it on each node, the same channel is the same stream.
    for ch in [
        channel_owned_by("room", 0, 2),
        channel_owned_by("room", 1, 2),
    ] {
        let mut on_a = ws(a.local_addr(), "/ws");
        let mut on_b = ws(b.local_addr(), "/ws");
        let epoch = subscribe(&mut on_a, 1, &ch)["ok"]["epoch"].clone();
        assert_eq!(
            subscribe(&mut on_b, 1, &ch)["ok"]["epoch"],
            epoch,
            "one epoch, from Redis"
        );
        for n in 1..=6u64 {
            // Alternate the node that takes the publication.
            let via = if n % 2 == 0 {
                a.local_addr()
            } else {
                b.local_addr()
            };
            let r = api_publish(via, &ch, n);
            assert_eq!(r["offset"], n, "Redis assigns offsets in order: {r}");
            assert_eq!(r["epoch"], epoch);
        }
        for c in [&mut on_a, &mut on_b] {
            for n in 1..=6u64 {
                let p = recv_json(c);
                assert_eq!(
                    (p["offset"].as_u64(), p["data"]["n"].as_u64()),
                    (Some(n), Some(n)),
                    "{p}"
                );
                assert_eq!(p["epoch"], epoch);
            }
        }
    }
    // The embedding API publishes through the bus too.
    let ch = "embedded";
    let mut on_b = ws(b.local_addr(), "/ws");
    subscribe(&mut on_b, 1, ch);
    let p = a
        .publish(ch, "[1]".to_string(), Duration::from_secs(5))
        .unwrap();
    assert_eq!(p.offset, 1);
    assert_eq!(recv_json(&mut on_b)["data"], json!([1]));
    a.shutdown();
    b.shutdown();
}

fn recovery_and_history_on_another_node(d: DriverKind) {
    let Some(redis) = Redis::start() else { return };
    let prefix = unique("recover");
    let (a, b) = (node(d, &redis, &prefix), node(d, &redis, &prefix));
    let ch = channel_owned_by("feed", 1, 2);
    let mut first = ws(a.local_addr(), "/ws");
    let epoch = subscribe(&mut first, 1, &ch)["ok"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=3 {
        api_publish(a.local_addr(), &ch, n);
    }
    for n in 1..=3 {
        assert_eq!(recv_json(&mut first)["offset"], n);
    }
    drop(first);
    for n in 4..=7 {
        api_publish(a.local_addr(), &ch, n);
    }
    // Reconnect to the other node, which never saw this channel.
    let mut again = ws(b.local_addr(), "/ws");
    send(
        &mut again,
        &format!(
            r#"{{"id":2,"op":"subscribe","channel":"{ch}","since":{{"epoch":"{epoch}","offset":3}}}}"#
        ),
    );
    let r = recv_json(&mut again);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    assert_eq!(r["ok"]["offset"], 7);
    for n in 4..=7 {
        assert_eq!(
            recv_json(&mut again)["data"]["n"],
            n,
            "missed push {n}, in order"
        );
    }
    api_publish(a.local_addr(), &ch, 8);
    assert_eq!(recv_json(&mut again)["offset"], 8, "then live ones, no gap");
    // history from node B of what node A published
    send(
        &mut again,
        &format!(
            r#"{{"id":3,"op":"history","channel":"{ch}","since":{{"epoch":"{epoch}","offset":5}},"limit":2}}"#
        ),
    );
    let h = recv_json(&mut again);
    let offsets: Vec<u64> = h["ok"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![6, 7], "{h}");
    // A position of another epoch cannot be recovered.
    send(
        &mut again,
        &format!(
            r#"{{"id":4,"op":"history","channel":"{ch}","since":{{"epoch":"other","offset":1}}}}"#
        ),
    );
    assert_eq!(recv_json(&mut again)["error"]["code"], 112);
    a.shutdown();
    b.shutdown();
}

fn losing_redis_closes_subscribers_and_refuses_until_it_is_back(d: DriverKind) {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let port = redis.port;
    let prefix = unique("loss");
    let a = node(d, &redis, &prefix);
    let addr = a.local_addr();
    let mut sub = ws(addr, "/ws");
    subscribe(&mut sub, 1, "live");
    api_publish(addr, "live", 1);
    assert_eq!(recv_json(&mut sub)["offset"], 1);
    redis.stop();
    assert_eq!(
        recv_close_code(&mut sub),
        4001,
        "told to reconnect and recover"
    );
    eventually("ready says the bus is down", || {
        let (st, r) = http(addr, "GET", "/ready", &[], b"");
        st == 503 && r.contains("cluster bus down")
    });
    let (_, m) = http(addr, "GET", "/metrics", &[], b"");
    assert!(m.contains("shardcast_cluster_bus_up 0"), "{m}");
    let body = br#"{"channel":"live","data":2}"#;
    let (st, resp) = http(addr, "POST", "/api/publish", &[], body);
    assert_eq!(st, 503, "publications are refused, not lost: {resp}");
    assert!(body_of(&resp).contains("\"temporary\":true"), "{resp}");
    // Redis comes back (empty: no persistence), and so does the node.
    let Some(_again) = Redis::start_on(port) else {
        return;
    };
    eventually("ready again", || {
        http(addr, "GET", "/ready", &[], b"").0 == 200
    });
    let mut sub = ws(addr, "/ws");
    let r = subscribe(&mut sub, 1, "live");
    assert_eq!(r["ok"]["offset"], 0, "a new epoch: Redis lost the channel");
    api_publish(addr, "live", 3);
    assert_eq!(recv_json(&mut sub)["data"]["n"], 3);
    a.shutdown();
}

fn unreachable_redis_fails_the_start(d: DriverKind) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(d);
    cfg.cluster.redis = Some(format!("127.0.0.1:{port}"));
    let err = shardcast::Engine::start(cfg)
        .err()
        .expect("no engine without its bus");
    assert!(err.to_string().contains("cannot reach Redis"), "{err}");
}

/// A node whose channels keep `history` publications.
fn node_with_history(
    d: DriverKind,
    redis: &Redis,
    prefix: &str,
    history: usize,
) -> shardcast::Handle {
    node_with(d, redis, prefix, history, |_| {})
}

fn node_with(
    d: DriverKind,
    redis: &Redis,
    prefix: &str,
    history: usize,
    tweak: impl FnOnce(&mut shardcast::Config),
) -> shardcast::Handle {
    let mut cfg = config(d);
    tweak(&mut cfg);
    cfg.cluster.redis = Some(format!("127.0.0.1:{}", redis.port));
    cfg.cluster.key_prefix = prefix.into();
    cfg.limits.reconnect_spread_ms = 300;
    cfg.limits.conns_per_shard_max = 1024;
    cfg.namespaces.insert(
        String::new(),
        Namespace {
            history_size: history,
            ..Namespace::default()
        },
    );
    start(cfg)
}

/// JSON data of about `size` bytes carrying `n`.
fn sized(n: u64, size: usize) -> String {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    format!(
        "{head}{}\"}}",
        "x".repeat(size.saturating_sub(head.len() + 2))
    )
}

/// 1,000 publications of 1 KiB and of 16 KiB published on one node, recovered
/// whole on the other, page by page from Redis, then live ones without a gap.
fn whole_history_recovers_from_redis(d: DriverKind) {
    let Some(redis) = Redis::start() else { return };
    let prefix = unique("whole");
    let (a, b) = (
        node_with_history(d, &redis, &prefix, 1000),
        node_with_history(d, &redis, &prefix, 1000),
    );
    for (i, size) in [1024, 16 * 1024].into_iter().enumerate() {
        let ch = channel_owned_by(&format!("whole{i}-"), 1, 2);
        let mut epoch = String::new();
        for n in 1..=1000 {
            let p = a
                .publish(&ch, sized(n, size), Duration::from_secs(10))
                .unwrap();
            assert_eq!(p.offset, n);
            epoch = p.epoch.to_string();
        }
        let mut c = ws(b.local_addr(), "/ws");
        send(
            &mut c,
            &format!(
                r#"{{"id":2,"op":"subscribe","channel":"{ch}","since":{{"epoch":"{epoch}","offset":0}}}}"#
            ),
        );
        let r = recv_json(&mut c);
        assert_eq!(r["ok"]["recovered"], true, "{r}");
        assert_eq!(r["ok"]["offset"], 1000);
        for n in 1..=1000u64 {
            let p = recv_json(&mut c);
            assert_eq!(p["offset"], n, "in order, no gap ({size} B)");
            assert_eq!(p["data"]["n"], n);
            assert!(p["data"]["pad"].as_str().unwrap().len() + 32 >= size);
        }
        a.publish(&ch, sized(1001, size), Duration::from_secs(10))
            .unwrap();
        assert_eq!(recv_json(&mut c)["offset"], 1001, "then live");
        // A history larger than the queue comes in pages from Redis too
        // (history now holds 2..=1001).
        send(
            &mut c,
            &format!(
                r#"{{"id":3,"op":"history","channel":"{ch}","since":{{"epoch":"{epoch}","offset":1}},"limit":1000}}"#
            ),
        );
        let h = recv_json(&mut c);
        let pubs = h["ok"]["publications"].as_array().expect("a page");
        assert_eq!(pubs[0]["offset"], 2);
        let last = pubs.last().unwrap()["offset"].as_u64().unwrap();
        assert!(last < 1000, "one page, not all: {last}");
        assert_eq!(h["ok"]["next"]["offset"], last, "{}", h["ok"]["next"]);
    }
    assert_eq!(b.stats().slow_consumer_closes, 0);
    assert_eq!(b.stats().replays_done, 2);
    a.shutdown();
    b.shutdown();
}

/// In cluster mode too: 1,000 × 1 KiB missed, recovered from Redis while
/// publications go on at 100/s on the other node; then a reader that stops
/// mid-replay is closed (4008) after `stall_timeout_ms`.
fn recovery_from_redis_under_traffic_and_a_stalled_reader(d: DriverKind) {
    let Some(redis) = Redis::start() else { return };
    let prefix = unique("busy");
    let a = Arc::new(node_with_history(d, &redis, &prefix, 2000));
    let b = node_with_history(d, &redis, &prefix, 2000);
    // The stalled reader gets a node of its own with a short stall bound, so a
    // reader that a loaded machine pauses for a second is never mistaken for it.
    let strict = node_with(d, &redis, &prefix, 2000, |c| {
        c.recovery.stall_timeout_ms = 1000
    });
    let ch = channel_owned_by("busy", 0, 2);
    let mut epoch = String::new();
    for n in 1..=1000 {
        epoch = a
            .publish(&ch, sized(n, 1024), Duration::from_secs(10))
            .unwrap()
            .epoch
            .to_string();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last = Arc::new(std::sync::atomic::AtomicU64::new(1000));
    let publisher = {
        let (a, ch, stop, last) = (a.clone(), ch.clone(), stop.clone(), last.clone());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let mut n = 1000;
            while !stop.load(Relaxed) {
                n += 1;
                a.publish(&ch, sized(n, 1024), Duration::from_secs(10))
                    .unwrap();
                last.store(n, Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let since = format!(r#""since":{{"epoch":"{epoch}","offset":0}}"#);
    let mut c = ws(b.local_addr(), "/ws");
    send(
        &mut c,
        &format!(r#"{{"id":2,"op":"subscribe","channel":"{ch}",{since}}}"#),
    );
    let r = recv_json(&mut c);
    assert_eq!(r["ok"]["recovered"], true, "{r}");
    let joined = r["ok"]["offset"].as_u64().unwrap();
    assert!(joined > 1000, "{r}");
    let mut next = 1;
    let mut check = |c: &mut Ws, to: u64| {
        while next <= to {
            let p = recv_json(c);
            assert_eq!(p["offset"], next, "in order, no gap");
            assert_eq!(p["data"]["n"], next);
            next += 1;
        }
    };
    check(&mut c, joined + 30);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    check(&mut c, last.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(b.stats().slow_consumer_closes, 0);
    // A second client asks for all of it and stops reading after the reply.
    let mut stalled = ws(strict.local_addr(), "/ws");
    send(
        &mut stalled,
        &format!(r#"{{"id":3,"op":"subscribe","channel":"{ch}",{since}}}"#),
    );
    assert_eq!(recv_json(&mut stalled)["ok"]["recovered"], true);
    let t = Instant::now();
    eventually("the stalled reader is closed", || {
        strict.stats().slow_consumer_closes == 1
    });
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    eventually("its replay slot is free", || {
        strict.stats().replays_active == 0
    });
    Arc::try_unwrap(a).ok().unwrap().shutdown();
    b.shutdown();
    strict.shutdown();
}

/// What one client saw: every offset in order, and how it recovered.
struct Seen {
    last: u64,
    reconnects: u32,
}

/// One subscriber that follows the live nodes: on a close it waits as told
/// (`reconnect_after_ms`, plus 1.2 s as a slow client would), reconnects to a
/// node that is up and recovers with `since`. Every push must be the next offset.
fn follow(
    nodes: Arc<Mutex<Vec<std::net::SocketAddr>>>,
    first: usize,
    ch: String,
    end: u64,
) -> Result<Seen, String> {
    let mut pos: Option<(String, u64)> = None;
    let mut reconnects = 0;
    let mut pick = first;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let addr = {
            let n = nodes.lock().unwrap();
            n[pick % n.len()]
        };
        pick += 1;
        let Ok((mut c, _)) = tungstenite::connect(format!("ws://{addr}/ws")) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = c.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let since = match &pos {
            Some((e, o)) => format!(r#","since":{{"epoch":"{e}","offset":{o}}}"#),
            None => String::new(),
        };
        let cmd = format!(r#"{{"id":1,"op":"subscribe","channel":"{ch}"{since}}}"#);
        if c.send(tungstenite::Message::text(cmd)).is_err() {
            continue;
        }
        let mut wait_ms = 0;
        loop {
            match c.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if let Some(ok) = v.get("ok") {
                        if pos.is_some() {
                            reconnects += 1;
                            if ok["recovered"] != true {
                                return Err(format!("not recovered: {v}"));
                            }
                        }
                        if pos.is_none() {
                            pos = Some((
                                ok["epoch"].as_str().unwrap().into(),
                                ok["offset"].as_u64().unwrap(),
                            ));
                        }
                        continue;
                    }
                    if v.get("error").is_some() {
                        return Err(format!("error: {v}"));
                    }
                    let (e, o) = pos.as_mut().unwrap();
                    let off = v["offset"].as_u64().unwrap();
                    if off != *o + 1 || v["epoch"] != e.as_str() || v["data"]["n"] != off {
                        return Err(format!("after {e}:{o} got {v}"));
                    }
                    *o = off;
                    if off == end {
                        return Ok(Seen {
                            last: off,
                            reconnects,
                        });
                    }
                }
                Ok(tungstenite::Message::Close(f)) => {
                    let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                    if let Some(ms) = reason.strip_prefix("reconnect_after_ms=") {
                        wait_ms = ms.parse().unwrap_or(0);
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(1200 + wait_ms));
    }
    Err(format!("timed out at {:?}", pos.map(|p| p.1)))
}

/// A rolling restart of two nodes under 1 KiB traffic at 250/s: node A drains
/// and comes back, then node B drains. Every client waits at least 1.2 s before
/// reconnecting, so each recovers 300+ pushes (more than the outbound queue
/// holds), and every one of them must see every offset exactly once, in order.
fn rolling_restart_every_client_recovers(d: DriverKind) {
    const CLIENTS: usize = 200;
    let Some(redis) = Redis::start() else { return };
    let prefix = unique("rolling");
    let a = node_with_history(d, &redis, &prefix, 1000);
    let b = node_with_history(d, &redis, &prefix, 1000);
    let nodes = Arc::new(Mutex::new(vec![a.local_addr(), b.local_addr()]));
    let ch = "rolling".to_string();
    let total: u64 = 1500;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (nodes, ch) = (nodes.clone(), ch.clone());
            std::thread::spawn(move || follow(nodes, i, ch, total))
        })
        .collect();
    eventually("every client subscribed", || {
        a.stats().ws_open + b.stats().ws_open == CLIENTS as u64
    });
    let publisher = {
        let (nodes, ch) = (nodes.clone(), ch.clone());
        std::thread::spawn(move || {
            let mut n = 1;
            while n <= total {
                let addr = {
                    let v = nodes.lock().unwrap();
                    v[n as usize % v.len()]
                };
                let body = json!({"channel": ch, "data": serde_json::from_str::<Value>(&sized(n, 1024)).unwrap()}).to_string();
                let (st, _) = http(addr, "POST", "/api/publish", &[], body.as_bytes());
                if st == 200 {
                    n += 1;
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    // Node A leaves (its clients are told to reconnect), then comes back.
    nodes.lock().unwrap().retain(|&x| x != a.local_addr());
    a.drain(Duration::from_millis(300));
    let a2 = node_with_history(d, &redis, &prefix, 1000);
    nodes.lock().unwrap().push(a2.local_addr());
    std::thread::sleep(Duration::from_millis(2000));
    nodes.lock().unwrap().retain(|&x| x != b.local_addr());
    b.drain(Duration::from_millis(300));
    publisher.join().unwrap();
    let mut recovered = 0;
    for c in clients {
        let seen = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("a client lost pushes: {e}"));
        assert_eq!(seen.last, total);
        recovered += seen.reconnects;
    }
    assert!(
        recovered >= CLIENTS as u32,
        "every client moved at least once: {recovered}"
    );
    assert_eq!(a2.stats().slow_consumer_closes, 0);
    a2.shutdown();
}

/// A node stops while API publishes are in flight (each waits on Redis for its
/// offset). Each one handed to Redis must be answered with its offset before
/// its connection closes: a publisher that saw the connection close unanswered
/// publishes again, and its subscribers get the message twice. So the offsets
/// Redis assigned are exactly the 200s, and every other answer says why.
fn a_stopping_node_answers_every_publish_in_flight(d: DriverKind) {
    const PUBLISHERS: usize = 24;
    let Some(redis) = Redis::start() else { return };
    let prefix = unique("inflight");
    let a = node_with_history(d, &redis, &prefix, 100_000);
    let b = node_with_history(d, &redis, &prefix, 100_000);
    let addr = a.local_addr();
    let body = json!({"channel": "inflight", "data": {"pad": "x".repeat(1024)}}).to_string();
    let body = Arc::new(body.into_bytes());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (body, stop, answered) = (body.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let (mut ok, mut refused, mut unanswered) = (0u64, 0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match try_http(addr, "POST", "/api/publish", &[], &body) {
                        None => break,
                        Some((200, _)) => {
                            ok += 1;
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Some((503, t)) => {
                            assert!(t.contains("shutting down") || t.contains("draining"), "{t}");
                            refused += 1;
                        }
                        Some((0, _)) => unanswered += 1,
                        Some((st, t)) => panic!("unexpected {st}: {t}"),
                    }
                }
                (ok, refused, unanswered)
            })
        })
        .collect();
    eventually("publishes flow", || {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= 200
    });
    a.shutdown();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut refused, mut unanswered) = (0, 0, 0);
    for p in publishers {
        let (o, r, u) = p.join().unwrap();
        (ok, refused, unanswered) = (ok + o, refused + r, unanswered + u);
    }
    // The next offset Redis gives is one past every publication it took.
    let one = json!({"channel": "inflight", "data": {"n": 1}}).to_string();
    let (st, text) = http(b.local_addr(), "POST", "/api/publish", &[], one.as_bytes());
    assert_eq!(st, 200, "{text}");
    let v: Value = serde_json::from_str(body_of(&text)).unwrap();
    let offset = v["offset"].as_u64().unwrap();
    assert_eq!(
        offset,
        ok + 1,
        "published {} but answered 200 to {ok} ({refused} refused, {unanswered} closed unanswered)",
        offset - 1
    );
    b.shutdown();
}

both_drivers!(
    two_nodes_share_channels_with_redis_offsets,
    recovery_and_history_on_another_node,
    losing_redis_closes_subscribers_and_refuses_until_it_is_back,
    unreachable_redis_fails_the_start,
    whole_history_recovers_from_redis,
    recovery_from_redis_under_traffic_and_a_stalled_reader,
    rolling_restart_every_client_recovers,
    a_stopping_node_answers_every_publish_in_flight,
);
