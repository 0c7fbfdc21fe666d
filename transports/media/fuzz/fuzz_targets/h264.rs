//! H.264 from RTMP (AVC configuration records, AVCC frames) and RTP payloads.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::h264(data);
});
