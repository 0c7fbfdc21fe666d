//! The checks of the fuzz targets of corecast-media, one function per target.
//! The libFuzzer target in `fuzz_targets/` and its seeded twin in
//! `tests/hostile_input.rs` both call these, so CI runs the same checks on
//! every change that the fuzzer runs for hours.

use corecast_media::{is_keyframe_start, vp9, Codec, Layer, LayerPacket};

const VIDEO: [Codec; 4] = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

/// Target `keyframe`: any payload, every codec. Never panics; audio is always
/// a start; a start of a video codec has the bits its rule requires in the
/// first byte; and cutting a payload never makes a start of a non-start: once
/// a prefix is a start, every longer prefix is too. Returns for how many video
/// codecs the payload is a start (the twin counts them).
pub fn keyframe(data: &[u8]) -> usize {
    let mut starts = 0;
    for codec in [Codec::Opus, Codec::Pcmu, Codec::Pcma] {
        assert!(is_keyframe_start(codec, data));
    }
    // The layer fields a viewer reads (VP8 TID, VP9 SID/TID/B/E/U) from any
    // payload: never panics, never a layer the selector cannot hold apart
    // from a real one (SID and TID are 3-bit fields).
    if let Some(d) = vp9::parse(data) {
        assert!(d.header_len <= data.len());
        assert!(d.sid < 8 && d.tid < 8);
    }
    for codec in VIDEO {
        let p = LayerPacket::describe(codec, Layer::default(), data);
        assert!(p.layer.spatial < 8 && p.layer.temporal < 8);
        let whole = is_keyframe_start(codec, data);
        if whole {
            starts += 1;
            let first = data[0];
            match codec {
                Codec::Vp8 => assert_eq!(first & 0x17, 0x10, "S=1, PID=0"),
                Codec::Vp9 => assert_eq!(first & 0x48, 0x08, "B=1, P=0"),
                Codec::H264 => assert!(matches!(first & 0x1f, 5 | 7 | 24 | 28)),
                Codec::Av1 => assert_eq!(first & 0x88, 0x08, "Z=0, N=1"),
                _ => unreachable!(),
            }
        }
        let mut seen = false;
        for len in 0..=data.len().min(64) {
            let start = is_keyframe_start(codec, &data[..len]);
            assert!(
                start || !seen,
                "{codec:?}: {len} bytes are no start, fewer were"
            );
            seen = start;
        }
        assert!(
            whole || !seen,
            "{codec:?}: a prefix is a start, the whole is not"
        );
    }
    starts
}

/// Target `h264`: RTMP's AVC configuration records and AVCC frames, and RTP
/// payloads of H.264. The input is split at its first byte's offset: a
/// record, then a frame. Never panics; whatever parses is packetized and
/// comes back from the depacketizer bit-exact, every payload within the
/// size asked for; raw input is also fed to the depacketizer as RTP
/// payloads. Returns whether the record and the frame parsed.
pub fn h264(data: &[u8]) -> bool {
    use corecast_media::h264::{packetize, AvcConfig, Depacketizer};
    let mut d = Depacketizer::default();
    let mut nals = Vec::new();
    for chunk in data.chunks(97) {
        let _ = d.push(chunk, &mut nals);
    }
    let Some((&split, rest)) = data.split_first() else {
        return false;
    };
    let (record, frame) = rest.split_at(usize::from(split).min(rest.len()));
    let (Ok(config), Ok(units)) = (
        AvcConfig::parse(record),
        AvcConfig::parse(record).and_then(|c| c.nal_units(frame)),
    ) else {
        return false;
    };
    let max = 16 + usize::from(split) % 200;
    let mut payloads = Vec::new();
    packetize(&config, &units, max, &mut payloads);
    assert!(
        payloads.iter().all(|p| p.len() <= max),
        "payloads fit {max}"
    );
    let mut back = Vec::new();
    let mut d = Depacketizer::default();
    for p in &payloads {
        d.push(p, &mut back).expect("our own payloads depacketize");
    }
    // What went in comes out, after the parameter sets of a keyframe;
    // NAL units of types 0 and 24-31 cannot travel in mode 1 and are left
    // out by the packetizer.
    let sent: Vec<&[u8]> = units
        .iter()
        .copied()
        .filter(|n| !matches!(n[0] & 0x1f, 0 | 24..=31))
        .collect();
    let tail: Vec<&[u8]> = back[back.len() - sent.len()..]
        .iter()
        .map(Vec::as_slice)
        .collect();
    assert_eq!(tail, sent, "round trip");
    true
}

