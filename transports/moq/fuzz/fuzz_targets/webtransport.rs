//! What a browser's HTTP/3 connection carries before the MoQ session reads
//! it: stream headers, datagrams, the WebTransport CONNECT request.
#![no_main]

// Each target calls one of the harness's functions.
#[allow(dead_code)]
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::webtransport(data);
});
