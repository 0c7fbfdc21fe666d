//! An in-memory network in simulated time for the endpoint tests.
//!
//! No sockets and no clock: a `World` steps every peer 1 ms at a time and
//! carries datagrams between them with a fixed latency. Full ICE, DTLS and
//! SRTP run on both sides; the "SFU" part forwards media and keyframe
//! requests between server legs the way the engine does.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, CodecInfo, MediaKind};
use corecast_webrtc::{
    Client, ClientEvent, CloseReason, Endpoint, EndpointConfig, EndpointEvent, Error, Output,
    PublisherInfo, Transmit,
};

pub const SERVER: &str = "10.0.0.100:9000";
pub const LATENCY: Duration = Duration::from_millis(5);

pub struct Peer {
    pub addr: SocketAddr,
    pub client: Client,
    pub events: Vec<ClientEvent>,
    pub next_timeout: Instant,
}

pub struct ServerLeg {
    pub remote: SocketAddr,
    pub endpoint: Endpoint,
    pub closed: Option<CloseReason>,
    pub next_timeout: Instant,
}

pub struct World {
    pub now: Instant,
    pub config: EndpointConfig,
    pub clients: Vec<Peer>,
    pub legs: Vec<ServerLeg>,
    pub in_flight: VecDeque<(Instant, Transmit)>,
    /// Datagrams from these addresses are lost (a peer that went away).
    pub mute: Vec<SocketAddr>,
    /// Drop every n-th RTP datagram sent to this address (loss on one leg).
    pub lossy: Option<(SocketAddr, usize)>,
    pub lossy_count: usize,
    pub lossy_ssrc: Option<[u8; 4]>,
    /// Datagrams dropped by `lossy`.
    pub lossy_dropped: usize,
    /// RTP datagrams toward the lossy address on other SSRCs (RTX).
    pub lossy_other: usize,
    pub keyframe_requests_sent: usize,
    /// Keyframe requests of viewer legs, passed to publishers at the next drain.
    pub keyframes: Vec<(ChannelId, Option<u8>)>,
    /// Bottlenecks toward some addresses (a viewer's downlink).
    pub links: Vec<(SocketAddr, Link)>,
    /// Media packets the publishers' legs published.
    pub published: usize,
    /// Datagrams from this address to the server are copied to `captured`.
    pub capture_from: Option<SocketAddr>,
    pub captured: Vec<Vec<u8>>,
    /// Datagrams from this client take this much longer to arrive (a long
    /// uplink: its NACKs reach the server late).
    pub uplink_delay: Option<(SocketAddr, Duration)>,
}

/// A bottleneck: datagrams leave it one after another at `rate_bps`; one
/// that would wait longer than `max_queue` is dropped (a drop-tail queue).
pub struct Link {
    pub rate_bps: u64,
    pub max_queue: Duration,
    pub busy_until: Instant,
    pub dropped: usize,
    pub bytes: usize,
}

impl Link {
    pub fn new(rate_bps: u64, now: Instant) -> Link {
        Link {
            rate_bps,
            max_queue: Duration::from_millis(250),
            busy_until: now,
            dropped: 0,
            bytes: 0,
        }
    }
}

