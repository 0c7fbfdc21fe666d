//! Micro-benchmarks of the hot path.
//!
//! - a ring hop between two pinned cores (rtrb, as between shards, beside
//!   crossbeam's ArrayQueue and bounded channel);
//! - fan-out of one packet to 1, 10, 100 and 1000 viewers in one shard,
//!   through real connected `Endpoint`s (rewrite, str0m send path, SRTP),
//!   beside a minimal owned leg (rewrite, header, AES-GCM, shared payload);
//! - SRTP protect of one packet (AEAD-AES-128-GCM, AES-CM-128-HMAC-SHA1-80);
//! - the RTP sequence/timestamp rewrite.
//!
//! `cargo bench -p corecast-bench --bench hot_path`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, Codec, CodecInfo, MediaKind, MediaPacket, Rewriter};
use corecast_webrtc::{Client, Endpoint, EndpointConfig, Output};
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
        wallclock: Instant::now(),
        orientation: None,
        layer: Default::default(),
        audio_level: None,
        dependency: None,
        payload: Arc::from(vec![0x10u8; 1150]),
    }
}

/// Pins the calling thread to a core of the process's start-up set.
/// `get_core_ids` reads the calling thread's own affinity, which a pinned
/// thread (and every thread it spawns) narrows to one core: so the set is
/// read once, before any pinning.
fn pin(core: usize) {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    let cores = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if let Some(id) = cores.get(core) {
        core_affinity::set_for_current(*id);
    }
}

/// One direction of a ring between two threads: what the shards' packet
/// rings need (one producer, one consumer, never blocking).
trait Ring: Send + 'static {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx);
    fn push(tx: &mut Self::Tx, p: MediaPacket) -> bool;
    fn pop(rx: &mut Self::Rx) -> Option<MediaPacket>;
}

/// rtrb's wait-free SPSC ring, as between shards.
struct Rtrb;
impl Ring for Rtrb {
    type Tx = rtrb::Producer<MediaPacket>;
    type Rx = rtrb::Consumer<MediaPacket>;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(capacity)
    }
    fn push(tx: &mut Self::Tx, p: MediaPacket) -> bool {
        tx.push(p).is_ok()
    }
    fn pop(rx: &mut Self::Rx) -> Option<MediaPacket> {
        rx.pop().ok()
    }
}

/// crossbeam's lock-free bounded MPMC queue, shared by both ends.
struct CrossbeamQueue;
impl Ring for CrossbeamQueue {
    type Tx = Arc<crossbeam_queue::ArrayQueue<MediaPacket>>;
    type Rx = Arc<crossbeam_queue::ArrayQueue<MediaPacket>>;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx) {
        let q = Arc::new(crossbeam_queue::ArrayQueue::new(capacity));
        (q.clone(), q)
    }
    fn push(tx: &mut Self::Tx, p: MediaPacket) -> bool {
        tx.push(p).is_ok()
    }
    fn pop(rx: &mut Self::Rx) -> Option<MediaPacket> {
        rx.pop()
    }
}

/// crossbeam's bounded channel, used without blocking.
struct CrossbeamChannel;
impl Ring for CrossbeamChannel {
    type Tx = crossbeam_channel::Sender<MediaPacket>;
    type Rx = crossbeam_channel::Receiver<MediaPacket>;
    fn pair(capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(capacity)
    }
    fn push(tx: &mut Self::Tx, p: MediaPacket) -> bool {
        tx.try_send(p).is_ok()
    }
    fn pop(rx: &mut Self::Rx) -> Option<MediaPacket> {
        rx.try_recv().ok()
    }
}

/// One-way time of a packet through a ring between two pinned cores,
/// measured as half a round trip through a pair of rings: rtrb (what the
/// shards use) against crossbeam's queue and channel, in one run.
fn ring_hop(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring hop between two pinned cores (half round trip)");
    hop::<Rtrb>(&mut group, "rtrb");
    hop::<CrossbeamQueue>(&mut group, "crossbeam ArrayQueue");
    hop::<CrossbeamChannel>(&mut group, "crossbeam channel");
    group.finish();
}

