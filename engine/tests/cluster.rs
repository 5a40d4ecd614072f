//! Cluster mode: nodes sharing channels through a real Redis (a `redis-server`
//! started by the test on a free loopback port, without persistence).
//!
//! Without `redis-server` on the PATH these tests say so and pass, unless
//! `SHARDCAST_REQUIRE_REDIS=1` (set by `.ci/run`, which installs Redis).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use shardcast::auth::Namespace;
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
        let r = Redis { port, child };
        eventually("redis-server accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(r)
    }

    fn start() -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
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

both_drivers!(
    two_nodes_share_channels_with_redis_offsets,
    recovery_and_history_on_another_node,
    losing_redis_closes_subscribers_and_refuses_until_it_is_back,
    unreachable_redis_fails_the_start,
);