/// Target `vp8_rewrite`: a viewer's stream of VP8 payloads through the
/// descriptor parser and the picture-id rewriter. The input is cut into
/// packets by its own bytes (a length byte, a flags byte, the payload).
/// Never panics; the parser agrees with the keyframe rule; a rewritten
/// payload keeps its length and parses to the same descriptor with the
/// numbers moved by the offsets. Returns how many payloads parsed.
pub fn vp8_rewrite(data: &[u8]) -> usize {
    use corecast_media::vp8::{parse, Vp8Rewriter};
    let mut rewriter = Vp8Rewriter::new();
    let mut parsed = 0;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let Some((&flags, tail)) = tail.split_first() else {
            break;
        };
        let n = usize::from(len).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        let d = parse(payload);
        let start = is_keyframe_start(Codec::Vp8, payload);
        assert_eq!(d.is_some_and(|d| d.keyframe), start, "{payload:?}");
        let Some(d) = d else {
            continue;
        };
        parsed += 1;
        assert!(d.header_len <= payload.len());
        if flags & 1 == 1 {
            rewriter.drop_picture(&d);
            continue;
        }
        let o = rewriter.offsets(flags & 2 == 2, &d);
        let mut out = payload.to_vec();
        Vp8Rewriter::apply_in_place(&mut out, &d, o);
        assert_eq!(out.len(), payload.len());
        let again = parse(&out).expect("a rewritten descriptor parses");
        assert_eq!(again.header_len, d.header_len);
        assert_eq!(again.keyframe, d.keyframe);
        assert_eq!(again.tid, d.tid);
        let mask = if d.long_picture_id { 0x7fff } else { 0x7f };
        assert_eq!(
            again.picture_id,
            d.picture_id.map(|p| p.wrapping_add(o.picture_id) & mask),
        );
        assert_eq!(
            again.tl0picidx,
            d.tl0picidx.map(|t| t.wrapping_add(o.tl0picidx))
        );
        assert_eq!(out[d.header_len..], payload[d.header_len..]);
    }
    parsed
}

/// Target `dependency_descriptor`: any bytes as a Dependency Descriptor
/// header extension, read with no structure known, with the `L1T3` one and
/// with the `L3T3_KEY` one. Never panics; what parses has fields that fit
/// its structure and the limits, and the writer gives it back as bytes no
/// longer than the input that parse to the same descriptor. A `DdReader`
/// keeps the structure and active mask a packet brought, and reads the
/// packet's first three bytes (the mandatory fields) to the same frame.
/// Returns how many of the three reads parsed.
pub fn dependency_descriptor(data: &[u8]) -> usize {
    use corecast_media::dd::{self, DdReader, DdStructure};
    use std::sync::OnceLock;
    static KNOWN: OnceLock<[DdStructure; 2]> = OnceLock::new();
    let [l1t3, l3t3] = KNOWN.get_or_init(|| [DdStructure::l1t3(), DdStructure::l3t3_key()]);
    let mut parsed = 0;
    for known in [None, Some(l1t3), Some(l3t3)] {
        let Ok(d) = dd::parse(data, known) else {
            continue;
        };
        parsed += 1;
        let s = d
            .structure
            .as_ref()
            .or(known)
            .expect("read with a structure");
        assert!(s.templates.len() <= dd::MAX_TEMPLATES);
        assert!(s.decode_targets <= dd::MAX_DECODE_TARGETS);
        let index = s.template_index(d.template_id).expect("a known template");
        let t = &s.templates[index];
        assert_eq!((d.spatial_id, d.temporal_id), (t.spatial_id, t.temporal_id));
        assert_eq!(d.dtis.len(), s.decode_targets);
        assert_eq!(d.chain_fdiffs.len(), s.chains);
        assert!(d.fdiffs.len() <= dd::MAX_FDIFFS);
        if let Some(mask) = d.active_decode_targets {
            assert_eq!(mask & !s.all_decode_targets(), 0);
        }
        let mut out = Vec::new();
        dd::write(&d, known, &mut out).expect("a parsed descriptor writes");
        assert!(out.len() <= data.len(), "{out:02x?} longer than the input");
        assert_eq!(dd::parse(&out, known).as_ref(), Ok(&d), "{out:02x?}");
    }
    // With nothing known, a read succeeds only with a structure.
    let mut reader = DdReader::new();
    if let Ok(d) = reader.read(data) {
        assert!(d.structure.is_some());
        assert_eq!(reader.structure(), d.structure.as_ref());
        assert_eq!(
            Some(reader.active_decode_targets()),
            d.active_decode_targets
        );
        let again = reader
            .read(&data[..3])
            .expect("the mandatory fields read with the packet's structure");
        assert_eq!(
            (
                again.frame_number,
                again.template_id,
                again.spatial_id,
                again.temporal_id
            ),
            (d.frame_number, d.template_id, d.spatial_id, d.temporal_id)
        );
        assert_eq!(again.structure, None);
        assert_eq!(reader.structure(), d.structure.as_ref());
        assert_eq!(
            Some(reader.active_decode_targets()),
            d.active_decode_targets
        );
    }
    parsed
}
