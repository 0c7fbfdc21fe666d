use std::sync::Arc;
use std::time::Instant;

use corecast_media::{av1, h264, vp9, ChannelId, Codec, CodecInfo, Layer, MediaPacket};

use super::*;

fn packet(codec: Codec, seq: u64, rtp_time: u32, marker: bool, payload: Vec<u8>) -> MediaPacket {
    let info = CodecInfo::new(codec, if codec == Codec::Opus { 48_000 } else { 90_000 });
    let now = Instant::now();
    MediaPacket {
        channel: ChannelId::for_track("room", "peer", "video"),
        kind: info.kind(),
        codec: info,
        seq,
        rtp_time,
        marker,
        arrival: now,
        wallclock: now,
        orientation: None,
        layer: Layer::default(),
        audio_level: None,
        dependency: None,
        payload: Arc::from(payload),
    }
}

/// Feeds the payloads of one picture; returns what the assembler said.
fn feed(
    a: &mut FrameAssembler,
    codec: Codec,
    seq: &mut u64,
    rtp_time: u32,
    payloads: &[Vec<u8>],
) -> Vec<Result<Frame, Dropped>> {
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        *seq += 1;
        let last = i + 1 == payloads.len();
        out.extend(a.push(&packet(codec, *seq, rtp_time, last, p.clone())));
    }
    out
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// VP8 payloads of one frame (RFC 7741: S on the first, PID 0).
fn vp8_packetize(frame: &[u8], max: usize) -> Vec<Vec<u8>> {
    frame
        .chunks(max)
        .enumerate()
        .map(|(i, c)| {
            let mut p = vec![if i == 0 { 0x10 } else { 0x00 }];
            p.extend_from_slice(c);
            p
        })
        .collect()
}

#[test]
fn vp8_frames_come_back_bit_exact() {
    let mut a = FrameAssembler::new();
    let mut seq = 100;
    // A keyframe (first payload byte's bit 0 clear) of 3000 bytes in 3 packets.
    let mut key = bytes(3000, 1);
    key[0] = 0x10;
    let out = feed(
        &mut a,
        Codec::Vp8,
        &mut seq,
        9000,
        &vp8_packetize(&key, 1200),
    );
    assert_eq!(out.len(), 1);
    let f = out[0].clone().unwrap();
    assert!(f.keyframe);
    assert_eq!(f.data, key);
    assert_eq!((f.rtp_time, f.clock_rate), (9000, 90_000));
    // A delta frame.
    let mut delta = bytes(500, 2);
    delta[0] = 0x11;
    let out = feed(
        &mut a,
        Codec::Vp8,
        &mut seq,
        12000,
        &vp8_packetize(&delta, 1200),
    );
    let f = out[0].clone().unwrap();
    assert!(!f.keyframe);
    assert_eq!(f.data, delta);
}

#[test]
fn h264_access_units_come_back_in_annex_b_with_parameter_sets() {
    let sps = vec![0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40];
    let pps = vec![0x68, 0xce, 0x3c, 0x80];
    let mut record = vec![1, 0x42, 0xc0, 0x1f, 0xff, 0xe1];
    record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    record.extend_from_slice(&sps);
    record.push(1);
    record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    record.extend_from_slice(&pps);
    let config = h264::AvcConfig::parse(&record).unwrap();
    let mut idr = bytes(4000, 3);
    idr[0] = 0x65;
    let mut payloads = Vec::new();
    h264::packetize(&config, &[&idr], 1200, &mut payloads);
    let mut a = FrameAssembler::new();
    let mut seq = 0;
    let out = feed(&mut a, Codec::H264, &mut seq, 3000, &payloads);
    let f = out[0].clone().unwrap();
    assert!(f.keyframe);
    let mut expected = Vec::new();
    for nal in [&sps, &pps, &idr] {
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(nal);
    }
    assert_eq!(f.data, expected);
    // A non-IDR slice after it.
    let mut slice = bytes(700, 4);
    slice[0] = 0x41;
    h264::packetize(&config, &[&slice], 1200, &mut payloads);
    let f = feed(&mut a, Codec::H264, &mut seq, 6000, &payloads)[0]
        .clone()
        .unwrap();
    assert!(!f.keyframe);
    assert_eq!(f.data[4..], slice[..]);
}

