//! Publisher → SFU → viewers in simulated time over an in-memory network.
//!
//! No sockets and no clock: a `World` steps every peer 1 ms at a time and
//! carries datagrams between them with a fixed latency. Full ICE, DTLS and
//! SRTP run on both sides.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corecast_media::{ChannelId, Codec, CodecInfo, MediaKind};
use corecast_webrtc::{ClientEvent, CloseReason, Endpoint, EndpointConfig, Error, PublisherInfo};

#[test]
fn viewers_receive_every_payload_bit_exact_and_in_order() {
    let mut w = World::new();
    let p = w.add_publisher("10.0.0.1:1000", "alice");
    let v1 = w.add_viewer("10.0.0.2:1000", &[]).unwrap();
    let v2 = w.add_viewer("10.0.0.3:1000", &[]).unwrap();
    subscribe_all(&mut w, p, &[v1, v2]);
    w.run_until(Duration::from_secs(5), World::all_connected);
    let base = warm_up(&mut w, p, &[v1, v2], 40_000);

    for i in 0..200u64 {
        let now = w.now;
        assert!(w.client(p).client.send(
            now,
            MediaKind::Video,
            base + i,
            i as u32 * 3000,
            i % 4 == 3,
            &payload(i)
        ));
        // str0m's rule: drain after every mutation, before the next one.
        w.drain();
        if i % 2 == 0 {
            assert!(w.client(p).client.send(
                now,
                MediaKind::Audio,
                base + i / 2,
                (i / 2) as u32 * 960,
                false,
                &[0xfc, i as u8]
            ));
        }
        w.run(Duration::from_millis(5));
    }
    w.run(Duration::from_millis(200));

    for v in [v1, v2] {
        let video = w.received(v, MediaKind::Video);
        assert_eq!(video.len(), 200, "viewer {v} video packets");
        let first = video[0].0;
        assert!(
            first < 1 << 16,
            "the viewer's sequence space starts at ROC 0"
        );
        for (i, (seq, ts, body)) in video.iter().enumerate() {
            assert_eq!(*body, payload(i as u64), "payload {i} differs");
            assert_eq!(*seq, first + i as u64, "one continuous sequence");
            assert_eq!(*ts, i as u32 * 3000, "first source keeps its timestamps");
        }
        let audio = w.received(v, MediaKind::Audio);
        assert_eq!(audio.len(), 100, "viewer {v} audio packets");
        assert!(audio
            .iter()
            .enumerate()
            .all(|(i, a)| a.2 == vec![0xfc, (i * 2) as u8]));
    }
}

/// Keyframe requests the publisher's client saw.
fn keyframe_requests_seen(w: &World, p: usize) -> usize {
    w.clients[p]
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::KeyframeRequest(MediaKind::Video)))
        .count()
}

/// Connects a publisher and `n` viewers and starts the publisher's video
/// stream (the server's receive stream exists once media arrived).
fn streaming(w: &mut World, n: usize) -> (usize, Vec<usize>) {
    let p = w.add_publisher("10.0.0.1:1000", "alice");
    let viewers: Vec<usize> = (0..n)
        .map(|i| {
            w.add_viewer(&format!("10.0.1.{}:1000", i + 1), &[])
                .unwrap()
        })
        .collect();
    subscribe_all(w, p, &viewers);
    w.run_until(Duration::from_secs(5), World::all_connected);
    for i in 0..10u64 {
        w.send_video(p, 100 + i, i as u32 * 3000, &payload(i));
        w.run(Duration::from_millis(10));
    }
    w.run(Duration::from_millis(100));
    w.clients[p].events.clear();
    (p, viewers)
}

#[test]
fn one_viewer_gets_at_most_one_keyframe_request_through_every_2s() {
    let mut w = World::new();
    let (p, v) = streaming(&mut w, 1);
    // The viewer asks 20 times in one second.
    for _ in 0..20 {
        assert!(w.client(v[0]).client.request_keyframe());
        w.run(Duration::from_millis(50));
    }
    w.run(Duration::from_millis(100));
    assert_eq!(keyframe_requests_seen(&w, p), 1, "one viewer, ~1.1 s");
    assert!(w.legs[v[0]].endpoint.stats().keyframe_requests_limited >= 15);
    // Two seconds after its first request, the next one passes.
    w.run(Duration::from_millis(900));
    assert!(w.client(v[0]).client.request_keyframe());
    w.run(Duration::from_millis(100));
    assert_eq!(keyframe_requests_seen(&w, p), 2);
}

