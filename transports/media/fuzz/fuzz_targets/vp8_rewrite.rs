//! A viewer's VP8 payloads through the descriptor parser and the picture-id
//! rewriter: never a panic, rewritten descriptors parse back as expected.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::vp8_rewrite(data);
});
