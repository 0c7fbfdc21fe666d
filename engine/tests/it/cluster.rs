//! Three corecast nodes in one process on loopback, clustered: a publisher on
//! one media node reaches viewers on another bit-exact and in order (two of
//! them joined before the stream existed anywhere, two after), the
//! gateway redirects to a media node, garbage and wrong-secret datagrams at
//! the cluster port are counted and change nothing, and a publisher that
//! leaves is gone from every node within two seconds.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::{
    clustered, http, plain_metric, pump_rooms, pump_until, tagged_video, Peer, RoomPeer,
};
use corecast_cluster::envelope::{Kind, Sealer};
use corecast_cluster::NodeRole;
use corecast_media::MediaKind;
use corecast_webrtc::EndpointConfig;

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn video_payload(i: u32) -> Vec<u8> {
    let mut p = vec![0x10];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..700u32).map(|b| (b.wrapping_mul(7) ^ i) as u8));
    p
}

fn audio_payload(i: u32) -> Vec<u8> {
    let mut p = vec![0xfc];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..50u32).map(|b| (b ^ i) as u8));
    p
}

/// Sends video and audio until every viewer got both kinds.
fn warm_up(peers: &mut [Peer], seq: &mut u64) -> bool {
    for _ in 0..300 {
        let now = Instant::now();
        peers[0].client.send(
            now,
            MediaKind::Video,
            *seq,
            *seq as u32 * 3000,
            true,
            &[0x10, 0],
        );
        peers[0].drain(now);
        peers[0].client.send(
            now,
            MediaKind::Audio,
            *seq,
            *seq as u32 * 960,
            false,
            &[0xfc, 0],
        );
        peers[0].drain(now);
        *seq += 1;
        pump_until(peers, Duration::from_millis(20), |_| false);
        if peers[1..].iter().all(|p| {
            !p.payloads(MediaKind::Video).is_empty() && !p.payloads(MediaKind::Audio).is_empty()
        }) {
            return true;
        }
    }
    false
}

