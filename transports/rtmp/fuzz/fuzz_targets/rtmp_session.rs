//! The RTMP server session: handshake, chunk stream, AMF0 commands.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::session(data);
});
