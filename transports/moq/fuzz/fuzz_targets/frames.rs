//! A publisher's RTP payloads, cut into packets of every codec, through the
//! frame assembler a MoQ viewer's tracks use.
#![no_main]

// Each target calls one of the harness's functions.
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::frames(data);
});
