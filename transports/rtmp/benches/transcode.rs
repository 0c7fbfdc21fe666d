//! CPU cost of the RTMP audio path: AAC-LC access units to 20 ms Opus
//! packets ([`corecast_rtmp::audio::AacTranscoder`]).
//!
//! Each iteration transcodes a whole fixture (about one second of a 440 Hz
//! tone made by ffmpeg, see `tests/fixtures/README.md`) with a transcoder
//! made outside the timing, so the time per iteration divided by the
//! fixture's duration (printed before the runs) is the CPU one transcoded
//! stream costs per second of audio.
//!
//! `cargo bench -p corecast-rtmp --bench transcode`

use std::hint::black_box;

use corecast_rtmp::audio::{AacTranscoder, DEFAULT_BITRATE};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The fixture's AudioSpecificConfig and raw access units (ADTS headers
/// stripped).
fn load(name: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let read = |ext: &str| {
        std::fs::read(format!("{FIXTURES}/{name}.{ext}"))
            .unwrap_or_else(|e| panic!("fixture {name}.{ext}: {e}"))
    };
    let asc = read("asc");
    let adts = read("aac");
    let mut units = Vec::new();
    let mut i = 0;
    while i + 7 <= adts.len() {
        let d = &adts[i..];
        assert!(d[0] == 0xff && d[1] & 0xf0 == 0xf0, "ADTS sync");
        let header = if d[1] & 1 == 1 { 7 } else { 9 };
        let len = (usize::from(d[3] & 3) << 11) | (usize::from(d[4]) << 3) | usize::from(d[5] >> 5);
        units.push(d[header..len].to_vec());
        i += len;
    }
    (asc, units)
}

fn bench_fixture(c: &mut Criterion, name: &str, label: &str) {
    let (asc, units) = load(name);
    let probe = AacTranscoder::new(&asc, DEFAULT_BITRATE).expect("fixture config");
    let rate = probe.input_rate();
    let seconds = (units.len() * 1024) as f64 / f64::from(rate);
    println!(
        "{label}: {} access units = {seconds:.4} s of audio per iteration",
        units.len()
    );
    c.bench_function(label, |b| {
        b.iter_batched(
            || AacTranscoder::new(&asc, DEFAULT_BITRATE).expect("fixture config"),
            |mut t| {
                let mut out = Vec::with_capacity(64);
                for (i, unit) in units.iter().enumerate() {
                    let ts = (i as u64 * 1024 * 1000 / u64::from(rate)) as u32;
                    t.push(black_box(unit), ts, &mut out)
                        .expect("fixture decodes");
                }
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
}

fn transcode(c: &mut Criterion) {
    bench_fixture(c, "sine440", "aac_44k1_stereo_to_opus_48k");
    bench_fixture(c, "sine440_mono48k", "aac_48k_mono_to_opus_48k");
}

criterion_group!(benches, transcode);
criterion_main!(benches);
