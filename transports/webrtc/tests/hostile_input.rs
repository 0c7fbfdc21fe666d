//! Network input never panics: the parsers and the endpoint take random,
//! truncated and mutated input and return errors. The `*_twin` tests are the
//! seeded twins of the libFuzzer targets in `fuzz/` (see docs/testing.md):
//! they call the same harness functions (`fuzz/harness.rs`) over
//! deterministic inputs in every CI run; the fuzzers are for longer,
//! coverage-guided runs.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use corecast_twin::{run, Alphabet, Inputs};
use corecast_webrtc::{Client, Endpoint, EndpointConfig, PublisherInfo};

/// Offers cost an SDP parse and up to two endpoints each.
const OFFER_INPUTS: usize = 15_000;

fn binding_request(username: &str) -> Vec<u8> {
    let mut attrs = vec![0x00, 0x06];
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attrs);
    m
}

/// Twin of the fuzz target `stun_ufrag`.
#[test]
fn stun_ufrag_twin() {
    let request = binding_request("server:client");
    let mut long = binding_request("a-longer-server-ufrag:and-its-client");
    long.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]);
    let dtls = [
        22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 1, 0, 0, 0x04,
    ];
    let rtp = [0x80, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xaa, 0xbb];
    let seeds: &[&[u8]] = &[&request, &long, &dtls, &rtp];
    let mut found = 0;
    run(1, seeds, Alphabet::Binary, 200, 300_000, |d| {
        found += usize::from(harness::stun_ufrag(d));
    });
    eprintln!("stun_ufrag: 300000 inputs, {found} ufrags");
    assert!(found > 10_000, "{found} ufrags");
}

/// Twin of the fuzz target `sdpfrag`.
#[test]
fn sdpfrag_twin() {
    let seeds: &[&[u8]] = &[
        b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\na=end-of-candidates\r\n",
        include_bytes!("../fuzz/corpus/sdpfrag/trickle"),
        b"a=ice-ufrag:x\na=ice-pwd:y\n",
        b"a=end-of-candidates\r\n",
    ];
    let mut parsed = 0;
    run(2, seeds, Alphabet::Text, 300, 300_000, |d| {
        parsed += usize::from(harness::sdpfrag(d));
    });
    eprintln!("sdpfrag: 300000 inputs, {parsed} parsed");
    assert!(parsed > 10_000, "{parsed} parsed");
}

/// The seed corpus of `offer` (and the twin's seeds): a publisher's and a
/// viewer's offer from [`Client`]. They are stored, so that the twin's inputs
/// are the same in every run (each offer has fresh ICE credentials, SSRCs and
/// a fresh certificate fingerprint). After a change of what the client
/// offers, write them again with
/// `cargo test --release -p corecast-webrtc --test hostile_input -- --ignored`.
const OFFER_SEEDS: [&[u8]; 2] = [
    include_bytes!("../fuzz/corpus/offer/publisher"),
    include_bytes!("../fuzz/corpus/offer/viewer"),
];

#[test]
#[ignore = "writes the seed corpus of offer (fuzz/corpus/offer)"]
fn write_offer_seeds() {
    let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
    let now = Instant::now();
    let (_, offer) = Client::publisher(&config, now, "127.0.0.1:5000".parse().unwrap()).unwrap();
    let (_, view) = Client::viewer(&config, now, "127.0.0.1:5001".parse().unwrap()).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/offer");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/publisher"), offer).unwrap();
    std::fs::write(format!("{dir}/viewer"), view).unwrap();
}

/// Twin of the fuzz target `offer`: fewer inputs, as each builds endpoints.
#[test]
fn offer_twin() {
    let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
    let now = Instant::now();
    for seed in OFFER_SEEDS {
        assert_eq!(
            harness::offer(&config, now, seed),
            1,
            "a stored offer is refused"
        );
    }
    let mut accepted = 0;
    run(3, &OFFER_SEEDS, Alphabet::Text, 400, OFFER_INPUTS, |d| {
        accepted += harness::offer(&config, now, d);
    });
    eprintln!("offer: {OFFER_INPUTS} inputs, {accepted} accepted");
    // Some mutations leave a valid offer; most do not. Neither panics.
    assert!(
        accepted > 100 && accepted < 2 * OFFER_INPUTS,
        "{accepted} accepted"
    );
}

/// Garbage before the session connects (refused before str0m parses most of
/// it); `hostile_connected.rs` throws mangled traffic at a connected one.
#[test]
fn an_endpoint_that_has_not_connected_survives_random_datagrams() {
    let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
    let start = Instant::now();
    let (_, offer) = Client::publisher(&config, start, "127.0.0.1:5000".parse().unwrap()).unwrap();
    let who = PublisherInfo {
        room: "r".into(),
        peer: "p".into(),
    };
    let (mut ep, _) = Endpoint::publisher(&config, start, &offer, who).unwrap();
    let from = "127.0.0.1:5000".parse().unwrap();
    let to = "127.0.0.1:9000".parse().unwrap();
    let stun = binding_request(&format!("{}:x", ep.local_ufrag()));
    // Seeds of each kind the demultiplexer tells apart: STUN, an RTP/RTCP
    // header (first byte 0x80), a DTLS record header (content type 22).
    let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
    let dtls = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut inputs = Inputs::new(4, &[&stun, &rtp, &dtls], Alphabet::Binary, 300);
    let mut d = Vec::new();
    for i in 0..20_000u64 {
        let now = start + Duration::from_millis(i / 10);
        if i % 4 == 3 {
            inputs.random(&mut d);
        } else {
            inputs.mutated(&mut d);
        }
        let _ = ep.handle_receive(now, from, to, &d);
        while let corecast_webrtc::Output::Transmit(_) | corecast_webrtc::Output::Event(_) =
            ep.poll_output(now)
        {}
    }
}
