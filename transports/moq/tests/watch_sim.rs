//! A MoQ client watches a room through a `MoqEndpoint`, in simulated time,
//! with no socket: the client is moq-net's own (over corecast's QUIC
//! connection, pinning the server's generated certificate), and the test
//! plays the engine (it admits the watch request, points the slots and
//! feeds RTP packets of a VP8 + Opus publisher).
//!
//! The client asks for the room's broadcast, reads the catalog and
//! receives every frame: video groups start at keyframes and hold the
//! frames bit-exact, audio frames come in order with their timestamps.
//! It does so on raw QUIC and over WebTransport (HTTP/3), as browsers do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corecast_media::{
    ChannelId, Codec, CodecInfo, Command, ConnId, Endpoint, Event, Input, Layer, MediaPacket,
    Output, Refusal,
};
use corecast_moq::cert::Certificate;
use corecast_moq::client::WatchClient;
use corecast_moq::endpoint::{MoqEndpoint, AUDIO_SLOT, VIDEO_SLOT};
use corecast_moq::quic::{ConnKey, QuicConn, QuicServerConfig};
use corecast_moq::SERVER_ALPNS;

/// The engine's side: what the endpoint asked.
#[derive(Default)]
struct EngineLog {
    watch: Vec<String>,
    tokens: Vec<Option<String>>,
    closed: bool,
    keyframe_requests: usize,
}

struct World {
    now: Instant,
    server: MoqEndpoint,
    client: WatchClient,
    server_addr: SocketAddr,
    log: EngineLog,
    /// Answer watch requests with this.
    admit: Result<String, Refusal>,
    video: ChannelId,
    audio: ChannelId,
}

impl World {
    fn new(room: &str) -> World {
        World::with(room, None)
    }

    /// A world whose client asks for `url` over WebTransport, or speaks raw
    /// QUIC without one.
    fn with(room: &str, webtransport: Option<&str>) -> World {
        World::speaking(room, corecast_moq::ALPNS, webtransport)
    }

    /// A world whose client offers only `versions`.
    fn speaking(room: &str, versions: &[&str], webtransport: Option<&str>) -> World {
        let now = Instant::now();
        let cert = Certificate::generate(&["localhost".into()], SystemTime::now()).unwrap();
        let config =
            QuicServerConfig::new(&cert, SERVER_ALPNS, 100, Duration::from_secs(30)).unwrap();
        let server_addr: SocketAddr = "127.0.0.1:4443".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let fp = cert.fingerprint();
        let mut client =
            WatchClient::with_versions(now, &fp, local, server_addr, room, versions, webtransport)
                .unwrap();
        // The client's first datagram makes the server's connection.
        let first = client.quic.poll_transmit(now).unwrap();
        let quic = QuicConn::accept(
            now,
            &config,
            ConnKey { shard: 0, key: 7 },
            server_addr,
            "127.0.0.1:40000".parse().unwrap(),
            &first.contents,
        )
        .unwrap();
        let server = MoqEndpoint::new(ConnId(0x1234), quic, now);
        client.pump(now);
        World {
            now,
            server,
            client,
            server_addr,
            log: EngineLog::default(),
            admit: Ok("peer".into()),
            video: ChannelId::for_track(room, "pub", "video"),
            audio: ChannelId::for_track(room, "pub", "audio"),
        }
    }