fn hop<R: Ring>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
) {
    let (mut to_echo, mut echo_in) = R::pair(4096);
    let (mut echo_out, mut back) = R::pair(4096);
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(1);
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = R::pop(&mut echo_in) {
                    let _ = R::push(&mut echo_out, p);
                } else {
                    std::hint::spin_loop();
                }
            }
        })
    };
    pin(0);
    let p = packet(1);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let _ = R::push(&mut to_echo, p.clone());
                loop {
                    if let Some(q) = R::pop(&mut back) {
                        std::hint::black_box(q);
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            start.elapsed() / 2
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
}

/// A viewer endpoint connected to a client over an in-memory network.
fn connected_viewer(
    config: &EndpointConfig,
    server: SocketAddr,
    client_addr: SocketAddr,
) -> Endpoint {
    let mut now = Instant::now();
    let (mut client, offer) = Client::viewer(config, now, client_addr).expect("client offer");
    let (mut ep, answer) = Endpoint::viewer(config, now, &offer, &[]).expect("viewer endpoint");
    client.accept_answer(&answer).expect("answer applies");
    for _ in 0..2000 {
        now += Duration::from_millis(1);
        client.handle_timeout(now);
        ep.handle_timeout(now);
        let mut to_server = Vec::new();
        let mut to_client = Vec::new();
        loop {
            match client.poll_output(now) {
                Output::Transmit(t) => to_server.push(t),
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
        loop {
            match ep.poll_output(now) {
                Output::Transmit(t) => to_client.push(t),
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
        for t in to_server {
            let _ = ep.handle_receive(now, t.source, server, &t.contents);
        }
        for t in to_client {
            let _ = client.handle_receive(now, t.source, client_addr, &t.contents);
        }
        if ep.is_connected() && client.is_connected() {
            break;
        }
    }
    assert!(ep.is_connected(), "viewer connects in memory");
    ep.subscribe(MediaKind::Video, Some(ChannelId(1)));
    ep
}

fn fanout(c: &mut Criterion) {
    let server: SocketAddr = "10.0.0.1:9000".parse().unwrap();
    let config = EndpointConfig::new(vec![server]);
    let mut group = c.benchmark_group("fan-out one packet to N viewers in one shard");
    group.sample_size(10);
    for n in [1usize, 10, 100, 1000] {
        let mut viewers: Vec<Endpoint> = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 5000));
                connected_viewer(&config, server, addr)
            })
            .collect();
        let mut seq = 1000u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                let p = packet(seq);
                let now = Instant::now();
                for v in viewers.iter_mut() {
                    if v.handle_media(now, &p) {
                        while let Output::Transmit(_) | Output::Event(_) = v.poll_output(now) {}
                    }
                }
            })
        });
        let mut legs: Vec<MinimalLeg> = (0..n).map(MinimalLeg::new).collect();
        group.bench_with_input(BenchmarkId::new("minimal leg", n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                let p = packet(seq);
                for leg in legs.iter_mut() {
                    leg.send(&p);
                }
            })
        });
    }
    group.finish();
}

/// The least a viewer's egress leg must do per packet if corecast owned it
/// instead of str0m: rewrite, write the RTP header, AEAD-AES-128-GCM with the
/// leg's own key, into a buffer the send batch would take. The payload is
/// the shared one of the packet (no per-viewer copy is kept); what is not
/// here (SR, NACK answers, RTCP) runs per report, not per packet. Beside the
/// str0m path in the same group, it bounds what owning the leg can gain.
struct MinimalLeg {
    rewriter: Rewriter,
    ssrc: u32,
    salt: [u8; 12],
    cipher: Box<dyn str0m::crypto::AeadAes128GcmCipher>,
    out: Vec<u8>,
}

impl MinimalLeg {
    fn new(i: usize) -> MinimalLeg {
        let crypto = str0m::crypto::from_feature_flags();
        let key = [(i % 251) as u8; 16];
        MinimalLeg {
            rewriter: Rewriter::new(90_000, 1000),
            ssrc: 0x1000_0000 + i as u32,
            salt: [(i % 13) as u8; 12],
            cipher: crypto
                .srtp_provider
                .aead_aes_128_gcm()
                .create_cipher(key, true),
            out: Vec::with_capacity(1500),
        }
    }

