//! Media over QUIC on a real node on loopback: a WHIP publisher (VP8 and
//! Opus) and a MoQ client (corecast's `WatchClient`, moq-net's client over
//! QUIC, pinning the certificate the node serves at /certificate.sha256)
//! that watches the room: the catalog names the codecs, video groups start
//! at keyframes and carry the pictures bit-exact, audio arrives, and the
//! metrics count it. Garbage on the MoQ port is counted and harms nothing.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{http, metric, pump_until, test_settings, Peer};
use corecast::config::MoqSettings;
use corecast::Node;
use corecast_media::MediaKind;
use corecast_moq::client::WatchClient;
use corecast_webrtc::EndpointConfig;

/// The client's socket and state, pumped by the test.
struct Viewer {
    socket: UdpSocket,
    client: WatchClient,
    next: Instant,
}

impl Viewer {
    /// Moves the client to a new socket (a new source port: a NAT
    /// rebinding, as far as the server can tell).
    fn rebind(&mut self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        self.socket = socket;
        // It speaks first from the new address, as a client behind a NAT
        // that rebound does.
        self.client.quic.ping();
        self.pump();
    }

    fn new(fingerprint: &str, server: SocketAddr, room: &str) -> Viewer {
        Viewer::over(fingerprint, server, room, None)
    }

    /// A viewer over raw QUIC, or over WebTransport asking for `url`.
    fn over(fingerprint: &str, server: SocketAddr, room: &str, url: Option<&str>) -> Viewer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let client = match url {
            None => WatchClient::new(now, fingerprint, local, server, room),
            Some(url) => WatchClient::webtransport(now, fingerprint, local, server, room, url),
        }
        .unwrap();
        let mut v = Viewer {
            socket,
            client,
            next: now,
        };
        v.pump();
        v
    }

    fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        let now = Instant::now();
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            self.client.quic.handle_datagram(now, from, &buf[..n]);
        }
        if now >= self.next {
            self.client.quic.handle_timeout(now);
        }
        self.client.pump(now);
        while let Some(t) = self.client.quic.poll_transmit(now) {
            let _ = self.socket.send_to(&t.contents, t.destination);
        }
        self.next = self
            .client
            .quic
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(50));
    }
}

/// MoQ on a free port, the generated certificate.
fn moq_on_any_port() -> MoqSettings {
    MoqSettings {
        port: 0,
        cert: None,
        key: None,
        idle_timeout: Duration::from_secs(30),
    }
}

fn moq_node() -> Node {
    let mut settings = test_settings(2);
    settings.moq = Some(moq_on_any_port());
    Node::start(&settings).expect("node starts")
}