/// Puts a datagram on the network: through its destination's bottleneck,
/// if any, then `LATENCY`; kept in delivery order.
pub fn enqueue(
    in_flight: &mut VecDeque<(Instant, Transmit)>,
    links: &mut [(SocketAddr, Link)],
    now: Instant,
    t: Transmit,
) {
    let mut at = now + LATENCY;
    if let Some((_, link)) = links.iter_mut().find(|(a, _)| *a == t.destination) {
        let start = link.busy_until.max(now);
        if start - now > link.max_queue {
            link.dropped += 1;
            return;
        }
        let bits = (t.contents.len() as u64 + 28) * 8;
        link.busy_until = start + Duration::from_nanos(bits * 1_000_000_000 / link.rate_bps);
        link.bytes += t.contents.len();
        at = link.busy_until + LATENCY;
    }
    let pos = in_flight
        .iter()
        .rposition(|(when, _)| *when <= at)
        .map_or(0, |p| p + 1);
    in_flight.insert(pos, (at, t));
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl World {
    pub fn new() -> World {
        World {
            now: Instant::now(),
            config: EndpointConfig::new(vec![addr(SERVER)]),
            clients: Vec::new(),
            legs: Vec::new(),
            in_flight: VecDeque::new(),
            mute: Vec::new(),
            lossy: None,
            lossy_count: 0,
            lossy_ssrc: None,
            lossy_dropped: 0,
            lossy_other: 0,
            keyframe_requests_sent: 0,
            keyframes: Vec::new(),
            links: Vec::new(),
            published: 0,
            capture_from: None,
            captured: Vec::new(),
            uplink_delay: None,
        }
    }

    /// Adds a publisher client and its server leg; returns the leg index.
    pub fn add_publisher(&mut self, local: &str, peer: &str) -> usize {
        let local = addr(local);
        let (client, offer) = Client::publisher(&self.config, self.now, local).unwrap();
        let who = PublisherInfo {
            room: "room".into(),
            peer: peer.into(),
        };
        let (endpoint, answer) = Endpoint::publisher(&self.config, self.now, &offer, who).unwrap();
        self.connect(local, client, endpoint, &answer)
    }

    pub fn add_viewer(&mut self, local: &str, required: &[CodecInfo]) -> Result<usize, Error> {
        let local = addr(local);
        let (client, offer) = Client::viewer(&self.config, self.now, local).unwrap();
        let (endpoint, answer) = Endpoint::viewer(&self.config, self.now, &offer, required)?;
        Ok(self.connect(local, client, endpoint, &answer))
    }

    pub fn connect(
        &mut self,
        local: SocketAddr,
        mut client: Client,
        endpoint: Endpoint,
        answer: &str,
    ) -> usize {
        client.accept_answer(answer).unwrap();
        self.clients.push(Peer {
            addr: local,
            client,
            events: Vec::new(),
            next_timeout: self.now,
        });
        self.legs.push(ServerLeg {
            remote: local,
            endpoint,
            closed: None,
            next_timeout: self.now,
        });
        self.legs.len() - 1
    }

    pub fn client(&mut self, leg: usize) -> &mut Peer {
        &mut self.clients[leg]
    }

    /// Advances time by `d` in 1 ms steps.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.step();
        }
    }

    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) {
        let end = self.now + limit;
        while !done(self) {
            assert!(self.now < end, "condition not reached within {limit:?}");
            self.now += Duration::from_millis(1);
            self.step();
        }
    }

    pub fn step(&mut self) {
        let now = self.now;
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (_, t) = self.in_flight.pop_front().unwrap();
            self.deliver(t);
            // str0m's rule: drain after every input. In RTP mode a received
            // packet waits in a single slot for the next poll; a second
            // input before it would overwrite it.
            self.drain();
        }
        for p in &mut self.clients {
            if p.next_timeout <= now {
                p.client.handle_timeout(now);
            }
        }
        for leg in &mut self.legs {
            if leg.next_timeout <= now {
                leg.endpoint.handle_timeout(now);
            }
        }
        self.drain();
    }

    pub fn deliver(&mut self, t: Transmit) {
        if self.mute.contains(&t.source) {
            return;
        }
        if let Some((to, n)) = self.lossy {
            let rtp = t.contents.first().is_some_and(|b| (128..192).contains(b))
                && t.contents
                    .get(1)
                    .is_some_and(|pt| *pt & 0x7f < 72 || *pt & 0x7f > 79);
            // Only the first stream seen (the primary video SSRC): the
            // retransmissions (RTX, another SSRC) get through.
            let ssrc = t.contents.get(8..12).map(|b| [b[0], b[1], b[2], b[3]]);
            let toward = t.destination == to && rtp;
            if toward && self.lossy_ssrc.is_none() {
                self.lossy_ssrc = ssrc;
            }
            if toward && ssrc != self.lossy_ssrc {
                self.lossy_other += 1;
            }
            if toward && ssrc == self.lossy_ssrc {
                self.lossy_count += 1;
                if self.lossy_count.is_multiple_of(n) {
                    self.lossy_dropped += 1;
                }
                if self.lossy_count.is_multiple_of(n) {
                    return;
                }
            }
        }
        let now = self.now;
        if t.destination == addr(SERVER) && self.capture_from == Some(t.source) {
            self.captured.push(t.contents.clone());
        }
        if t.destination == addr(SERVER) {
            if let Some(leg) = self.legs.iter_mut().find(|l| l.remote == t.source) {
                let _ = leg
                    .endpoint
                    .handle_receive(now, t.source, t.destination, &t.contents);
            }
        } else if let Some(p) = self.clients.iter_mut().find(|p| p.addr == t.destination) {
            let _ = p
                .client
                .handle_receive(now, t.source, t.destination, &t.contents);
        }
    }

    /// Drains every peer's output; the "SFU" part forwards media and keyframe
    /// requests between legs the way the engine does.
    pub fn drain(&mut self) {
        let now = self.now;
        for p in &mut self.clients {
            let sent = match self.uplink_delay {
                Some((from, delay)) if from == p.addr => now + delay,
                _ => now,
            };
            loop {
                match p.client.poll_output(now) {
                    Output::Transmit(t) => enqueue(&mut self.in_flight, &mut self.links, sent, t),
                    Output::Event(e) => p.events.push(e),
                    Output::Timeout(at) => {
                        p.next_timeout = at;
                        break;
                    }
                }
            }
        }
        let mut media = Vec::new();
        let mut keyframes = std::mem::take(&mut self.keyframes);
        for leg in &mut self.legs {
            loop {
                match leg.endpoint.poll_output(now) {
                    Output::Transmit(t) => enqueue(&mut self.in_flight, &mut self.links, now, t),
                    Output::Event(EndpointEvent::Media(m)) => media.push(m),
                    Output::Event(EndpointEvent::KeyframeRequest(c, l)) => keyframes.push((c, l)),
                    Output::Event(EndpointEvent::Closed(r)) => leg.closed = Some(r),
                    Output::Event(_) => {}
                    Output::Timeout(at) => {
                        leg.next_timeout = at;
                        break;
                    }
                }
            }
        }
        self.published += media.len();
        // str0m's rule holds for the SFU too: drain after every mutation.
        for m in &media {
            for i in 0..self.legs.len() {
                if self.legs[i].endpoint.handle_media(now, m) {
                    self.drain_leg(i);
                }
            }
        }
        for (channel, layer) in keyframes {
            for i in 0..self.legs.len() {
                if self.legs[i].endpoint.request_keyframe(now, channel, layer) {
                    self.keyframe_requests_sent += 1;
                    self.drain_leg(i);
                }
            }
        }
    }

    pub fn drain_leg(&mut self, i: usize) {
        let now = self.now;
        let leg = &mut self.legs[i];
        loop {
            match leg.endpoint.poll_output(now) {
                Output::Transmit(t) => enqueue(&mut self.in_flight, &mut self.links, now, t),
                Output::Event(EndpointEvent::Closed(r)) => leg.closed = Some(r),
                Output::Event(EndpointEvent::KeyframeRequest(c, l)) => self.keyframes.push((c, l)),
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
    }

    /// Publisher `p`'s client sends one video packet (marker set) now, and
    /// everything drains. Returns whether the client could send.
    pub fn send_video(&mut self, p: usize, seq: u64, rtp_time: u32, payload: &[u8]) -> bool {
        let now = self.now;
        let sent = self.clients[p]
            .client
            .send(now, MediaKind::Video, seq, rtp_time, true, payload);
        self.drain();
        sent
    }

    /// A datagram from `from` arrives at the server now (a spoofed or
    /// mangled one); returns whether the leg took it.
    pub fn inject(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        let now = self.now;
        let Some(leg) = self.legs.iter_mut().find(|l| l.remote == from) else {
            return false;
        };
        let ok = leg
            .endpoint
            .handle_receive(now, from, addr(SERVER), datagram)
            .is_ok();
        self.drain();
        ok
    }

    /// A world with publisher "alice" (leg 0) and one viewer (leg 1)
    /// subscribed to her tracks, both connected.
    pub fn connected_pair() -> (World, usize, usize) {
        let mut w = World::new();
        let p = w.add_publisher("10.0.0.1:1000", "alice");
        let v = w
            .add_viewer("10.0.0.2:1000", &[])
            .expect("the viewer's offer is accepted");
        subscribe_all(&mut w, p, &[v]);
        w.run_until(Duration::from_secs(5), World::all_connected);
        (w, p, v)
    }

    /// A world with publisher "alice" (leg 0) of one `codec` video stream
    /// and an adaptive viewer (leg 1) of it behind a `link_bps` downlink,
    /// subscribed, both connected.
    pub fn adaptive_pair(codec: corecast_media::Codec, link_bps: u64) -> (World, usize, usize) {
        let mut w = World::new();
        let local = addr("10.0.0.1:1000");
        let (client, offer) =
            Client::with_video_codec(&w.config, w.now, local, true, codec).unwrap();
        let who = corecast_webrtc::PublisherInfo {
            room: "room".into(),
            peer: "alice".into(),
        };
        let (endpoint, answer) = Endpoint::publisher(&w.config, w.now, &offer, who).unwrap();
        let p = w.connect(local, client, endpoint, &answer);
        let vlocal = addr("10.0.0.2:1000");
        let (client, offer) =
            Client::with_video_codec(&w.config, w.now, vlocal, false, codec).unwrap();
        let options = corecast_webrtc::ViewerOptions {
            adaptive: true,
            max_spatial: None,
        };
        let (endpoint, answer) =
            Endpoint::viewer_with(&w.config, w.now, &offer, &[], options).unwrap();
        let v = w.connect(vlocal, client, endpoint, &answer);
        subscribe_all(&mut w, p, &[v]);
        w.links.push((vlocal, Link::new(link_bps, w.now)));
        w.run_until(Duration::from_secs(5), World::all_connected);
        (w, p, v)
    }

    /// The video payloads viewer `leg` received, in order.
    pub fn video_payloads(&self, leg: usize) -> Vec<Vec<u8>> {
        self.received(leg, MediaKind::Video)
            .into_iter()
            .map(|x| x.2)
            .collect()
    }

    pub fn all_connected(&self) -> bool {
        self.clients.iter().all(|p| p.client.is_connected())
            && self.legs.iter().all(|l| l.endpoint.is_connected())
    }

    pub fn received(&self, leg: usize, kind: MediaKind) -> Vec<(u64, u32, Vec<u8>)> {
        self.clients[leg]
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Media {
                    kind: k,
                    seq,
                    rtp_time,
                    payload,
                    ..
                } if *k == kind => Some((*seq, *rtp_time, payload.to_vec())),
                _ => None,
            })
            .collect()
    }
}

