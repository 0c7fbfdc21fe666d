//! A viewer that arrives before the publisher waits; when a second publisher
//! replaces the first, the viewer keeps one SSRC and continuous sequence
//! numbers, and the new publisher is asked for a keyframe.

use std::time::{Duration, Instant};

use crate::common::{http, metric, pump_until, start_node, Peer};
use corecast_media::MediaKind;
use corecast_webrtc::{ClientEvent, EndpointConfig};

/// A video payload: an H264 IDR slice for tag 0x65 (its NAL header), else
/// VP8 with the descriptor's S bit, whose payload header is `tag` (its low
/// bit is VP8's inverse keyframe flag: 0xa0/0xb0 start keyframes, 0xaa
/// keyframes too, 0xbb delta frames).
fn payload(tag: u8, i: u8) -> Vec<u8> {
    if tag == 0x65 {
        vec![0x65, 0x88, i]
    } else {
        vec![0x10, tag, i]
    }
}

fn send_video(peers: &mut [Peer], publisher: usize, seq: &mut u64, count: u32, tag: u8) {
    for i in 0..count {
        let now = Instant::now();
        peers[publisher].client.send(
            now,
            MediaKind::Video,
            *seq,
            *seq as u32 * 3000,
            true,
            &payload(tag, i as u8),
        );
        peers[publisher].drain(now);
        *seq += 1;
        pump_until(peers, Duration::from_millis(5), |_| false);
    }
}

fn video_seen(p: &Peer) -> Vec<(u64, u32, Vec<u8>)> {
    p.events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media {
                kind: MediaKind::Video,
                seq,
                ssrc,
                payload,
                ..
            } => Some((*seq, *ssrc, payload.to_vec())),
            _ => None,
        })
        .collect()
}

#[test]
fn viewers_wait_for_and_follow_the_current_publisher() {
    let node = start_node(2);
    let h = node.http_addr;
    let config = EndpointConfig::new(vec![]);

    // The viewer comes first.
    let mut peers = vec![Peer::join(&config, h, "whep", "switch")];
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps[0]
        .client
        .is_connected()));
    peers.push(Peer::join(&config, h, "whip", "switch"));
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps[1]
        .client
        .is_connected()));

    let mut seq_a = 100u64;
    let got_first = (0..100).any(|_| {
        send_video(&mut peers, 1, &mut seq_a, 1, 0xa0);
        !video_seen(&peers[0]).is_empty()
    });
    assert!(got_first, "the waiting viewer receives the first publisher");
    send_video(&mut peers, 1, &mut seq_a, 30, 0xaa);

    // A second publisher replaces the first; the first session is closed.
    let first_location = peers[1].location.clone();
    peers.push(Peer::join(&config, h, "whip", "switch"));
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps[2]
        .client
        .is_connected()));
    assert!(
        pump_until(&mut peers, Duration::from_secs(2), |ps| ps[1]
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed))),
        "the replaced publisher is told its session ended"
    );
    assert_eq!(
        http(h, "DELETE", &first_location, &[], b"").status,
        404,
        "the replaced session is gone"
    );

    let before = video_seen(&peers[0]).len();
    let mut seq_b = 50_000u64;
    // The new publisher's first frames are delta frames: the viewer's video
    // resumes at its keyframe, not before.
    send_video(&mut peers, 2, &mut seq_b, 5, 0xbb);
    pump_until(&mut peers, Duration::from_millis(100), |_| false);
    assert_eq!(
        video_seen(&peers[0]).len(),
        before,
        "no delta frame before the keyframe"
    );
    let got_second = (0..100).any(|_| {
        send_video(&mut peers, 2, &mut seq_b, 1, 0xb0);
        video_seen(&peers[0])
            .iter()
            .skip(before)
            .any(|(_, _, p)| p[1] == 0xb0)
    });
    assert!(got_second, "the viewer follows the new publisher");
    send_video(&mut peers, 2, &mut seq_b, 30, 0xbb);
    pump_until(&mut peers, Duration::from_millis(300), |_| false);

    let seen = video_seen(&peers[0]);
    let ssrcs: std::collections::HashSet<u32> = seen.iter().map(|s| s.1).collect();
    assert_eq!(
        ssrcs.len(),
        1,
        "one SSRC toward the viewer across publishers"
    );
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "continuous sequence numbers: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(seen.iter().any(|s| s.2[1] == 0xbb));
    let asked = peers[2]
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::KeyframeRequest(MediaKind::Video)));
    assert!(asked, "the new publisher was asked for a keyframe");
    assert!(metric(h, "corecast_media_waiting_keyframe_total") >= 5);
    assert!(metric(h, "corecast_keyframe_requests_total") >= 1);
    assert_eq!(metric(h, "corecast_endpoints"), 2);
    node.shutdown();
}

#[test]
fn viewers_that_cannot_receive_a_new_publishers_codec_are_closed_with_a_reason() {
    let node = start_node(2);
    let h = node.http_addr;
    let config = EndpointConfig::new(vec![]);

    // A VP8 stream and a VP8 viewer.
    let mut peers = vec![
        Peer::join(&config, h, "whip", "recodec"),
        Peer::join(&config, h, "whep", "recodec"),
    ];
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps
        .iter()
        .all(|p| p.client.is_connected())));
    let mut seq = 1u64;
    let got = (0..100).any(|_| {
        send_video(&mut peers, 0, &mut seq, 1, 0xa0);
        !video_seen(&peers[1]).is_empty()
    });
    assert!(got, "the VP8 viewer plays the VP8 publisher");

    // An H264 publisher replaces it.
    peers.push(Peer::join_with(
        &config,
        h,
        "whip",
        "recodec",
        corecast_media::Codec::H264,
    ));
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps[2]
        .client
        .is_connected()));
    // A PATCH of a placed session goes to its shard and comes back.
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let r = http(
        h,
        "PATCH",
        &peers[2].location,
        &frag,
        b"a=end-of-candidates\r\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let mut seq_b = 1u64;
    let closed = (0..200).any(|_| {
        // An H264 IDR slice NAL unit.
        send_video(&mut peers, 2, &mut seq_b, 1, 0x65);
        peers[1]
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::Closed))
    });
    assert!(closed, "the VP8 viewer is told its session ended");
    let viewer = peers[1].location.rsplit('/').next().unwrap().to_string();
    let r = http(h, "GET", "/api/closed", &[], b"");
    assert_eq!(r.status, 200);
    let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["session"] == viewer.as_str())
        .unwrap_or_else(|| panic!("the viewer is in /api/closed: {}", r.body));
    assert_eq!(entry["reason"], "codec_changed");
    assert_eq!(entry["stream"], "recodec");
    assert_eq!(metric(h, "corecast_viewers_closed_total"), 1);

    // An H264 viewer of the new publisher plays (and is not closed).
    peers.push(Peer::join_with(
        &config,
        h,
        "whep",
        "recodec",
        corecast_media::Codec::H264,
    ));
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps[3]
        .client
        .is_connected()));
    let plays = (0..100).any(|_| {
        send_video(&mut peers, 2, &mut seq_b, 1, 0x65);
        !video_seen(&peers[3]).is_empty()
    });
    assert!(plays, "an H264 viewer receives the H264 publisher");
    assert_eq!(metric(h, "corecast_viewers_closed_total"), 1);
    node.shutdown();
}
