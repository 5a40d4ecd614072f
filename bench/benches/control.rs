//! Control-plane costs: command parsing, push encoding, and the upgrade handshake.
//! Each benchmark handles one item per iteration, so criterion's time is ns per item.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardcast_proto::command::parse_command;
use shardcast_proto::handshake::{upgrade_response, validate_upgrade};
use shardcast_proto::http::{parse_request, Limits};
use shardcast_proto::reply;

fn command_parse(c: &mut Criterion) {
    let subscribe = br#"{"id":17,"op":"subscribe","channel":"news:sports","since":{"epoch":"a1b2c3","offset":41}}"#.to_vec();
    // About 100 bytes of data, as a small chat message would carry.
    let publish = br#"{"id":18,"op":"publish","channel":"chat:7","data":{"user":"u123","text":"hello there, how is everyone doing today?","ts":1700000000123}}"#.to_vec();
    let mut g = c.benchmark_group("command_parse");
    g.throughput(Throughput::Elements(1));
    for (name, input) in [("subscribe", &subscribe), ("publish_100B", &publish)] {
        assert!(parse_command(&mut input.clone()).is_ok());
        // The parser clobbers its buffer, so each iteration gets a fresh copy (set up untimed).
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || input.clone(),
                |buf| parse_command(black_box(buf)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn push_encode(c: &mut Criterion) {
    let data = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1024 - 11));
    assert_eq!(data.len(), 1024);
    let mut g = c.benchmark_group("push_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_1KiB", |b| {
        b.iter(|| {
            reply::push(
                black_box("news:sports"),
                black_box(123_456),
                black_box("a1b2c3"),
                black_box(data.as_bytes()),
            )
        })
    });
    g.bench_function("json_1KiB", |b| {
        b.iter(|| {
            reply::push_json(
                black_box("news:sports"),
                black_box(123_456),
                black_box("a1b2c3"),
                black_box(data.as_bytes()),
            )
        })
    });
    g.finish();
}

fn upgrade(c: &mut Criterion) {
    // Roughly what a browser sends.
    let req = b"GET /ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MTIzIn0.sig&subscribe=news,chat:7 HTTP/1.1\r\n\
Host: example.com:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Protocol: shardcast.v1.json\r\n\
Sec-WebSocket-Extensions: permessage-deflate\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Connection: keep-alive, Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
Upgrade: websocket\r\n\r\n";
    let limits = Limits::default();
    let mut g = c.benchmark_group("upgrade");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let (req, _) = parse_request(black_box(req), &limits).unwrap().unwrap();
            validate_upgrade(&req).unwrap()
        })
    });
    g.bench_function("parse_validate_respond", |b| {
        b.iter(|| {
            let (req, _) = parse_request(black_box(req), &limits).unwrap().unwrap();
            upgrade_response(&validate_upgrade(&req).unwrap())
        })
    });
    g.finish();
}

criterion_group!(g, command_parse, push_encode, upgrade);
criterion_main!(g);