#[test]
fn a_publisher_on_one_node_reaches_viewers_on_another() {
    let a = clustered(2, 1, NodeRole::All, vec![]);
    let a_cluster = a.cluster_addr.expect("cluster port");
    let b = clustered(1, 2, NodeRole::Media, vec![a_cluster]);
    let gateway = clustered(1, 9, NodeRole::Gateway, vec![a_cluster]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            plain_metric(b.http_addr, "corecast_cluster_nodes_alive") == 2
                && plain_metric(gateway.http_addr, "corecast_cluster_nodes_alive") == 2
        }),
        "every node sees the two others"
    );

    let config = EndpointConfig::new(vec![]);
    // Two viewers join B before the stream exists anywhere: they connect
    // and wait.
    let mut early = vec![
        Peer::join(&config, b.http_addr, "whep", "cl"),
        Peer::join(&config, b.http_addr, "whep", "cl"),
    ];
    assert!(pump_until(&mut early, Duration::from_secs(10), |ps| ps
        .iter()
        .all(|p| p.client.is_connected())));
    let streams = http(b.http_addr, "GET", "/api/streams", &[], b"").body;
    assert!(
        streams.contains("\"stream\":\"cl\"") && streams.contains("\"live\":false"),
        "B holds the waiting viewers of a stream that is not live: {streams}"
    );
    // The publisher joins A; two more viewers join B after it.
    let mut peers = vec![Peer::join(&config, a.http_addr, "whip", "cl")];
    peers.append(&mut early);
    // The remote stream becomes known on B through the rooms map.
    assert!(wait_until(Duration::from_secs(5), || {
        http(b.http_addr, "GET", "/api/streams", &[], b"")
            .body
            .contains("\"remote_node\":1")
    }));
    peers.push(Peer::join(&config, b.http_addr, "whep", "cl"));
    peers.push(Peer::join(&config, b.http_addr, "whep", "cl"));
    assert!(pump_until(&mut peers, Duration::from_secs(10), |ps| ps
        .iter()
        .all(|p| p.client.is_connected())));
    let mut seq = 1000u64;
    assert!(warm_up(&mut peers, &mut seq), "viewers on B receive media");
    for p in peers.iter_mut() {
        p.events.clear();
    }

    // Garbage and a frame sealed with another secret, in the middle of it.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..200usize {
        let d: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = junk.send_to(&d, a_cluster);
    }
    let mut forged = Vec::new();
    Sealer::new("not-the-secret").seal(Kind::Presence, b"hello", &mut forged);
    let _ = junk.send_to(&forged, a_cluster);

    const VIDEO: u32 = 300;
    for i in 0..VIDEO {
        let now = Instant::now();
        peers[0].client.send(
            now,
            MediaKind::Video,
            seq,
            seq as u32 * 3000,
            i % 3 == 2,
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
    pump_until(&mut peers, Duration::from_secs(5), |ps| {
        ps[1..].iter().all(|p| {
            p.payloads(MediaKind::Video).len() >= VIDEO as usize
                && p.payloads(MediaKind::Audio).len() >= (VIDEO / 2) as usize
        })
    });
    let video: Vec<Vec<u8>> = (0..VIDEO).map(video_payload).collect();
    let audio: Vec<Vec<u8>> = (0..VIDEO / 2).map(audio_payload).collect();
    for (n, p) in peers[1..].iter().enumerate() {
        assert_eq!(
            p.payloads(MediaKind::Video).len(),
            video.len(),
            "viewer {n}"
        );
        assert!(
            p.payloads(MediaKind::Video) == video,
            "viewer {n}: video differs"
        );
        assert!(
            p.payloads(MediaKind::Audio) == audio,
            "viewer {n}: audio differs"
        );
    }
    // Cluster counters come with the view shard 0 reports each second.
    assert!(wait_until(Duration::from_secs(3), || {
        plain_metric(a.http_addr, "corecast_cluster_media_out_total") >= u64::from(VIDEO)
            && plain_metric(b.http_addr, "corecast_cluster_media_in_total") >= u64::from(VIDEO)
            && plain_metric(a.http_addr, "corecast_cluster_rejected_garbage_total") >= 199
            && plain_metric(a.http_addr, "corecast_cluster_rejected_secret_total") >= 1
    }));

    // The gateway sends a viewer to a media node (both have the stream).
    let r = http(
        gateway.http_addr,
        "POST",
        "/whep/cl",
        &[("Content-Type", "application/sdp")],
        b"v=0",
    );
    assert_eq!(r.status, 307, "{}", r.body);
    let location = r.header("location").unwrap_or_default().to_string();
    let a_url = format!("http://127.0.0.1:{}/whep/cl", a.http_addr.port());
    let b_url = format!("http://127.0.0.1:{}/whep/cl", b.http_addr.port());
    assert!(location == a_url || location == b_url, "{location}");
    let cluster = http(gateway.http_addr, "GET", "/api/cluster", &[], b"");
    assert_eq!(cluster.status, 200);
    assert!(cluster.body.contains("\"candidates\""), "{}", cluster.body);

    // The publisher leaves: B learns it within two seconds.
    let location = peers[0].location.clone();
    let r = http(a.http_addr, "DELETE", &location, &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let left = Instant::now();
    assert!(wait_until(Duration::from_secs(2), || {
        !http(b.http_addr, "GET", "/api/streams", &[], b"")
            .body
            .contains("\"live\":true")
    }));
    eprintln!("B learned of the departure in {:?}", left.elapsed());
    gateway.shutdown();
    b.shutdown();
    a.shutdown();
}

#[test]
fn a_room_spans_two_nodes() {
    let a = clustered(1, 1, NodeRole::All, vec![]);
    let a_cluster = a.cluster_addr.expect("cluster port");
    let b = clustered(1, 2, NodeRole::Media, vec![a_cluster]);
    let gateway = clustered(1, 9, NodeRole::Gateway, vec![a_cluster]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            plain_metric(b.http_addr, "corecast_cluster_nodes_alive") == 2
                && plain_metric(gateway.http_addr, "corecast_cluster_nodes_alive") == 2
        }),
        "the nodes see each other"
    );
    let mut peers = vec![
        RoomPeer::connect(a.http_addr, "span", "on-a", 2),
        RoomPeer::connect(b.http_addr, "span", "on-b", 2),
    ];
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps
        .iter()
        .all(RoomPeer::joined)));
    // Each hears of the other through the cluster's room map.
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(5), |ps| {
            ps[0]
                .events("peer_joined")
                .iter()
                .any(|e| e["peer"] == "on-b")
                && ps[1]
                    .events("peer_joined")
                    .iter()
                    .any(|e| e["peer"] == "on-a")
        }),
        "peer_joined on both nodes"
    );
    // B's peer plays A's video: over the track channel between the nodes.
    let id = peers[1].request(
        "subscribe",
        serde_json::json!({"peer": "on-a", "track": "video"}),
    );
    assert!(pump_rooms(&mut peers, Duration::from_secs(5), |ps| ps[1]
        .answer(id)
        .is_some()));
    assert_eq!(peers[1].answer(id).unwrap()["ok"], true);
    let mid = peers[1].answer(id).unwrap()["mid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seq = 0u32;
    let sent: Vec<Vec<u8>> = (0..400)
        .map(|_| {
            seq += 1;
            let payload = tagged_video(0, seq);
            peers[0].client.send(
                Instant::now(),
                "video",
                u64::from(seq),
                seq * 3000,
                true,
                &payload,
            );
            peers[0].drain(Instant::now());
            pump_rooms(&mut peers, Duration::from_millis(10), |_| false);
            payload
        })
        .collect();
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(5), |ps| ps[1]
            .events("subscription")
            .iter()
            .any(|e| e["state"] == "live")),
        "the subscription went live"
    );
    let got: Vec<&Vec<u8>> = peers[1]
        .media
        .iter()
        .filter(|(m, _)| *m == mid)
        .map(|(_, p)| p)
        .collect();
    assert!(got.len() >= 100, "{} packets crossed", got.len());
    assert!(got.iter().all(|p| sent.contains(p)), "bit-exact");
    // The gateway sends an SDK connect to a media node, and requests about
    // a connection to the node its id names.
    let body = serde_json::json!({"room": "span", "peer": "via-gw", "sdp": "v=0"}).to_string();
    let r = http(
        gateway.http_addr,
        "POST",
        "/webrtc/connect",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 307, "{}", r.body);
    let location = r.header("location").unwrap_or_default().to_string();
    let node_of = |url: &str| {
        [&a, &b]
            .into_iter()
            .find(|n| url.starts_with(&format!("http://127.0.0.1:{}/", n.http_addr.port())))
            .map(|n| n.http_addr)
    };
    let media = node_of(&location).unwrap_or_else(|| panic!("{location}"));
    assert!(location.ends_with("/webrtc/connect"), "{location}");
    peers.push(RoomPeer::connect(media, "span", "via-gw", 2));
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps[2]
        .joined()
        && ps[1]
            .events("peer_joined")
            .iter()
            .any(|e| e["peer"] == "via-gw")));
    let path = format!("/webrtc/{}", peers[2].conn);
    let r = http(gateway.http_addr, "DELETE", &path, &[], b"");
    assert_eq!(r.status, 307, "{}", r.body);
    let location = r.header("location").unwrap_or_default().to_string();
    assert_eq!(node_of(&location), Some(media), "{location}");
    assert!(location.ends_with(&path), "{location}");
    let r = http(media, "DELETE", &path, &[], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http(
        gateway.http_addr,
        "DELETE",
        "/webrtc/00ff000000000001",
        &[],
        b"",
    );
    assert_eq!(r.status, 404, "a connection of no live node: {}", r.body);

    // A's peer leaves: B's peer sees it within 2 s. (With a third node
    // gone meanwhile it can take up to 16 s: see the cluster crate's
    // a_deletion_is_seen_when_another_node_dies_meanwhile.)
    peers[0].request("leave", serde_json::json!({}));
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(2), |ps| ps[1]
            .events("peer_left")
            .iter()
            .any(|e| e["peer"] == "on-a")),
        "peer_left reached the other node within 2 s"
    );
    assert!(pump_rooms(&mut peers, Duration::from_secs(2), |ps| ps[1]
        .events("subscription")
        .iter()
        .any(|e| e["state"] == "ended" && e["reason"] == "peer_left")));
}