#[test]
fn vp9_frames_come_back_bit_exact() {
    let frame = bytes(2500, 5);
    let mut payloads = Vec::new();
    vp9::packetize(&frame, true, 7, 1000, &mut payloads);
    let mut a = FrameAssembler::new();
    let mut seq = 0;
    let f = feed(&mut a, Codec::Vp9, &mut seq, 1, &payloads)[0]
        .clone()
        .unwrap();
    assert!(f.keyframe);
    assert_eq!(f.data, frame);
}

#[test]
fn av1_temporal_units_come_back_with_size_fields() {
    // A sequence header OBU (type 1) and a frame OBU (type 6), without size
    // fields, as RTP carries them.
    let seq_header = vec![1 << 3, 0x00, 0x00, 0x00, 0x42, 0xab, 0xbf, 0xc3];
    let mut frame_obu = vec![6 << 3];
    frame_obu.extend(bytes(1500, 6));
    let mut payloads = Vec::new();
    av1::packetize(
        &[seq_header.clone(), frame_obu.clone()],
        true,
        None,
        600,
        &mut payloads,
    );
    let mut a = FrameAssembler::new();
    let mut seq = 0;
    let f = feed(&mut a, Codec::Av1, &mut seq, 1, &payloads)[0]
        .clone()
        .unwrap();
    assert!(f.keyframe);
    // Read back as a low-overhead bitstream: the same two OBUs.
    let obus = av1::obus(&f.data).unwrap();
    assert_eq!(obus, vec![seq_header, frame_obu]);
    assert!(f.data[0] & 0x02 != 0, "obu_has_size_field");
}

#[test]
fn opus_packets_are_frames() {
    let mut a = FrameAssembler::new();
    let p = packet(Codec::Opus, 1, 960, false, vec![0xfc, 1, 2, 3]);
    let f = a.push(&p).unwrap().unwrap();
    assert_eq!(f.data, vec![0xfc, 1, 2, 3]);
    assert_eq!(f.clock_rate, 48_000);
}

#[test]
fn a_lost_packet_drops_pictures_until_the_next_keyframe() {
    let mut a = FrameAssembler::new();
    let mut seq = 0;
    // Before any keyframe: delta frames are of no use.
    let mut delta = bytes(300, 7);
    delta[0] = 0x11;
    assert_eq!(
        feed(
            &mut a,
            Codec::Vp8,
            &mut seq,
            1000,
            &vp8_packetize(&delta, 1200)
        ),
        vec![Err(Dropped::AwaitingKeyframe)]
    );
    let mut key = bytes(3000, 8);
    key[0] = 0x10;
    let out = feed(
        &mut a,
        Codec::Vp8,
        &mut seq,
        2000,
        &vp8_packetize(&key, 1200),
    );
    assert!(out[0].as_ref().unwrap().keyframe);
    assert!(!a.awaiting_keyframe());
    // A keyframe whose middle packet is lost: dropped.
    let parts = vp8_packetize(&key, 1200);
    seq += 1;
    assert_eq!(
        a.push(&packet(Codec::Vp8, seq, 3000, false, parts[0].clone())),
        None
    );
    seq += 2; // the second packet never comes
    let got = a.push(&packet(Codec::Vp8, seq, 3000, true, parts[2].clone()));
    assert!(matches!(got, Some(Err(Dropped::Incomplete))), "{got:?}");
    assert!(a.awaiting_keyframe());
    // A complete delta frame after it: still nothing.
    let out = feed(
        &mut a,
        Codec::Vp8,
        &mut seq,
        4000,
        &vp8_packetize(&delta, 1200),
    );
    assert_eq!(out, vec![Err(Dropped::AwaitingKeyframe)]);
    // A picture whose marker never came, then the next keyframe.
    seq += 1;
    assert_eq!(
        a.push(&packet(Codec::Vp8, seq, 5000, false, parts[0].clone())),
        None
    );
    let out = feed(&mut a, Codec::Vp8, &mut seq, 6000, &parts);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], Err(Dropped::Incomplete));
    assert_eq!(out[1].as_ref().unwrap().data, key);
}

#[test]
fn garbage_payloads_never_panic() {
    let mut a = FrameAssembler::new();
    let mut seq = 0;
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
        for n in 0..64u32 {
            seq += 1;
            let payload = bytes((n % 9) as usize, n as u8);
            let _ = a.push(&packet(codec, seq, n / 3, n % 3 == 2, payload));
        }
    }
}
