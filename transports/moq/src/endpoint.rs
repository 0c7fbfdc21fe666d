//! A MoQ connection as a room endpoint (`TransportKind::Moq`): a QUIC
//! connection ([`QuicConn`]) carrying one moq-lite session (moq-net), whose
//! client watches a room's stream.
//!
//! - The client subscribes to the broadcast named after the room (`ROOM`,
//!   the name a WHIP or RTMP publisher publishes under); its tracks are
//!   `catalog.json` (hang), `video` and `audio`.
//! - The first request for a room asks the engine ([`Event::WatchRequest`]);
//!   once admitted, the engine points the endpoint's two slots (video,
//!   audio) at the room's publisher like a WHEP viewer's.
//! - Every packet that arrives in a slot goes through the track's
//!   [`FrameAssembler`]; each video group starts at a keyframe, and audio
//!   groups hold a second of frames. Frames are hang's legacy container:
//!   the timestamp (microseconds, from the packets' media time, shared by
//!   both tracks so players keep them in sync) then the codec bitstream.
//!
//! A client can publish too: the broadcast it announces (`ROOM`) asks the
//! engine ([`Event::PublishRequest`]); once admitted, the endpoint reads the
//! broadcast's catalog and the frames of one video and one audio rendition
//! ([`crate::publish`]), packetizes them ([`Packetizer`]) and publishes them
//! on the room's `video` and `audio` tracks, like an RTMP publisher. MoQ has
//! no keyframe request toward a publisher: a viewer waits for the next group.
//!
//! The session is polled here, with the shard's time: after every input the
//! endpoint polls the handshake, the session driver and the origin until
//! nothing they wait on has moved.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corecast_media::{
    ChannelId, CloseReason, Codec, CodecInfo, Command, ConnId, Endpoint, EndpointStats, Event,
    Input, InputError, MediaKind, MediaPacket, Output, PublishedTrack, Refusal, RouteKey, Slot,
    SlotId, Transmit, TransportKind,
};
use moq_net::{broadcast, group, origin, track, Timestamp};

use crate::frames::{Dropped, Frame, FrameAssembler};
use crate::h3;
use crate::packetize::Packetizer;
use crate::publish::{self, Incoming, Queue, Rendition};
use crate::quic::{ConnEvent, ConnKey, QuicConn};
use crate::transport::QuicSession;

/// The slot that plays the room's video.
pub const VIDEO_SLOT: SlotId = SlotId(0);
/// The slot that plays the room's audio.
pub const AUDIO_SLOT: SlotId = SlotId(1);

/// Audio frames per group (20 ms each: a second).
const AUDIO_FRAMES_PER_GROUP: u32 = 50;
/// Keyframe requests for a track that waits for one, at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(1000);
/// Polling rounds after one input before the endpoint lets the shard go on.
const MAX_ROUNDS: usize = 64;
/// A handshake (QUIC, the WebTransport CONNECT, the MoQ setup) must be
/// done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Application error codes on the QUIC connection (moq-lite leaves the
/// space to the application).
pub mod codes {
    pub const CLOSED: u32 = 0;
    pub const REFUSED: u32 = 0x403;
    pub const SESSION_ENDED: u32 = 0x500;
}

/// The counters of one MoQ connection (the shard sums them into
/// `corecast_moq_*`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MoqStats {
    pub groups: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Pictures dropped (a lost packet, waiting for a keyframe, bad payloads).
    pub frames_dropped: u64,
    /// Refusals: broadcast requests answered with an error (another room
    /// than the one watched, a bad name, a second publish), a watch or
    /// publish the engine refused, a setup that failed or timed out.
    pub requests_refused: u64,
    pub subscriptions: u64,
    /// Frames read from the client's own broadcast (publishing).
    pub frames_in: u64,
}

/// Wakes the endpoint: whatever the session waits on moved.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handshake = moq_net::server::Handshake<QuicSession>;
/// A running session: its handle and the driver the endpoint polls.
pub(crate) type Running = (moq_net::Session, moq_net::Driver<QuicSession>);

