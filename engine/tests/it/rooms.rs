//! Conference rooms over the SDK transport, on loopback with the Rust room
//! client: everyone sees everyone bit-exact, late joiners, leaving,
//! replaced peer ids, bad RPC input.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::{http, pump_rooms, start_node, tagged_audio, tagged_video, RoomPeer};
use serde_json::json;

/// Every peer sends one audio and one video packet numbered `seq`.
fn send_round(peers: &mut [RoomPeer], seq: u32) {
    let now = Instant::now();
    for (i, p) in peers.iter_mut().enumerate() {
        let i = i as u8;
        p.client.send(
            now,
            "audio",
            u64::from(seq),
            seq.wrapping_mul(960),
            true,
            &tagged_audio(i, seq),
        );
        p.client.send(
            now,
            "video",
            u64::from(seq),
            seq.wrapping_mul(3000),
            true,
            &tagged_video(i, seq),
        );
        p.drain(now);
    }
}

/// Joins `n` peers to `room` on `node`, each with `slots` slots per kind.
fn join_all(addr: std::net::SocketAddr, room: &str, n: usize, slots: usize) -> Vec<RoomPeer> {
    let mut peers: Vec<RoomPeer> = (0..n)
        .map(|i| RoomPeer::connect(addr, room, &format!("p{i}"), slots))
        .collect();
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(20), |ps| ps
            .iter()
            .all(RoomPeer::joined)),
        "every peer joined"
    );
    peers
}

#[test]
fn eight_peers_each_receive_everyone_elses_media_bit_exact() {
    const N: usize = 8;
    const MEASURED: u32 = 30;
    let node = start_node(2);
    let mut peers = join_all(node.http_addr, "eight", N, N - 1);
    // Everyone subscribes to everyone else's two tracks: (receiver, sender,
    // track) -> request id.
    let mut asked = BTreeMap::new();
    for (i, peer) in peers.iter_mut().enumerate() {
        for j in (0..N).filter(|j| *j != i) {
            for track in ["audio", "video"] {
                let id = peer.request(
                    "subscribe",
                    json!({"peer": format!("p{j}"), "track": track}),
                );
                asked.insert((i, j, track), id);
            }
        }
    }
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(10), |ps| asked
            .iter()
            .all(|((i, _, _), id)| ps[*i].answer(*id).is_some())),
        "every subscribe is answered"
    );
    // The slot each subscription plays in, from the answers.
    let mut mid_of = BTreeMap::new();
    for ((i, j, track), id) in &asked {
        let a = peers[*i].answer(*id).unwrap();
        assert_eq!(a["ok"], true, "{a}");
        mid_of.insert((*i, *j, *track), a["mid"].as_str().unwrap().to_string());
    }
    // Media flows until every subscription is live ...
    let mut seq = 0;
    let live = |p: &RoomPeer| {
        p.events("subscription")
            .iter()
            .filter(|e| e["state"] == "live")
            .count()
    };
    let end = Instant::now() + Duration::from_secs(20);
    while peers.iter().any(|p| live(p) < 2 * (N - 1)) {
        assert!(
            Instant::now() < end,
            "subscriptions went live: {:?}",
            peers.iter().map(live).collect::<Vec<_>>()
        );
        send_round(&mut peers, seq);
        seq += 1;
        pump_rooms(&mut peers, Duration::from_millis(20), |_| false);
    }
    // ... then a measured batch, which every peer must receive whole, each
    // sender's packets in the slot that plays it.
    // (The numbers continue: a jump would be a new SRTP rollover count.)
    let first = seq + 100;
    for s in seq..first {
        send_round(&mut peers, s);
        pump_rooms(&mut peers, Duration::from_millis(5), |_| false);
    }
    for s in first..first + MEASURED {
        send_round(&mut peers, s);
        pump_rooms(&mut peers, Duration::from_millis(10), |_| false);
    }
    let measured = |p: &RoomPeer| {
        p.media
            .iter()
            .filter(|(_, pl)| {
                let at = if pl[0] == 0x10 { 3 } else { 2 };
                pl.len() > at + 4
                    && u32::from_be_bytes([pl[at], pl[at + 1], pl[at + 2], pl[at + 3]]) >= first
            })
            .count()
    };
    let want = 2 * (N - 1) * MEASURED as usize;
    assert!(
        pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps
            .iter()
            .all(|p| measured(p) >= want)),
        "every peer received the measured batch: {:?} of {want}",
        peers.iter().map(measured).collect::<Vec<_>>()
    );
    for (i, p) in peers.iter().enumerate() {
        for j in (0..N).filter(|j| *j != i) {
            let sender = j as u8;
            let video: BTreeSet<Vec<u8>> = (first..first + MEASURED)
                .map(|s| tagged_video(sender, s))
                .collect();
            let audio: BTreeSet<Vec<u8>> = (first..first + MEASURED)
                .map(|s| tagged_audio(sender, s))
                .collect();
            let got = |mid: &str| -> BTreeSet<Vec<u8>> {
                p.media
                    .iter()
                    .filter(|(m, _)| m == mid)
                    .map(|(_, pl)| pl.clone())
                    .collect()
            };
            let v = got(&mid_of[&(i, j, "video")]);
            let a = got(&mid_of[&(i, j, "audio")]);
            assert!(
                video.is_subset(&v),
                "p{i} got p{j}'s video bit-exact in its slot"
            );
            assert!(
                audio.is_subset(&a),
                "p{i} got p{j}'s audio bit-exact in its slot"
            );
        }
    }
    node.shutdown();
}