    /// Moves datagrams both ways and runs the engine's answers until
    /// nothing more happens.
    fn settle(&mut self) {
        for _ in 0..200 {
            let mut moved = false;
            while let Some(t) = self.client.quic.poll_transmit(self.now) {
                moved = true;
                let input = Input::Datagram {
                    source: "127.0.0.1:40000".parse().unwrap(),
                    destination: self.server_addr,
                    contents: &t.contents,
                };
                self.server.handle_input(self.now, input).unwrap();
            }
            loop {
                match self.server.poll_output(self.now) {
                    Output::Transmit(t) => {
                        moved = true;
                        self.client
                            .quic
                            .handle_datagram(self.now, self.server_addr, &t.contents);
                    }
                    Output::Event(e) => {
                        moved = true;
                        self.on_event(e);
                    }
                    Output::Timeout(_) => break,
                }
            }
            self.client.pump(self.now);
            if !moved {
                return;
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::WatchRequest { room, token } => {
                self.log.watch.push(room);
                self.log.tokens.push(token);
                let admit = self.admit.clone();
                let ok = admit.is_ok();
                self.server
                    .handle_input(self.now, Input::Command(Command::Admit(admit)))
                    .unwrap();
                if ok {
                    for (slot, channel) in [(VIDEO_SLOT, self.video), (AUDIO_SLOT, self.audio)] {
                        let c = Command::Subscribe {
                            slot,
                            channel: Some(channel),
                        };
                        self.server
                            .handle_input(self.now, Input::Command(c))
                            .unwrap();
                    }
                }
            }
            Event::Closed(_) => self.log.closed = true,
            Event::KeyframeRequest(..) => self.log.keyframe_requests += 1,
            _ => {}
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.quic.handle_timeout(self.now);
        self.server.handle_input(self.now, Input::Timeout).unwrap();
        self.settle();
    }

    fn media(&mut self, p: MediaPacket) {
        self.server
            .handle_input(self.now, Input::Media(&p))
            .unwrap();
    }
}

fn packet(
    channel: ChannelId,
    codec: Codec,
    seq: u64,
    rtp_time: u32,
    marker: bool,
    wallclock: Instant,
    payload: Vec<u8>,
) -> MediaPacket {
    let info = CodecInfo::new(codec, if codec == Codec::Opus { 48_000 } else { 90_000 });
    MediaPacket {
        channel,
        kind: info.kind(),
        codec: info,
        seq,
        rtp_time,
        marker,
        arrival: wallclock,
        wallclock,
        orientation: None,
        layer: Layer::default(),
        audio_level: None,
        dependency: None,
        payload: Arc::from(payload),
    }
}

/// A VP8 frame of `n` bytes (keyframe: first byte's bit 0 clear).
fn vp8_frame(n: usize, key: bool, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect();
    f[0] = if key { 0x10 } else { 0x11 };
    f
}

#[test]
fn a_moq_client_watches_a_room_frame_exact() {
    watch_frame_exact(World::new("room1"));
}

#[test]
fn a_webtransport_client_watches_a_room_frame_exact() {
    let w = World::with("room1", Some("https://localhost:4443/?token=t0k"));
    let tokens = watch_frame_exact(w);
    assert_eq!(
        tokens,
        vec![Some("t0k".to_string())],
        "the token of the URL"
    );
}

#[test]
fn every_version_corecast_claims_watches() {
    for version in corecast_moq::ALPNS {
        watch_frame_exact(World::speaking("room1", &[version], None));
        let url = Some("https://localhost:4443/");
        watch_frame_exact(World::speaking("room1", &[version], url));
    }
}

/// Sends two seconds of VP8 and Opus and checks the client got every
/// frame; returns the tokens the watch requests carried.
fn watch_frame_exact(mut w: World) -> Vec<Option<String>> {
    for _ in 0..20 {
        w.advance(Duration::from_millis(5));
    }
    assert_eq!(w.log.watch, vec!["room1".to_string()], "the watch request");
    let start = w.now;
    let mut seq = 0u64;
    let mut aseq = 0u64;
    let mut sent_video = Vec::new();
    let mut sent_audio = Vec::new();
    // Two seconds: 30 video frames a second (a keyframe every 15), audio
    // every 20 ms.
    for tick in 0..100u32 {
        let t = start + Duration::from_millis(20 * u64::from(tick));
        w.now = t;
        if tick.is_multiple_of(2) {
            let n = tick / 2;
            let key = n.is_multiple_of(15);
            let frame = vp8_frame(if key { 2500 } else { 400 }, key, n as u8);
            let parts: Vec<&[u8]> = frame.chunks(1100).collect();
            for (i, part) in parts.iter().enumerate() {
                seq += 1;
                let mut payload = vec![if i == 0 { 0x10 } else { 0x00 }];
                payload.extend_from_slice(part);
                let p = packet(
                    w.video,
                    Codec::Vp8,
                    seq,
                    n * 3000,
                    i + 1 == parts.len(),
                    t,
                    payload,
                );
                w.media(p);
            }
            sent_video.push((key, frame));
        }
        aseq += 1;
        let opus = vec![0xfc, tick as u8, 7, 7];
        w.media(packet(
            w.audio,
            Codec::Opus,
            aseq,
            tick * 960,
            true,
            t,
            opus.clone(),
        ));
        sent_audio.push(opus);
        w.advance(Duration::from_millis(1));
    }
    for _ in 0..50 {
        w.advance(Duration::from_millis(10));
    }
    let seen = w.client.watched();
    assert_eq!(seen.error, None);
    let catalog = seen.catalog.as_deref().expect("a catalog");
    assert!(catalog.contains("\"vp8\""), "{catalog}");
    assert!(catalog.contains("opus"), "{catalog}");
    // Video: every frame, in groups that start at the keyframes.
    let frames: Vec<&Vec<u8>> = seen.video.iter().flatten().map(|(_, f)| f).collect();
    assert_eq!(frames.len(), sent_video.len(), "video frames");
    for (got, (_, sent)) in frames.iter().zip(&sent_video) {
        assert_eq!(*got, sent);
    }
    assert_eq!(
        seen.video.len(),
        sent_video.iter().filter(|(k, _)| *k).count()
    );
    for g in &seen.video {
        assert_eq!(g[0].1[0] & 0x01, 0, "a group starts at a keyframe");
    }
    // Timestamps: 40 ms between video frames, from zero.
    let ts: Vec<u64> = seen.video.iter().flatten().map(|(t, _)| *t).collect();
    assert_eq!(ts[0], 0);
    assert_eq!(ts[1], 40_000);
    // Audio: every frame in order, 20 ms apart.
    assert_eq!(seen.audio.len(), sent_audio.len());
    assert!(seen.audio.iter().zip(&sent_audio).all(|((_, a), b)| a == b));
    assert_eq!(seen.audio[1].0 - seen.audio[0].0, 20_000);
    let stats = w.server.moq_stats();
    assert_eq!(stats.frames as usize, sent_video.len() + sent_audio.len());
    assert!(stats.groups >= 4, "{stats:?}");
    w.log.tokens
}

#[test]
fn a_refused_watch_closes_the_connection() {
    let mut w = World::new("secret");
    w.admit = Err(Refusal::Denied("no token".into()));
    for _ in 0..20 {
        w.advance(Duration::from_millis(5));
    }
    assert_eq!(w.log.watch, vec!["secret".to_string()]);
    assert!(w.log.closed, "the endpoint ends");
    assert!(w.server.is_closed());
}

#[test]
fn video_before_a_keyframe_asks_for_one() {
    let mut w = World::new("late");
    for _ in 0..20 {
        w.advance(Duration::from_millis(5));
    }
    let t = w.now;
    for n in 0..3u32 {
        let mut payload = vec![0x10];
        payload.extend(vp8_frame(300, false, n as u8));
        let p = packet(
            w.video,
            Codec::Vp8,
            u64::from(n) + 1,
            n * 3000,
            true,
            t,
            payload,
        );
        w.media(p);
        w.settle();
    }
    assert_eq!(w.log.keyframe_requests, 1, "one request a second at most");
    assert_eq!(w.server.moq_stats().frames, 0);
}

/// A MoQ publisher (moq-net's client announcing a broadcast with a hang
/// catalog, VP8 and Opus) through a `MoqEndpoint`: the endpoint asks to
/// publish, and once admitted its frames come out as RTP packets that
/// assemble back into the same frames.
#[test]
fn a_moq_publisher_becomes_rtp_on_the_rooms_tracks() {
    publish_through(false);
}

#[test]
fn a_moq_publisher_over_webtransport_becomes_rtp_on_the_rooms_tracks() {
    publish_through(true);
}

/// A moq-net publisher over raw QUIC or WebTransport: its announced
/// broadcast becomes the room's RTP, every video frame bit-exact.
fn publish_through(webtransport: bool) {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Wake, Waker};

    #[derive(Default)]
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }
    type Connecting = Pin<
        Box<
            dyn Future<
                Output = Result<
                    (
                        moq_net::Session,
                        moq_net::Driver<corecast_moq::transport::QuicSession>,
                    ),
                    String,
                >,
            >,
        >,
    >;

