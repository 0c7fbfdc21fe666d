//! RTMP ingest across real sockets: a publisher (corecast's own RTMP client
//! sending a generated H.264 + AAC stream) reaches WHEP viewers bit-exact;
//! a restarted publisher on the same key keeps them continuous; tokens are
//! checked; hostile connections are refused, counted and harmless. Real
//! encoders (ffmpeg, GStreamer) are tested in scripts/e2e/run-rtmp.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{http, metric, pump_until, test_settings, Peer};
use corecast::{Node, Settings};
use corecast_media::h264::Depacketizer;
use corecast_media::MediaKind;
use corecast_rtmp::amf0;
use corecast_rtmp::client::{tags, ClientEvent, PublishClient};
use corecast_webrtc::{ClientEvent as RtcEvent, EndpointConfig};

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const AAC_ASC: &[u8] = include_bytes!("../../../transports/rtmp/tests/fixtures/sine440.asc");
const AAC: &[u8] = include_bytes!("../../../transports/rtmp/tests/fixtures/sine440.aac");

fn rtmp_settings(shards: usize) -> Settings {
    Settings {
        rtmp_port: Some(0),
        rtmp_handshake_timeout: Duration::from_secs(1),
        rtmp_idle_timeout: Duration::from_secs(3),
        ..test_settings(shards)
    }
}

/// A publishing connection.
struct Rtmp {
    sock: TcpStream,
    client: PublishClient,
}

impl Rtmp {
    /// Connects and publishes `key`: the client, or the server's refusal.
    fn publish(addr: SocketAddr, key: &str) -> Result<Rtmp, (String, String)> {
        let mut sock = TcpStream::connect(addr).expect("connect to the RTMP port");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut client, hello) = PublishClient::new("live", key);
        sock.write_all(&hello).unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = sock.read(&mut buf).unwrap_or(0);
            assert!(n > 0, "the server closed before answering publish of {key}");
            let mut out = Vec::new();
            let event = client
                .push(&buf[..n], &mut out)
                .expect("server speaks RTMP");
            sock.write_all(&out).unwrap();
            match event {
                Some(ClientEvent::Published) => return Ok(Rtmp { sock, client }),
                Some(ClientEvent::Refused { code, description }) => {
                    return Err((code, description))
                }
                None => {}
            }
        }
    }

    fn video(&mut self, ts: u32, body: &[u8]) {
        let mut out = Vec::new();
        self.client.video(&mut out, ts, body);
        self.sock.write_all(&out).unwrap();
    }

    fn audio(&mut self, ts: u32, body: &[u8]) {
        let mut out = Vec::new();
        self.client.audio(&mut out, ts, body);
        self.sock.write_all(&out).unwrap();
    }

    fn start(&mut self) {
        self.video(0, &tags::avc_sequence(SPS, PPS));
        self.audio(0, &tags::aac_sequence(AAC_ASC));
    }
}

/// Frame `i` of the generated stream: a keyframe every 10, sizes that need
/// FU-A fragments, bytes that name the frame.
fn frame_nals(i: u32) -> Vec<u8> {
    let (header, len) = if i.is_multiple_of(10) {
        (0x65, 3000 + i as usize)
    } else {
        (0x41, 700 + i as usize)
    };
    let mut n = vec![header, 0x88];
    n.extend((0..len).map(|k| (k as u32 * 7 + i) as u8));
    n
}

/// What a viewer decoding frames `from..to` gets: SPS and PPS before each
/// keyframe.
fn expected_nals(from: u32, to: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in from..to {
        if i.is_multiple_of(10) {
            out.push(SPS.to_vec());
            out.push(PPS.to_vec());
        }
        out.push(frame_nals(i));
    }
    out
}

/// Sends frames `from..to` (33 ms apart, AAC interleaved by time),
/// pumping the viewers.
fn send_frames(p: &mut Rtmp, viewers: &mut [Peer], from: u32, to: u32, aac: &mut AacCursor) {
    for i in from..to {
        let ts = i * 33;
        let nal = frame_nals(i);
        p.video(ts, &tags::avc_frame(i.is_multiple_of(10), 0, &[&nal]));
        aac.send_until(p, ts);
        pump_until(viewers, Duration::from_millis(8), |_| false);
    }
}