#[test]
fn a_moq_client_watches_a_whip_publisher() {
    let node = moq_node();
    let h = node.http_addr;
    let port = node.moq_addr.expect("MoQ is on").port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let served = http(h, "GET", "/certificate.sha256", &[], b"");
    assert_eq!(served.status, 200);
    assert_eq!(Some(served.body.as_str()), node.moq_fingerprint.as_deref());
    assert_eq!(served.body.len(), 64, "64 hex digits, no newline");

    let config = EndpointConfig::new(vec![]);
    let mut peers = vec![Peer::join(&config, h, "whip", "moqroom")];
    assert!(pump_until(&mut peers, Duration::from_secs(10), |p| p[0]
        .client
        .is_connected()));
    let mut viewer = Viewer::new(&served.body, server, "moqroom");

    // Garbage on the MoQ port: counted, nothing else happens.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        let _ = junk.send_to(&[i, 1, 2, 3, 4, 5], server);
        // A short header naming a connection that does not exist.
        let _ = junk.send_to(&[0x40, 0, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6], server);
    }

    // 2 s of VP8 (a keyframe every 10 frames, one packet each) and audio.
    let mut sent = Vec::new();
    let start = Instant::now();
    for (seq, i) in (1u64..).zip(0..80u32) {
        let key = i.is_multiple_of(10);
        let payload = vec![0x10, if key { 0xa0 } else { 0xbb }, i as u8, 7];
        let now = Instant::now();
        peers[0]
            .client
            .send(now, MediaKind::Video, seq, i * 2250, true, &payload);
        peers[0]
            .client
            .send(now, MediaKind::Audio, seq, i * 600, true, &[0xfc, i as u8]);
        peers[0].drain(now);
        sent.push(payload[1..].to_vec());
        let until = start + Duration::from_millis(25 * u64::from(i + 1));
        while Instant::now() < until {
            peers[0].pump();
            viewer.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        peers[0].pump();
        viewer.pump();
        std::thread::sleep(Duration::from_millis(1));
    }

    let seen = viewer.client.watched();
    assert_eq!(seen.error, None);
    let catalog = seen.catalog.clone().expect("the catalog arrived");
    assert!(catalog.contains("\"vp8\""), "{catalog}");
    assert!(catalog.contains("opus"), "{catalog}");
    assert!(!seen.video.is_empty(), "video groups arrived");
    for g in &seen.video {
        assert_eq!(g[0].1[0], 0xa0, "every group starts at a keyframe");
    }
    // From the first keyframe the viewer got, every picture bit-exact, in order.
    let frames: Vec<Vec<u8>> = seen
        .video
        .iter()
        .flatten()
        .map(|(_, f)| f.clone())
        .collect();
    let first = sent
        .iter()
        .position(|f| *f == frames[0])
        .expect("a sent frame");
    assert!(frames.len() >= 40, "{} video frames", frames.len());
    assert_eq!(frames[..], sent[first..first + frames.len()]);
    let ts: Vec<u64> = seen.video.iter().flatten().map(|(t, _)| *t).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "timestamps go forward");
    assert!(seen.audio.len() >= 40, "{} audio frames", seen.audio.len());

    assert_eq!(metric(h, "corecast_moq_connections"), 1);
    assert!(metric(h, "corecast_moq_frames_total") >= 80);
    assert!(metric(h, "corecast_moq_groups_total") >= 4);
    assert_eq!(metric(h, "corecast_moq_subscriptions_total"), 1);
    // Not QUIC, or naming no connection: the short headers name shard 0,
    // so when the kernel gave the junk socket to shard 1 they crossed to
    // shard 0 first (misrouted), which found no connection either.
    let bad = metric(h, "corecast_moq_bad_datagrams_total");
    let misrouted = metric(h, "corecast_moq_misrouted_total");
    assert_eq!(bad, 100, "{bad} bad, {misrouted} misrouted");
    assert!(misrouted == 0 || misrouted == 50, "{misrouted} misrouted");
}

