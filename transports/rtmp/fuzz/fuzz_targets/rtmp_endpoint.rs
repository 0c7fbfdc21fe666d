//! A publishing RTMP endpoint fed messages: FLV tags, H.264, AAC.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::endpoint(data);
});
