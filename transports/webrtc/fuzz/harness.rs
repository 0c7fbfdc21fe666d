//! The checks of the fuzz targets of corecast-webrtc, one function per
//! target. The libFuzzer targets in `fuzz_targets/` and their seeded twins in
//! `tests/hostile_input.rs` both call these, so CI runs the same checks on
//! every change that the fuzzer runs for hours.
#![allow(dead_code)] // each fuzz target uses one function

use std::time::Instant;

use corecast_webrtc::{
    classify, parse_sdpfrag, stun_local_ufrag, Endpoint, EndpointConfig, PacketClass, PublisherInfo,
};

/// Target `stun_ufrag`: the media port's first look at every unknown
/// datagram. A ufrag comes only from a STUN message, and is never empty or
/// holds the `:` that separates it from the client's. Returns whether a
/// ufrag was found (the twin counts them).
pub fn stun_ufrag(data: &[u8]) -> bool {
    let class = classify(data);
    let Some(ufrag) = stun_local_ufrag(data) else {
        return false;
    };
    assert_eq!(class, PacketClass::Stun);
    assert!(!ufrag.is_empty());
    assert!(!ufrag.contains(':'));
    true
}

/// Target `sdpfrag`: PATCH bodies (application/trickle-ice-sdpfrag). A
/// fragment that parses has both ICE credentials or neither. Returns whether
/// it parsed.
pub fn sdpfrag(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(f) = parse_sdpfrag(text) else {
        return false;
    };
    assert_eq!(f.ufrag.is_some(), f.pwd.is_some());
    true
}

/// Target `offer`: WHIP and WHEP offers. Any body gives an endpoint and an
/// answer, or an error; never a panic. Returns how many of the two roles
/// accepted it.
pub fn offer(config: &EndpointConfig, now: Instant, data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let mut accepted = 0;
    let who = PublisherInfo {
        room: "r".into(),
        peer: "p".into(),
    };
    if let Ok((_, answer)) = Endpoint::publisher(config, now, text, who) {
        assert!(!answer.is_empty());
        accepted += 1;
    }
    if let Ok((_, answer)) = Endpoint::viewer(config, now, text, &[]) {
        assert!(!answer.is_empty());
        accepted += 1;
    }
    accepted
}
