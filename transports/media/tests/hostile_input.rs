//! The seeded twins of the libFuzzer targets in `fuzz/` (see
//! docs/testing.md): the same harness functions, over deterministic inputs
//! (seeds cut to every length, mutations, random bytes), in every CI run.

#[path = "../fuzz/harness.rs"]
mod harness;

use corecast_twin::{run, Alphabet};

/// Payloads of every video codec's keyframe start, delta and continuation
/// packets, laid out as in the RFCs.
const KEYFRAME_SEEDS: &[&[u8]] = &[
    // VP8: X=1, S=1; I, L, T, K; 15-bit PictureID; keyframe payload header.
    &[
        0x90, 0xf0, 0x92, 0x34, 0x07, 0x25, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02,
    ],
    // VP8: minimal descriptor, delta frame; and a continuation.
    &[0x10, 0x31, 0x0b, 0x00, 0x11],
    &[0x80, 0x80, 0x12, 0x00, 0x00],
    // VP9: non-flexible with layers, keyframe start.
    &[0xa8, 0x81, 0x23, 0x00, 0x11, 0x82, 0x49, 0x83, 0x42, 0x00],
    // VP9: flexible, P=1 with three reference indices.
    &[0xf8, 0x7f, 0x00, 0x03, 0x05, 0x06, 0x82, 0x49],
    // VP9: scalability structure with sizes and a picture group.
    &[
        0xaa, 0x10, 0x00, 0x00, 0x3a, 0x02, 0x80, 0x01, 0x68, 0x05, 0x00, 0x02, 0xd0, 0x02, 0x04,
        0x01, 0x28, 0x01, 0x02, 0x82, 0x49,
    ],
    // H264: STAP-A with SPS, PPS, IDR.
    &[
        0x78, 0x00, 0x05, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80, 0x00,
        0x03, 0x65, 0x88, 0x84,
    ],
    // H264: FU-A start of an IDR, a middle fragment, a single slice.
    &[0x7c, 0x85, 0x88, 0x84, 0x00],
    &[0x7c, 0x05, 0x11, 0x22],
    &[0x41, 0x9a, 0x02, 0x03],
    // AV1: N=1 with a sequence header OBU; Z=1 continuation.
    &[0x18, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x02, 0xbf, 0xff],
    &[0x90, 0x32, 0x10, 0x00],
];

#[test]
fn keyframe_twin() {
    let mut starts = 0;
    let n = run(
        0x6b65_7966,
        KEYFRAME_SEEDS,
        Alphabet::Binary,
        48,
        400_000,
        |d| {
            starts += harness::keyframe(d);
        },
    );
    eprintln!("keyframe: {n} inputs, {starts} keyframe starts");
    assert_eq!(n, 400_000);
    // The mutations of the seeds keep reaching the keyframe paths.
    assert!(starts > 40_000, "{starts} starts");
}

/// Twin of the fuzz target `h264`.
#[test]
fn h264_twin() {
    let keyframe: &[u8] = include_bytes!("../fuzz/corpus/h264/keyframe");
    // The same record with a 2-byte NAL length and a delta frame.
    let mut delta = keyframe[..keyframe[0] as usize + 1].to_vec();
    delta[5] = 0xfd;
    delta.extend_from_slice(&[0, 5, 0x41, 1, 2, 3, 4, 0, 3, 0x01, 9, 9]);
    let fu_a: &[u8] = &[0x7c, 0x85, 1, 2, 3, 0x7c, 0x45, 4, 5];
    let mut parsed = 0;
    let n = run(
        0x6832_3634,
        &[keyframe, &delta, fu_a],
        Alphabet::Binary,
        400,
        200_000,
        |d| {
            parsed += usize::from(harness::h264(d));
        },
    );
    eprintln!("h264: {n} inputs, {parsed} parsed and round-tripped");
    assert!(parsed > 5_000, "{parsed} parsed");
}