/// The AAC fixture's access units, sent in time with the video.
struct AacCursor {
    units: Vec<Vec<u8>>,
    next: usize,
}

impl AacCursor {
    fn new() -> AacCursor {
        AacCursor {
            units: tags::adts_units(AAC)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect(),
            next: 0,
        }
    }

    fn send_until(&mut self, p: &mut Rtmp, ts: u32) {
        loop {
            let t = (self.next as u64 * 1024 * 1000 / 44_100) as u32;
            if t > ts {
                return;
            }
            let unit = &self.units[self.next % self.units.len()];
            p.audio(t, &tags::aac_frame(unit));
            self.next += 1;
        }
    }
}

/// The NAL units a viewer received, depacketized.
fn received_nals(v: &Peer) -> Vec<Vec<u8>> {
    let mut d = Depacketizer::default();
    let mut out = Vec::new();
    for p in v.payloads(MediaKind::Video) {
        d.push(&p, &mut out).expect("mode-1 payloads in order");
    }
    out
}

fn video_seqs(v: &Peer) -> Vec<(u64, u32)> {
    v.events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Media {
                kind: MediaKind::Video,
                seq,
                ssrc,
                ..
            } => Some((*seq, *ssrc)),
            _ => None,
        })
        .collect()
}

fn whep_viewer(node: &Node, stream: &str) -> Peer {
    let config = EndpointConfig::new(vec![]);
    let v = Peer::join_with(
        &config,
        node.http_addr,
        "whep",
        stream,
        corecast_media::Codec::H264,
    );
    let mut vs = [v];
    assert!(
        pump_until(&mut vs, Duration::from_secs(5), |p| p[0]
            .events
            .iter()
            .any(|e| matches!(e, RtcEvent::Connected))),
        "the viewer connects"
    );
    let [v] = vs;
    v
}