#[test]
fn keyframe_requests_of_many_viewers_aggregate_to_one_per_500ms_and_none_is_lost() {
    let mut w = World::new();
    let (p, viewers) = streaming(&mut w, 4);
    // Four viewers ask, 100 ms apart: one request goes out at once, the
    // other three are folded into one at the end of the 500 ms interval.
    for v in &viewers {
        assert!(w.client(*v).client.request_keyframe());
        w.run(Duration::from_millis(100));
    }
    assert_eq!(keyframe_requests_seen(&w, p), 1);
    w.run(Duration::from_millis(200));
    assert_eq!(
        keyframe_requests_seen(&w, p),
        2,
        "the deferred request went out"
    );
    w.run(Duration::from_secs(2));
    assert_eq!(keyframe_requests_seen(&w, p), 2, "and nothing more");
    assert_eq!(w.legs[p].endpoint.stats().keyframe_requests_sent, 2);
}

#[test]
fn a_silent_peer_is_closed_after_the_consent_timeout() {
    let mut w = World::new();
    let p = w.add_publisher("10.0.0.1:1000", "alice");
    w.run_until(Duration::from_secs(5), World::all_connected);
    let muted = w.clients[p].addr;
    w.mute.push(muted);
    let timeout = w.config.consent_timeout;
    w.run(timeout - Duration::from_secs(1));
    assert_eq!(w.legs[p].closed, None);
    w.run(Duration::from_secs(2));
    assert_eq!(w.legs[p].closed, Some(CloseReason::ConsentExpired));
}

#[test]
fn a_new_publisher_continues_the_viewers_sequence() {
    let mut w = World::new();
    let p1 = w.add_publisher("10.0.0.1:1000", "alice");
    let v = w.add_viewer("10.0.0.2:1000", &[]).unwrap();
    let p2 = w.add_publisher("10.0.0.3:1000", "bob");
    subscribe_all(&mut w, p1, &[v]);
    w.run_until(Duration::from_secs(5), World::all_connected);
    for i in 0..20u64 {
        w.send_video(p1, 1000 + i, i as u32 * 3000, &payload(i));
        w.run(Duration::from_millis(5));
    }
    w.run(Duration::from_millis(50));
    subscribe_all(&mut w, p2, &[v]);
    for i in 0..20u64 {
        w.send_video(p2, 60_000 + i, 77 + i as u32 * 3000, &payload(100 + i));
        w.run(Duration::from_millis(5));
    }
    w.run(Duration::from_millis(100));
    let got = w.received(v, MediaKind::Video);
    assert_eq!(got.len(), 40);
    for pair in got.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "sequence numbers stay continuous");
        assert!(
            pair[1].1.wrapping_sub(pair[0].1) < 90_000,
            "timestamps move forward"
        );
    }
    assert_eq!(got[20].2, payload(100));
    let ssrcs: std::collections::HashSet<u32> = w.clients[v]
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media {
                kind: MediaKind::Video,
                ssrc,
                ..
            } => Some(*ssrc),
            _ => None,
        })
        .collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC toward the viewer");
}

