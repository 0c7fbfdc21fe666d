//! SIP messages from the network: parsing, printing, responses, and the
//! transaction table fed whatever parses.
#![no_main]

// Each target calls one of the harness's functions.
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::message(data);
});
