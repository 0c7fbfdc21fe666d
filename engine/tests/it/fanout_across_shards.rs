//! One publisher and many viewers on real loopback UDP, spread by the kernel
//! over two shards: every viewer receives every payload, bit-exact and in
//! order, and media crossed shards over the rings.

use std::time::Duration;

use crate::common::{metric, per_shard, pump_until, start_node, Peer};
use corecast_media::MediaKind;
use corecast_webrtc::EndpointConfig;

fn video_payload(i: u32) -> Vec<u8> {
    // VP8 descriptor byte, the index, then a pattern that depends on it.
    let mut p = vec![0x10];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..900u32).map(|b| (b.wrapping_mul(31) ^ i) as u8));
    p
}

fn audio_payload(i: u32) -> Vec<u8> {
    let mut p = vec![0xfc];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..60u32).map(|b| (b ^ i) as u8));
    p
}

#[test]
fn every_viewer_gets_every_payload_across_two_shards() {
    let node = start_node(2);
    let http = node.http_addr;
    let config = EndpointConfig::new(vec![]);

    let publisher = Peer::join(&config, http, "whip", "fanout");
    let mut peers = vec![publisher];
    for _ in 0..8 {
        peers.push(Peer::join(&config, http, "whep", "fanout"));
    }
    assert!(
        pump_until(&mut peers, Duration::from_secs(10), |ps| ps
            .iter()
            .all(|p| p.client.is_connected())),
        "all peers connect"
    );
    // The kernel spreads clients over shards by their 4-tuple; add viewers
    // until both shards hold some (8 viewers almost always suffice).
    while per_shard(http, "corecast_endpoints")
        .iter()
        .filter(|n| **n > 0)
        .count()
        < 2
    {
        assert!(peers.len() < 40, "the kernel put 40 clients on one shard");
        peers.push(Peer::join(&config, http, "whep", "fanout"));
        assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps
            .iter()
            .all(|p| p.client.is_connected())));
    }

    // Warm up until every viewer receives both kinds (the first packets of a
    // stream may arrive before a viewer's SRTP context is ready).
    let mut seq = 1000u64;
    let mut warm = false;
    for _ in 0..200 {
        let now = std::time::Instant::now();
        peers[0].client.send(
            now,
            MediaKind::Video,
            seq,
            seq as u32 * 3000,
            true,
            &[0x10, 0],
        );
        peers[0].drain(now);
        peers[0].client.send(
            now,
            MediaKind::Audio,
            seq,
            seq as u32 * 960,
            false,
            &[0xfc, 0],
        );
        peers[0].drain(now);
        seq += 1;
        pump_until(&mut peers, Duration::from_millis(20), |_| false);
        if peers[1..].iter().all(|p| {
            !p.payloads(MediaKind::Video).is_empty() && !p.payloads(MediaKind::Audio).is_empty()
        }) {
            warm = true;
            break;
        }
    }
    assert!(warm, "every viewer receives media during warm-up");
    for p in peers.iter_mut() {
        p.events.clear();
    }

    // 400 video packets and 200 audio packets at about 400 packets/s.
    const VIDEO: u32 = 400;
    for i in 0..VIDEO {
        let now = std::time::Instant::now();
        peers[0].client.send(
            now,
            MediaKind::Video,
            seq,
            seq as u32 * 3000,
            i % 4 == 3,
            &video_payload(i),
        );
        peers[0].drain(now);
        if i % 2 == 0 {
            peers[0].client.send(
                now,
                MediaKind::Audio,
                seq,
                seq as u32 * 960,
                false,
                &audio_payload(i / 2),
            );
            peers[0].drain(now);
        }
        seq += 1;
        pump_until(&mut peers, Duration::from_micros(2500), |_| false);
    }
    let complete = pump_until(&mut peers, Duration::from_secs(5), |ps| {
        ps[1..].iter().all(|p| {
            p.payloads(MediaKind::Video).len() >= VIDEO as usize
                && p.payloads(MediaKind::Audio).len() >= (VIDEO / 2) as usize
        })
    });

    for (n, p) in peers[1..].iter().enumerate() {
        let video = p.payloads(MediaKind::Video);
        let expected: Vec<Vec<u8>> = (0..VIDEO).map(video_payload).collect();
        assert_eq!(
            video.len(),
            expected.len(),
            "viewer {n}: video packet count"
        );
        assert!(
            video == expected,
            "viewer {n}: video payloads differ or are out of order"
        );
        let audio = p.payloads(MediaKind::Audio);
        let expected: Vec<Vec<u8>> = (0..VIDEO / 2).map(audio_payload).collect();
        assert!(
            audio == expected,
            "viewer {n}: audio payloads differ or are out of order"
        );
    }
    assert!(complete);
    assert!(
        metric(http, "corecast_ring_forwards_total") > 0,
        "media crossed shards on the rings"
    );
    assert_eq!(metric(http, "corecast_ring_drops_total"), 0);
    node.shutdown();
}
