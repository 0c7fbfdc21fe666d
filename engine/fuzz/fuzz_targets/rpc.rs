//! SDK requests (the data channel's JSON) as the control thread answers them.
#![no_main]

#[path = "../harness.rs"]
mod harness;

use std::cell::RefCell;

thread_local! {
    static RIG: RefCell<harness::RpcRig> = RefCell::new(harness::RpcRig::new());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    RIG.with(|rig| rig.borrow_mut().rpc(data));
});
