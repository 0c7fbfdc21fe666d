//! The seeded twin of the fuzz target `rpc` (engine/fuzz): SDK requests,
//! valid ones mutated and random text, through the control thread's rooms.
//! Every input is answered (an answer first, or an error event for what is
//! not a JSON object), the answers are JSON, and nothing panics.

#[path = "../../fuzz/harness.rs"]
mod harness;

use corecast_twin::{run, Alphabet};

#[test]
fn rpc_twin() {
    let seeds: &[&[u8]] = &[
        include_bytes!("../../fuzz/corpus/rpc/join"),
        include_bytes!("../../fuzz/corpus/rpc/subscribe"),
        include_bytes!("../../fuzz/corpus/rpc/unsubscribe"),
        include_bytes!("../../fuzz/corpus/rpc/mute"),
        include_bytes!("../../fuzz/corpus/rpc/update"),
        include_bytes!("../../fuzz/corpus/rpc/unpublish"),
    ];
    let mut rig = harness::RpcRig::new();
    let n = run(0x5d4, seeds, Alphabet::Text, 200, 200_000, |d| rig.rpc(d));
    eprintln!("rpc: {n} inputs, {} requests answered", rig.answered);
    assert!(rig.answered > 5_000, "{} answered", rig.answered);
}
