//! Micro-benchmarks of the hot path: a ring hop between two threads, fan-out
//! of one packet to many viewers in one shard, and sequence rewriting.

use std::sync::Arc;
use std::time::Instant;

use corecast_media::{ChannelId, Codec, CodecInfo, MediaKind, MediaPacket, Rewriter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn packet(seq: u64) -> MediaPacket {
    MediaPacket {
        channel: ChannelId(1),
        kind: MediaKind::Video,
        codec: CodecInfo::new(Codec::Vp8, 90_000),
        seq,
        rtp_time: seq as u32 * 3000,
        marker: false,
        arrival: Instant::now(),
        payload: Arc::from(vec![0u8; 1150]),
    }
}

fn ring_hop(c: &mut Criterion) {
    let (mut tx, mut rx) = rtrb::RingBuffer::<MediaPacket>::new(4096);
    let p = packet(1);
    c.bench_function("ring push+pop (same thread)", |b| {
        b.iter(|| {
            let _ = tx.push(p.clone());
            std::hint::black_box(rx.pop().ok());
        })
    });
}

fn rewrite(c: &mut Criterion) {
    let mut r = Rewriter::new(90_000);
    let now = Instant::now();
    let mut seq = 0u64;
    c.bench_function("rtp rewrite", |b| {
        b.iter(|| {
            seq += 1;
            std::hint::black_box(r.rewrite(ChannelId(1), seq, seq as u32 * 3000, now));
        })
    });
}

fn fanout_clone(c: &mut Criterion) {
    // The per-subscriber cost that is ours (not str0m's): sharing the payload.
    let mut g = c.benchmark_group("fanout share payload");
    for n in [1usize, 10, 100, 1000] {
        let p = packet(1);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                for _ in 0..n {
                    std::hint::black_box(p.payload.clone());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ring_hop, rewrite, fanout_clone);
criterion_main!(benches);
