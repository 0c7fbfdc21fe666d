//! RTP payloads of every codec: is it the first packet of a keyframe? Never
//! a panic, and a cut payload is never a start when the whole is not.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::keyframe(data);
});