pub fn payload(i: u64) -> Vec<u8> {
    // VP8 payload descriptor (S bit, partition 0) + a recognizable body.
    let mut p = vec![0x10];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..200).map(|b| (b as u64 ^ i) as u8));
    p
}

pub fn subscribe_all(w: &mut World, publisher: usize, viewers: &[usize]) {
    let channels: Vec<(MediaKind, ChannelId)> =
        w.legs[publisher].endpoint.published_channels().collect();
    for &v in viewers {
        for (kind, ch) in &channels {
            w.legs[v].endpoint.subscribe(*kind, Some(*ch));
        }
    }
}

/// Sends warm-up packets until every viewer receives media: the first packet
/// of a new stream can arrive before the viewer's SRTP context is ready.
/// Returns the next sequence number to use.
pub fn warm_up(w: &mut World, publisher: usize, viewers: &[usize], mut seq: u64) -> u64 {
    let end = w.now + Duration::from_secs(2);
    while viewers.iter().any(|v| {
        w.received(*v, MediaKind::Video).is_empty() || w.received(*v, MediaKind::Audio).is_empty()
    }) {
        assert!(w.now < end, "viewers got no media during warm-up");
        let now = w.now;
        let ts = (seq as u32) * 960;
        w.client(publisher)
            .client
            .send(now, MediaKind::Video, seq, ts, true, &[0x10, 0x00]);
        w.drain();
        w.client(publisher)
            .client
            .send(now, MediaKind::Audio, seq, ts, false, &[0xff]);
        w.run(Duration::from_millis(20));
        seq += 1;
    }
    for p in w.clients.iter_mut() {
        p.events.clear();
    }
    seq
}