#[test]
fn a_viewer_without_the_publishers_codec_is_refused() {
    let mut w = World::new();
    let h264 = CodecInfo {
        codec: Codec::H264,
        clock_rate: 90_000,
        h264_profile: Some(0x42),
        h264_packetization_mode: Some(1),
    };
    match w.add_viewer("10.0.0.2:1000", &[h264]) {
        Err(Error::NoCommonCodec { kind, .. }) => assert_eq!(kind, MediaKind::Video),
        other => panic!("expected NoCommonCodec, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn publisher_codecs_are_known_after_negotiation() {
    let mut w = World::new();
    let p = w.add_publisher("10.0.0.1:1000", "alice");
    let codecs = w.legs[p].endpoint.negotiated_codecs();
    assert!(codecs.iter().any(|c| c.codec == Codec::Vp8), "{codecs:?}");
    assert!(codecs.iter().any(|c| c.codec == Codec::Opus), "{codecs:?}");
}

#[test]
fn malformed_offers_are_errors() {
    let config = EndpointConfig::new(vec![addr(SERVER)]);
    let now = Instant::now();
    let who = || PublisherInfo {
        room: "r".into(),
        peer: "p".into(),
    };
    for body in [
        "",
        "hello",
        "v=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
    ] {
        assert!(
            Endpoint::publisher(&config, now, body, who()).is_err(),
            "{body:?} accepted"
        );
        assert!(
            Endpoint::viewer(&config, now, body, &[]).is_err(),
            "{body:?} accepted"
        );
    }
}

#[test]
fn a_keyframe_asked_for_before_the_first_packet_is_requested_on_it() {
    let mut w = World::new();
    let p = w.add_publisher("10.0.0.1:1000", "alice");
    w.run_until(Duration::from_secs(5), World::all_connected);
    let now = w.now;
    assert!(
        !w.legs[p].endpoint.request_keyframe(
            now,
            ChannelId::for_track("room", "alice", "video"),
            None
        ),
        "no stream yet"
    );
    for i in 0..5u64 {
        w.send_video(p, 10 + i, i as u32 * 3000, &payload(i));
        w.run(Duration::from_millis(20));
    }
    let got = w.clients[p]
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::KeyframeRequest(MediaKind::Video)))
        .count();
    assert_eq!(got, 1);
}

#[test]
fn a_lossy_viewer_leg_is_repaired_by_nack_and_rtx() {
    let (mut w, p, v) = World::connected_pair();
    let base = warm_up(&mut w, p, &[v], 5000);
    // Every 20th video packet toward the viewer is lost; the publisher's leg is clean.
    w.lossy = Some((w.clients[v].addr, 20));
    for i in 0..200u64 {
        w.send_video(p, base + i, i as u32 * 3000, &payload(i));
        w.run(Duration::from_millis(5));
    }
    w.lossy = None;
    w.run(Duration::from_millis(500));
    let got: Vec<Vec<u8>> = w.video_payloads(v);
    let lost = w.lossy_dropped;
    let missing: Vec<u64> = (0..200u64)
        .filter(|i| !got.contains(&payload(*i)))
        .collect();
    // 198 primary packets toward the viewer during the lossy phase: one in
    // 20 dropped, each answered by exactly one RTX packet, each repaired.
    assert_eq!(lost, 9, "the leg lost {lost} packets");
    assert_eq!(w.lossy_other, lost, "one retransmission per lost packet");
    assert_eq!(missing, Vec::<u64>::new(), "every lost packet repaired");
}

#[test]
fn a_viewer_leg_keeps_video_for_retransmission_for_the_nack_window_only() {
    // The viewer's NACKs reach the server 300 ms after it sent the lost
    // packet: within a 1 s window they are answered, past a 100 ms one the
    // packets are gone (nothing is resent, nothing repaired).
    for (window_ms, repaired) in [(1000, true), (100, false)] {
        let mut w = World::new();
        w.config.nack_window = Duration::from_millis(window_ms);
        let p = w.add_publisher("10.0.0.1:1000", "alice");
        let v = w.add_viewer("10.0.0.2:1000", &[]).unwrap();
        subscribe_all(&mut w, p, &[v]);
        w.run_until(Duration::from_secs(5), World::all_connected);
        let base = warm_up(&mut w, p, &[v], 5000);
        w.uplink_delay = Some((w.clients[v].addr, Duration::from_millis(300)));
        w.lossy = Some((w.clients[v].addr, 20));
        // Lossy for the first 200 packets; the stream goes on for 200 more
        // (str0m drops old packets as new ones are sent).
        for i in 0..400u64 {
            if i == 200 {
                w.lossy = None;
            }
            w.send_video(p, base + i, i as u32 * 3000, &payload(i));
            w.run(Duration::from_millis(5));
        }
        w.run(Duration::from_millis(800));
        let got = w.video_payloads(v);
        let missing = (0..200u64).filter(|i| !got.contains(&payload(*i))).count();
        let lost = w.lossy_dropped;
        assert!(
            lost >= 9,
            "window {window_ms} ms: the leg lost {lost} packets"
        );
        if repaired {
            // The viewer asks again before the first resend can arrive (its
            // round trip is 310 ms), so some losses are resent twice.
            assert!(
                w.lossy_other >= lost,
                "window {window_ms} ms: {} resends",
                w.lossy_other
            );
            assert_eq!(missing, 0, "window {window_ms} ms: every loss repaired");
        } else {
            assert_eq!(
                w.lossy_other, 0,
                "window {window_ms} ms: nothing left to resend"
            );
            assert_eq!(missing, lost, "window {window_ms} ms: no loss repaired");
        }
    }
}

