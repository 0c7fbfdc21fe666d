//! Temporal layers through the SFU in simulated time: a publisher sends one
//! stream in three temporal layers (`L1T3`), VP8 (the layers in its payload
//! descriptor) or H.264 (the layers in the dependency descriptor extension,
//! as Chromium sends them); an adaptive viewer's downlink drops from 2
//! Mbit/s to 400 kbit/s and comes back. The viewer gets fewer frames a
//! second instead of a pause, every frame it gets has its reference, and
//! its sequence numbers (and VP8's picture ids and TL0PICIDX) run on
//! without the gaps the left-out frames would leave.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use corecast_media::{vp8, Codec, MediaKind};
use corecast_webrtc::{
    h264_l1t3_frame, read_h264_l1t3_frame, read_simulcast_frame, vp8_frame, ClientEvent, SendMeta,
    Temporal,
};

const FPS: u64 = 30;
/// A keyframe this often, besides those asked for.
const GOP: u64 = 90;
/// Bytes of a frame of each temporal layer: the base 200 kbit/s (7.5 frames
/// a second), TL1 100 kbit/s (7.5), TL2 300 kbit/s (15).
const BYTES: [usize; 3] = [3_333, 1_667, 2_500];
/// How long the viewer may take to get fewer layers after the link drops.
const DROP_REACTION: Duration = Duration::from_secs(2);

/// The temporal layer of the frame `phase` frames after the last keyframe
/// (0-2-1-2) and the frame it refers to (none for a keyframe); the frames
/// right after a base frame refer only to it (layer sync).
fn pattern(frame: u64, phase: u64) -> (Temporal, Option<u64>) {
    let (tid, reference) = match phase % 4 {
        _ if phase == 0 => (0, None),
        0 => (0, Some(frame - 4)),
        1 => (2, Some(frame - 1)),
        2 => (1, Some(frame - 2)),
        _ => (2, Some(frame - 1)),
    };
    let t = Temporal {
        tid,
        sync: matches!(phase % 4, 1 | 2),
        tl0picidx: 0,
    };
    (t, reference)
}

/// A frame as the viewer got it.
#[derive(Debug)]
struct Got {
    at: Instant,
    frame: u32,
    tid: u8,
    /// VP8's picture id and TL0PICIDX.
    picture_id: Option<u16>,
    tl0picidx: Option<u8>,
    packets: usize,
    first_seq: u64,
    last_seq: u64,
}

#[test]
fn a_viewer_on_a_slow_link_gets_fewer_frames_not_a_pause() {
    temporal_layers_through_the_sfu(Codec::Vp8);
}

#[test]
fn h264_temporal_layers_named_by_dependency_descriptors_thin_the_same_way() {
    temporal_layers_through_the_sfu(Codec::H264);
}

/// The packets of one frame: (payload, descriptor for H.264).
fn frame_packets(
    codec: Codec,
    frame: u64,
    phase: u64,
    temporal: Temporal,
    key: bool,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let bytes = BYTES[usize::from(temporal.tid)];
    match codec {
        Codec::H264 => h264_l1t3_frame(frame, phase, frame as u16, bytes)
            .into_iter()
            .map(|(p, d)| (p, Some(d)))
            .collect(),
        _ => vp8_frame(0, frame, Some(temporal), key, bytes)
            .into_iter()
            .map(|p| (p, None))
            .collect(),
    }
}