#[test]
fn an_rtmp_publisher_plays_to_whep_viewers_bit_exact() {
    let node = Node::start(&rtmp_settings(2)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let mut viewers = vec![whep_viewer(&node, "cam"), whep_viewer(&node, "cam")];
    let mut p = Rtmp::publish(rtmp, "cam").expect("publish is accepted");
    p.start();
    let mut aac = AacCursor::new();
    send_frames(&mut p, &mut viewers, 0, 30, &mut aac);
    let want = expected_nals(0, 30);
    let done = pump_until(&mut viewers, Duration::from_secs(5), |vs| {
        vs.iter().all(|v| received_nals(v).len() >= want.len())
    });
    for (i, v) in viewers.iter().enumerate() {
        let got = received_nals(v);
        assert!(
            done,
            "viewer {i}: {} of {} NAL units",
            got.len(),
            want.len()
        );
        assert!(
            got == want,
            "viewer {i}: the access units differ from those sent"
        );
        // 30 frames at 33 ms are 1 s: about 50 Opus frames of 20 ms.
        let audio = v.payloads(MediaKind::Audio).len();
        assert!(audio >= 40, "viewer {i}: {audio} audio packets");
    }
    // The stream is listed, with its codecs, as an RTMP publisher's room.
    let streams = http(node.http_addr, "GET", "/api/streams", &[], b"").body;
    assert!(
        streams.contains("\"cam\"") && streams.contains("\"live\":true"),
        "{streams}"
    );
    assert!(
        streams.contains("H264") && streams.contains("opus"),
        "{streams}"
    );
    let rooms = http(node.http_addr, "GET", "/api/rooms", &[], b"").body;
    assert!(rooms.contains("rtmp"), "{rooms}");
    assert_eq!(
        metric(node.http_addr, "corecast_rtmp_video_frames_total"),
        30
    );
    assert!(metric(node.http_addr, "corecast_rtmp_audio_frames_total") >= 40);
    assert!(metric(node.http_addr, "corecast_rtmp_transcode_microseconds_total") > 0);
    assert_eq!(metric(node.http_addr, "corecast_rtmp_b_frames_total"), 0);
    // B-frames are detected and counted.
    p.video(1000, &tags::avc_frame(false, 66, &[&[0x41, 0x9a, 1, 2, 3]]));
    assert!(common::wait_for(Duration::from_secs(3), || metric(
        node.http_addr,
        "corecast_rtmp_b_frames_total"
    ) == 1));
    // Unpublishing ends the publisher; the room has no live stream.
    let mut out = Vec::new();
    p.client.unpublish(&mut out);
    p.sock.write_all(&out).unwrap();
    assert!(common::wait_for(Duration::from_secs(3), || {
        metric(node.http_addr, "corecast_rtmp_connections") == 0
    }));
    node.shutdown();
}

#[test]
fn a_restarted_publisher_keeps_viewers_continuous() {
    let node = Node::start(&rtmp_settings(2)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let mut viewers = vec![whep_viewer(&node, "restart")];
    let mut aac = AacCursor::new();
    let mut first = Rtmp::publish(rtmp, "restart").expect("publish");
    first.start();
    send_frames(&mut first, &mut viewers, 0, 20, &mut aac);
    // The encoder dies (the connection drops without deleteStream) and a
    // new one publishes the same key; frame numbers go on.
    drop(first);
    let mut second = Rtmp::publish(rtmp, "restart").expect("publish again");
    second.start();
    send_frames(&mut second, &mut viewers, 20, 40, &mut aac);
    let want = expected_nals(0, 40);
    let done = pump_until(&mut viewers, Duration::from_secs(5), |vs| {
        received_nals(&vs[0]).len() >= want.len()
    });
    let got = received_nals(&viewers[0]);
    assert!(done, "{} of {} NAL units", got.len(), want.len());
    assert!(got == want, "the access units across the restart differ");
    let seqs = video_seqs(&viewers[0]);
    assert!(
        seqs.windows(2)
            .all(|w| w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1),
        "one SSRC and continuous sequence numbers across the restart"
    );
    node.shutdown();
}

#[test]
fn a_second_publisher_replaces_the_first() {
    let node = Node::start(&rtmp_settings(1)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let mut first = Rtmp::publish(rtmp, "dup").expect("publish");
    let _second = Rtmp::publish(rtmp, "dup").expect("the second publish is accepted");
    // The first is closed (like a replaced WHIP publisher).
    first
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match first.sock.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(closed);
    let closed = http(node.http_addr, "GET", "/api/closed", &[], b"").body;
    assert!(closed.contains("replaced"), "{closed}");
    node.shutdown();
}

#[test]
fn publish_needs_a_valid_name_and_credentials() {
    let node = Node::start(&Settings {
        token: Some("sekrit-token".into()),
        ..rtmp_settings(1)
    })
    .expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let denied = Rtmp::publish(rtmp, "cam")
        .err()
        .expect("refused without a token");
    assert_eq!(denied.0, "NetStream.Publish.Denied");
    let wrong = Rtmp::publish(rtmp, "cam?token=nope")
        .err()
        .expect("refused");
    assert_eq!(wrong.0, "NetStream.Publish.Denied");
    let bad = Rtmp::publish(rtmp, "bad name!?token=sekrit-token")
        .err()
        .expect("refused");
    assert_eq!(bad.0, "NetStream.Publish.BadName");
    assert!(bad.1.contains("stream names"), "{}", bad.1);
    assert!(Rtmp::publish(rtmp, "cam?token=sekrit-token").is_ok());
    let m = http(node.http_addr, "GET", "/metrics", &[], b"").body;
    assert!(
        m.contains("corecast_rtmp_refused_total{reason=\"denied\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("corecast_rtmp_refused_total{reason=\"bad_name\"} 1"),
        "{m}"
    );
    // Room tokens (JWT) with publish permission work too.
    node.shutdown();
    let secret = "0123456789abcdef0123456789abcdef";
    let node = Node::start(&Settings {
        auth_secret: Some(secret.into()),
        ..rtmp_settings(1)
    })
    .expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let claims = |publish: bool| corecast::control::auth::Claims {
        room: "cam".into(),
        peer: None,
        publish,
        subscribe: true,
        transports: Some(vec!["rtmp".into()]),
        exp: 4_000_000_000,
        nbf: None,
    };
    let viewer_only = corecast::control::auth::mint(secret.as_bytes(), &claims(false)).unwrap();
    let publisher = corecast::control::auth::mint(secret.as_bytes(), &claims(true)).unwrap();
    let r = Rtmp::publish(rtmp, &format!("cam?token={viewer_only}"));
    assert_eq!(
        r.err().map(|e| e.0).as_deref(),
        Some("NetStream.Publish.Denied")
    );
    assert!(Rtmp::publish(rtmp, &format!("cam?token={publisher}")).is_ok());
    node.shutdown();
}

/// `corecast_rtmp_refused_total{reason}`.
fn refused_metric(http: SocketAddr, reason: &str) -> u64 {
    let m = http_get_metrics(http);
    let prefix = format!("corecast_rtmp_refused_total{{reason=\"{reason}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

fn http_get_metrics(http: SocketAddr) -> String {
    common::http(http, "GET", "/metrics", &[], b"").body
}

/// Raises the soft limit of open files to `want` (at most the hard limit).
fn raise_fd_limit(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Sends `bytes` on a new connection and reports whether the server closed
/// it within `limit`.
fn closed_after(addr: SocketAddr, bytes: &[u8], limit: Duration) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(limit)).unwrap();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

/// A valid handshake followed by `chunks` (raw chunk-stream bytes).
fn after_handshake(chunks: &[u8]) -> Vec<u8> {
    let mut b = vec![3u8];
    b.extend(std::iter::repeat_n(0u8, 1536 * 2));
    b.extend_from_slice(chunks);
    b
}

#[test]
fn hostile_connections_are_refused_counted_and_harmless() {
    let node = Node::start(&rtmp_settings(2)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    // 500 idle connections, open the whole time (1000 descriptors in this
    // process: raise the soft limit where it is 1024).
    raise_fd_limit(4096);
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(rtmp).unwrap())
        .collect();
    // A real stream goes on meanwhile.
    let mut viewers = vec![whep_viewer(&node, "live1")];
    let mut p = Rtmp::publish(rtmp, "live1").expect("a real publisher gets in");
    p.start();
    let mut aac = AacCursor::new();
    send_frames(&mut p, &mut viewers, 0, 10, &mut aac);
    // Connections that never published do not take the node's capacity:
    // the endpoints are the publisher and the viewer.
    assert_eq!(metric(node.http_addr, "corecast_endpoints"), 2);

    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    let limit = Duration::from_secs(4);
    assert!(closed_after(rtmp, &random, limit), "random bytes");
    assert!(
        closed_after(rtmp, &[3u8; 700], limit),
        "a truncated handshake"
    );
    assert!(closed_after(rtmp, &[6u8; 1537], limit), "RTMPE");
    // Set Chunk Size 0 and 2^31.
    for size in [0u32, 0x8000_0000] {
        let mut c = Vec::new();
        corecast_rtmp::chunk::write_message(&mut c, 128, 2, 0, 1, 0, &size.to_be_bytes());
        assert!(
            closed_after(rtmp, &after_handshake(&c), limit),
            "chunk size {size}"
        );
    }
    // A message longer than the limit (16 MiB - 1).
    let huge = [0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
    assert!(
        closed_after(rtmp, &after_handshake(&huge), limit),
        "message length"
    );
    // An AMF nesting bomb in connect.
    let mut bomb = Vec::new();
    amf0::encode(&amf0::string("connect"), &mut bomb);
    for _ in 0..5000 {
        bomb.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    let mut c = Vec::new();
    corecast_rtmp::chunk::write_message(&mut c, 128, 3, 0, 20, 0, &bomb);
    assert!(closed_after(rtmp, &after_handshake(&c), limit), "AMF bomb");
    // Play is refused with a status, then the connection closes.
    let mut cmds = Vec::new();
    for (stream, values) in [
        (
            0,
            vec![
                amf0::string("connect"),
                amf0::Value::Number(1.0),
                amf0::object(&[("app", amf0::string("live"))]),
            ],
        ),
        (
            1,
            vec![
                amf0::string("play"),
                amf0::Value::Number(2.0),
                amf0::Value::Null,
                amf0::string("live1"),
            ],
        ),
    ] {
        let mut body = Vec::new();
        for v in &values {
            amf0::encode(v, &mut body);
        }
        corecast_rtmp::chunk::write_message(&mut cmds, 128, 3, 0, 20, stream, &body);
    }
    let mut s = TcpStream::connect(rtmp).unwrap();
    s.write_all(&after_handshake(&cmds)).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("NetStream.Play.Failed"),
        "play is refused with a status"
    );

    // The real stream still plays: the next frames arrive bit-exact.
    send_frames(&mut p, &mut viewers, 10, 30, &mut aac);
    let want = expected_nals(0, 30);
    assert!(
        pump_until(&mut viewers, Duration::from_secs(5), |vs| received_nals(
            &vs[0]
        ) == want),
        "the live stream went on"
    );
    // The idle connections time out (handshake timeout 1 s).
    let refused = |reason: &str| -> u64 {
        let m = http(node.http_addr, "GET", "/metrics", &[], b"").body;
        m.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "corecast_rtmp_refused_total{{reason=\"{reason}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        common::wait_for(Duration::from_secs(10), || refused("timeout") >= 500),
        "idle connections time out: {}",
        refused("timeout")
    );
    assert!(
        refused("protocol") >= 6,
        "protocol errors: {}",
        refused("protocol")
    );
    assert_eq!(metric(node.http_addr, "corecast_rtmp_connections"), 1);
    drop(idle);
    node.shutdown();
}

/// An E-RTMP video tag: `1 | frame type | packet type`, FourCC, body.
fn enhanced(keyframe: bool, packet_type: u8, fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80 | (if keyframe { 1 } else { 2 } << 4) | packet_type];
    b.extend_from_slice(fourcc);
    b.extend_from_slice(body);
    b
}

/// An AV1 OBU with a size field.
fn obu(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut o = vec![(kind << 3) | 0x02];
    let mut n = body.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            o.push(b);
            break;
        }
        o.push(b | 0x80);
    }
    o.extend_from_slice(body);
    o
}

#[test]
fn enhanced_rtmp_av1_passes_through() {
    use corecast_media::av1;
    let node = Node::start(&rtmp_settings(2)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let config = EndpointConfig::new(vec![]);
    let viewer = Peer::join_with(
        &config,
        node.http_addr,
        "whep",
        "av1",
        corecast_media::Codec::Av1,
    );
    let mut viewers = vec![viewer];
    let mut p = Rtmp::publish(rtmp, "av1").expect("publish");
    let seq = obu(av1::OBU_SEQUENCE_HEADER, &[0, 0, 0, 0x6a, 0xef, 0xbf]);
    let mut av1c = vec![0x81, 0x04, 0x0c, 0x00];
    av1c.extend_from_slice(&seq);
    p.video(0, &enhanced(true, 0, b"av01", &av1c));
    let frame = |i: u32| -> Vec<u8> {
        let len = if i.is_multiple_of(10) { 4000 } else { 600 };
        (0..len).map(|k| (k * 3 + i) as u8).collect()
    };
    let mut want = Vec::new();
    for i in 0..20u32 {
        let mut tu = obu(av1::OBU_TEMPORAL_DELIMITER, &[]);
        tu.extend_from_slice(&obu(6, &frame(i)));
        // CodedFramesX (3): no composition time.
        p.video(i * 33, &enhanced(i.is_multiple_of(10), 3, b"av01", &tu));
        if i.is_multiple_of(10) {
            want.extend(av1::obus(&seq).unwrap());
        }
        want.extend(av1::obus(&obu(6, &frame(i))).unwrap());
        pump_until(&mut viewers, Duration::from_millis(8), |_| false);
    }
    let got = |v: &Peer| {
        let mut d = av1::Depacketizer::default();
        let mut out = Vec::new();
        for pl in v.payloads(MediaKind::Video) {
            d.push(&pl, &mut out).expect("valid AV1 payloads in order");
        }
        out
    };
    let done = pump_until(&mut viewers, Duration::from_secs(5), |vs| {
        got(&vs[0]).len() >= want.len()
    });
    assert!(done, "{} of {} OBUs", got(&viewers[0]).len(), want.len());
    assert!(got(&viewers[0]) == want, "the OBUs differ from those sent");
    let streams = http(node.http_addr, "GET", "/api/streams", &[], b"").body;
    assert!(streams.contains("AV1"), "{streams}");

    node.shutdown();
}

#[test]
fn enhanced_rtmp_opus_passes_through() {
    let node = Node::start(&rtmp_settings(1)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let mut viewers = vec![whep_viewer(&node, "opus")];
    let mut p = Rtmp::publish(rtmp, "opus").expect("publish");
    // E-RTMP audio: ExHeader (9), packet type, FourCC, the Opus packet.
    let audio = |packet_type: u8, body: &[u8]| {
        let mut b = vec![0x90 | packet_type];
        b.extend_from_slice(b"Opus");
        b.extend_from_slice(body);
        b
    };
    p.audio(0, &audio(0, b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0"));
    let packets: Vec<Vec<u8>> = (0..50u8).map(|i| vec![0xfc, i, i ^ 0x55, 7]).collect();
    for (i, pk) in packets.iter().enumerate() {
        p.audio(i as u32 * 20, &audio(1, pk));
        pump_until(&mut viewers, Duration::from_millis(4), |_| false);
    }
    let done = pump_until(&mut viewers, Duration::from_secs(5), |vs| {
        vs[0].payloads(MediaKind::Audio).len() >= packets.len()
    });
    assert!(
        done,
        "{} audio packets",
        viewers[0].payloads(MediaKind::Audio).len()
    );
    assert_eq!(
        viewers[0].payloads(MediaKind::Audio),
        packets,
        "Opus passed through unchanged"
    );
    assert_eq!(
        metric(node.http_addr, "corecast_rtmp_transcode_microseconds_total"),
        0
    );
    node.shutdown();
}

#[test]
fn hevc_is_refused_with_a_reason() {
    let node = Node::start(&rtmp_settings(1)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    // HEVC: the encoder is told why and the connection closes.
    let mut h = Rtmp::publish(rtmp, "hevc").expect("publish");
    h.video(0, &enhanced(true, 0, b"hvc1", &[1, 2, 3]));
    let mut answer = Vec::new();
    let _ = h.sock.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("NetStream.Publish.Failed") && text.contains("HEVC"),
        "the encoder hears why"
    );
    assert!(metric(node.http_addr, "corecast_rtmp_unsupported_frames_total") >= 1);
    assert!(common::wait_for(Duration::from_secs(3), || refused_metric(
        node.http_addr,
        "codec"
    ) == 1));
    node.shutdown();
}

#[test]
fn enhanced_rtmp_vp9_passes_through() {
    use corecast_media::vp9;
    let node = Node::start(&rtmp_settings(2)).expect("node starts");
    let rtmp = node.rtmp_addr.expect("RTMP is on");
    let config = EndpointConfig::new(vec![]);
    let viewer = Peer::join_with(
        &config,
        node.http_addr,
        "whep",
        "vp9",
        corecast_media::Codec::Vp9,
    );
    let mut viewers = vec![viewer];
    let mut p = Rtmp::publish(rtmp, "vp9").expect("publish");
    // SequenceStart with a vpcC record (profile 0, level 3.1, 8 bits).
    p.video(
        0,
        &enhanced(true, 0, b"vp09", &[1, 0, 0, 0, 0, 31, 0x80, 2, 2, 2, 0, 0]),
    );
    let frame = |i: u32| -> Vec<u8> {
        let len = if i.is_multiple_of(10) { 3500 } else { 500 };
        (0..len).map(|k| (k * 5 + i) as u8).collect()
    };
    let want: Vec<Vec<u8>> = (0..20).map(frame).collect();
    for (i, f) in want.iter().enumerate() {
        let i = i as u32;
        // CodedFrames (1): VP9 has no composition time.
        p.video(i * 33, &enhanced(i.is_multiple_of(10), 1, b"vp09", f));
        pump_until(&mut viewers, Duration::from_millis(8), |_| false);
    }
    let frames = |v: &Peer| {
        let (mut out, mut cur) = (Vec::new(), Vec::new());
        for pl in v.payloads(MediaKind::Video) {
            let (data, _begin, end) = vp9::depacketize(&pl).expect("valid VP9 payloads");
            cur.extend_from_slice(data);
            if end {
                out.push(std::mem::take(&mut cur));
            }
        }
        out
    };
    let done = pump_until(&mut viewers, Duration::from_secs(5), |vs| {
        frames(&vs[0]).len() >= want.len()
    });
    assert!(
        done,
        "{} of {} frames",
        frames(&viewers[0]).len(),
        want.len()
    );
    assert!(
        frames(&viewers[0]) == want,
        "the frames differ from those sent"
    );
    node.shutdown();
}
