//! Simulcast through a running node on loopback: a str0m publisher sends
//! three VP8 layers over WHIP (aiortc cannot send simulcast); scripted WHEP
//! viewers get the layer their link and preference allow: an unconstrained
//! one the top layer, one with `?max_layer=0&adaptive=0` only the lowest
//! (without an estimate: a loaded CI machine's late reads look like
//! congestion and may pause an adaptive leg's only layer), one whose
//! downlink drops what exceeds 250 kbit/s a lower layer, each run of a
//! layer starting at its keyframe. Across two clustered nodes, the relaying
//! node receives only the layers its viewers want.

use crate::common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{http, metric, start_node, RoomPeer};
use corecast_cluster::NodeRole;
use corecast_media::{Codec, MediaKind, Output, TokenBucket};
use corecast_webrtc::{
    read_simulcast_frame, simulcast_frame, svc_frame, Client, ClientEvent, EndpointConfig,
};

const RATES: [usize; 3] = [100_000, 350_000, 1_200_000];
const FPS: u64 = 30;

/// A client on its own socket; a viewer may have a capped downlink.
struct Leg {
    socket: UdpSocket,
    local: SocketAddr,
    client: Client,
    events: Vec<ClientEvent>,
    next_timeout: Instant,
    /// Datagrams over this rate (bytes per second, bursts of 100 ms) are
    /// dropped before the client sees them: a capped link.
    cap: Option<TokenBucket>,
    dropped: usize,
    /// The resource URL the server answered with.
    location: String,
}

impl Leg {
    fn join(
        http_addr: SocketAddr,
        path: &str,
        client: Client,
        offer: String,
        socket: UdpSocket,
    ) -> Leg {
        let local = socket.local_addr().unwrap();
        let r = http(
            http_addr,
            "POST",
            path,
            &[("Content-Type", "application/sdp")],
            offer.as_bytes(),
        );
        assert_eq!(r.status, 201, "POST {path}: {}", r.body);
        let location = r.header("location").unwrap_or_default().to_string();
        let mut leg = Leg {
            socket,
            local,
            client,
            events: Vec::new(),
            next_timeout: Instant::now(),
            cap: None,
            dropped: 0,
            location,
        };
        leg.client.accept_answer(&r.body).expect("answer applies");
        leg.drain(Instant::now());
        leg
    }

    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let now = Instant::now();
            // RTP/RTCP (not STUN, not DTLS) over the cap is lost.
            let media = (128..192).contains(&buf[0]);
            if media && self.cap.as_mut().is_some_and(|c| !c.allow_n(now, n as u32)) {
                self.dropped += 1;
                continue;
            }
            let _ = self.client.handle_receive(now, from, self.local, &buf[..n]);
            self.drain(now);
        }
        let now = Instant::now();
        if now >= self.next_timeout {
            self.client.handle_timeout(now);
            self.drain(now);
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.client.poll_output(now) {
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(e) => self.events.push(e),
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
            }
        }
    }

    /// (arrival, layer, keyframe) of every received frame's first packet, in
    /// sequence-number order.
    fn frames(&self) -> Vec<(Instant, u8, bool)> {
        let mut by_seq = BTreeMap::new();
        for e in &self.events {
            if let ClientEvent::Media {
                kind: MediaKind::Video,
                seq,
                payload,
                arrival,
                ..
            } = e
            {
                if let Some((layer, _, 0, key, _)) = read_simulcast_frame(payload) {
                    by_seq.insert(*seq, (*arrival, layer, key));
                }
            }
        }
        by_seq.into_values().collect()
    }
}

/// The peer name of the room's WHIP publisher, from `/api/rooms`.
fn publisher_conn(h: SocketAddr) -> String {
    let rooms: serde_json::Value =
        serde_json::from_str(&http(h, "GET", "/api/rooms", &[], b"").body).unwrap();
    rooms["rooms"][0]["peers"][0]["peer"]
        .as_str()
        .expect("the publisher is a peer of the room")
        .to_string()
}