    let now0 = Instant::now();
    let cert = Certificate::generate(&["localhost".into()], SystemTime::now()).unwrap();
    let config = QuicServerConfig::new(&cert, SERVER_ALPNS, 100, Duration::from_secs(30)).unwrap();
    let server_addr: SocketAddr = "127.0.0.1:4443".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let alpns = if webtransport {
        &[corecast_moq::H3][..]
    } else {
        corecast_moq::ALPNS
    };
    let client_config =
        corecast_moq::quic::pinned_client_config(&cert.fingerprint(), alpns).unwrap();
    let mut quic = QuicConn::connect(
        now0,
        client_config,
        ConnKey { shard: 0, key: 3 },
        local,
        server_addr,
        "localhost",
    )
    .unwrap();
    let first = quic.poll_transmit(now0).unwrap();
    let server_quic = QuicConn::accept(
        now0,
        &config,
        ConnKey { shard: 0, key: 9 },
        server_addr,
        local,
        &first.contents,
    )
    .unwrap();
    let mut server = MoqEndpoint::new(ConnId(0x77), server_quic, now0);

    let (origin, mut origin_driver) =
        moq_net::origin::Producer::new(moq_net::origin::Config::default());
    let broadcast = origin
        .publish("stage", moq_net::origin::Route::default())
        .unwrap();
    let mut catalog = broadcast
        .create_track(
            hang::Catalog::DEFAULT_NAME,
            hang::Catalog::default_track_info(),
        )
        .unwrap();
    let video = broadcast
        .create_track("cam", hang::container::track_info(60))
        .unwrap();
    let audio = broadcast
        .create_track("mic", hang::container::track_info(80))
        .unwrap();
    // The catalog names the audio first; the video rendition comes in a
    // later catalog group, with the first keyframe (as publishers whose
    // video configuration is only known then do).
    let audio_only = r#"{"audio":{"renditions":{"mic":{"codec":"opus","sampleRate":48000,"numberOfChannels":2,"container":{"kind":"legacy"}}}}}"#;
    let json = r#"{"video":{"renditions":{"cam":{"codec":"vp8","container":{"kind":"legacy"}}}},"audio":{"renditions":{"mic":{"codec":"opus","sampleRate":48000,"numberOfChannels":2,"container":{"kind":"legacy"}}}}}"#;
    catalog
        .write_frame(moq_net::Timestamp::ZERO, audio_only.as_bytes().to_vec())
        .unwrap();
    let mut catalog_updated = false;

    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let waiter = kio::Waiter::new(waker.clone());
    let mut connecting: Option<Connecting> = None;
    let mut session = None;
    let mut now = now0;
    let mut requests = Vec::new();
    let mut packets: Vec<MediaPacket> = Vec::new();
    let mut vgroup: Option<moq_net::group::Producer> = None;
    let mut agroup = audio.append_group().unwrap();
    let mut sent = Vec::new();
    for step in 0..400u32 {
        now += Duration::from_millis(5);
        // The publisher writes a frame every 40 ms once connected.
        if session.is_some() && step.is_multiple_of(8) && sent.len() < 20 {
            if !catalog_updated && step > 40 {
                catalog
                    .write_frame(moq_net::Timestamp::ZERO, json.as_bytes().to_vec())
                    .unwrap();
                catalog_updated = true;
            }
            let n = sent.len() as u8;
            let key = n.is_multiple_of(5);
            let mut frame: Vec<u8> = (0..1500 + usize::from(n) * 30)
                .map(|i| (i as u8) ^ n)
                .collect();
            frame[0] = if key { 0x10 } else { 0x11 };
            if key {
                if let Some(g) = vgroup.take() {
                    g.finish().unwrap();
                }
                vgroup = Some(video.append_group().unwrap());
            }
            let ts = moq_net::Timestamp::from_micros(u64::from(n) * 40_000).unwrap();
            hang::container::Frame {
                timestamp: ts,
                payload: frame.clone().into(),
            }
            .write_to(vgroup.as_mut().unwrap())
            .unwrap();
            hang::container::Frame {
                timestamp: ts,
                payload: vec![0xfc, n].into(),
            }
            .write_to(&mut agroup)
            .unwrap();
            sent.push(frame);
        }
        // Client side.
        quic.handle_timeout(now);
        for _ in 0..32 {
            flag.0.store(false, Ordering::Release);
            for e in quic.process() {
                if let corecast_moq::quic::ConnEvent::Connected { alpn } = e {
                    let s = quic.session(alpn);
                    let client = moq_net::Client::new().with_publisher(origin.consume());
                    connecting = Some(Box::pin(async move {
                        let s = if webtransport {
                            let url = "https://localhost:4443/";
                            corecast_moq::h3::connect(s, url, corecast_moq::ALPNS)
                                .await
                                .map_err(|e| e.to_string())?
                        } else {
                            s
                        };
                        client.connect_lite(now, s).await.map_err(|e| e.to_string())
                    }));
                }
            }
            let _ = origin_driver.poll(now, &waiter);
            if let Some(c) = connecting.as_mut() {
                let mut cx = Context::from_waker(&waker);
                if let std::task::Poll::Ready(r) = c.as_mut().poll(&mut cx) {
                    session = Some(r.unwrap());
                    connecting = None;
                }
            }
            if let Some((_, d)) = session.as_mut() {
                let _ = d.poll(now, &waiter);
            }
            if !flag.0.load(Ordering::Acquire) {
                break;
            }
        }
        while let Some(t) = quic.poll_transmit(now) {
            let input = Input::Datagram {
                source: local,
                destination: server_addr,
                contents: &t.contents,
            };
            server.handle_input(now, input).unwrap();
        }
        server.handle_input(now, Input::Timeout).unwrap();
        loop {
            match server.poll_output(now) {
                Output::Transmit(t) => quic.handle_datagram(now, server_addr, &t.contents),
                Output::Event(Event::PublishRequest { room, .. }) => {
                    requests.push(room);
                    server
                        .handle_input(now, Input::Command(Command::Admit(Ok("moqpub".into()))))
                        .unwrap();
                }
                Output::Event(Event::Media(p)) => packets.push(p),
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
    }
    assert_eq!(requests, vec!["stage".to_string()]);
    let published = server.published();
    assert_eq!(published.len(), 2);
    let video_ch = ChannelId::for_track("stage", "moqpub", "video");
    assert!(published
        .iter()
        .any(|t| t.channel == video_ch && t.codecs[0].codec == Codec::Vp8));
    // The video packets assemble back into the frames sent, in order.
    let mut a = corecast_moq::frames::FrameAssembler::new();
    let frames: Vec<Vec<u8>> = packets
        .iter()
        .filter(|p| p.channel == video_ch)
        .filter_map(|p| a.push(p))
        .map(|r| r.unwrap().data)
        .collect();
    // From the first keyframe after the video rendition appeared, every
    // frame, in order.
    assert!(frames.len() >= 10, "{} frames", frames.len());
    let first = sent
        .iter()
        .position(|f| *f == frames[0])
        .expect("a sent frame");
    assert_eq!(frames[..], sent[first..]);
    let audio: Vec<&MediaPacket> = packets
        .iter()
        .filter(|p| p.kind == corecast_media::MediaKind::Audio)
        .collect();
    assert!(
        audio.len() >= sent.len() - 1,
        "{} audio packets",
        audio.len()
    );
    assert_eq!(
        audio[1].rtp_time - audio[0].rtp_time,
        1920,
        "40 ms at 48 kHz"
    );
}
