//! Probe payloads as a viewer of the load generator receives them from the
//! server under test: any bytes; what decodes must encode back to the same
//! bytes (the generator never calls a mangled payload intact).
#![no_main]
use corecast_bench::payload::{decode, encode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(probe) = decode(data) {
        let mut again = Vec::new();
        encode(&probe, data.len(), &mut again);
        assert_eq!(&again[1..], &data[1..]);
    }
});