enum Phase {
    /// The QUIC handshake.
    Connecting,
    /// The WebTransport CONNECT, on an HTTP/3 connection.
    WebTransport(Boxed<Result<h3::Accepted, h3::H3Error>>),
    /// The MoQ setup.
    Setup(Boxed<Result<Handshake, moq_net::Error>>),
    Accepting(Boxed<Result<Running, moq_net::Error>>),
    Running(Box<Running>),
    Ended,
}

/// One track toward the client.
struct TrackOut {
    producer: track::Producer,
    group: Option<group::Producer>,
    frames_in_group: u32,
    assembler: FrameAssembler,
    codec: Option<CodecInfo>,
    last_us: u64,
    last_keyframe_request: Option<Instant>,
}

impl TrackOut {
    fn new(producer: track::Producer) -> TrackOut {
        TrackOut {
            producer,
            group: None,
            frames_in_group: 0,
            assembler: FrameAssembler::new(),
            codec: None,
            last_us: 0,
            last_keyframe_request: None,
        }
    }
}

/// Which request an [`Command::Admit`] answers (they are answered in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Watch,
    Publish,
}

/// One track the client publishes.
struct TrackIn {
    channel: ChannelId,
    codec: CodecInfo,
    packetizer: Packetizer,
    seq: u64,
}

/// What the client publishes.
struct Publishing {
    room: String,
    /// The track channels, once admitted.
    channels: Option<(ChannelId, ChannelId)>,
    reader: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    queue: Queue,
    video: Option<TrackIn>,
    audio: Option<TrackIn>,
    /// The first frame's timestamp and when it came: the media clock.
    base: Option<(u64, Instant)>,
    out: Vec<Vec<u8>>,
}

/// What the client watches.
struct Watch {
    room: String,
    broadcast: broadcast::Producer,
    catalog: track::Producer,
    video: TrackOut,
    audio: TrackOut,
    admitted: bool,
    /// The media time of the first frame (either track): timestamp zero.
    base: Option<Instant>,
}

pub struct MoqEndpoint {
    conn: ConnId,
    quic: QuicConn,
    flag: Arc<Flag>,
    waker: Waker,
    phase: Phase,
    started: Instant,
    origin: origin::Producer,
    origin_driver: origin::Driver,
    requests: Option<origin::Dynamic>,
    watch: Option<Watch>,
    /// Where the client's announced broadcasts land.
    incoming: origin::Producer,
    incoming_driver: origin::Driver,
    announced: Option<moq_net::announce::Consumer>,
    publishing: Option<Publishing>,
    asked: VecDeque<Asked>,
    /// The credentials in the setup path's query (`?token=JWT`).
    token: Option<String>,
    subs: [Option<ChannelId>; 2],
    events: VecDeque<Event>,
    deadline: Option<Instant>,
    closed: bool,
    stats: MoqStats,
    endpoint_stats: EndpointStats,
}

impl std::fmt::Debug for MoqEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoqEndpoint")
            .field("conn", &self.conn)
            .field("quic", &self.quic)
            .finish()
    }
}

impl MoqEndpoint {
    /// The endpoint of a connection the shard accepted.
    pub fn new(conn: ConnId, quic: QuicConn, now: Instant) -> MoqEndpoint {
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let (origin, origin_driver) = origin::Producer::new(origin::Config::default());
        let requests = origin.dynamic("", origin::Route::default()).ok();
        // The client's announcements land in an origin of their own.
        let (incoming, incoming_driver) = origin::Producer::new(origin::Config::default());
        let mut endpoint = MoqEndpoint {
            conn,
            quic,
            flag,
            waker,
            phase: Phase::Connecting,
            started: now,
            origin,
            origin_driver,
            requests,
            watch: None,
            incoming,
            incoming_driver,
            announced: None,
            publishing: None,
            asked: VecDeque::new(),
            token: None,
            subs: [None, None],
            events: VecDeque::new(),
            deadline: None,
            closed: false,
            stats: MoqStats::default(),
            endpoint_stats: EndpointStats::default(),
        };
        endpoint.pump(now);
        endpoint
    }

