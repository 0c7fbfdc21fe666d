//! Which RTP header extensions each kind of leg negotiates.

use std::net::SocketAddr;
use std::time::Instant;

use corecast_webrtc::{Client, Endpoint, EndpointConfig, PublisherInfo};

const TWCC: &str = "transport-wide-cc-extensions-01";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config() -> EndpointConfig {
    EndpointConfig::new(vec![addr("10.0.0.100:9000")])
}

#[test]
fn viewers_negotiate_no_transport_wide_cc() {
    let now = Instant::now();
    let config = config();
    let (_client, offer) = Client::viewer(&config, now, addr("10.0.0.1:5000")).unwrap();
    assert!(offer.contains(TWCC), "the client offers it:\n{offer}");
    let (_endpoint, answer) = Endpoint::viewer(&config, now, &offer, &[]).unwrap();
    assert!(!answer.contains(TWCC), "viewer answer:\n{answer}");
    // The rest of the standard set stays: MID (bundle demux) and
    // abs-send-time (the viewer's own receive-side estimate).
    assert!(answer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"));
    assert!(answer.contains("abs-send-time"));
}

#[test]
fn publishers_keep_transport_wide_cc() {
    let now = Instant::now();
    let config = config();
    let (_client, offer) = Client::publisher(&config, now, addr("10.0.0.1:5000")).unwrap();
    let who = PublisherInfo {
        room: "r".into(),
        peer: "p".into(),
    };
    let (_endpoint, answer) = Endpoint::publisher(&config, now, &offer, who).unwrap();
    assert!(answer.contains(TWCC), "publisher answer:\n{answer}");
}
