//! The seeded twins of the libFuzzer targets in `fuzz/` (see
//! docs/testing.md): the same harness functions (`fuzz/harness.rs`) over
//! deterministic inputs (seeds cut to every length, mutations, random
//! bytes), in every CI run.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use corecast_cluster::envelope::HEADER_LEN;
use corecast_cluster::{Cluster, ClusterOutput, PeerRecord, TrackRecord};
use corecast_media::{ChannelId, Codec, CodecInfo, MediaKind};
use corecast_twin::{run, Alphabet};

/// What node 2 of the fuzzed cluster sends node 1 while they meet, share a
/// room entry and a channel: sealed frames, as node 1 receives them (each
/// once).
fn conversation() -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut nodes = [
        Cluster::new(harness::config(1, vec![], start)),
        Cluster::new(harness::config(2, vec![harness::addr(1)], start)),
    ];
    let ch = ChannelId(42);
    let mut to_node1 = Vec::new();
    for step in 0..300u64 {
        let now = start + Duration::from_millis(10 * step);
        match step {
            100 => nodes[0].subscribe(now, ch),
            110 => nodes[1].publish_start(now, ch),
            120 => nodes[1].set_peer(now, record(ch)),
            150..=155 => nodes[1].publish(now, ch, vec![step as u8; 24]),
            170 => nodes[0].request_keyframe(now, ch, None),
            _ => {}
        }
        for n in &mut nodes {
            n.handle_timeout(now);
        }
        // A few hops at each instant.
        for _ in 0..4 {
            let mut moved = Vec::new();
            for n in &mut nodes {
                loop {
                    match n.poll_output() {
                        ClusterOutput::Timeout(_) => break,
                        ClusterOutput::Event(_) => {}
                        ClusterOutput::Transmit(t) => {
                            if t.to == harness::addr(1) {
                                moved.push((0, t.data));
                            } else if t.to == harness::addr(2) {
                                moved.push((1, t.data));
                            }
                        }
                    }
                }
            }
            if moved.is_empty() {
                break;
            }
            for (to, data) in moved {
                let from = harness::addr(2 - to as u32);
                nodes[to].handle_datagram(now, from, &data);
                if to == 0 && !to_node1.contains(&data) {
                    to_node1.push(data);
                }
            }
        }
    }
    to_node1
}

fn record(channel: ChannelId) -> PeerRecord {
    PeerRecord {
        room: "room".into(),
        peer: "p2".into(),
        node: 2,
        session: 2,
        transport: "whip".into(),
        metadata: "{}".into(),
        since_ms: 0,
        refresh: 0,
        tracks: vec![TrackRecord {
            name: "video".into(),
            kind: MediaKind::Video,
            channel: channel.0,
            codecs: vec![CodecInfo::new(Codec::Vp8, 90_000)],
            muted: false,
            layers: 1,
        }],
    }
}

/// The seed corpus of `cluster_port` (and the twin's seeds): twelve frames
/// node 2 sent node 1 in [`conversation`], spread over it. They are stored,
/// so that the twin's inputs are the same in every run: atm0s-sdn's hash maps
/// order its messages differently from run to run. After a change of the
/// presence or atm0s-sdn messages, write them again with
/// `cargo test --release -p corecast-cluster --test hostile_input -- --ignored`.
const CLUSTER_PORT_SEEDS: [&[u8]; 12] = [
    include_bytes!("../fuzz/corpus/cluster_port/frame-00"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-01"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-02"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-03"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-04"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-05"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-06"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-07"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-08"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-09"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-10"),
    include_bytes!("../fuzz/corpus/cluster_port/frame-11"),
];

#[test]
#[ignore = "writes the seed corpus of cluster_port (fuzz/corpus/cluster_port)"]
fn write_cluster_port_seeds() {
    let frames = conversation();
    assert!(frames.len() >= 12, "{} frames", frames.len());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/cluster_port");
    std::fs::create_dir_all(dir).unwrap();
    let stride = frames.len() / 12;
    for (k, frame) in frames.iter().step_by(stride).take(12).enumerate() {
        std::fs::write(format!("{dir}/frame-{k:02}"), frame).unwrap();
    }
}

