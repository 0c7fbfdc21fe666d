//! The check of the fuzz target `probe`. The libFuzzer target in
//! `fuzz_targets/` and its seeded twin in `tests/hostile_input.rs` both call
//! it, so CI runs the same check on every change that the fuzzer runs for
//! hours.

use corecast_bench::payload::{decode, encode};

/// Target `probe`: probe payloads as a viewer of the load generator receives
/// them from the server under test: any bytes; what decodes must encode back
/// to the same bytes past the codec descriptor (the generator never calls a
/// mangled payload intact). Returns whether it decoded.
pub fn probe(data: &[u8]) -> bool {
    let Ok(probe) = decode(data) else {
        return false;
    };
    let mut again = Vec::new();
    encode(&probe, data.len(), &mut again);
    assert_eq!(&again[1..], &data[1..]);
    true
}