    pub fn key(&self) -> ConnKey {
        self.quic.key()
    }

    /// The id of the client's first Initial (its route until the handshake).
    pub fn initial_cid(&self) -> &[u8] {
        self.quic.initial_cid()
    }

    pub fn moq_stats(&self) -> MoqStats {
        self.stats
    }

    /// The room the client watches, once it asked.
    pub fn room(&self) -> Option<&str> {
        self.watch.as_ref().map(|w| w.room.as_str())
    }

    fn close(&mut self, now: Instant, code: u32, reason: &str) {
        if !self.closed {
            self.quic.close(now, code, reason);
        }
        self.end(CloseReason::Closed);
    }

    fn end(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.phase = Phase::Ended;
        if let Some(w) = self.watch.take() {
            w.broadcast.close();
        }
        self.events.push_back(Event::Closed(reason));
    }

    /// Polls everything the connection runs until nothing moves.
    fn pump(&mut self, now: Instant) {
        let mut deadline = None;
        for _ in 0..MAX_ROUNDS {
            self.flag.0.store(false, Ordering::Release);
            for event in self.quic.process() {
                match event {
                    ConnEvent::Connected { alpn } => self.start_setup(now, alpn),
                    ConnEvent::Lost(why) => {
                        tracing::debug!("moq {}: connection lost: {why}", self.conn);
                        self.end(CloseReason::PeerClosed);
                    }
                    ConnEvent::Drained => self.end(CloseReason::PeerClosed),
                }
            }
            deadline = self.poll_session(now);
            self.poll_requests(now);
            self.poll_announced();
            self.poll_publishing(now);
            if !self.flag.0.load(Ordering::Acquire) {
                break;
            }
        }
        if self.unasked() && now.duration_since(self.started) > HANDSHAKE_TIMEOUT {
            self.stats.requests_refused += 1;
            self.close(now, codes::REFUSED, "handshake timeout");
        }
        self.deadline = deadline;
    }

