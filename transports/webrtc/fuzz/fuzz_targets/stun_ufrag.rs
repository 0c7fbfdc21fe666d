//! The media port's first look at every unknown datagram.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::stun_ufrag(data);
});