#[test]
fn a_late_joiner_sees_the_room_and_leaving_reaches_everyone() {
    let node = start_node(2);
    let addr = node.http_addr;
    let mut peers = join_all(addr, "late", 2, 2);
    peers.push(RoomPeer::connect(addr, "late", "late", 2));
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps[2].joined()));
    // The join answer lists the peers already there, with their tracks.
    let answer = peers[2].answer(1).unwrap().clone();
    let names: BTreeSet<&str> = answer["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["p0", "p1"]), "{answer}");
    let tracks: Vec<&str> = answer["peers"][0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tracks, vec!["audio", "video"]);
    assert_eq!(answer["peers"][0]["metadata"]["name"], "p0");
    assert_eq!(answer["slots"].as_array().unwrap().len(), 4);
    // The others hear of it.
    assert!(pump_rooms(&mut peers, Duration::from_secs(5), |ps| ps[..2]
        .iter()
        .all(|p| p
            .events("peer_joined")
            .iter()
            .any(|e| e["peer"] == "late"))));
    // It leaves: everyone sees peer_left within 2 s.
    let left_at = Instant::now();
    peers[2].request("leave", json!({}));
    assert!(pump_rooms(&mut peers, Duration::from_secs(2), |ps| ps[..2]
        .iter()
        .all(|p| p
            .events("peer_left")
            .iter()
            .any(|e| e["peer"] == "late" && e["reason"] == "left"))));
    println!("peer_left after leave: {:?}", left_at.elapsed());
    // A DELETE ends p1's connection: p0 sees it go.
    let r = http(
        addr,
        "DELETE",
        &format!("/webrtc/{}", peers[1].conn),
        &[],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(pump_rooms(&mut peers, Duration::from_secs(2), |ps| ps[0]
        .events("peer_left")
        .iter()
        .any(|e| e["peer"] == "p1" && e["reason"] == "closed")));
    let rooms = http(addr, "GET", "/api/rooms", &[], b"").body;
    assert!(
        rooms.contains("\"p0\"") && !rooms.contains("\"p1\""),
        "{rooms}"
    );
    node.shutdown();
}

#[test]
fn a_second_connection_of_a_peer_id_replaces_the_first() {
    let node = start_node(1);
    let addr = node.http_addr;
    let mut peers = vec![
        RoomPeer::connect(addr, "dup", "watcher", 2),
        RoomPeer::connect(addr, "dup", "twin", 2),
    ];
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps
        .iter()
        .all(RoomPeer::joined)));
    peers.push(RoomPeer::connect(addr, "dup", "twin", 2));
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps[2]
        .joined()
        && ps[1]
            .events("closed")
            .iter()
            .any(|e| e["reason"] == "replaced")
        && ps[0]
            .events("peer_joined")
            .iter()
            .filter(|e| e["peer"] == "twin")
            .count()
            == 2));
    let left: Vec<_> = peers[0].events("peer_left");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["reason"], "replaced");
    // The first connection is gone on the server.
    let rooms = http(addr, "GET", "/api/rooms", &[], b"").body;
    assert!(
        rooms.contains(&peers[2].conn) && !rooms.contains(&peers[1].conn),
        "{rooms}"
    );
    node.shutdown();
}

