//! Probe payloads as a viewer of the load generator receives them from the
//! server under test: any bytes; what decodes must encode back to the same
//! bytes (the generator never calls a mangled payload intact).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::probe(data);
});