#[test]
fn closing_an_endpoint_tells_the_peer() {
    let mut w = World::new();
    let p = w.add_publisher("10.0.0.1:1000", "alice");
    w.run_until(Duration::from_secs(5), World::all_connected);
    w.legs[p].endpoint.close();
    w.drain();
    w.run(Duration::from_millis(200));
    assert!(
        w.clients[p]
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed))
            || !w.clients[p].client.is_connected(),
        "the publisher learns that the server closed its session"
    );
}

/// Sends video packet `i` (payload [`payload`], a VP8 keyframe start) with
/// extended sequence number `seq`, and drains.
fn send_numbered(w: &mut World, p: usize, seq: u64, i: u64) {
    assert!(w.send_video(p, seq, i as u32 * 3000, &payload(i)));
}

/// The video payloads viewer `v` received, checked to be one continuous
/// run of sequence numbers that starts at ROC 0.
fn continuous_video(w: &World, v: usize) -> Vec<Vec<u8>> {
    let got = w.received(v, MediaKind::Video);
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "viewer {v}: sequence numbers continuous"
        );
    }
    // The viewer's space starts below 2^15 and these tests send far fewer
    // than 2^15 packets: everything seen is at rollover counter 0.
    if let Some(last) = got.last() {
        assert!(last.0 < 1 << 16, "viewer {v} is still at ROC 0: {}", last.0);
    }
    got.into_iter().map(|x| x.2).collect()
}

#[test]
fn viewers_joining_before_and_after_the_publishers_sequence_wrap_receive_everything() {
    let (mut w, p, early) = World::connected_pair();
    // The publisher starts at 65,500, like a browser that has been sending
    // for a while: its sequence numbers wrap after 36 packets.
    let mut seq = warm_up(&mut w, p, &[early], 65_500);
    for i in 0..100u64 {
        send_numbered(&mut w, p, seq, i);
        seq += 1;
        w.run(Duration::from_millis(5));
    }
    assert!(seq > 1 << 16, "the publisher wrapped");
    // A viewer joins after the wrap.
    let late = w.add_viewer("10.0.0.3:1000", &[]).unwrap();
    subscribe_all(&mut w, p, &[late]);
    w.run_until(Duration::from_secs(5), World::all_connected);
    w.run(Duration::from_millis(50));
    for c in w.clients.iter_mut() {
        c.events.clear();
    }
    for i in 100..300u64 {
        send_numbered(&mut w, p, seq, i);
        seq += 1;
        w.run(Duration::from_millis(5));
    }
    w.run(Duration::from_millis(200));
    for v in [early, late] {
        let got = continuous_video(&w, v);
        assert_eq!(got.len(), 200, "viewer {v} decrypted every packet");
        for (k, body) in got.iter().enumerate() {
            assert_eq!(*body, payload(100 + k as u64), "viewer {v} payload {k}");
        }
    }
}

#[test]
fn one_viewer_leg_runs_past_two_to_the_sixteen_and_seventeen_packets() {
    let (mut w, p, v) = World::connected_pair();
    let base = warm_up(&mut w, p, &[v], 0);
    const N: u64 = 140_000;
    for i in 0..N {
        let now = w.now;
        w.client(p).client.send(
            now,
            MediaKind::Video,
            base + i,
            i as u32,
            false,
            &i.to_be_bytes(),
        );
        w.drain();
        if i % 40 == 39 {
            w.run(Duration::from_millis(1));
        }
    }
    w.run(Duration::from_millis(200));
    let got = w.received(v, MediaKind::Video);
    assert_eq!(got.len() as u64, N, "every packet decrypted");
    let first = got[0].0;
    for (i, (seq, _, body)) in got.iter().enumerate() {
        assert_eq!(*seq, first + i as u64);
        assert_eq!(body[..], (i as u64).to_be_bytes());
    }
    let last = got[got.len() - 1].0;
    assert!(
        last >= 1 << 17,
        "the leg's own rollover counter reached 2: {last}"
    );
}

