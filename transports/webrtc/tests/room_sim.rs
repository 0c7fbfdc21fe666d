//! The SDK endpoint against the Rust room client in simulated time: RPC on
//! the data channel with its size and rate limits, and one receive slot
//! switched between channels without renegotiation.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, Codec, CodecInfo, MediaKind, MediaPacket, SlotId};
use corecast_webrtc::{
    Endpoint, EndpointConfig, EndpointEvent, Output, PublisherInfo, RoomClient, RoomEvent,
    Transmit, RPC_BURST, RPC_RATE,
};
use serde_json::{json, Value};

const LATENCY: Duration = Duration::from_millis(5);

struct Sim {
    now: Instant,
    client: RoomClient,
    endpoint: Endpoint,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    in_flight: VecDeque<(Instant, Transmit)>,
    messages: Vec<Value>,
    /// (slot mid, seq, payload) the client received.
    media: Vec<(String, u64, Vec<u8>)>,
    /// What the endpoint said: RPC texts and the slots that went live.
    rpc: Vec<String>,
    live: Vec<SlotId>,
    client_timeout: Instant,
    endpoint_timeout: Instant,
}

impl Sim {
    /// A client publishing `mic` and `cam` with two video slots and one audio.
    fn connected() -> Sim {
        let now = Instant::now();
        let server_addr: SocketAddr = "10.0.0.100:9000".parse().unwrap();
        let client_addr: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let config = EndpointConfig::new(vec![server_addr]);
        let publish = [("mic", MediaKind::Audio), ("cam", MediaKind::Video)];
        let (mut client, offer) =
            RoomClient::new(&config, now, client_addr, &publish, 1, 2).unwrap();
        let body: Value =
            serde_json::from_str(&client.connect_body("r", "alice", &offer, json!({}))).unwrap();
        let names: Vec<(String, String)> = body["publish"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["mid"].as_str().unwrap().into(),
                    p["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        let who = PublisherInfo {
            room: "r".into(),
            peer: "alice".into(),
        };
        let (endpoint, answer) = Endpoint::peer(&config, now, &offer, who, names).unwrap();
        client.accept_answer(&answer).unwrap();
        let mut sim = Sim {
            now,
            client,
            endpoint,
            client_addr,
            server_addr,
            in_flight: VecDeque::new(),
            messages: Vec::new(),
            media: Vec::new(),
            rpc: Vec::new(),
            live: Vec::new(),
            client_timeout: now,
            endpoint_timeout: now,
        };
        sim.run_until(Duration::from_secs(5), |s| s.client.is_open());
        sim
    }

    fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "not reached within {limit:?}");
            self.step();
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn step(&mut self) {
        self.now += Duration::from_millis(1);
        let now = self.now;
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (_, t) = self.in_flight.pop_front().unwrap();
            if t.destination == self.server_addr {
                let _ = self
                    .endpoint
                    .handle_receive(now, t.source, t.destination, &t.contents);
            } else {
                let _ = self
                    .client
                    .handle_receive(now, t.source, t.destination, &t.contents);
            }
            self.drain();
        }
        if self.client_timeout <= now {
            self.client.handle_timeout(now);
        }
        if self.endpoint_timeout <= now {
            self.endpoint.handle_timeout(now);
        }
        self.drain();
    }

    fn drain(&mut self) {
        let now = self.now;
        loop {
            match self.client.poll_output(now) {
                Output::Transmit(t) => self.in_flight.push_back((now + LATENCY, t)),
                Output::Event(RoomEvent::Message(m)) => self.messages.push(m),
                Output::Event(RoomEvent::Media {
                    mid, seq, payload, ..
                }) => self.media.push((mid, seq, payload.to_vec())),
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    self.client_timeout = at;
                    break;
                }
            }
        }
        loop {
            match self.endpoint.poll_output(now) {
                Output::Transmit(t) => self.in_flight.push_back((now + LATENCY, t)),
                Output::Event(EndpointEvent::Rpc(text)) => self.rpc.push(text),
                Output::Event(EndpointEvent::SlotLive(slot)) => self.live.push(slot),
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    self.endpoint_timeout = at;
                    break;
                }
            }
        }
        let _ = self.client_addr;
    }

    /// Hands the endpoint one packet of `channel`, as the shard does.
    fn deliver(&mut self, channel: ChannelId, seq: u64, payload: &[u8]) {
        let now = self.now;
        let packet = MediaPacket {
            channel,
            kind: MediaKind::Video,
            codec: CodecInfo::new(Codec::Vp8, 90_000),
            seq,
            rtp_time: (seq as u32).wrapping_mul(3000),
            marker: true,
            arrival: now,
            wallclock: now,
            orientation: None,
            layer: Default::default(),
            audio_level: None,
            dependency: None,
            payload: Arc::from(payload),
        };
        if self.endpoint.queue_media(now, &packet) {
            self.endpoint.flush_media(now);
        }
        self.drain();
    }
}

