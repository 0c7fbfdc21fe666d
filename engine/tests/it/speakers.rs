//! Active speakers and top-N audio on loopback: five SDK publishers send
//! Opus with different audio levels (RFC 6464); connections that follow
//! the speakers hear the three loudest (never themselves), the set follows
//! when the levels change, and everyone gets `active_speakers` events.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{metric, pump_rooms, start_node, tagged_audio, RoomPeer};
use serde_json::json;

/// Audio packets every 20 ms from each publisher at its level, for `d`.
fn talk(peers: &mut [RoomPeer], publishers: usize, levels: &[u8], seq: &mut u32, d: Duration) {
    let end = Instant::now() + d;
    let mut next = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next {
            let now = Instant::now();
            for (i, p) in peers.iter_mut().take(publishers).enumerate() {
                p.client.send_with_level(
                    now,
                    "audio",
                    u64::from(*seq),
                    seq.wrapping_mul(960),
                    true,
                    &tagged_audio(i as u8, *seq),
                    Some(levels[i]),
                );
                p.drain(now);
            }
            *seq += 1;
            next += Duration::from_millis(20);
        }
        for p in peers.iter_mut() {
            p.pump();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The senders whose audio peer `p` received since media index `from`.
fn heard(p: &RoomPeer, from: usize) -> BTreeSet<u8> {
    p.media[from..]
        .iter()
        .filter(|(_, payload)| payload.first() == Some(&0xfc))
        .map(|(_, payload)| payload[1])
        .collect()
}

/// The peers of the last `active_speakers` event `p` got.
fn speakers(p: &RoomPeer) -> Vec<String> {
    p.events("active_speakers")
        .last()
        .map(|e| {
            e["speakers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["peer"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn followers_hear_the_three_loudest_and_the_set_follows_the_levels() {
    let node = start_node(2);
    // p0..p4 publish; f0 and f1 only listen (three audio slots each); p1
    // publishes and follows too.
    let names = ["p0", "p1", "p2", "p3", "p4", "f0", "f1"];
    let mut peers: Vec<RoomPeer> = names
        .iter()
        .map(|n| RoomPeer::connect(node.http_addr, "talk", n, 3))
        .collect();
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(20), |ps| ps
            .iter()
            .all(RoomPeer::joined)),
        "every peer joined"
    );
    let followers = [1usize, 5, 6];
    let mut asked = Vec::new();
    for &f in &followers {
        asked.push(peers[f].request("follow_speakers", json!({})));
    }
    assert!(pump_rooms(&mut peers, Duration::from_secs(5), |ps| {
        followers
            .iter()
            .zip(&asked)
            .all(|(f, id)| ps[*f].answer(*id).is_some())
    }));
    for (&f, id) in followers.iter().zip(&asked) {
        let a = peers[f].answer(*id).unwrap();
        assert_eq!(a["ok"], true, "{a}");
        assert_eq!(a["mids"].as_array().unwrap().len(), 3, "{a}");
    }

    // Levels in -dBov: p0 loudest, p4 quietest; all speak.
    let mut seq = 0u32;
    talk(
        &mut peers,
        5,
        &[10, 20, 30, 50, 60],
        &mut seq,
        Duration::from_secs(3),
    );
    let marks: Vec<usize> = peers.iter().map(|p| p.media.len()).collect();
    talk(
        &mut peers,
        5,
        &[10, 20, 30, 50, 60],
        &mut seq,
        Duration::from_secs(1),
    );
    assert_eq!(heard(&peers[5], marks[5]), BTreeSet::from([0, 1, 2]));
    assert_eq!(heard(&peers[6], marks[6]), BTreeSet::from([0, 1, 2]));
    // p1 never hears itself: the next loudest takes its place.
    assert_eq!(heard(&peers[1], marks[1]), BTreeSet::from([0, 2, 3]));
    // Every joined SDK peer knows the speakers, loudest first.
    for p in &peers {
        assert_eq!(speakers(p), ["p0", "p1", "p2"], "{}", p.name);
    }

    // p0 goes quiet, p4 gets loudest: the set follows within a few seconds.
    talk(
        &mut peers,
        5,
        &[90, 20, 30, 50, 5],
        &mut seq,
        Duration::from_secs(3),
    );
    let marks: Vec<usize> = peers.iter().map(|p| p.media.len()).collect();
    talk(
        &mut peers,
        5,
        &[90, 20, 30, 50, 5],
        &mut seq,
        Duration::from_secs(1),
    );
    assert_eq!(heard(&peers[5], marks[5]), BTreeSet::from([1, 2, 4]));
    assert_eq!(heard(&peers[6], marks[6]), BTreeSet::from([1, 2, 4]));
    assert_eq!(heard(&peers[1], marks[1]), BTreeSet::from([2, 3, 4]));
    for p in &peers {
        assert_eq!(speakers(p), ["p4", "p1", "p2"], "{}", p.name);
    }
    // A follower's slot changed source without a gap in its sequence
    // numbers: the subscription events say which speaker it plays.
    let switched = peers[5]
        .events("subscription")
        .iter()
        .filter(|e| e["reason"] == "speaker_changed")
        .count();
    assert!(switched >= 1, "{:?}", peers[5].events("subscription"));
    let rooms = common::http(node.http_addr, "GET", "/api/rooms", &[], b"");
    assert!(rooms.body.contains("\"active_speakers\""), "{}", rooms.body);
    let metrics = common::http(node.http_addr, "GET", "/metrics", &[], b"").body;
    let changes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("corecast_active_speaker_changes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(changes >= 2, "{changes}");
    // The audio levels reached the control thread from the shards.
    assert!(metric(node.http_addr, "corecast_media_packets_total") > 0);
}