/// Sends publisher `p`'s next Opus-sized audio packet when it is due (one
/// every 20 ms from `t0`): the legs always carry media besides video.
pub fn audio_tick(w: &mut World, p: usize, t0: Instant, audio_seq: &mut u64) {
    if w.now < t0 + Duration::from_millis(20 * *audio_seq) {
        return;
    }
    let now = w.now;
    let ts = (*audio_seq * 960) as u32;
    let seq = *audio_seq + 1;
    assert!(w
        .client(p)
        .client
        .send(now, MediaKind::Audio, seq, ts, false, &[0xfc; 100]));
    *audio_seq += 1;
    w.drain();
}

/// The video packets client `v` received, each once, by sequence number:
/// (arrival, marker, payload).
pub fn video_by_seq(
    w: &World,
    v: usize,
) -> std::collections::BTreeMap<u64, (Instant, bool, &[u8])> {
    let mut out = std::collections::BTreeMap::new();
    for e in &w.clients[v].events {
        if let ClientEvent::Media {
            kind: MediaKind::Video,
            seq,
            payload,
            arrival,
            marker,
            ..
        } = e
        {
            out.entry(*seq).or_insert((*arrival, *marker, &payload[..]));
        }
    }
    out
}

/// The dependency descriptor of each video packet viewer `v` received, by
/// sequence number (packets without one are left out).
pub fn descriptors_by_seq(w: &World, v: usize) -> std::collections::BTreeMap<u64, &[u8]> {
    let mut out = std::collections::BTreeMap::new();
    for e in &w.clients[v].events {
        if let ClientEvent::Media {
            kind: MediaKind::Video,
            seq,
            dependency: Some(d),
            ..
        } = e
        {
            out.entry(*seq).or_insert(&d[..]);
        }
    }
    out
}
