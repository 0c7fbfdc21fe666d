//! SDP bodies from the network: parsing, answering with a codec, applying
//! an answer to our offer, and the answer parsed back.
#![no_main]

// Each target calls one of the harness's functions.
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::sdp(data);
});
