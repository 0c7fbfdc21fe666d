//! Network input never panics: the parsers and the endpoint take random,
//! truncated and mutated input and return errors. The same targets run under
//! libFuzzer in `fuzz/` (see docs/testing.md); this test is the quick,
//! deterministic pass that CI runs every time.

use std::time::{Duration, Instant};

use corecast_webrtc::{
    parse_sdpfrag, stun_local_ufrag, Client, Endpoint, EndpointConfig, PublisherInfo,
};
use rand::{Rng, SeedableRng};

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

fn mutate(rng: &mut impl Rng, input: &[u8]) -> Vec<u8> {
    let mut d = input.to_vec();
    match rng.random_range(0..4) {
        0 => d.truncate(rng.random_range(0..=d.len())),
        1 => {
            for _ in 0..rng.random_range(1..8) {
                if !d.is_empty() {
                    let i = rng.random_range(0..d.len());
                    d[i] = rng.random();
                }
            }
        }
        2 => {
            let at = rng.random_range(0..=d.len());
            let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            d.splice(at..at, junk);
        }
        _ => {
            if d.len() > 4 {
                let a = rng.random_range(0..d.len());
                let b = rng.random_range(a..d.len());
                d.drain(a..b);
            }
        }
    }
    d
}

#[test]
fn stun_username_extraction_survives_garbage() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let valid = binding_request("server:client");
    for _ in 0..100_000 {
        let d = if rng.random_bool(0.5) {
            mutate(&mut rng, &valid)
        } else {
            (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        };
        if let Some(u) = stun_local_ufrag(&d) {
            assert!(!u.is_empty() && !u.contains(':'));
        }
    }
}

#[test]
fn sdpfrag_parsing_survives_garbage() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let valid = b"a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\na=end-of-candidates\r\n";
    for _ in 0..50_000 {
        let d = mutate(&mut rng, valid);
        if let Ok(text) = std::str::from_utf8(&d) {
            if let Ok(f) = parse_sdpfrag(text) {
                assert_eq!(f.ufrag.is_some(), f.pwd.is_some());
            }
        }
    }
}

#[test]
fn mutated_offers_give_an_endpoint_or_an_error() {
    let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
    let now = Instant::now();
    let (_, offer) = Client::publisher(&config, now, "127.0.0.1:5000".parse().unwrap()).unwrap();
    let (_, view) = Client::viewer(&config, now, "127.0.0.1:5001".parse().unwrap()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut accepted = 0;
    for i in 0..400 {
        let base = if i % 2 == 0 { &offer } else { &view };
        let d = mutate(&mut rng, base.as_bytes());
        let Ok(text) = std::str::from_utf8(&d) else {
            continue;
        };
        let who = PublisherInfo {
            room: "r".into(),
            peer: "p".into(),
        };
        accepted += usize::from(Endpoint::publisher(&config, now, text, who).is_ok());
        accepted += usize::from(Endpoint::viewer(&config, now, text, &[]).is_ok());
    }
    // Some mutations leave a valid offer; most do not. Neither panics.
    assert!(accepted < 800);
}

#[test]
fn an_endpoint_survives_random_datagrams() {
    let config = EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]);
    let start = Instant::now();
    let (_, offer) = Client::publisher(&config, start, "127.0.0.1:5000".parse().unwrap()).unwrap();
    let who = PublisherInfo {
        room: "r".into(),
        peer: "p".into(),
    };
    let (mut ep, _) = Endpoint::publisher(&config, start, &offer, who).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let from = "127.0.0.1:5000".parse().unwrap();
    let to = "127.0.0.1:9000".parse().unwrap();
    let stun = binding_request(&format!("{}:x", ep.local_ufrag()));
    for i in 0..20_000u64 {
        let now = start + Duration::from_millis(i / 10);
        let d: Vec<u8> = match i % 4 {
            0 => mutate(&mut rng, &stun),
            1 => {
                let mut d: Vec<u8> = (0..rng.random_range(1..300))
                    .map(|_| rng.random())
                    .collect();
                d[0] = 0x80 | (d[0] & 0x3f);
                d
            }
            2 => {
                let mut d: Vec<u8> = (0..rng.random_range(1..300))
                    .map(|_| rng.random())
                    .collect();
                d[0] = 22;
                d
            }
            _ => (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect(),
        };
        let _ = ep.handle_receive(now, from, to, &d);
        while let corecast_webrtc::Output::Transmit(_) | corecast_webrtc::Output::Event(_) =
            ep.poll_output(now)
        {}
    }
}
