//! The seeded twins of the libFuzzer targets in `fuzz/` (see
//! docs/testing.md): the same harness functions, over deterministic inputs
//! (seeds cut to every length, mutations, random bytes), in every CI run.

#[path = "../fuzz/harness.rs"]
mod harness;

use corecast_rtmp::client::tags;
use corecast_twin::{run, Alphabet};

const ASC: &[u8] = include_bytes!("fixtures/sine440.asc");
const AAC: &[u8] = include_bytes!("fixtures/sine440.aac");

/// Twin of the fuzz target `rtmp_session`.
#[test]
fn rtmp_session_twin() {
    // The commands of a publisher after the handshake, then media.
    let publish = harness::publish_prefix("cam?token=x");
    let mut seed = vec![40u8];
    seed.extend_from_slice(&publish[1 + 2 * 1536..]);
    let mut media = Vec::new();
    corecast_rtmp::chunk::write_message(&mut media, 128, 2, 0, 1, 0, &4096u32.to_be_bytes());
    corecast_rtmp::chunk::write_message(&mut media, 4096, 6, 40, 9, 1, &[0x17; 5000]);
    corecast_rtmp::chunk::write_message(&mut media, 4096, 4, 0x0100_0000, 8, 1, &[0xaf, 1, 2]);
    seed.extend_from_slice(&media);
    let mut events = 0;
    let n = run(
        0x7274_6d70,
        &[&seed],
        Alphabet::Binary,
        2048,
        200_000,
        |d| events += harness::session(d),
    );
    eprintln!("rtmp_session: {n} inputs, {events} events");
    assert!(
        events > 50_000,
        "{events} events: mutations reach the commands"
    );
}

/// Twin of the fuzz target `rtmp_endpoint`.
#[test]
fn rtmp_endpoint_twin() {
    let units = tags::adts_units(AAC);
    let seed = harness::endpoint_seed(ASC, &units[..4]);
    let mut packets = 0;
    let n = run(
        0x666c_7673,
        &[&seed],
        Alphabet::Binary,
        4096,
        // Each input builds a transcoder (decoder, resampler, encoder):
        // fewer inputs than the other twins, the same time.
        20_000,
        |d| packets += harness::endpoint(d),
    );
    eprintln!("rtmp_endpoint: {n} inputs, {packets} packets published");
    assert!(
        packets > 4_000,
        "{packets} packets: mutations reach the media paths"
    );
}

/// Writes the seeds into the fuzz corpus directories (run by hand:
/// `cargo test -p corecast-rtmp --test hostile_input -- --ignored`).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus");
    let publish = harness::publish_prefix("cam?token=x");
    let mut session = vec![40u8];
    session.extend_from_slice(&publish[1 + 2 * 1536..]);
    std::fs::write(format!("{dir}/rtmp_session/publish"), session).unwrap();
    let units = tags::adts_units(AAC);
    let endpoint = harness::endpoint_seed(ASC, &units[..4]);
    std::fs::write(format!("{dir}/rtmp_endpoint/stream"), endpoint).unwrap();
}