fn temporal_layers_through_the_sfu(codec: Codec) {
    let (mut w, p, v) = World::adaptive_pair(codec, 2_000_000);

    let t0 = w.now;
    let limited_from = Duration::from_secs(15);
    let limited_to = Duration::from_secs(25);
    let mut frame = 0u64;
    let mut seq = 1u64;
    let mut audio_seq = 0u64;
    let mut wants_key = true;
    let mut last_key = 0u64;
    let mut tl0 = 0u8;
    let mut references: BTreeMap<u32, Option<u64>> = BTreeMap::new();
    let mut limited = false;
    while w.now < t0 + Duration::from_secs(35) {
        let t = w.now - t0;
        if (limited_from..limited_to).contains(&t) != limited {
            limited = !limited;
            w.links[0].1.rate_bps = if limited { 400_000 } else { 2_000_000 };
        }
        audio_tick(&mut w, p, t0, &mut audio_seq);
        if w.now >= t0 + Duration::from_micros(frame * 1_000_000 / FPS) {
            let key = std::mem::take(&mut wants_key) || frame.is_multiple_of(GOP);
            if key {
                last_key = frame;
            }
            let (mut temporal, reference) = pattern(frame, frame - last_key);
            if temporal.tid == 0 {
                tl0 = tl0.wrapping_add(1);
            }
            temporal.tl0picidx = tl0;
            references.insert(frame as u32, reference);
            let ts = (frame * 90_000 / FPS) as u32;
            let packets = frame_packets(codec, frame, frame - last_key, temporal, key);
            let n = packets.len();
            for (i, (body, dependency)) in packets.into_iter().enumerate() {
                let now = w.now;
                let meta = SendMeta {
                    wallclock: now,
                    orientation: None,
                    dependency,
                };
                assert!(w.client(p).client.send_with(
                    now,
                    MediaKind::Video,
                    seq,
                    ts,
                    i + 1 == n,
                    &body,
                    meta
                ));
                seq += 1;
                w.drain();
            }
            frame += 1;
            for e in w.clients[p].events.drain(..) {
                if matches!(e, ClientEvent::KeyframeRequest(MediaKind::Video)) {
                    wants_key = true;
                }
            }
        }
        w.run(Duration::from_millis(1));
    }

    // The viewer's packets in sequence order, each once, as frames.
    let by_seq = video_by_seq(&w, v);
    let mut frames: Vec<Got> = Vec::new();
    for (seq, (at, _, payload)) in &by_seq {
        let (number, tid, picture_id, tl0picidx) = match codec {
            Codec::H264 => {
                let (number, tid, ..) =
                    read_h264_l1t3_frame(payload).expect("a frame of the publisher");
                (number, tid, None, None)
            }
            _ => {
                let (_, number, _, _, picture_id) =
                    read_simulcast_frame(payload).expect("a frame of the publisher");
                let d = vp8::parse(payload).unwrap();
                (number, d.tid.unwrap(), Some(picture_id), d.tl0picidx)
            }
        };
        match frames.last_mut() {
            Some(f) if f.frame == number => {
                f.packets += 1;
                f.last_seq = *seq;
            }
            _ => frames.push(Got {
                at: *at,
                frame: number,
                tid,
                picture_id,
                tl0picidx,
                packets: 1,
                first_seq: *seq,
                last_seq: *seq,
            }),
        }
    }
    assert!(frames.len() > 400, "{} frames", frames.len());

    // No gap where frames were left out: what is missing the bottleneck
    // dropped.
    let seqs: Vec<u64> = by_seq.keys().copied().collect();
    let missing: u64 = seqs.windows(2).map(|p| p[1] - p[0] - 1).sum();
    let dropped = w.links[0].1.dropped as u64;
    println!("sequence numbers missing {missing}, bottleneck drops {dropped}");
    assert!(missing <= dropped, "{missing} missing, {dropped} dropped");

    // Frames a second per temporal layer, per second of the run.
    let mut rate: BTreeMap<u64, [usize; 3]> = BTreeMap::new();
    for f in &frames {
        rate.entry((f.at - t0).as_secs()).or_default()[usize::from(f.tid)] += 1;
    }
    println!("frames per second by temporal layer: {rate:?}");
    println!("viewer stats {:?}", w.legs[v].endpoint.stats().layers);

    let steady = |at: Instant| {
        let t = at - t0;
        t < limited_from || t > limited_from + DROP_REACTION
    };
    for pair in frames.windows(2) {
        let [a, b] = pair else { unreachable!() };
        let lost_between = b.first_seq > a.last_seq + 1;
        let (Some(a_pid), Some(b_pid), Some(a_tl0), Some(b_tl0)) =
            (a.picture_id, b.picture_id, a.tl0picidx, b.tl0picidx)
        else {
            continue;
        };
        // Picture ids and TL0PICIDX count the frames the viewer gets.
        let step = b_pid.wrapping_sub(a_pid) & 0x7fff;
        assert!(
            step == 1 || lost_between && step > 1,
            "picture ids {a_pid} then {b_pid} (frames {} and {})",
            a.frame,
            b.frame
        );
        let tl0_step = b_tl0.wrapping_sub(a_tl0);
        let expected = u8::from(b.tid == 0);
        assert!(
            tl0_step == expected || lost_between,
            "TL0PICIDX {a_tl0} then {b_tl0} (frames {} and {})",
            a.frame,
            b.frame
        );
    }
    // Every frame's reference reached the viewer before it.
    let got: std::collections::BTreeSet<u32> = frames.iter().map(|f| f.frame).collect();
    let orphans: Vec<u32> = frames
        .iter()
        .filter(|f| steady(f.at))
        .filter(|f| references[&f.frame].is_some_and(|r| !got.contains(&(r as u32))))
        .map(|f| f.frame)
        .collect();
    println!("frames without their reference: {orphans:?}");
    assert!(orphans.len() <= 2, "{orphans:?}");

    let second = |s: u64| rate.get(&s).copied().unwrap_or_default();
    // Every layer on 2 Mbit/s, before and after.
    assert!(second(13)[2] >= 10 && second(33)[2] >= 10, "{rate:?}");
    // On 400 kbit/s (the whole stream is 600): no TL2, but frames every
    // second — no pause.
    for s in (limited_from + DROP_REACTION).as_secs()..limited_to.as_secs() {
        let [t0f, t1f, t2f] = second(s);
        assert_eq!(t2f, 0, "second {s}: {rate:?}");
        assert!(t0f + t1f >= 5, "second {s}: {rate:?}");
    }
    let stats = w.legs[v].endpoint.stats().layers;
    assert_eq!(stats.pauses, 0, "{stats:?}");
}