/// Streams of VP8 payloads: (length, flags, payload) records; flags bit 0
/// drops the picture, bit 1 starts a new run.
const VP8_SEEDS: &[&[u8]] = &[
    &[
        14, 2, 0x90, 0xf0, 0x92, 0x34, 0x07, 0x25, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02,
        7, 0, 0x90, 0xe0, 0x92, 0x35, 0x07, 0x65, 0x01, 7, 1, 0x90, 0xe0, 0x92, 0x36, 0x07, 0xa5,
        0x01, 5, 2, 0x90, 0x80, 0x05, 0x00, 0x9d,
    ],
    &[
        5, 0, 0x10, 0x31, 0x0b, 0x00, 0x11, 5, 2, 0x80, 0x80, 0x12, 0x00, 0x00,
    ],
];

#[test]
fn vp8_rewrite_twin() {
    let mut parsed = 0;
    let n = run(0x7670_3872, VP8_SEEDS, Alphabet::Binary, 64, 300_000, |d| {
        parsed += harness::vp8_rewrite(d);
    });
    eprintln!("vp8_rewrite: {n} inputs, {parsed} payloads parsed");
    assert_eq!(n, 300_000);
    assert!(parsed > 100_000, "{parsed} parsed");
}

/// Dependency descriptors written by `dd::write`: keyframe packets that
/// carry the `L1T3` and `L3T3_KEY` structures (one with shifted template
/// ids, resolutions and an active mask), three-byte packets of every
/// template (the harness reads them against both structures), and packets
/// with custom DTIs, fdiffs and chains.
fn dd_seeds() -> Vec<Vec<u8>> {
    use corecast_media::dd::{write, DdStructure, DependencyDescriptor, Dti, Resolution};
    let l1t3 = DdStructure::l1t3();
    let l3t3 = DdStructure::l3t3_key();
    let mut seeds = Vec::new();
    let mut put = |d: &DependencyDescriptor, known: Option<&DdStructure>| {
        let mut out = Vec::new();
        write(d, known, &mut out).expect("a valid descriptor");
        seeds.push(out);
    };
    let mut shifted = l3t3.clone();
    shifted.template_id_offset = 50;
    shifted.resolutions = Some(
        [(320, 180), (640, 360), (1280, 720)]
            .map(|(width, height)| Resolution { width, height })
            .to_vec(),
    );
    for (s, mask) in [(&l1t3, 0b111), (&l3t3, 0x1ff), (&shifted, 0b011_011_011)] {
        let mut key = DependencyDescriptor::from_template(s, 0, 1000).unwrap();
        key.structure = Some(s.clone());
        key.active_decode_targets = Some(mask);
        put(&key, None);
    }
    for (s, pictures) in [(&l1t3, 8), (&l3t3, 4)] {
        for (i, _) in s.templates.iter().enumerate() {
            let mut d = DependencyDescriptor::from_template(s, i, 7 * i as u16).unwrap();
            d.end_of_frame = i % 2 == 1;
            put(&d, Some(s));
        }
        // A custom packet of each kind.
        let i = pictures % s.templates.len();
        let mut d = DependencyDescriptor::from_template(s, i, 65535).unwrap();
        d.dtis.fill(Dti::Required);
        d.fdiffs = vec![1, 20, 300, 4000];
        d.chain_fdiffs.fill(200);
        d.active_decode_targets = Some(1);
        put(&d, Some(s));
    }
    seeds
}

/// Twin of the fuzz target `dependency_descriptor`.
#[test]
fn dependency_descriptor_twin() {
    let seeds = dd_seeds();
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut parsed = 0;
    let n = run(0x6464_6573, &seeds, Alphabet::Binary, 96, 300_000, |d| {
        parsed += harness::dependency_descriptor(d);
    });
    eprintln!("dependency_descriptor: {n} inputs, {parsed} reads parsed");
    assert_eq!(n, 300_000);
    assert!(parsed > 150_000, "{parsed} parsed");
}