    fn send(&mut self, p: &MediaPacket) {
        let Some(r) = self
            .rewriter
            .rewrite(p.channel, p.seq, p.rtp_time, p.arrival)
        else {
            return;
        };
        let mut header = [0u8; 12];
        header[0] = 0x80;
        header[1] = 96 | if p.marker { 0x80 } else { 0 };
        header[2..4].copy_from_slice(&(r.seq as u16).to_be_bytes());
        header[4..8].copy_from_slice(&r.rtp_time.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        // RFC 7714 IV: salt XOR (0, 0, ssrc, roc, seq).
        let mut iv = self.salt;
        let roc = ((r.seq >> 16) as u32).to_be_bytes();
        for (k, b) in self.ssrc.to_be_bytes().iter().enumerate() {
            iv[2 + k] ^= b;
        }
        for (k, b) in roc.iter().enumerate() {
            iv[6 + k] ^= b;
        }
        iv[10] ^= header[2];
        iv[11] ^= header[3];
        self.out.clear();
        self.out.extend_from_slice(&header);
        self.out.resize(12 + p.payload.len() + 16, 0);
        self.cipher
            .encrypt(&iv, &header, &p.payload, &mut self.out[12..])
            .expect("encrypts");
        std::hint::black_box(&self.out);
    }
}

fn srtp(c: &mut Criterion) {
    let crypto = str0m::crypto::from_feature_flags();
    let header = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42];
    let payload = vec![0x5au8; 1150];
    let mut out = vec![0u8; 1150 + 16];
    let mut gcm = crypto
        .srtp_provider
        .aead_aes_128_gcm()
        .create_cipher([7; 16], true);
    c.bench_function("srtp protect AEAD-AES-128-GCM (1150 B)", |b| {
        b.iter(|| {
            gcm.encrypt(&[1; 12], &header, &payload, &mut out)
                .expect("encrypts");
            std::hint::black_box(&out);
        })
    });
    let mut cm = crypto
        .srtp_provider
        .aes_128_cm_sha1_80()
        .create_cipher([7; 16], true);
    let hmac = crypto.sha1_hmac_provider;
    let mut ct = vec![0u8; 1150];
    c.bench_function("srtp protect AES-CM-128-HMAC-SHA1-80 (1150 B)", |b| {
        b.iter(|| {
            cm.encrypt(&[1; 16], &payload, &mut ct).expect("encrypts");
            let tag = hmac.sha1_hmac(&[9; 20], &[&header, &ct, &[0, 0, 0, 0]]);
            std::hint::black_box((&ct, tag));
        })
    });
}

/// Session set-up cost on the server side: answering a WHEP offer (on the
/// control thread today) and the full ICE + DTLS handshake in memory.
fn setup(c: &mut Criterion) {
    let server: SocketAddr = "10.0.0.1:9000".parse().unwrap();
    let config = EndpointConfig::new(vec![server]);
    let client_addr: SocketAddr = "10.1.0.1:5000".parse().unwrap();
    let (_, offer) = Client::viewer(&config, Instant::now(), client_addr).expect("offer");
    c.bench_function("setup: answer a WHEP offer (Endpoint::viewer)", |b| {
        b.iter(|| {
            std::hint::black_box(
                Endpoint::viewer(&config, Instant::now(), &offer, &[]).expect("answer"),
            )
        })
    });
    let mut group = c.benchmark_group("setup");
    group.sample_size(20);
    group.bench_function("offer, answer, ICE and DTLS in memory (both sides)", |b| {
        b.iter(|| std::hint::black_box(connected_viewer(&config, server, client_addr)))
    });
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let mut r = Rewriter::new(90_000, 1000);
    let now = Instant::now();
    let mut seq = 0u64;
    c.bench_function("rtp rewrite", |b| {
        b.iter(|| {
            seq += 1;
            std::hint::black_box(r.rewrite(ChannelId(1), seq, seq as u32 * 3000, now));
        })
    });
}

criterion_group!(benches, ring_hop, fanout, srtp, setup, rewrite);
criterion_main!(benches);
