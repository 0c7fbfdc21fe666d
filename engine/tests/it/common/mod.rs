//! Helpers for the engine's loopback tests: a node on ephemeral ports, a
//! small HTTP/1.1 client, and WebRTC peers on real UDP sockets.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use corecast::{Node, Settings};
use corecast_webrtc::{Client, ClientEvent, EndpointConfig, Output};

/// Settings for `shards` unpinned shards on 127.0.0.1, ephemeral ports.
pub fn test_settings(shards: usize) -> Settings {
    Settings {
        http: "127.0.0.1:0".parse().unwrap(),
        media_port: 0,
        shards,
        pin: false,
        first_core: 0,
        ice_ips: vec!["127.0.0.1".parse().unwrap()],
        token: None,
        auth_secret: None,
        socket_buffer: 4 << 20,
        gso: true,
        max_endpoints_per_shard: 10_000,
        max_pending: 2000,
        stun_claims_per_second: 1000,
        consent_timeout: Duration::from_secs(20),
        rtmp_port: None,
        rtmp_audio_bitrate: 128_000,
        top_audio: 3,
        nack_window: corecast_webrtc::DEFAULT_NACK_WINDOW,
        moq: None,
        rtmp_handshake_timeout: Duration::from_secs(10),
        rtmp_idle_timeout: Duration::from_secs(30),
        sip: None,
        cluster: None,
    }
}

/// An SDP offer of a test client (publisher or viewer) on 127.0.0.1:`port`,
/// for requests that need a valid body and no media.
pub fn offer(publisher: bool, port: u16) -> String {
    let config = EndpointConfig::new(vec![]);
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let now = Instant::now();
    let (_, offer) = if publisher {
        Client::publisher(&config, now, local)
    } else {
        Client::viewer(&config, now, local)
    }
    .expect("the test client makes an offer");
    offer
}

/// A node with `shards` unpinned shards on 127.0.0.1, ephemeral ports.
pub fn start_node(shards: usize) -> Node {
    Node::start(&test_settings(shards)).expect("node starts")
}

/// The cluster secret of test nodes.
pub const CLUSTER_SECRET: &str = "test-secret";

/// A clustered node (zone `z`, cluster port ephemeral) that joins through
/// `seeds`.
pub fn clustered(
    shards: usize,
    node_id: u32,
    role: corecast_cluster::NodeRole,
    seeds: Vec<SocketAddr>,
) -> Node {
    Node::start(&clustered_settings(shards, node_id, role, seeds)).expect("clustered node starts")
}

/// The settings of [`clustered`].
pub fn clustered_settings(
    shards: usize,
    node_id: u32,
    role: corecast_cluster::NodeRole,
    seeds: Vec<SocketAddr>,
) -> Settings {
    let mut settings = test_settings(shards);
    settings.cluster = Some(corecast::config::ClusterSettings {
        node_id,
        zone: "z".into(),
        seeds,
        sdn_bind: "127.0.0.1:0".parse().unwrap(),
        secret: CLUSTER_SECRET.into(),
        role,
        public_url: "http://127.0.0.1:0".into(),
        zones: Vec::new(),
    });
    settings
}

/// A metric without labels (the node-wide ones, such as the cluster's).
pub fn plain_metric(addr: SocketAddr, name: &str) -> u64 {
    let r = http(addr, "GET", "/metrics", &[], b"");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// One HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect to the control plane");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Sum of a metric over all shards, from `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    per_shard(addr, name).iter().sum()
}