#[test]
fn a_node_with_tokens_refuses_a_moq_watch_without_one() {
    let mut settings = test_settings(1);
    settings.token = Some("s3cret".to_string());
    settings.moq = Some(moq_on_any_port());
    let node = Node::start(&settings).expect("node starts");
    let server = SocketAddr::from(([127, 0, 0, 1], node.moq_addr.unwrap().port()));
    let fingerprint = node.moq_fingerprint.clone().unwrap();
    let mut viewer = Viewer::new(&fingerprint, server, "closed");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && metric(node.http_addr, "corecast_moq_refused_total") == 0 {
        viewer.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(metric(node.http_addr, "corecast_moq_refused_total"), 1);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end && metric(node.http_addr, "corecast_moq_connections") != 0 {
        viewer.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        metric(node.http_addr, "corecast_moq_connections"),
        0,
        "closed"
    );
    assert!(viewer.client.watched().video.is_empty());
}

/// Room tokens (JWT) over WebTransport: the URL's `?jwt=` is checked for
/// the room and the action, like WHEP's bearer token.
#[test]
fn room_tokens_in_a_webtransport_url_allow_their_room_and_action_only() {
    use corecast::control::auth::{mint, Claims};
    const SECRET: &str = "the secret of this moq node";
    let mut settings = test_settings(1);
    settings.auth_secret = Some(SECRET.to_string());
    settings.moq = Some(moq_on_any_port());
    let node = Node::start(&settings).expect("node starts");
    let h = node.http_addr;
    let server = SocketAddr::from(([127, 0, 0, 1], node.moq_addr.unwrap().port()));
    let fingerprint = node.moq_fingerprint.clone().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let jwt = |room: &str, subscribe: bool| {
        let claims = Claims {
            room: room.into(),
            peer: None,
            publish: !subscribe,
            subscribe,
            transports: None,
            exp,
            nbf: None,
        };
        let t = mint(SECRET.as_bytes(), &claims).unwrap();
        format!("https://localhost/?jwt={t}")
    };
    // Watches `room` with `url` until refused or counted as a viewer of it.
    let watch = |room: &str, url: &str| {
        let refused = metric(h, "corecast_moq_refused_total");
        let mut viewer = Viewer::over(&fingerprint, server, room, Some(url));
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            viewer.pump();
            if metric(h, "corecast_moq_refused_total") > refused {
                return false;
            }
            let streams = http(h, "GET", "/api/streams", &[], b"").body;
            if streams.contains(&format!("\"stream\":\"{room}\""))
                && streams.contains("\"viewers\":1")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the watch of {room} was neither admitted nor refused in 5 s");
    };
    assert!(
        watch("alpha", &jwt("alpha", true)),
        "a subscribe token for the room"
    );
    assert!(!watch("beta", &jwt("alpha", true)), "another room's token");
    assert!(
        !watch("gamma", &jwt("gamma", false)),
        "a publish-only token"
    );
    assert!(
        !watch("delta", "https://localhost/?jwt=forged.token.here"),
        "a forged token"
    );
}

#[test]
fn a_client_whose_address_changes_keeps_watching_across_shards() {
    let node = moq_node();
    let h = node.http_addr;
    let server = SocketAddr::from(([127, 0, 0, 1], node.moq_addr.unwrap().port()));
    let fingerprint = node.moq_fingerprint.clone().unwrap();
    let config = EndpointConfig::new(vec![]);
    let mut peers = vec![Peer::join(&config, h, "whip", "moving")];
    assert!(pump_until(&mut peers, Duration::from_secs(10), |p| p[0]
        .client
        .is_connected()));
    let mut viewer = Viewer::new(&fingerprint, server, "moving");
    let mut i = 0u32;
    // Frames for `ms`; returns how many video frames the viewer has.
    let mut run = |peers: &mut Vec<Peer>, viewer: &mut Viewer, ms: u64| {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            let key = i.is_multiple_of(10);
            let payload = vec![0x10, if key { 0xa0 } else { 0xbb }, i as u8];
            let now = Instant::now();
            peers[0].client.send(
                now,
                MediaKind::Video,
                u64::from(i) + 1,
                i * 2250,
                true,
                &payload,
            );
            peers[0].drain(now);
            i += 1;
            let next = Instant::now() + Duration::from_millis(25);
            while Instant::now() < next {
                peers[0].pump();
                viewer.pump();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        viewer.client.watched().video.iter().flatten().count()
    };
    let before = run(&mut peers, &mut viewer, 1500);
    assert!(before > 10, "{before} frames before moving");
    // New source ports until the kernel hashes one to the other shard.
    let mut moved = 0;
    while metric(h, "corecast_moq_misrouted_total") == 0 && moved < 12 {
        viewer.rebind();
        moved += 1;
        run(&mut peers, &mut viewer, 300);
    }
    assert!(
        metric(h, "corecast_moq_misrouted_total") > 0,
        "no rebinding reached the other shard in {moved} tries"
    );
    let after = run(&mut peers, &mut viewer, 2000);
    assert!(
        after >= before + 40,
        "{before} frames before, {after} after {moved} moves"
    );
    assert_eq!(
        metric(h, "corecast_moq_connections"),
        1,
        "the same connection"
    );
}
