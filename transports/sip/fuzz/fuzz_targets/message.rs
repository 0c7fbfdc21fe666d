//! SIP messages from the network: parsing, printing, responses, and the
//! transaction table fed whatever parses.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::message(data);
});