/// A metric's value per shard.
pub fn per_shard(addr: SocketAddr, name: &str) -> Vec<u64> {
    let r = http(addr, "GET", "/metrics", &[], b"");
    r.body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// A WebRTC peer (test client) on its own UDP socket.
pub struct Peer {
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub client: Client,
    pub events: Vec<ClientEvent>,
    pub location: String,
    /// The server's SDP answer (its ICE ufrag, candidates).
    pub answer: String,
    next_timeout: Instant,
}

impl Peer {
    /// The server-side ICE ufrag of this peer's session.
    pub fn server_ufrag(&self) -> String {
        self.answer
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .expect("the answer has an ICE ufrag")
            .to_string()
    }
}

impl Peer {
    /// Creates a publisher (`whip`) or viewer (`whep`) and does the offer/answer.
    pub fn join(config: &EndpointConfig, http_addr: SocketAddr, kind: &str, stream: &str) -> Peer {
        Peer::join_with(config, http_addr, kind, stream, corecast_media::Codec::Vp8)
    }

    /// [`Peer::join`] with another video codec than VP8.
    pub fn join_with(
        config: &EndpointConfig,
        http_addr: SocketAddr,
        kind: &str,
        stream: &str,
        video: corecast_media::Codec,
    ) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let (client, offer) =
            Client::with_video_codec(config, now, local, kind == "whip", video).unwrap();
        let r = http(
            http_addr,
            "POST",
            &format!("/{kind}/{stream}"),
            &[("Content-Type", "application/sdp")],
            offer.as_bytes(),
        );
        assert_eq!(r.status, 201, "{kind} POST: {}", r.body);
        let location = r.header("location").expect("Location header").to_string();
        let answer = r.body.clone();
        let mut peer = Peer {
            answer,
            socket,
            local,
            client,
            events: Vec::new(),
            location,
            next_timeout: now,
        };
        peer.client.accept_answer(&r.body).expect("answer applies");
        peer.drain(now);
        peer
    }

    /// Reads what arrived, gives time input when due, sends what is ready.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let now = Instant::now();
            let _ = self.client.handle_receive(now, from, self.local, &buf[..n]);
            self.drain(now);
        }
        let now = Instant::now();
        if now >= self.next_timeout {
            self.client.handle_timeout(now);
            self.drain(now);
        }
    }

    pub fn drain(&mut self, now: Instant) {
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

    /// Payloads of the given kind received so far.
    pub fn payloads(&self, kind: corecast_media::MediaKind) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Media {
                    kind: k, payload, ..
                } if *k == kind => Some(payload.to_vec()),
                _ => None,
            })
            .collect()
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Pumps every peer until `done` or the deadline.
pub fn pump_until(
    peers: &mut [Peer],
    limit: Duration,
    mut done: impl FnMut(&[Peer]) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.pump();
        }
        if done(peers) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

/// A node that requires `Authorization: Bearer <token>`.
pub struct TokenNode {
    pub http_addr: SocketAddr,
    node: Option<Node>,
}

impl TokenNode {
    pub fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown();
        }
    }
}

pub fn start_node_with_token(shards: usize, token: &str) -> TokenNode {
    let settings = Settings {
        token: Some(token.to_string()),
        ..test_settings(shards)
    };
    let node = Node::start(&settings).expect("node starts");
    TokenNode {
        http_addr: node.http_addr,
        node: Some(node),
    }
}

/// An SDK connection (the Rust room client) on its own UDP socket.
pub struct RoomPeer {
    pub name: String,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub client: corecast_webrtc::RoomClient,
    /// Every RPC message received, in order.
    pub messages: Vec<serde_json::Value>,
    /// Media received: (slot mid, payload).
    pub media: Vec<(String, Vec<u8>)>,
    pub conn: String,
    pub closed: bool,
    next_timeout: Instant,
}

impl RoomPeer {
    /// Connects `peer` to `room`, publishing `audio` and `video` and
    /// offering `slots` receive slots of each kind; sends `join` once the
    /// data channel opens.
    pub fn connect(http_addr: SocketAddr, room: &str, peer: &str, slots: usize) -> RoomPeer {
        RoomPeer::connect_with(http_addr, room, peer, slots, true, false)
    }

    /// [`RoomPeer::connect`] of a connection that asks for a bandwidth
    /// estimate (`"adaptive": true`).
    pub fn connect_adaptive(
        http_addr: SocketAddr,
        room: &str,
        peer: &str,
        slots: usize,
    ) -> RoomPeer {
        RoomPeer::connect_with(http_addr, room, peer, slots, true, true)
    }

