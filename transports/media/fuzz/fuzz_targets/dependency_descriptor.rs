//! Any bytes as a Dependency Descriptor, with and without a known
//! structure: never a panic, what parses writes back to the same thing.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::dependency_descriptor(data);
});