/// A simulcast publisher's schedule: 20 ms of audio, and a frame of each
/// layer every 1/[`FPS`] s, keyframes every 3 s and when asked.
struct Schedule {
    start: Instant,
    frame: u64,
    seq: [u64; 3],
    wants_key: [bool; 3],
    audio: u64,
}

impl Schedule {
    fn new(start: Instant) -> Schedule {
        Schedule {
            start,
            frame: 0,
            seq: [1; 3],
            wants_key: [true; 3],
            audio: 0,
        }
    }

    /// Sends what is due by now.
    fn send_due(&mut self, publisher: &mut Leg) {
        let t = self.start.elapsed();
        if t >= Duration::from_millis(20 * self.audio) {
            let now = Instant::now();
            let ts = (self.audio * 960) as u32;
            publisher.client.send(
                now,
                MediaKind::Audio,
                self.audio + 1,
                ts,
                false,
                &[0xfc; 100],
            );
            publisher.drain(now);
            self.audio += 1;
        }
        if t < Duration::from_micros(self.frame * 1_000_000 / FPS) {
            return;
        }
        for layer in 0..3u8 {
            let l = usize::from(layer);
            let key = self.wants_key[l] || self.frame.is_multiple_of(90);
            self.wants_key[l] = false;
            let ts = (self.frame * 90_000 / FPS) as u32;
            let packets = simulcast_frame(layer, self.frame, key, RATES[l] / 8 / FPS as usize);
            let n = packets.len();
            for (i, body) in packets.iter().enumerate() {
                let now = Instant::now();
                publisher
                    .client
                    .send_layer(now, l, self.seq[l], ts, i + 1 == n, body);
                self.seq[l] += 1;
                publisher.drain(now);
            }
        }
        self.frame += 1;
        for e in publisher.events.drain(..) {
            if let ClientEvent::LayerKeyframeRequest(l) = e {
                self.wants_key[l] = true;
            }
        }
    }
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

#[test]
fn viewers_get_the_layer_their_link_and_preference_allow() {
    let node = start_node(2);
    let h = node.http_addr;
    let config = EndpointConfig::new(vec![]);
    let now = Instant::now();
    let s = socket();
    let (client, offer) =
        Client::simulcast_publisher(&config, now, s.local_addr().unwrap(), &["q", "h", "f"])
            .unwrap();
    let mut publisher = Leg::join(h, "/whip/sc", client, offer, s);
    let mut viewers: Vec<Leg> = ["/whep/sc", "/whep/sc?max_layer=0&adaptive=0", "/whep/sc"]
        .iter()
        .map(|path| {
            let s = socket();
            let (client, offer) = Client::viewer(&config, now, s.local_addr().unwrap()).unwrap();
            Leg::join(h, path, client, offer, s)
        })
        .collect();
    // 250 kbit/s, bursts of 100 ms.
    viewers[2].cap = Some(TokenBucket::new(31_250, 3_125));
    // An SDK connection with an estimate subscribes to the WHIP publisher's
    // video (a peer named after its connection), capped at layer 1.
    let publisher_peer = publisher_conn(h);
    let mut sdk = RoomPeer::connect_adaptive(h, "sc", "sdk", 1);
    assert!(common::pump_rooms(
        std::slice::from_mut(&mut sdk),
        Duration::from_secs(10),
        |p| p[0].joined()
    ));
    let asked = sdk.request(
        "subscribe",
        serde_json::json!({"peer": publisher_peer, "track": "video", "max_layer": 1}),
    );

    let start = Instant::now();
    let mut schedule = Schedule::new(start);
    while start.elapsed() < Duration::from_secs(20) {
        schedule.send_due(&mut publisher);
        publisher.pump();
        for v in &mut viewers {
            v.pump();
        }
        sdk.pump();
        std::thread::sleep(Duration::from_micros(300));
    }

    let end = Instant::now();
    for (i, v) in viewers.iter().enumerate() {
        let frames = v.frames();
        let mut history: Vec<(u128, u8)> = Vec::new();
        let mut layer = None;
        for (at, l, key) in &frames {
            if layer != Some(*l) {
                assert!(key, "viewer {i}: layer {l} started without its keyframe");
                layer = Some(*l);
                history.push(((*at - start).as_millis(), *l));
            }
        }
        println!(
            "viewer {i}: {} frames, layers {history:?}, dropped {}",
            frames.len(),
            v.dropped
        );
        let last: Vec<u8> = frames
            .iter()
            .filter(|(at, ..)| *at + Duration::from_secs(3) >= end)
            .map(|f| f.1)
            .collect();
        // The capped viewer may pause when its estimate dips below the low
        // layer and its audio; it still gets most of the time's frames.
        let after_start = frames
            .iter()
            .filter(|(at, ..)| *at >= start + Duration::from_secs(5))
            .count();
        assert!(
            after_start >= 150,
            "viewer {i} keeps getting frames: {after_start}"
        );
        assert!(
            i == 2 || last.len() >= 30,
            "viewer {i} keeps getting frames: {}",
            last.len()
        );
        match i {
            // The estimate of a loopback leg dips when this one thread,
            // which pumps every client, reads late (str0m's delay trend
            // takes the late reads for queueing): the top layer a good part
            // of the time, not all of it.
            0 => {
                let since = frames
                    .iter()
                    .filter(|(at, ..)| *at >= start + Duration::from_secs(8))
                    .map(|f| f.1);
                let (top, all) = since.fold((0, 0), |(t, a), l| (t + usize::from(l == 2), a + 1));
                assert!(
                    top * 4 >= all,
                    "viewer 0 on the top layer a good part of the time: {history:?}"
                );
            }
            1 => assert!(frames.iter().all(|f| f.1 == 0), "max_layer=0: {history:?}"),
            _ => assert!(
                last.iter().all(|l| *l < 2),
                "capped viewer below the top: {history:?}"
            ),
        }
    }
    assert_eq!(
        sdk.answer(asked).map(|a| a["ok"].clone()),
        Some(true.into())
    );
    let sdk_layers: Vec<u8> = sdk
        .media
        .iter()
        .filter_map(|(_, payload)| read_simulcast_frame(payload))
        .map(|f| f.0)
        .collect();
    println!(
        "sdk: {} video packets, layers seen {:?}",
        sdk_layers.len(),
        {
            let mut l = sdk_layers.clone();
            l.dedup();
            l
        }
    );
    assert!(sdk_layers.len() > 100, "the SDK connection gets video");
    assert!(
        sdk_layers.iter().all(|l| *l <= 1),
        "max_layer 1 over the SDK"
    );
    assert!(sdk_layers.ends_with(&[1]), "it reaches layer 1");
    // Every video slot is counted on one layer (or paused); one may be
    // between two layers at the moment of the scrape.
    let counted: u64 = ["0", "1", "2", "3"]
        .iter()
        .map(|l| metric(h, &format!("corecast_video_slots_layer{l}")))
        .sum::<u64>()
        + metric(h, "corecast_video_slots_paused");
    assert!((3..=4).contains(&counted), "{counted} video slots counted");
    assert!(
        metric(h, "corecast_estimated_legs") >= 3,
        "two adaptive WHEP viewers and the SDK connection"
    );
    assert!(metric(h, "corecast_layer_switches_up_total") >= 1);
}

#[test]
fn an_svc_publisher_is_known_by_its_payloads_and_its_viewers_adapt() {
    let node = start_node(2);
    let h = node.http_addr;
    let config = EndpointConfig::new(vec![]);
    let now = Instant::now();
    let s = socket();
    let (client, offer) =
        Client::with_video_codec(&config, now, s.local_addr().unwrap(), true, Codec::Vp9).unwrap();
    let mut publisher = Leg::join(h, "/whip/svc", client, offer, s);
    let layers = || -> u64 {
        let rooms: serde_json::Value =
            serde_json::from_str(&http(h, "GET", "/api/rooms", &[], b"").body).unwrap();
        rooms["rooms"][0]["peers"][0]["tracks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["kind"] == "video")
            .filter_map(|t| t["layers"].as_u64())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(layers(), 1, "nothing in the SDP says SVC");
    // Pictures of three spatial layers, a keyframe (with its scalability
    // structure) first.
    let start = Instant::now();
    let mut picture = 0u64;
    let mut seq = 1u64;
    while start.elapsed() < Duration::from_secs(10) && (picture < 30 || layers() < 3) {
        if start.elapsed() >= Duration::from_millis(picture * 33) {
            let ts = (picture * 3000) as u32;
            for sid in 0..3u8 {
                let packets = svc_frame(sid, 0, picture, picture as u8, picture == 0, 1200);
                let n = packets.len();
                for (i, body) in packets.iter().enumerate() {
                    let last = sid == 2 && i + 1 == n;
                    let now = Instant::now();
                    publisher
                        .client
                        .send(now, MediaKind::Video, seq, ts, last, body);
                    seq += 1;
                    publisher.drain(now);
                }
            }
            picture += 1;
        }
        publisher.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(layers(), 3, "three spatial layers seen in the payloads");
    // A WHEP viewer that comes now gets an adaptive leg: congestion
    // feedback negotiated, an estimate running.
    let s = socket();
    let (client, offer) =
        Client::with_video_codec(&config, now, s.local_addr().unwrap(), false, Codec::Vp9).unwrap();
    let r = http(
        h,
        "POST",
        "/whep/svc",
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        r.body.contains("transport-wide-cc"),
        "an adaptive leg: {}",
        r.body
    );
    drop(client);
}

/// Frames received by `v` since `since` that are of layer `layer`, and in
/// all.
fn frames_since(v: &Leg, since: Instant, layer: u8) -> (usize, usize) {
    let frames: Vec<_> = v.frames().into_iter().filter(|f| f.0 >= since).collect();
    (frames.iter().filter(|f| f.1 == layer).count(), frames.len())
}

#[test]
fn a_relaying_node_receives_only_the_layers_its_viewers_want() {
    let a = common::clustered(1, 1, NodeRole::All, vec![]);
    let b = common::clustered(2, 2, NodeRole::Media, vec![a.cluster_addr.unwrap()]);
    assert!(common::wait_for(Duration::from_secs(10), || {
        common::plain_metric(b.http_addr, "corecast_cluster_nodes_alive") >= 1
    }));
    let config = EndpointConfig::new(vec![]);
    let s = socket();
    let (client, offer) = Client::simulcast_publisher(
        &config,
        Instant::now(),
        s.local_addr().unwrap(),
        &["q", "h", "f"],
    )
    .unwrap();
    let mut publisher = Leg::join(a.http_addr, "/whip/relay", client, offer, s);
    assert!(common::wait_for(Duration::from_secs(5), || {
        http(b.http_addr, "GET", "/api/streams", &[], b"")
            .body
            .contains("\"remote_node\":1")
    }));
    let viewer = |path: &str| {
        let s = socket();
        let (client, offer) =
            Client::viewer(&config, Instant::now(), s.local_addr().unwrap()).unwrap();
        Leg::join(b.http_addr, path, client, offer, s)
    };
    let mut viewers = vec![viewer("/whep/relay?max_layer=0&adaptive=0")];
    let start = Instant::now();
    let mut schedule = Schedule::new(start);
    let carried = || common::metric(b.http_addr, "corecast_cluster_layer_subscriptions");
    let media_in = || common::plain_metric(b.http_addr, "corecast_cluster_media_in_total");
    let mut run = |viewers: &mut Vec<Leg>, publisher: &mut Leg, secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            schedule.send_due(publisher);
            publisher.pump();
            for v in viewers.iter_mut() {
                v.pump();
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    };

    // 1. B's only viewer takes layer 0: B receives layer 0 and audio, not
    // the 2 and 5 packets a frame of layers 1 and 2.
    run(&mut viewers, &mut publisher, 4);
    let (in0, t0) = (media_in(), Instant::now());
    run(&mut viewers, &mut publisher, 3);
    let low_rate = (media_in() - in0) as f64 / t0.elapsed().as_secs_f64();
    let (layer0, all) = frames_since(&viewers[0], t0, 0);
    println!("one viewer on layer 0: B receives {low_rate:.0} packets/s, its viewer {all} frames");
    assert!(
        all >= 60 && layer0 == all,
        "the capped viewer gets layer 0: {layer0} of {all}"
    );
    assert_eq!(carried(), 0, "no layer channel while nobody wants one");
    // Layer 0 (30/s) and audio (50/s); everything would be 290/s.
    assert!(low_rate < 130.0, "B receives layer 0 only: {low_rate:.0}/s");

    // 2. A viewer that takes any layer: B subscribes to layers 1 and 2, and
    // the viewer climbs to the top.
    viewers.push(viewer("/whep/relay"));
    let climbed = Instant::now();
    // Each step up waits for the layer's keyframe, asked for through the
    // cluster; on a loaded machine the estimate climbs slowly too.
    while climbed.elapsed() < Duration::from_secs(25)
        && viewers[1].frames().last().is_none_or(|f| f.1 != 2)
    {
        run(&mut viewers, &mut publisher, 1);
    }
    let t1 = Instant::now();
    let in1 = media_in();
    run(&mut viewers, &mut publisher, 3);
    let all_rate = (media_in() - in1) as f64 / t1.elapsed().as_secs_f64();
    let (top, all) = frames_since(&viewers[1], t1, 2);
    let first_top = viewers[1]
        .frames()
        .iter()
        .find(|f| f.1 == 2)
        .map(|f| f.0 - climbed);
    let mut history: Vec<(u128, u8)> = Vec::new();
    for (at, l, _) in viewers[1].frames() {
        if history.last().is_none_or(|h| h.1 != l) {
            history.push(((at - climbed).as_millis(), l));
        }
    }
    println!("the second viewer's layers: {history:?}");
    println!(
        "a second viewer: B receives {all_rate:.0} packets/s, carries {} layer channels; \
         the viewer on layer 2 after {first_top:?}, {top} of {all} frames since",
        carried()
    );
    assert_eq!(carried(), 2, "layers 1 and 2 wanted");
    assert!(all_rate > 200.0, "B receives every layer: {all_rate:.0}/s");
    assert!(
        top * 2 >= all && all >= 60,
        "the second viewer on the top layer: {top} of {all}"
    );
    let (layer0, all) = frames_since(&viewers[0], t1, 0);
    assert!(
        all >= 60 && layer0 == all,
        "the capped viewer stays on layer 0"
    );

    // 3. It leaves: B lets the layers go after the hold (8 s).
    let gone = viewers.pop().unwrap();
    let r = http(b.http_addr, "DELETE", &gone.location, &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let left = Instant::now();
    while carried() != 0 && left.elapsed() < Duration::from_secs(12) {
        run(&mut viewers, &mut publisher, 1);
    }
    println!("layers let go {:?} after the viewer left", left.elapsed());
    assert_eq!(carried(), 0, "no layer channel once nobody wants one");
    let (layer0, all) = frames_since(&viewers[0], left, 0);
    assert!(
        all >= 60 && layer0 == all,
        "the capped viewer never stopped"
    );
    b.shutdown();
    a.shutdown();
}