/// A VP8 payload: a keyframe start or a delta frame's first packet.
fn vp8(key: bool, i: u64) -> Vec<u8> {
    let mut p = vec![0x10, if key { 0x00 } else { 0x01 }];
    p.extend_from_slice(&i.to_be_bytes());
    p
}

#[test]
fn a_new_viewer_starts_at_a_keyframe_and_asks_for_one() {
    let mut w = World::new();
    let (p, v) = streaming(&mut w, 1);
    let late = w.add_viewer("10.0.0.9:1000", &[]).unwrap();
    subscribe_all(&mut w, p, &[late]);
    w.run_until(Duration::from_secs(5), World::all_connected);
    for c in w.clients.iter_mut() {
        c.events.clear();
    }
    // Delta frames, then a keyframe, then deltas.
    let frames: Vec<bool> = (0..30).map(|i| i == 12).collect();
    for (i, key) in frames.iter().enumerate() {
        w.send_video(p, 1000 + i as u64, i as u32 * 3000, &vp8(*key, i as u64));
        w.run(Duration::from_millis(30));
    }
    w.run(Duration::from_millis(200));
    let old: Vec<Vec<u8>> = continuous_video(&w, v[0]);
    assert_eq!(
        old.len(),
        30,
        "a viewer that already plays gets every frame"
    );
    let got = continuous_video(&w, late);
    assert_eq!(got.len(), 18, "the new viewer starts at the keyframe");
    assert_eq!(got[0], vp8(true, 12));
    assert_eq!(w.legs[late].endpoint.stats().waiting_keyframe, 12);
    assert!(
        keyframe_requests_seen(&w, p) >= 1,
        "the waiting viewer asked the publisher for a keyframe"
    );
}

#[test]
fn a_switch_starts_at_the_new_publishers_keyframe_and_drops_its_older_packets() {
    let mut w = World::new();
    let p1 = w.add_publisher("10.0.0.1:1000", "alice");
    let v = w.add_viewer("10.0.0.2:1000", &[]).unwrap();
    let p2 = w.add_publisher("10.0.0.3:1000", "bob");
    subscribe_all(&mut w, p1, &[v]);
    w.run_until(Duration::from_secs(5), World::all_connected);
    for i in 0..10u64 {
        w.send_video(p1, 500 + i, i as u32 * 3000, &vp8(i == 0, i));
        w.run(Duration::from_millis(20));
    }
    w.run(Duration::from_millis(50));
    subscribe_all(&mut w, p2, &[v]);
    // bob: a delta frame (not forwarded), his keyframe at 40_002, then
    // 40_001 arrives late (reordered across his start: dropped), then more.
    let order = [
        (40_000u64, false),
        (40_002, true),
        (40_001, false),
        (40_003, false),
        (40_004, false),
    ];
    for (seq, key) in order {
        w.send_video(p2, seq, seq as u32 * 3000, &vp8(key, seq));
        w.run(Duration::from_millis(20));
    }
    w.run(Duration::from_millis(200));
    let got = continuous_video(&w, v);
    let bodies: Vec<Vec<u8>> = got[10..].to_vec();
    assert_eq!(
        bodies,
        vec![vp8(true, 40_002), vp8(false, 40_003), vp8(false, 40_004)],
        "bob's stream starts at his keyframe; nothing older follows"
    );
    assert_eq!(
        w.legs[v].endpoint.stats().media_dropped,
        1,
        "40_001 dropped"
    );
}

