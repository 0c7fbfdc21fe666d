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

/// Layered (simulcast) probes under the same treatment: whatever decodes
/// as one must encode back to the same bytes outside the picture id, the
/// only part a server may rewrite.
#[test]
fn layered_probe_twin() {
    use corecast_bench::payload::{decode_any, decode_layered, encode_layered, LayeredProbe};
    let mut seeds = Vec::new();
    for (i, len) in [28, 40, 200, 1150].into_iter().enumerate() {
        let probe = LayeredProbe {
            probe: Probe {
                publisher: 3 + i as u32,
                kind: MediaKind::Video,
                seq: 1 << (i * 10),
                sent_ns: 999_999_937 * i as u64,
            },
            layer: (i % 3) as u8,
            frame_start: i % 2 == 0,
            keyframe: i == 0,
            picture_id: 0x7ff0 + i as u16,
        };
        let mut buf = Vec::new();
        encode_layered(&probe, len, &mut buf);
        seeds.push(buf);
    }
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    let mut decoded = 0;
    let n = run(11, &seeds, Alphabet::Binary, 1300, 200_000, |d| {
        let Ok(p) = decode_layered(d) else {
            return;
        };
        decoded += 1;
        let mut again = Vec::new();
        encode_layered(&p, d.len(), &mut again);
        assert_eq!(&again[..2], &d[..2]);
        assert_eq!(&again[4..], &d[4..]);
        assert_eq!(decode_any(d).map(|x| x.layered), Ok(Some(p)));
    });
    eprintln!("layered probe: {n} inputs, {decoded} decoded");
    assert!(decoded > 3_000, "{decoded} decoded");
}