    /// Whether the connection has yet to finish its handshake (QUIC, the
    /// WebTransport CONNECT, the MoQ setup), which must happen within
    /// [`HANDSHAKE_TIMEOUT`] of its first packet. A session that is up and
    /// asks for nothing is kept (a relay peering with corecast waits for
    /// its own clients' requests): its streams are bounded by
    /// [`crate::MAX_STREAMS`], and QUIC's idle timeout ends it when the
    /// client goes quiet.
    fn unasked(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting | Phase::WebTransport(_) | Phase::Setup(_) | Phase::Accepting(_)
        )
    }

    /// Starts the MoQ setup on raw QUIC, or the WebTransport CONNECT
    /// first on HTTP/3.
    fn start_setup(&mut self, now: Instant, alpn: Option<String>) {
        let session = QuicSession::new(self.quic.shared.clone(), alpn.clone());
        self.phase = if alpn.as_deref() == Some(crate::H3) {
            Phase::WebTransport(Box::pin(h3::accept(session, crate::ALPNS)))
        } else {
            setup(now, session)
        };
    }

    /// Polls the handshake or the session's driver, and the origin's
    /// driver; returns the earliest time one of them asked for.
    fn poll_session(&mut self, now: Instant) -> Option<Instant> {
        let mut cx = Context::from_waker(&self.waker);
        let waiter = kio::Waiter::new(self.waker.clone());
        let mut deadline = self.origin_driver.poll(now, &waiter).unwrap_or_default();
        if let Ok(t) = self.incoming_driver.poll(now, &waiter) {
            deadline = earliest(deadline, t);
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Ended);
        self.phase = match phase {
            Phase::WebTransport(mut fut) => match fut.as_mut().poll(&mut cx) {
                Poll::Pending => Phase::WebTransport(fut),
                Poll::Ready(Ok(accepted)) => {
                    tracing::debug!("moq {}: webtransport at {:?}", self.conn, accepted.path);
                    self.token = token_of(&accepted.path);
                    self.flag.0.store(true, Ordering::Release);
                    setup(now, accepted.session)
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!("moq {}: webtransport refused: {e}", self.conn);
                    self.stats.requests_refused += 1;
                    self.close(now, codes::REFUSED, "webtransport refused");
                    Phase::Ended
                }
            },
            Phase::Setup(mut fut) => match fut.as_mut().poll(&mut cx) {
                Poll::Pending => Phase::Setup(fut),
                Poll::Ready(Ok(handshake)) => {
                    tracing::debug!("moq {}: setup, path {:?}", self.conn, handshake.path());
                    // Over WebTransport the URL's query carries it instead.
                    if self.token.is_none() {
                        self.token = token_of(handshake.path());
                    }
                    let handshake = handshake
                        .with_publisher(self.origin.consume())
                        .with_subscriber(self.incoming.clone());
                    self.announced = Some(self.incoming.consume().announced());
                    self.flag.0.store(true, Ordering::Release);
                    Phase::Accepting(Box::pin(handshake.ok()))
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!("moq {}: setup failed: {e}", self.conn);
                    self.stats.requests_refused += 1;
                    self.close(now, codes::REFUSED, "setup failed");
                    Phase::Ended
                }
            },
            Phase::Accepting(mut fut) => match fut.as_mut().poll(&mut cx) {
                Poll::Pending => Phase::Accepting(fut),
                Poll::Ready(Ok(running)) => {
                    self.flag.0.store(true, Ordering::Release);
                    Phase::Running(Box::new(running))
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!("moq {}: accept failed: {e}", self.conn);
                    self.stats.requests_refused += 1;
                    self.close(now, codes::REFUSED, "setup failed");
                    Phase::Ended
                }
            },
            // The session handle stays in the phase: dropping it ends the session.
            Phase::Running(mut running) => match running.1.poll(now, &waiter) {
                Ok(t) => {
                    deadline = earliest(deadline, t);
                    Phase::Running(running)
                }
                Err(e) => {
                    tracing::debug!("moq {}: session ended: {e}", self.conn);
                    self.close(now, codes::SESSION_ENDED, "session ended");
                    Phase::Ended
                }
            },
            other => other,
        };
        if self.closed {
            self.phase = Phase::Ended;
        }
        deadline
    }

    /// Broadcasts the client asked for.
    fn poll_requests(&mut self, now: Instant) {
        let waiter = kio::Waiter::new(self.waker.clone());
        loop {
            let Some(requests) = self.requests.as_ref() else {
                return;
            };
            let request = match requests.poll_requested_broadcast(&waiter) {
                Poll::Ready(Ok(r)) => r,
                Poll::Ready(Err(_)) => {
                    self.requests = None;
                    return;
                }
                Poll::Pending => return,
            };
            let path = request.path().to_string();
            let room = path.trim_matches('/').to_string();
            match &self.watch {
                Some(w) if w.room == room => {
                    request.accept(w.broadcast.consume());
                    continue;
                }
                Some(_) => {
                    self.stats.requests_refused += 1;
                    request.reject(moq_net::Error::NotFound);
                    continue;
                }
                None => {}
            }
            match Watch::new(&room) {
                Ok(w) => {
                    request.accept(w.broadcast.consume());
                    tracing::info!("moq {}: watches {room:?}", self.conn);
                    self.watch = Some(w);
                    self.stats.subscriptions += 1;
                    self.asked.push_back(Asked::Watch);
                    self.events.push_back(Event::WatchRequest {
                        room,
                        token: self.token.clone(),
                    });
                }
                Err(e) => {
                    tracing::debug!("moq {}: cannot serve {room:?}: {e}", self.conn);
                    self.stats.requests_refused += 1;
                    request.reject(moq_net::Error::NotFound);
                }
            }
            let _ = now;
        }
    }

    /// A packet of a channel a slot plays.
    fn on_media(&mut self, now: Instant, p: &MediaPacket) {
        let Some(slot) = self.subs.iter().position(|c| *c == Some(p.channel)) else {
            return;
        };
        let Some(w) = self.watch.as_mut().filter(|w| w.admitted) else {
            return;
        };
        let track = if slot == usize::from(VIDEO_SLOT.0) {
            &mut w.video
        } else {
            &mut w.audio
        };
        match track.assembler.push(p) {
            None => {}
            Some(Err(why)) => {
                self.stats.frames_dropped += 1;
                if why != Dropped::BadPayload
                    && p.kind == MediaKind::Video
                    && track
                        .last_keyframe_request
                        .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
                {
                    track.last_keyframe_request = Some(now);
                    self.events
                        .push_back(Event::KeyframeRequest(p.channel, None));
                }
            }
            Some(Ok(frame)) => {
                let base = *w.base.get_or_insert(p.wallclock);
                let us = p.wallclock.saturating_duration_since(base).as_micros() as u64;
                let new_codec = track.codec != Some(p.codec);
                track.codec = Some(p.codec);
                if new_codec {
                    w.write_catalog();
                }
                let track = if slot == usize::from(VIDEO_SLOT.0) {
                    &mut w.video
                } else {
                    &mut w.audio
                };
                match write_frame(track, &frame, us) {
                    Ok(new_group) => {
                        self.stats.frames += 1;
                        self.stats.bytes += frame.data.len() as u64;
                        if new_group {
                            self.stats.groups += 1;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("moq {}: frame not written: {e}", self.conn);
                        self.stats.frames_dropped += 1;
                    }
                }
            }
        }
    }
}