#[test]
fn the_video_orientation_reaches_the_viewer() {
    let (mut w, p, v) = World::connected_pair();
    let base = warm_up(&mut w, p, &[v], 10);
    for (i, o) in [Some(1u8), Some(3), None, Some(2)].into_iter().enumerate() {
        let now = w.now;
        let meta = corecast_webrtc::SendMeta {
            wallclock: now,
            orientation: o,
            dependency: None,
        };
        w.client(p).client.send_with(
            now,
            MediaKind::Video,
            base + i as u64,
            i as u32 * 3000,
            true,
            &payload(i as u64),
            meta,
        );
        w.drain();
        w.run(Duration::from_millis(20));
    }
    w.run(Duration::from_millis(100));
    let seen: Vec<Option<u8>> = w.clients[v]
        .events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media {
                kind: MediaKind::Video,
                orientation,
                ..
            } => Some(*orientation),
            _ => None,
        })
        .collect();
    assert_eq!(seen, vec![Some(1), Some(3), None, Some(2)]);
}

#[test]
fn viewers_sender_reports_keep_the_publishers_audio_video_sync() {
    let (mut w, p, v) = World::connected_pair();
    // Audio and video captured together every 20 ms; the video leaves the
    // publisher 60 ms after its capture (encoding), the audio at once.
    let start = w.now;
    let encode = Duration::from_millis(60);
    let mut frame = 0u64;
    while w.now < start + Duration::from_secs(12) {
        let capture = start + Duration::from_millis(20 * frame);
        let now = w.now;
        if capture <= now {
            let ms = 20 * frame;
            let meta = corecast_webrtc::SendMeta {
                wallclock: capture,
                orientation: None,
                dependency: None,
            };
            w.client(p).client.send_with(
                now,
                MediaKind::Audio,
                100 + frame,
                (ms * 48) as u32,
                false,
                &[0xfc, 1],
                meta,
            );
            w.drain();
        }
        if capture + encode <= now {
            let meta = corecast_webrtc::SendMeta {
                wallclock: capture,
                orientation: None,
                dependency: None,
            };
            let ms = 20 * frame;
            w.client(p).client.send_with(
                now,
                MediaKind::Video,
                100 + frame,
                (ms * 90) as u32,
                true,
                &payload(frame),
                meta,
            );
            w.drain();
            frame += 1;
        }
        w.run(Duration::from_millis(1));
    }
    // The NTP time each track's last sender report gives RTP time 0: the
    // publisher captured both at `start`, so they must agree.
    let ntp_of_zero = |kind: MediaKind, rate: f64| {
        w.clients[v]
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                ClientEvent::SenderReport {
                    kind: k,
                    ntp,
                    rtp_time,
                } if *k == kind => {
                    let back = Duration::from_secs_f64(f64::from(*rtp_time) / rate);
                    Some(*ntp - back)
                }
                _ => None,
            })
            .expect("the viewer got sender reports")
    };
    let audio = ntp_of_zero(MediaKind::Audio, 48_000.0);
    let video = ntp_of_zero(MediaKind::Video, 90_000.0);
    let skew = audio.duration_since(video).unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_millis(3),
        "audio and video reports disagree by {skew:?} (the publisher's: 0)"
    );
}

#[test]
fn a_lossy_publisher_leg_is_repaired_before_the_viewers_get_it() {
    let (mut w, p, v) = World::connected_pair();
    let base = warm_up(&mut w, p, &[v], 5000);
    // Every 20th video packet from the publisher to the server is lost; the
    // server NACKs, the publisher's RTX repairs, the viewer gets it late.
    w.lossy = Some((addr(SERVER), 20));
    // 205 packets: the last loss (the 200th) is followed by a few more, so
    // it shows as a gap the server NACKs.
    for i in 0..205u64 {
        w.send_video(p, base + i, i as u32 * 3000, &payload(i));
        w.run(Duration::from_millis(5));
    }
    w.run(Duration::from_millis(500));
    let got: Vec<Vec<u8>> = w.video_payloads(v);
    assert_eq!(w.lossy_dropped, 10);
    assert_eq!(w.lossy_other, 10, "one retransmission per lost packet");
    w.lossy = None;
    let missing: Vec<u64> = (0..205u64)
        .filter(|i| !got.contains(&payload(*i)))
        .collect();
    assert_eq!(
        missing,
        Vec::<u64>::new(),
        "every lost packet reached the viewer"
    );
    assert_eq!(got.len(), 205, "and none twice");
}
