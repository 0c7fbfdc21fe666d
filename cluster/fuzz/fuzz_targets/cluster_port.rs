//! Datagrams at the cluster port: as they come (the envelope must refuse
//! them), and sealed with the right secret (so that the presence decoder and
//! atm0s-sdn's parsers see them too).
#![no_main]

use std::cell::RefCell;
use std::time::Instant;

#[path = "../harness.rs"]
mod harness;

thread_local! {
    // A fuzz harness, like a test, owns its clock.
    static NODE: RefCell<harness::ClusterPort> =
        RefCell::new(harness::ClusterPort::new(Instant::now()));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    NODE.with(|n| n.borrow_mut().input(data));
});