/// The moq-lite setup on `session`.
fn setup(now: Instant, session: QuicSession) -> Phase {
    let server = moq_net::Server::new();
    Phase::Setup(Box::pin(async move {
        server.accept_request_lite(now, session).await
    }))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Writes one frame; returns whether it started a group.
fn write_frame(track: &mut TrackOut, frame: &Frame, us: u64) -> Result<bool, String> {
    // Timestamps only go forward within a track.
    let us = us.max(track.last_us);
    track.last_us = us;
    let audio = matches!(frame.codec, Codec::Opus | Codec::Pcmu | Codec::Pcma);
    let new_group = if audio {
        track.group.is_none() || track.frames_in_group >= AUDIO_FRAMES_PER_GROUP
    } else {
        frame.keyframe
    };
    if new_group {
        if let Some(g) = track.group.take() {
            let _ = g.finish();
        }
        track.group = Some(track.producer.append_group().map_err(|e| e.to_string())?);
        track.frames_in_group = 0;
    }
    let Some(group) = track.group.as_mut() else {
        // A delta frame before the first keyframe: the assembler keeps
        // those back, so this does not happen.
        return Ok(false);
    };
    let timestamp = Timestamp::from_micros(us).map_err(|e| e.to_string())?;
    hang::container::Frame {
        timestamp,
        payload: Bytes::copy_from_slice(&frame.data),
    }
    .write_to(group)
    .map_err(|e| e.to_string())?;
    track.frames_in_group += 1;
    Ok(new_group)
}

impl Watch {
    fn new(room: &str) -> Result<Watch, moq_net::Error> {
        let broadcast = broadcast::Info::new().produce();
        let catalog = broadcast.create_track(
            hang::Catalog::DEFAULT_NAME,
            hang::Catalog::default_track_info(),
        )?;
        let video = broadcast.create_track(
            "video",
            hang::container::track_info(hang::catalog::PRIORITY.video),
        )?;
        let audio = broadcast.create_track(
            "audio",
            hang::container::track_info(hang::catalog::PRIORITY.audio),
        )?;
        Ok(Watch {
            room: room.to_string(),
            broadcast,
            catalog,
            video: TrackOut::new(video),
            audio: TrackOut::new(audio),
            admitted: false,
            base: None,
        })
    }

    /// The catalog as the tracks are now: a group with the whole JSON.
    fn write_catalog(&mut self) {
        let mut catalog = hang::Catalog::<()>::default();
        if let Some(codec) = self.video.codec.and_then(|c| video_codec(&c)) {
            if let Ok(parsed) = codec.parse::<hang::catalog::VideoCodec>() {
                let mut config = hang::catalog::VideoConfig::new(parsed);
                config.optimize_for_latency = Some(true);
                let _ = catalog.video.insert("video", config);
            }
        }
        if self.audio.codec.is_some_and(|c| c.codec == Codec::Opus) {
            let config =
                hang::catalog::AudioConfig::new(hang::catalog::AudioCodec::Opus, 48_000, 2);
            let _ = catalog.audio.insert("audio", config);
        }
        let Ok(json) = catalog.to_json() else {
            return;
        };
        if let Ok(mut g) = self.catalog.append_group() {
            let _ = g.write_frame(Timestamp::ZERO, json.into_bytes());
            let _ = g.finish();
        }
    }
}

/// The WebCodecs codec string of a video codec as corecast forwards it.
pub fn video_codec(c: &CodecInfo) -> Option<String> {
    Some(match c.codec {
        Codec::Vp8 => "vp8".to_string(),
        Codec::Vp9 => "vp09.00.10.08".to_string(),
        // Parameter sets in band (avc3); the profile the publisher
        // negotiated (its profile_idc; Constrained Baseline's constraint
        // flags for 0x42), level 3.1.
        Codec::H264 => {
            let profile = c.h264_profile.unwrap_or(0x42).min(0xff);
            let constraints = if profile == 0x42 { 0xe0 } else { 0x00 };
            format!("avc3.{profile:02x}{constraints:02x}1f")
        }
        Codec::Av1 => "av01.0.08M.08".to_string(),
        _ => return None,
    })
}

impl Endpoint for MoqEndpoint {
    fn transport(&self) -> TransportKind {
        TransportKind::Moq
    }

    fn route_key(&self) -> Option<RouteKey> {
        Some(RouteKey::QuicConnectionId(self.quic.key().route()))
    }

    fn published(&self) -> Vec<PublishedTrack> {
        let Some((video, audio)) = self.publishing.as_ref().and_then(|p| p.channels) else {
            return Vec::new();
        };
        let video_codecs = self
            .publishing
            .as_ref()
            .and_then(|p| p.video.as_ref())
            .map(|t| vec![t.codec])
            .unwrap_or_else(publish_video_codecs);
        vec![
            PublishedTrack {
                name: "audio".into(),
                kind: MediaKind::Audio,
                channel: audio,
                codecs: vec![CodecInfo::new(Codec::Opus, 48_000)],
                layers: 1,
            },
            PublishedTrack {
                name: "video".into(),
                kind: MediaKind::Video,
                channel: video,
                codecs: video_codecs,
                layers: 1,
            },
        ]
    }

    fn slots(&self) -> Vec<Slot> {
        let video = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1]
            .into_iter()
            .map(|c| CodecInfo::new(c, 90_000))
            .collect();
        vec![
            Slot {
                id: VIDEO_SLOT,
                kind: MediaKind::Video,
                label: "video".into(),
                codecs: video,
            },
            Slot {
                id: AUDIO_SLOT,
                kind: MediaKind::Audio,
                label: "audio".into(),
                codecs: vec![CodecInfo::new(Codec::Opus, 48_000)],
            },
        ]
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<bool, InputError> {
        match input {
            Input::Datagram {
                source, contents, ..
            } => {
                self.quic.handle_datagram(now, source, contents);
            }
            Input::Stream(_) => return Err(InputError::Unrecognized),
            Input::Timeout => self.quic.handle_timeout(now),
            Input::Media(p) => self.on_media(now, p),
            Input::Flush => {}
            Input::Command(c) => match c {
                Command::Subscribe { slot, channel } => {
                    if let Some(s) = self.subs.get_mut(usize::from(slot.0)) {
                        *s = channel;
                        if let Some(w) = self.watch.as_mut() {
                            let t = if slot == VIDEO_SLOT {
                                &mut w.video
                            } else {
                                &mut w.audio
                            };
                            t.assembler = FrameAssembler::new();
                        }
                        if channel.is_some() {
                            self.events.push_back(Event::SlotLive(slot));
                        }
                    }
                }
                Command::Admit(Ok(peer)) => match self.asked.pop_front() {
                    Some(Asked::Watch) => {
                        if let Some(w) = self.watch.as_mut() {
                            w.admitted = true;
                        }
                    }
                    Some(Asked::Publish) => self.start_publishing(&peer),
                    None => {}
                },
                Command::Admit(Err(refusal)) => {
                    self.asked.pop_front();
                    self.refuse(now, &refusal);
                }
                Command::Close => self.close(now, codes::CLOSED, "closed"),
                Command::RequestKeyframe(..) | Command::Prefer { .. } | Command::Rpc(_) => {}
            },
        }
        self.pump(now);
        Ok(true)
    }

    fn poll_output(&mut self, now: Instant) -> Output {
        if let Some(t) = self.quic.poll_transmit(now) {
            return Output::Transmit(Transmit {
                source: self.quic.local(),
                destination: t.destination,
                contents: t.contents,
            });
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        let mut at = earliest(self.quic.poll_timeout(), self.deadline);
        if self.unasked() {
            at = earliest(at, Some(self.started + HANDSHAKE_TIMEOUT));
        }
        Output::Timeout(at.unwrap_or(now + Duration::from_secs(1)).max(now))
    }

    fn signal(&mut self, _now: Instant, _body: &str) -> Result<Option<String>, String> {
        Err("a MoQ connection takes no signalling over HTTP".to_string())
    }

    fn stats(&self) -> EndpointStats {
        let s = self.stats;
        EndpointStats {
            frames_out: corecast_media::FramesOutStats {
                groups: s.groups,
                frames: s.frames,
                bytes: s.bytes,
                frames_dropped: s.frames_dropped,
                refused: s.requests_refused,
                subscriptions: s.subscriptions,
            },
            ..self.endpoint_stats
        }
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

impl MoqEndpoint {
    fn refuse(&mut self, now: Instant, refusal: &Refusal) {
        tracing::info!("moq {}: refused: {}", self.conn, refusal.message());
        self.stats.requests_refused += 1;
        self.close(now, codes::REFUSED, refusal.message());
    }
}

/// What a MoQ publisher's video track may carry before its catalog is read.
pub fn publish_video_codecs() -> Vec<CodecInfo> {
    let mut v: Vec<CodecInfo> = [Codec::Vp8, Codec::Vp9, Codec::Av1]
        .into_iter()
        .map(|c| CodecInfo::new(c, 90_000))
        .collect();
    for profile in [0x42, 0x4d, 0x64] {
        let mut h = CodecInfo::new(Codec::H264, 90_000);
        h.h264_profile = Some(profile);
        h.h264_packetization_mode = Some(1);
        v.push(h);
    }
    v
}

impl MoqEndpoint {
    /// Broadcasts the client announced: the first asks to publish.
    fn poll_announced(&mut self) {
        let waiter = kio::Waiter::new(self.waker.clone());
        while let Some(a) = self.announced.as_mut() {
            let update = match a.poll_next(&waiter) {
                Poll::Ready(Some(u)) => u,
                Poll::Ready(None) => {
                    self.announced = None;
                    return;
                }
                Poll::Pending => return,
            };
            if update.kind != moq_net::announce::Kind::Announced {
                continue;
            }
            let room = update.prefix.as_str().trim_matches('/').to_string();
            if room.is_empty() || self.publishing.is_some() {
                self.stats.requests_refused += u64::from(self.publishing.is_some());
                continue;
            }
            tracing::info!("moq {}: publishes {room:?}", self.conn);
            self.publishing = Some(Publishing {
                room: room.clone(),
                channels: None,
                reader: None,
                queue: Queue::default(),
                video: None,
                audio: None,
                base: None,
                out: Vec::new(),
            });
            self.asked.push_back(Asked::Publish);
            self.events.push_back(Event::PublishRequest {
                room,
                token: self.token.clone(),
            });
        }
    }

    /// Admitted as `peer`: read the broadcast.
    fn start_publishing(&mut self, peer: &str) {
        let consumer = self.incoming.consume();
        let Some(p) = self.publishing.as_mut() else {
            return;
        };
        p.channels = Some((
            ChannelId::for_track(&p.room, peer, "video"),
            ChannelId::for_track(&p.room, peer, "audio"),
        ));
        p.reader = Some(publish::reader(consumer, p.room.clone(), p.queue.clone()));
        self.flag.0.store(true, Ordering::Release);
    }

    /// Polls the reader and publishes what it read.
    fn poll_publishing(&mut self, now: Instant) {
        let Some(p) = self.publishing.as_mut() else {
            return;
        };
        if let Some(reader) = p.reader.as_mut() {
            let mut cx = Context::from_waker(&self.waker);
            if reader.as_mut().poll(&mut cx).is_ready() {
                p.reader = None;
            }
        }
        let Some((video_ch, audio_ch)) = p.channels else {
            return;
        };
        let items: Vec<Incoming> = p
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let mut ended = None;
        for item in items {
            match item {
                Incoming::Catalog { video, audio } => {
                    let track = |r: Rendition, channel: ChannelId| {
                        let mut packetizer = Packetizer::new(r.codec.codec);
                        if let Some(avc) = r.avc {
                            packetizer = packetizer.with_avc_config(avc);
                        }
                        TrackIn {
                            channel,
                            codec: r.codec,
                            packetizer,
                            seq: 0,
                        }
                    };
                    // A later catalog adds renditions; those read stay.
                    if let (None, Some(r)) = (&p.video, video) {
                        let t = track(r, video_ch);
                        self.events
                            .push_back(Event::ActiveCodec(t.channel, t.codec));
                        p.video = Some(t);
                    }
                    if let (None, Some(r)) = (&p.audio, audio) {
                        let t = track(r, audio_ch);
                        self.events
                            .push_back(Event::ActiveCodec(t.channel, t.codec));
                        p.audio = Some(t);
                    }
                }
                Incoming::Frame {
                    kind,
                    timestamp_us,
                    keyframe,
                    payload,
                } => {
                    let (base_us, base_at) = *p.base.get_or_insert((timestamp_us, now));
                    let wallclock =
                        base_at + Duration::from_micros(timestamp_us.saturating_sub(base_us));
                    let track = match kind {
                        MediaKind::Video => p.video.as_mut(),
                        MediaKind::Audio => p.audio.as_mut(),
                    };
                    let Some(t) = track else {
                        continue;
                    };
                    t.packetizer.packetize(&payload, keyframe, &mut p.out);
                    let rtp_time = (u128::from(timestamp_us) * u128::from(t.codec.clock_rate)
                        / 1_000_000) as u32;
                    let n = p.out.len();
                    for (i, payload) in p.out.drain(..).enumerate() {
                        t.seq += 1;
                        self.events.push_back(Event::Media(MediaPacket {
                            channel: t.channel,
                            kind,
                            codec: t.codec,
                            seq: t.seq,
                            rtp_time,
                            marker: kind == MediaKind::Video && i + 1 == n,
                            arrival: now,
                            wallclock,
                            orientation: None,
                            layer: Default::default(),
                            audio_level: None,
                            dependency: None,
                            payload: Arc::from(payload),
                        }));
                    }
                    self.stats.frames_in += 1;
                }
                Incoming::Ended(why) => {
                    ended = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = ended {
            tracing::info!("moq {}: publish ended: {why}", self.conn);
            self.close(now, codes::CLOSED, "the broadcast ended");
        }
    }
}

/// The token in a setup path's query: `token=` (or `jwt=`), as a MoQ
/// client's URL carries it (`moql://HOST:PORT/?token=JWT`).
pub fn token_of(path: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, v)| (*k == "token" || *k == "jwt") && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_setup_query() {
        assert_eq!(token_of("/?token=a.b.c"), Some("a.b.c".into()));
        assert_eq!(token_of("/x?room=1&jwt=t0k"), Some("t0k".into()));
        assert_eq!(token_of("/?token="), None);
        assert_eq!(token_of("/token=abc"), None);
        assert_eq!(token_of(""), None);
    }
}
