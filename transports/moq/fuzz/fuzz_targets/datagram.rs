//! Any datagram on the MoQ port: the shard's header read, then a new
//! connection's endpoint when it is an Initial.
#![no_main]

// Each target calls one of the harness's functions.
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::datagram(data);
});
