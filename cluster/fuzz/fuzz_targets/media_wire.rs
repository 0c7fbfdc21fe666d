//! Media packets from other nodes: decode, and what decodes re-encodes to
//! the same bytes.
#![no_main]

use std::time::Instant;

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::media_wire(Instant::now(), data);
});
