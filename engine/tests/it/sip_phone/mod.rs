//! A phone for the SIP tests (plain SIP text and G.711 RTP over UDP on
//! loopback), an SDK peer that talks and listens in tones, and the
//! helpers both use.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::common::{http, test_settings, RoomPeer};
use corecast::config::{Settings, SipSettings};
use corecast::node::Node;
use rtp_types::{RtpPacket, RtpPacketBuilder};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use std::f64::consts::PI;

pub fn sip_settings(shards: usize, rtp: (u16, u16)) -> Settings {
    Settings {
        sip: Some(SipSettings {
            port: 0,
            rtp_ports: rtp,
            ring_timeout: std::time::Duration::from_secs(60),
            hook: None,
            users: Vec::new(),
        }),
        ..test_settings(shards)
    }
}

/// A sine of `freq` Hz at `rate`, samples `from..from + n`.
pub fn tone(freq: f64, rate: u32, from: usize, n: usize) -> Vec<i16> {
    (from..from + n)
        .map(|k| (6000.0 * (2.0 * PI * freq * k as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// The strongest frequency of the last second of `pcm`.
pub fn dominant_hz(pcm: &[i16], rate: u32) -> f64 {
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

pub fn ulaw_encode(s: i16) -> u8 {
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

pub fn ulaw_decode(c: u8) -> i16 {
    let c = !c;
    let seg = i32::from((c >> 4) & 7);
    let x = ((i32::from(c & 0x0f) << 3) + 132) << seg;
    (if c & 0x80 != 0 { 132 - x } else { x - 132 }) as i16
}

/// A phone: SIP and RTP sockets on loopback, one call at a time.
pub struct Phone {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub server: SocketAddr,
    pub call_id: String,
    pub to: String,
    pub cseq: u32,
    /// Where the node wants our RTP.
    pub media: Option<SocketAddr>,
    pub seq: u16,
    pub sent: usize,
    /// What we heard, decoded.
    pub heard: Vec<i16>,
    pub heard_packets: usize,
    /// SIP messages received and not yet read.
    pub inbox: Vec<String>,
}

impl Phone {
    pub fn new(server: SocketAddr) -> Phone {
        Phone::on("127.0.0.1", server)
    }

    /// A phone on loopback address `ip` (127.0.0.2 is another source).
    pub fn on(ip: &str, server: SocketAddr) -> Phone {
        let sip = UdpSocket::bind((ip, 0)).unwrap();
        let rtp = UdpSocket::bind((ip, 0)).unwrap();
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

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    pub fn send(&self, text: &str) {
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
    }

    pub fn request(&self, method: &str, uri: &str, cseq: u32, body: &str) -> String {
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
    pub fn call(&mut self, room: &str) -> u16 {
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

    pub fn next_message(&mut self) -> Option<String> {
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
    pub fn talk(&mut self, freq: f64) {
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

    pub fn listen(&mut self) {
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

    pub fn bye(&mut self) -> u16 {
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
    pub fn answer_bye(&mut self, limit: Duration) -> bool {
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

impl Phone {
    /// REGISTERs `user` with `password` (answering the digest challenge);
    /// returns the final status.
    pub fn register(&mut self, user: &str, password: &str) -> u16 {
        let me = self.sip_addr();
        let uri = format!("sip:{}", self.server);
        let call_id = format!("reg{:x}", rand_u64());
        let mut authorization = String::new();
        for cseq in 1..=2 {
            let text = format!(
                "REGISTER {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch=z9hG4bK{:x}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{user}@{host}>;tag=r{cseq}\r\n\
                 To: <sip:{user}@{host}>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:{user}@{me}>\r\n\
                 Expires: 300\r\n\
                 {authorization}Content-Length: 0\r\n\r\n",
                rand_u64(),
                host = self.server.ip(),
            );
            self.send(&text);
            let reply = self.final_response("REGISTER");
            let status: u16 = reply[8..11].parse().unwrap();
            if status != 401 {
                return status;
            }
            let challenge = header(&reply, "WWW-Authenticate").unwrap().to_string();
            let param = |name: &str| {
                let at = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                challenge[at..].split('"').next().unwrap().to_string()
            };
            let (realm, nonce) = (param("realm"), param("nonce"));
            let md5 = |s: String| format!("{:x}", md5::compute(s.as_bytes()));
            let ha1 = md5(format!("{user}:{realm}:{password}"));
            let ha2 = md5(format!("REGISTER:{uri}"));
            let response = md5(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
            authorization = format!(
                "Authorization: Digest username=\"{user}\", realm=\"{realm}\", \
                 nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", \
                 qop=auth, nc=00000001, cnonce=\"c0ffee\", algorithm=MD5\r\n"
            );
        }
        panic!("challenged twice");
    }

    /// The next final response to a request of `method`.
    pub fn final_response(&mut self, method: &str) -> String {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Some(msg) = self.next_message() {
                let cseq = header(&msg, "CSeq").unwrap_or("");
                if msg.starts_with("SIP/2.0 ") && cseq.ends_with(method) && &msg[8..9] != "1" {
                    return msg;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no final response to {method}");
    }

    /// The next request of `method` the node sends.
    pub fn wait_request(&mut self, method: &str, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.listen();
            if let Some(msg) = self.next_message() {
                if msg.starts_with(&format!("{method} ")) {
                    return Some(msg);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// A response to `request` (our To tag `ph2` added when it has none).
    pub fn respond(&self, request: &str, status: u16, body: &str) {
        let mut text = format!("SIP/2.0 {status} Whatever\r\n");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            text.push_str(&format!("{name}: {}\r\n", header(request, name).unwrap()));
        }
        let to = header(request, "To").unwrap();
        if to.contains("tag=") {
            text.push_str(&format!("To: {to}\r\n"));
        } else {
            text.push_str(&format!("To: {to};tag=ph2\r\n"));
        }
        text.push_str(&format!("Contact: <sip:phone@{}>\r\n", self.sip_addr()));
        if !body.is_empty() {
            text.push_str("Content-Type: application/sdp\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&text);
    }

    /// Answers an INVITE of the node: 180, then 200 with a PCMU answer;
    /// where to send RTP comes from its offer.
    pub fn answer(&mut self, invite: &str) {
        self.respond(invite, 180, "");
        let offer = invite.split("\r\n\r\n").nth(1).unwrap_or("");
        let port: u16 = offer
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        let ip = offer
            .lines()
            .find_map(|l| l.strip_prefix("c=IN IP4 "))
            .unwrap()
            .trim();
        self.media = Some(format!("{ip}:{port}").parse().unwrap());
        let rtp = self.rtp.local_addr().unwrap();
        let answer = format!(
            "v=0\r\no=phone 2 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
            rtp.port(),
            ip = rtp.ip(),
        );
        self.respond(invite, 200, &answer);
    }
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// An SDK peer that publishes `freq` Hz as Opus every 20 ms and decodes
/// what its audio slots receive.
pub struct Listener {
    pub peer: RoomPeer,
    pub encoder: opus::Encoder,
    pub decoder: opus::Decoder,
    pub sent: usize,
    pub heard: Vec<i16>,
    pub decoded: usize,
}

impl Listener {
    pub fn new(node: &Node, room: &str) -> Listener {
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

    pub fn talk(&mut self, freq: f64) {
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

    pub fn listen(&mut self) {
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

pub fn pump_until(
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
pub fn converse(phone: &mut Phone, web: &mut Listener, d: Duration) {
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

pub fn calls_json(node: &Node) -> serde_json::Value {
    let r = http(node.http_addr, "GET", "/api/sip/calls", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}
