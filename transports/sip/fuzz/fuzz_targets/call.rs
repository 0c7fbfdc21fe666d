//! A call's media endpoint: RTP, RTCP, DTMF and garbage from the phone and
//! from strangers, the room's Opus packets, time.
#![no_main]

// Each target calls one of the harness's functions.
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::call(data);
});