#[test]
fn bad_rpc_input_is_answered_with_errors_and_counted() {
    let node = start_node(1);
    let addr = node.http_addr;
    let mut peers = vec![RoomPeer::connect(addr, "bad", "x", 1)];
    let p = &mut peers[0];
    // `join` is request 1; everything below is sent after it.
    let again = p.request("join", json!({"protocol": 1}));
    let unknown = p.request("dance", json!({}));
    let nobody = p.request("subscribe", json!({"peer": "ghost", "track": "video"}));
    let shapeless = p.request("subscribe", json!({"peer": 7}));
    let notrack = p.request("publish", json!({"track": "screen"}));
    p.client.send_text("not json");
    p.client.send_text("[1, 2, 3]");
    p.client.send_text(&"x".repeat(20_000));
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps[0]
        .answer(notrack)
        .is_some()
        && ps[0].events("error").len() >= 3));
    let p = &peers[0];
    let code = |id: u64| {
        p.answer(id).unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(p.joined());
    assert_eq!(code(again), "already_joined");
    assert_eq!(code(unknown), "unknown_request");
    assert_eq!(code(nobody), "unknown_peer");
    assert_eq!(code(shapeless), "bad_request");
    assert_eq!(code(notrack), "unknown_track");
    let errors: Vec<&str> = p
        .events("error")
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        errors.contains(&"bad_request") && errors.contains(&"too_large"),
        "{errors:?}"
    );
    // A flood: beyond the burst, requests are refused with rate_limited.
    let p = &mut peers[0];
    let ids: Vec<u64> = (0..300)
        .map(|_| p.client.request("update", json!({"metadata": {"n": 1}})))
        .collect();
    p.drain(Instant::now());
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ids
        .iter()
        .all(|id| ps[0].answer(*id).is_some())));
    let limited = ids
        .iter()
        .filter(|id| peers[0].answer(**id).unwrap()["error"]["code"] == "rate_limited")
        .count();
    assert!(limited >= 150, "{limited} of 300 refused");
    let metrics = http(addr, "GET", "/metrics", &[], b"").body;
    for code in [
        "already_joined",
        "unknown_request",
        "unknown_peer",
        "bad_request",
        "too_large",
        "rate_limited",
    ] {
        let line = format!("corecast_rpc_errors_total{{code=\"{code}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.parse().ok())
            .unwrap_or(0);
        assert!(n >= 1, "{code} counted");
    }
    // The node still serves.
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").status, 200);
    node.shutdown();
}

#[test]
fn requests_before_join_are_refused() {
    let node = start_node(1);
    let addr = node.http_addr;
    let mut peers = vec![RoomPeer::connect_without_join(addr, "early", "e", 1)];
    let id = peers[0].request("subscribe", json!({"peer": "x", "track": "video"}));
    let bad_version = peers[0].request("join", json!({"protocol": 2}));
    assert!(pump_rooms(&mut peers, Duration::from_secs(10), |ps| ps[0]
        .answer(bad_version)
        .is_some()));
    let p = &peers[0];
    assert_eq!(p.answer(id).unwrap()["error"]["code"], "not_joined");
    assert_eq!(
        p.answer(bad_version).unwrap()["error"]["code"],
        "unsupported_protocol"
    );
    // Not listed in the room until it joins.
    let rooms = http(addr, "GET", "/api/rooms", &[], b"").body;
    assert!(rooms.contains("\"joined\":false"), "{rooms}");
    node.shutdown();
}
