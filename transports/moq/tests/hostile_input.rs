//! The seeded twins of the libFuzzer targets in `fuzz/` (see
//! docs/testing.md): the same harness functions, over deterministic inputs
//! (seeds cut to every length, mutations, random bytes), in every CI run.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use corecast_moq::quic::{pinned_client_config, ConnKey, QuicConn};
use corecast_twin::{run, Alphabet};

/// A real client's first datagrams: its Initial (with the TLS ClientHello)
/// and what it sends after a retransmission timeout.
fn client_datagrams() -> Vec<Vec<u8>> {
    let fingerprint = "00".repeat(32);
    let config = pinned_client_config(&fingerprint, corecast_moq::ALPNS).unwrap();
    let local: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let server: SocketAddr = "127.0.0.1:4443".parse().unwrap();
    let now = Instant::now();
    let key = ConnKey { shard: 0, key: 1 };
    let mut c = QuicConn::connect(now, config, key, local, server, "localhost").unwrap();
    let mut out = Vec::new();
    while let Some(t) = c.poll_transmit(now) {
        out.push(t.contents);
    }
    out
}

#[test]
fn datagram_twin() {
    let mut seeds = client_datagrams();
    assert!(!seeds.is_empty());
    seeds.push(vec![0x40, 1, 0, 0, 0, 2, 9, 9, 9, 0, 0, 0]);
    seeds.push(vec![0xe0, 0, 0, 0, 1, 8, 1, 0, 0, 0, 2, 9, 9, 9, 0]);
    // Version negotiation bait: an Initial of an unknown version.
    seeds.push(
        [
            vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8],
            vec![7; 8],
            vec![0; 1186],
        ]
        .concat(),
    );
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut accepted = 0;
    let n = run(0x6d6f_7164, &seeds, Alphabet::Binary, 1500, 10_000, |d| {
        accepted += usize::from(harness::datagram(d));
    });
    eprintln!("datagram: {n} inputs, {accepted} made a connection");
    assert_eq!(n, 10_000);
    // The real Initial, whole, makes a connection (and so do its copies).
    assert!(accepted >= 1, "{accepted}");
}

#[test]
fn frames_twin() {
    // A VP8 keyframe and delta frame, an H.264 STAP-A and FU-A, an Opus packet.
    let seeds: &[&[u8]] = &[
        &[5, 0x80, 0x10, 0x10, 1, 2, 3, 4, 0x84, 0x10, 0x11, 5, 6],
        &[
            6, 0x81, 0x18, 0x65, 1, 2, 3, 4, 4, 0x01, 0x7c, 0x85, 9, 9, 4, 0x81, 0x7c, 0x45, 8, 8,
        ],
        &[3, 0x85, 0xfc, 1, 2],
    ];
    let mut made = 0;
    let n = run(0x6672_6d73, seeds, Alphabet::Binary, 600, 200_000, |d| {
        made += harness::frames(d);
    });
    eprintln!("frames: {n} inputs, {made} frames assembled");
    assert_eq!(n, 200_000);
    assert!(made > 10_000, "{made}");
}

#[test]
fn webtransport_twin() {
    let mut connect = BytesMut::new();
    web_transport_proto::ConnectRequest::new(
        "https://localhost:4443/?token=t"
            .parse::<url::Url>()
            .unwrap(),
    )
    .with_protocols(["moq-lite-05".to_string(), "moqt-17".to_string()])
    .encode(&mut connect)
    .unwrap();
    let seeds: &[&[u8]] = &[
        &connect,
        &[0x40, 0x54, 0x00, 1, 2, 3],
        &[0x40, 0x41, 0x80, 0, 0, 4],
        &[0x00, 0x04, 0x02, 0x01, 0x00],
        &[0xc0, 0, 0, 0, 0, 0, 0, 0, 9],
    ];
    let mut parsed = 0;
    let n = run(0x7774_6872, seeds, Alphabet::Binary, 400, 200_000, |d| {
        parsed += usize::from(harness::webtransport(d));
    });
    eprintln!("webtransport: {n} inputs, {parsed} parsed as CONNECT");
    assert_eq!(n, 200_000);
    assert!(parsed >= 1, "the real request parses");
}