/// Twin of the fuzz target `cluster_port`. The seeds are real frames from
/// node 2 (valid as they come), and their bodies behind a byte that picks
/// the kind (which the harness seals again).
#[test]
fn cluster_port_twin() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for frame in CLUSTER_PORT_SEEDS {
        assert!(frame.len() >= HEADER_LEN, "a stored seed is not a frame");
        seeds.push(frame.to_vec());
        let presence = frame[3] == 2;
        let mut body = vec![u8::from(presence)];
        body.extend_from_slice(&frame[HEADER_LEN..]);
        seeds.push(body);
    }
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    let mut port = harness::ClusterPort::new(Instant::now());
    let n = run(5, &seeds, Alphabet::Binary, 300, CLUSTER_PORT_INPUTS, |d| {
        port.input(d)
    });
    let stats = port.cluster().stats();
    eprintln!(
        "cluster_port: {n} inputs from {} seeds: {stats:?}",
        seeds.len()
    );
    // The harness seals each input once: many reach the parsers behind the
    // envelope, and nothing any of them says breaks the node.
    let accepted = stats.rx_packets - stats.rejected_garbage - stats.rejected_secret;
    assert!(accepted > n as u64 / 4, "{stats:?}");
}

/// Each cluster_port input runs two datagrams (one HMAC-checked), a timer
/// tick and a drain of atm0s-sdn.
const CLUSTER_PORT_INPUTS: usize = 300_000;

/// Twin of the fuzz target `media_wire`.
#[test]
fn media_wire_twin() {
    // Version 4: flags bit 0 marker, bit 1 orientation in bits 2-3, bit 4
    // a signed µs wallclock offset, bit 5 a layer byte, bit 6 an audio
    // level byte, bit 7 a dependency descriptor (layer, marks, length,
    // bytes).
    let mut opus = vec![4, 1, 0, 0, 0xbb, 0x80, 0];
    opus.extend_from_slice(&7u64.to_be_bytes());
    opus.extend_from_slice(&960u32.to_be_bytes());
    opus.push(64);
    opus.push(37);
    opus.extend_from_slice(&[0xfc, 0xff, 0xfe]);
    let mut h264 = vec![4, 12, 0, 1, 0x5f, 0x90, 3, 0x42, 0xe0, 1];
    h264.extend_from_slice(&u64::MAX.to_be_bytes());
    h264.extend_from_slice(&u32::MAX.to_be_bytes());
    h264.push(1 | 2 | (1 << 2));
    h264.extend_from_slice(&[0x7c, 0x85, 0x88, 0x84]);
    let mut vp8 = vec![4, 10, 0, 1, 0x5f, 0x90, 0];
    vp8.extend_from_slice(&65_536u64.to_be_bytes());
    vp8.extend_from_slice(&90_000u32.to_be_bytes());
    vp8.push(1 | 2 | (3 << 2) | 16 | 32 | 128);
    vp8.extend_from_slice(&(-20_000i32).to_be_bytes());
    vp8.push(0x21);
    // Layer 1/2, frame start and end, switching up to layer 2; a
    // three-byte descriptor.
    vp8.extend_from_slice(&[0x12, 2 | 4 | 8 | (2 << 4), 3, 0xc0, 0x01, 0x02]);
    vp8.extend_from_slice(&[0x10, 0x50, 0x42]);
    let now = Instant::now();
    assert!(
        [&opus, &h264, &vp8]
            .iter()
            .all(|s| harness::media_wire(now, s)),
        "the seeds follow the wire format of transports/media/src/wire.rs"
    );
    let mut decoded = 0;
    let n = run(
        6,
        &[&opus, &h264, &vp8],
        Alphabet::Binary,
        64,
        300_000,
        |d| {
            decoded += usize::from(harness::media_wire(now, d));
        },
    );
    eprintln!("media_wire: {n} inputs, {decoded} decoded");
    assert!(decoded > 10_000, "{decoded} decoded");
}