fn keyframe(tag: u8, seq: u64) -> Vec<u8> {
    let mut p = vec![0x10, 0x00, tag];
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

#[test]
fn rpc_travels_both_ways_on_the_data_channel() {
    let mut s = Sim::connected();
    s.client.request("join", json!({"protocol": 1}));
    s.drain();
    s.run_until(Duration::from_secs(1), |s| !s.rpc.is_empty());
    let req: Value = serde_json::from_str(&s.rpc[0]).unwrap();
    assert_eq!(
        (req["id"].clone(), req["request"].clone()),
        (json!(1), json!("join"))
    );
    s.endpoint
        .send_rpc(json!({"id": 1, "ok": true}).to_string());
    s.drain();
    s.run_until(Duration::from_secs(1), |s| !s.messages.is_empty());
    assert_eq!(s.messages[0], json!({"id": 1, "ok": true}));
    // Published tracks carry the names the client gave; slots their mids.
    let names: Vec<String> = s
        .endpoint
        .published_tracks()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["mic", "cam"]);
    let kinds: Vec<MediaKind> = s.endpoint.slots().iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![MediaKind::Audio, MediaKind::Video, MediaKind::Video]
    );
}

#[test]
fn rpc_over_the_limits_is_answered_by_the_endpoint_and_counted() {
    let mut s = Sim::connected();
    // A burst: the first RPC_BURST pass, the rest are refused at once.
    for _ in 0..250 {
        s.client.request("update", json!({"metadata": {}}));
    }
    s.drain();
    s.run(Duration::from_millis(200));
    let passed_at_once = s.rpc.len();
    let refused: Vec<&Value> = s
        .messages
        .iter()
        .filter(|m| m["error"]["code"] == "rate_limited")
        .collect();
    // The refill during the 200 ms the burst takes to arrive lets a few more by.
    assert!(
        passed_at_once >= RPC_BURST as usize && passed_at_once <= RPC_BURST as usize + 12,
        "{passed_at_once}"
    );
    assert_eq!(passed_at_once + refused.len(), 250);
    assert!(
        refused.iter().all(|m| m["id"].as_u64().is_some()),
        "each refusal names its request"
    );
    assert_eq!(s.endpoint.stats().rpc_rate_limited, refused.len() as u64);
    // A second later, RPC_RATE more are allowed.
    s.run(Duration::from_secs(1));
    let before = s.rpc.len();
    for _ in 0..RPC_RATE {
        s.client.request("update", json!({"metadata": {}}));
    }
    s.drain();
    s.run(Duration::from_millis(100));
    assert_eq!(s.rpc.len() - before, RPC_RATE as usize);
    // Too large: refused with an error event, never passed on.
    let before = s.rpc.len();
    s.client
        .send_text(&"y".repeat(corecast_webrtc::MAX_RPC_MESSAGE + 1));
    s.drain();
    s.run_until(Duration::from_secs(1), |s| {
        s.messages.iter().any(|m| m["code"] == "too_large")
    });
    assert_eq!(s.rpc.len(), before);
    assert_eq!(s.endpoint.stats().rpc_too_large, 1);
}

#[test]
fn one_slot_switches_channels_without_renegotiation() {
    let mut s = Sim::connected();
    let slot = s.endpoint.slots()[1].clone();
    let (a, b) = (ChannelId(0xa), ChannelId(0xb));
    s.endpoint.subscribe_slot(slot.id, Some(a));
    for seq in 0..20 {
        s.deliver(a, 1000 + seq, &keyframe(0xa, seq));
        s.run(Duration::from_millis(10));
    }
    // Packets of a channel the slot does not play are not sent.
    s.deliver(b, 5, &keyframe(0xb, 5));
    s.endpoint.subscribe_slot(slot.id, Some(b));
    for seq in 0..20 {
        s.deliver(b, 70_000 + seq, &keyframe(0xb, seq));
        s.run(Duration::from_millis(10));
    }
    s.run(Duration::from_millis(100));
    let got: Vec<&(String, u64, Vec<u8>)> = s
        .media
        .iter()
        .filter(|(m, _, _)| *m == slot.label)
        .collect();
    assert_eq!(got.len(), 40, "every packet of both runs, in the one slot");
    assert!(got[..20].iter().all(|(_, _, p)| p[2] == 0xa));
    assert!(got[20..].iter().all(|(_, _, p)| p[2] == 0xb));
    // One sequence space across the switch.
    for w in got.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "continuous sequence numbers");
    }
    assert_eq!(
        s.live,
        vec![slot.id, slot.id],
        "live once per channel played"
    );
}
