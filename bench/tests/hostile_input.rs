//! The seeded twin of the libFuzzer target `probe` in `fuzz/` (see
//! docs/testing.md): the same harness function (`fuzz/harness.rs`) over
//! deterministic inputs (seeds cut to every length, mutations, random
//! bytes), in every CI run.

#[path = "../fuzz/harness.rs"]
mod harness;

use corecast_bench::payload::{encode, Probe, HEADER};
use corecast_media::MediaKind;
use corecast_twin::{run, Alphabet};

#[test]
fn probe_twin() {
    let mut seeds = Vec::new();
    for (i, len) in [HEADER, 40, 80, 200, 1200].into_iter().enumerate() {
        let probe = Probe {
            publisher: 7 + i as u32,
            kind: if i % 2 == 0 {
                MediaKind::Video
            } else {
                MediaKind::Audio
            },
            seq: 1 << (i * 12),
            sent_ns: 1_000_000_007 * i as u64,
        };
        let mut buf = Vec::new();
        encode(&probe, len, &mut buf);
        seeds.push(buf);
    }
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    let mut decoded = 0;
    let n = run(7, &seeds, Alphabet::Binary, 1300, 300_000, |d| {
        decoded += usize::from(harness::probe(d));
    });
    eprintln!("probe: {n} inputs, {decoded} decoded");
    assert!(decoded > 5_000, "{decoded} decoded");
}
