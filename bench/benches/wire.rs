//! Wire hot paths: unmasking (SIMD dispatch against the byte-at-a-time reference) and
//! frame decoding of many small client frames, as a busy connection delivers them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use shardcast_proto::frame::encode_frame;
use shardcast_proto::mask::{apply_mask, apply_mask_scalar};
use shardcast_proto::{Decoder, DecoderConfig, Message, OpCode, Role};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [16usize, 1024, 64 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        // One byte in, so the SIMD path also pays for an unaligned start, as real
        // payloads behind a 6- or 8-byte header do.
        let mut storage = vec![0x5Au8; size + 1];
        group.bench_function(BenchmarkId::new("simd", size), |b| {
            b.iter(|| apply_mask(black_box(&mut storage[1..]), black_box(KEY), 0));
        });
        group.bench_function(BenchmarkId::new("scalar", size), |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut storage[1..]), black_box(KEY), 0));
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    const FRAMES: usize = 1000;
    let cfg = DecoderConfig {
        role: Role::Server,
        message_bytes_max: 64 * 1024,
    };
    let mut group = c.benchmark_group("decode");
    for payload_len in [16usize, 128] {
        let payload = vec![b'a'; payload_len];
        let mut wire = Vec::new();
        for _ in 0..FRAMES {
            encode_frame(&mut wire, OpCode::Text, true, &payload, Some(KEY));
        }
        group.throughput(Throughput::Elements(FRAMES as u64));
        let id = BenchmarkId::new("masked_text_frames", payload_len);
        group.bench_function(id, |b| {
            b.iter_batched_ref(
                // Decoding unmasks in place, so every run needs fresh masked bytes;
                // the copy is setup and is not timed.
                || wire.clone(),
                |input| {
                    let mut decoder = Decoder::default();
                    let mut bytes = 0usize;
                    decoder
                        .feed(&cfg, input, |m| {
                            if let Message::Text(t) = m {
                                bytes += t.len();
                            }
                        })
                        .expect("well-formed frames");
                    black_box(bytes)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(g, unmask, decode);
criterion_main!(g);