    /// [`RoomPeer::connect`] without the `join`.
    pub fn connect_without_join(
        http_addr: SocketAddr,
        room: &str,
        peer: &str,
        slots: usize,
    ) -> RoomPeer {
        RoomPeer::connect_with(http_addr, room, peer, slots, false, false)
    }

    fn connect_with(
        http_addr: SocketAddr,
        room: &str,
        peer: &str,
        slots: usize,
        join: bool,
        adaptive: bool,
    ) -> RoomPeer {
        use corecast_media::MediaKind;
        let config = EndpointConfig::new(vec![]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let local = socket.local_addr().unwrap();
        let now = Instant::now();
        let publish = [("audio", MediaKind::Audio), ("video", MediaKind::Video)];
        let (mut client, offer) =
            corecast_webrtc::RoomClient::new(&config, now, local, &publish, slots, slots).unwrap();
        let mut body = client.connect_body(room, peer, &offer, serde_json::json!({"name": peer}));
        if adaptive {
            let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["adaptive"] = true.into();
            body = v.to_string();
        }
        let r = http(
            http_addr,
            "POST",
            "/webrtc/connect",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 201, "connect {peer}: {}", r.body);
        let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        client
            .accept_answer(answer["sdp"].as_str().unwrap())
            .expect("answer applies");
        if join {
            client.request("join", serde_json::json!({"protocol": 1}));
        }
        let mut p = RoomPeer {
            name: peer.to_string(),
            socket,
            local,
            client,
            messages: Vec::new(),
            media: Vec::new(),
            conn: answer["conn"].as_str().unwrap().to_string(),
            closed: false,
            next_timeout: now,
        };
        p.drain(now);
        p
    }

    pub fn pump(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let now = Instant::now();
            let _ = self.client.handle_receive(now, from, self.local, &buf[..n]);
            self.drain(now);
        }
        let now = Instant::now();
        if now >= self.next_timeout {
            self.client.handle_timeout(now);
            self.drain(now);
        }
    }

    pub fn drain(&mut self, now: Instant) {
        use corecast_webrtc::RoomEvent;
        loop {
            match self.client.poll_output(now) {
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(RoomEvent::Message(m)) => self.messages.push(m),
                Output::Event(RoomEvent::Media { mid, payload, .. }) => {
                    self.media.push((mid, payload.to_vec()))
                }
                Output::Event(RoomEvent::Closed) => self.closed = true,
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
            }
        }
    }

    /// Sends a request now (after a drain, so it leaves at once).
    pub fn request(&mut self, request: &str, fields: serde_json::Value) -> u64 {
        let id = self.client.request(request, fields);
        self.drain(Instant::now());
        id
    }

    /// The answer to request `id`, once it came.
    pub fn answer(&self, id: u64) -> Option<&serde_json::Value> {
        self.messages.iter().find(|m| m["id"] == id)
    }

    /// Events named `name`, in order.
    pub fn events(&self, name: &str) -> Vec<&serde_json::Value> {
        self.messages
            .iter()
            .filter(|m| m["event"] == name)
            .collect()
    }

    /// Whether the join answer came (ok).
    pub fn joined(&self) -> bool {
        self.answer(1).is_some_and(|a| a["ok"] == true)
    }
}

/// Pumps every room peer until `done` or the deadline.
pub fn pump_rooms(
    peers: &mut [RoomPeer],
    limit: Duration,
    mut done: impl FnMut(&[RoomPeer]) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.pump();
        }
        if done(peers) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

/// A VP8 payload that starts a keyframe (every packet may start a slot),
/// tagged with its sender and sequence number.
pub fn tagged_video(sender: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![0x10, 0x00, sender];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..200u32).map(|b| (b.wrapping_mul(13) ^ seq) as u8));
    p
}

/// An audio payload tagged with its sender and sequence number.
pub fn tagged_audio(sender: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![0xfc, sender];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..60u32).map(|b| (b.wrapping_mul(5) ^ seq) as u8));
    p
}
