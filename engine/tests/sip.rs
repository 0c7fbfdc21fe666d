//! SIP calls on loopback: a phone written here (plain SIP text and G.711
//! RTP over UDP) calls `sip:ROOM@node`, talks with an SDK peer of the room
//! and hangs up, or is hung up on. Each side's audio is a tone and each
//! side checks it hears the other's frequency.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{http, metric, plain_metric, test_settings, RoomPeer};
use corecast::config::{Settings, SipSettings};
use corecast::node::Node;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde_json::json;
use std::f64::consts::PI;

fn sip_settings(shards: usize, rtp: (u16, u16)) -> Settings {
    Settings {
        sip: Some(SipSettings {
            port: 0,
            rtp_ports: rtp,
            users: Vec::new(),
        }),
        ..test_settings(shards)
    }
}

/// A sine of `freq` Hz at `rate`, samples `from..from + n`.
fn tone(freq: f64, rate: u32, from: usize, n: usize) -> Vec<i16> {
    (from..from + n)
        .map(|k| (6000.0 * (2.0 * PI * freq * k as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// The strongest frequency of the last second of `pcm`.
fn dominant_hz(pcm: &[i16], rate: u32) -> f64 {
    let n = rate as usize;
    assert!(pcm.len() >= n, "only {} samples", pcm.len());
    let mut buf: Vec<Complex<f64>> = pcm[pcm.len() - n..]
        .iter()
        .map(|&s| Complex::new(f64::from(s), 0.0))
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buf);
    let (bin, _) = buf[1..n / 2]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.norm().total_cmp(&b.1.norm()))
        .unwrap();
    (bin + 1) as f64 * f64::from(rate) / n as f64
}

fn ulaw_encode(s: i16) -> u8 {
    let mut x = i32::from(s);
    let sign = if x < 0 { 0x80 } else { 0 };
    if x < 0 {
        x = -x;
    }
    x = (x.min(32_635)) + 132;
    let seg = (31 - (x as u32).leading_zeros() - 7) as i32;
    let mantissa = (x >> (seg + 3)) & 0x0f;
    !(sign | (seg << 4) as u8 | mantissa as u8)
}

fn ulaw_decode(c: u8) -> i16 {
    let c = !c;
    let seg = i32::from((c >> 4) & 7);
    let x = ((i32::from(c & 0x0f) << 3) + 132) << seg;
    (if c & 0x80 != 0 { 132 - x } else { x - 132 }) as i16
}

/// A phone: SIP and RTP sockets on loopback, one call at a time.
struct Phone {
    sip: UdpSocket,
    rtp: UdpSocket,
    server: SocketAddr,
    call_id: String,
    to: String,
    cseq: u32,
    /// Where the node wants our RTP.
    media: Option<SocketAddr>,
    seq: u16,
    sent: usize,
    /// What we heard, decoded.
    heard: Vec<i16>,
    heard_packets: usize,
    /// SIP messages received and not yet read.
    inbox: Vec<String>,
}

impl Phone {
    fn new(server: SocketAddr) -> Phone {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        sip.set_nonblocking(true).unwrap();
        rtp.set_nonblocking(true).unwrap();
        Phone {
            sip,
            rtp,
            server,
            call_id: format!("{:016x}@test", rand_u64()),
            to: String::new(),
            cseq: 1,
            media: None,
            seq: 0,
            sent: 0,
            heard: Vec::new(),
            heard_packets: 0,
            inbox: Vec::new(),
        }
    }

    fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    fn send(&self, text: &str) {
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
    }

    fn request(&self, method: &str, uri: &str, cseq: u32, body: &str) -> String {
        let me = self.sip_addr();
        let extra = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{:x}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:phone@{me}>;tag=ph1\r\n\
             To: {to}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:phone@{me}>\r\n\
             {extra}Content-Length: {}\r\n\r\n{body}",
            rand_u64(),
            self.call_id,
            body.len(),
            to = if self.to.is_empty() {
                format!("<{uri}>")
            } else {
                self.to.clone()
            },
        )
    }

    /// Calls `room`; returns the final status.
    fn call(&mut self, room: &str) -> u16 {
        let uri = format!("sip:{room}@{}", self.server);
        let port = self.rtp.local_addr().unwrap().port();
        let sdp = format!(
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        self.to.clear();
        let invite = self.request("INVITE", &uri, self.cseq, &sdp);
        self.send(&invite);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(msg) = self.next_message() {
                let status: u16 = msg
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if status < 200 {
                    continue;
                }
                if status >= 300 {
                    return status;
                }
                self.to = header(&msg, "To").unwrap().to_string();
                let body = msg.split("\r\n\r\n").nth(1).unwrap_or("");
                let port: u16 = body
                    .lines()
                    .find_map(|l| l.strip_prefix("m=audio "))
                    .and_then(|l| l.split(' ').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap();
                let ip = body
                    .lines()
                    .find_map(|l| l.strip_prefix("c=IN IP4 "))
                    .unwrap()
                    .trim();
                self.media = Some(format!("{ip}:{port}").parse().unwrap());
                let ack = self.request("ACK", &uri, self.cseq, "");
                self.send(&ack);
                return status;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no final response to the INVITE");
    }

    fn next_message(&mut self) -> Option<String> {
        let mut buf = [0u8; 8192];
        while let Ok((n, _)) = self.sip.recv_from(&mut buf) {
            self.inbox
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if self.inbox.is_empty() {
            None
        } else {
            Some(self.inbox.remove(0))
        }
    }

    /// One 20 ms packet of `freq` Hz, and what the node sent us.
    fn talk(&mut self, freq: f64) {
        let Some(to) = self.media else {
            return;
        };
        let pcm = tone(freq, 8000, self.sent * 160, 160);
        let payload: Vec<u8> = pcm.iter().map(|&s| ulaw_encode(s)).collect();
        let packet = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(0)
            .sequence_number(self.seq)
            .timestamp(self.sent as u32 * 160)
            .ssrc(0x5151)
            .payload(payload.as_slice())
            .write_vec()
            .unwrap();
        self.rtp.send_to(&packet, to).unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.sent += 1;
        self.listen();
    }

    fn listen(&mut self) {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.rtp.recv_from(&mut buf) {
            if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                assert_eq!(p.payload_type(), 0, "PCMU as agreed");
                self.heard_packets += 1;
                self.heard
                    .extend(p.payload().iter().map(|&c| ulaw_decode(c)));
            }
        }
    }

    fn bye(&mut self) -> u16 {
        self.cseq += 1;
        let uri = format!("sip:corecast@{}", self.server);
        let bye = self.request("BYE", &uri, self.cseq, "");
        self.send(&bye);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Some(msg) = self.next_message() {
                if msg.starts_with("SIP/2.0 ") && msg.contains(" BYE\r\n") {
                    return msg[8..11].parse().unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no answer to BYE");
    }

    /// Waits for the node's BYE and answers 200.
    fn answer_bye(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.listen();
            if let Some(msg) = self.next_message() {
                if msg.starts_with("BYE ") {
                    let mut ok = String::from("SIP/2.0 200 OK\r\n");
                    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                        ok.push_str(&format!("{name}: {}\r\n", header(&msg, name).unwrap()));
                    }
                    ok.push_str("Content-Length: 0\r\n\r\n");
                    self.send(&ok);
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// An SDK peer that publishes `freq` Hz as Opus every 20 ms and decodes
/// what its audio slots receive.
struct Listener {
    peer: RoomPeer,
    encoder: opus::Encoder,
    decoder: opus::Decoder,
    sent: usize,
    heard: Vec<i16>,
    decoded: usize,
}

impl Listener {
    fn new(node: &Node, room: &str) -> Listener {
        Listener {
            peer: RoomPeer::connect(node.http_addr, room, "web", 3),
            encoder: opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
                .unwrap(),
            decoder: opus::Decoder::new(48_000, opus::Channels::Mono).unwrap(),
            sent: 0,
            heard: Vec::new(),
            decoded: 0,
        }
    }

    fn talk(&mut self, freq: f64) {
        let now = Instant::now();
        let pcm = tone(freq, 48_000, self.sent * 960, 960);
        let mut buf = [0u8; 1500];
        let n = self.encoder.encode(&pcm, &mut buf).unwrap();
        let seq = self.sent as u64;
        self.peer.client.send_with_level(
            now,
            "audio",
            seq,
            (seq * 960) as u32,
            true,
            &buf[..n],
            Some(30),
        );
        self.peer.drain(now);
        self.sent += 1;
        self.listen();
    }

    fn listen(&mut self) {
        self.peer.pump();
        let mut out = vec![0i16; 5760];
        // It subscribes to audio only.
        for (_, payload) in &self.peer.media[self.decoded..] {
            if let Ok(n) = self.decoder.decode(payload, &mut out, false) {
                self.heard.extend_from_slice(&out[..n]);
            }
        }
        self.decoded = self.peer.media.len();
    }
}

fn pump_until(
    phone: &mut Phone,
    web: &mut Listener,
    limit: Duration,
    done: impl Fn(&Phone, &Listener) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        phone.listen();
        web.listen();
        if done(phone, web) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Both talk, 20 ms apart, for `d`.
fn converse(phone: &mut Phone, web: &mut Listener, d: Duration) {
    let end = Instant::now() + d;
    let mut next = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next {
            phone.talk(440.0);
            web.talk(880.0);
            next += Duration::from_millis(20);
        }
        phone.listen();
        web.listen();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn calls_json(node: &Node) -> serde_json::Value {
    let r = http(node.http_addr, "GET", "/api/sip/calls", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn a_phone_and_a_browser_peer_hear_each_other_and_the_phone_hangs_up() {
    let node = Node::start(&sip_settings(2, (32_000, 32_099))).unwrap();
    let sip = node.sip_addr.unwrap();
    let mut web = Listener::new(&node, "call");
    let mut phone = Phone::new(sip);
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(10),
        |_, w| w.peer.joined()
    ));

    assert_eq!(phone.call("call"), 200);
    let media = phone.media.unwrap();
    assert!((32_000..=32_099).contains(&media.port()), "RTP on {media}");
    // The phone is a peer of the room: the browser peer sees it join.
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| !w.peer.events("peer_joined").is_empty()
    ));
    let joined = web.peer.events("peer_joined")[0].clone();
    let phone_peer = joined["peer"].as_str().unwrap().to_string();
    let calls = calls_json(&node);
    assert_eq!(calls["calls"][0]["peer"], phone_peer.as_str());
    assert_eq!(calls["calls"][0]["room"], "call");
    web.peer
        .request("subscribe", json!({"peer": phone_peer, "track": "audio"}));

    converse(&mut phone, &mut web, Duration::from_secs(4));

    // Steady 20 ms packets toward the phone, the browser's tone in them.
    assert!(
        phone.heard_packets >= 150,
        "{} packets",
        phone.heard_packets
    );
    let phone_hears = dominant_hz(&phone.heard, 8000);
    assert!(
        (phone_hears - 880.0).abs() <= 5.0,
        "the phone hears {phone_hears} Hz"
    );
    let web_hears = dominant_hz(&web.heard, 48_000);
    assert!(
        (web_hears - 440.0).abs() <= 5.0,
        "the browser hears {web_hears} Hz"
    );

    // The phone hangs up: 200, the peer leaves the room, nothing leaks.
    assert_eq!(phone.bye(), 200);
    assert!(pump_until(
        &mut phone,
        &mut web,
        Duration::from_secs(5),
        |_, w| !w.peer.events("peer_left").is_empty()
    ));
    assert!(common::wait_for(Duration::from_secs(5), || metric(
        node.http_addr,
        "corecast_endpoints"
    ) == 1));
    assert_eq!(calls_json(&node)["calls"].as_array().unwrap().len(), 0);
    assert_eq!(
        plain_metric(node.http_addr, "corecast_sip_calls_answered_total"),
        1
    );
    node.shutdown();
}

#[test]
fn the_api_hangs_up_and_the_phone_gets_a_bye() {
    let node = Node::start(&sip_settings(1, (32_100, 32_199))).unwrap();
    let mut phone = Phone::new(node.sip_addr.unwrap());
    assert_eq!(phone.call("hangup"), 200);
    let calls = calls_json(&node);
    let id = calls["calls"][0]["id"].as_str().unwrap().to_string();
    // Talk a little so the call is well up.
    for _ in 0..25 {
        phone.talk(440.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        phone.answer_bye(Duration::from_secs(5)),
        "no BYE from the node"
    );
    assert!(common::wait_for(Duration::from_secs(5), || calls_json(
        &node
    )["calls"]
        .as_array()
        .unwrap()
        .is_empty()));
    let r = http(
        node.http_addr,
        "DELETE",
        &format!("/api/sip/calls/{id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
    node.shutdown();
}

#[test]
fn bad_requests_are_refused_and_strangers_media_dropped() {
    let node = Node::start(&sip_settings(1, (32_200, 32_299))).unwrap();
    let sip = node.sip_addr.unwrap();
    // Not a room name.
    let mut bad_room = Phone::new(sip);
    assert_eq!(bad_room.call("no%20room"), 404);
    // A BYE for a dialog that does not exist.
    let mut ghost = Phone::new(sip);
    ghost.to = "<sip:x@127.0.0.1>;tag=nothere".into();
    assert_eq!(ghost.bye(), 481);
    // Garbage on the SIP port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for g in [&b"\x00\x01\x02"[..], b"INVITE", &[0xff; 3000]] {
        junk.send_to(g, sip).unwrap();
    }
    // A real call, and RTP aimed at it from an address it did not signal.
    let mut phone = Phone::new(sip);
    assert_eq!(phone.call("fine"), 200);
    let media = phone.media.unwrap();
    let before = metric(node.http_addr, "corecast_bad_packets_total");
    for i in 0..20u16 {
        let p = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(0)
            .sequence_number(i)
            .ssrc(9)
            .payload(&[0u8; 160][..])
            .write_vec()
            .unwrap();
        junk.send_to(&p, media).unwrap();
        phone.talk(440.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let counted = common::wait_for(Duration::from_secs(3), || {
        metric(node.http_addr, "corecast_bad_packets_total") >= before + 20
    });
    assert!(
        counted,
        "bad packets {before} -> {}",
        metric(node.http_addr, "corecast_bad_packets_total")
    );
    assert!(plain_metric(node.http_addr, "corecast_sip_parse_errors_total") >= 2);
    assert_eq!(
        plain_metric(node.http_addr, "corecast_sip_unknown_dialog_total"),
        1
    );
    // The call went on: the node answers the phone's BYE.
    assert!(phone.heard_packets > 0);
    assert_eq!(phone.bye(), 200);
    node.shutdown();
}
