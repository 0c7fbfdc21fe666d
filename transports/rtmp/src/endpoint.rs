//! An RTMP publisher as a [`corecast_media::Endpoint`].
//!
//! The shard accepted the TCP connection and feeds its bytes as
//! [`Input::Stream`]; what the endpoint sends comes back as
//! [`Output::Transmit`]s (the next bytes of the connection). Its life:
//!
//! 1. handshake and `connect` within [`RtmpConfig::handshake_timeout`];
//! 2. `publish` of a stream key → [`Event::PublishRequest`]; the engine
//!    authorizes it and answers [`Command::Admit`] with the peer name (or a
//!    refusal, sent to the encoder as `NetStream.Publish.BadName`/`Denied`
//!    before the connection closes);
//! 3. media: H.264 access units become RTP payloads (RFC 6184 mode 1, SPS
//!    and PPS before every IDR) on the `video` track at 90 kHz from the FLV
//!    timestamps, and so do Enhanced RTMP's AV1 (the sequence header before
//!    every keyframe) and VP9; HEVC and legacy codecs end the publish with
//!    `NetStream.Publish.Failed` and why; AAC is transcoded to Opus ([`crate::audio`]) on the
//!    `audio` track at 48 kHz; Opus (E-RTMP) is passed through. Both tracks
//!    take their wall clock from the FLV timestamps, so viewers' sender
//!    reports keep them in sync;
//! 4. it ends with `deleteStream`, the connection closing, nothing received
//!    for [`RtmpConfig::idle_timeout`], or [`Command::Close`] (replaced).
//!
//! RTMP cannot carry a keyframe request to the encoder: a viewer waits for
//! the encoder's next keyframe (its GOP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::h264::{self, AvcConfig};
use corecast_media::{av1, vp9};
use corecast_media::{
    ChannelId, CloseReason, Codec, CodecInfo, Command, ConnId, Endpoint, EndpointStats, Event,
    IngestStats, Input, InputError, MediaKind, MediaPacket, Output, PublishedTrack, Refusal,
    RouteKey, Slot, Transmit, TransportKind,
};

use crate::audio::{AacTranscoder, OpusFrame};
use crate::flv::{self, AudioCodec, AudioTag, VideoCodec, VideoTag};
use crate::session::{ServerSession, SessionConfig, SessionError, SessionEvent};

/// The largest RTP payload corecast makes (an MTU of 1200 leaves room for
/// the RTP header, extensions and SRTP on every path).
pub const MAX_PAYLOAD: usize = 1100;

/// How RTMP endpoints behave.
#[derive(Debug, Clone)]
pub struct RtmpConfig {
    pub session: SessionConfig,
    /// The Opus bitrate of transcoded AAC, bit/s.
    pub audio_bitrate: u32,
    /// From accept to `publish`.
    pub handshake_timeout: Duration,
    /// Nothing received for this long closes the connection.
    pub idle_timeout: Duration,
    /// A clock to time the transcoder with, for its metric (the engine
    /// gives `Instant::now`; the crate reads no clock of its own). `None`:
    /// not timed.
    pub cpu_clock: Option<fn() -> Instant>,
}

impl Default for RtmpConfig {
    fn default() -> RtmpConfig {
        RtmpConfig {
            session: SessionConfig::default(),
            audio_bitrate: 128_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            cpu_clock: None,
        }
    }
}

/// The codec of H.264 from an SPS's profile_idc.
fn h264_info(profile_idc: u8) -> CodecInfo {
    CodecInfo {
        codec: Codec::H264,
        clock_rate: 90_000,
        h264_profile: Some(u16::from(profile_idc)),
        h264_packetization_mode: Some(1),
    }
}

/// Opus as every transport negotiates it.
pub fn opus_info() -> CodecInfo {
    CodecInfo::new(Codec::Opus, 48_000)
}

/// What an RTMP video track may carry before its first sequence header:
/// H.264 of the three profiles encoders use.
pub fn video_codecs() -> Vec<CodecInfo> {
    [0x42, 0x4d, 0x64].into_iter().map(h264_info).collect()
}

#[derive(Debug, Clone, Copy)]
struct Admitted {
    audio: ChannelId,
    video: ChannelId,
}

/// The published stream's media state.
struct Media {
    avc: Option<AvcConfig>,
    video_codec: Option<CodecInfo>,
    video_seq: u64,
    aac: Option<AacTranscoder>,
    audio_codec_sent: bool,
    audio_seq: u64,
    /// The first FLV timestamp and when it arrived: the tracks' wall clock.
    base: Option<(u32, Instant)>,
    /// The AV1 sequence header of the `av1C` configuration.
    av1_sequence: Option<Vec<u8>>,
    /// The VP9 picture id of the next frame (15 bits).
    picture_id: u16,
    b_frames_logged: bool,
    unsupported_logged: bool,
    payloads: Vec<Vec<u8>>,
    opus: Vec<OpusFrame>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("video_codec", &self.video_codec)
            .field("video_seq", &self.video_seq)
            .field("audio_seq", &self.audio_seq)
            .finish_non_exhaustive()
    }
}

/// One RTMP connection.
#[derive(Debug)]
pub struct RtmpEndpoint {
    conn: ConnId,
    /// The shard's number for the connection.
    stream: u64,
    local: SocketAddr,
    remote: SocketAddr,
    config: RtmpConfig,
    session: ServerSession,
    started: Instant,
    last_input: Instant,
    room: Option<String>,
    admitted: Option<Admitted>,
    media: Media,
    out: std::collections::VecDeque<Output>,
    tx: Vec<u8>,
    /// Close once what is queued is out.
    closing: Option<CloseReason>,
    closed: bool,
    /// Its counters (`bytes_in` and part of `ignored` come from the session).
    stats: IngestStats,
}

impl RtmpEndpoint {
    /// A connection the shard accepted from `remote` on `local`; `stream` is
    /// the shard's number for it (its route key); `random` fills the
    /// handshake.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RtmpConfig,
        conn: ConnId,
        stream: u64,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
        random: &[u8],
    ) -> RtmpEndpoint {
        RtmpEndpoint {
            conn,
            stream,
            local,
            remote,
            session: ServerSession::new(config.session.clone(), random),
            config,
            started: now,
            last_input: now,
            room: None,
            admitted: None,
            media: Media {
                avc: None,
                video_codec: None,
                video_seq: 0,
                aac: None,
                audio_codec_sent: false,
                audio_seq: 0,
                base: None,
                av1_sequence: None,
                picture_id: 0,
                b_frames_logged: false,
                unsupported_logged: false,
                payloads: Vec::new(),
                opus: Vec::new(),
            },
            out: Default::default(),
            tx: Vec::new(),
            closing: None,
            closed: false,
            stats: IngestStats::default(),
        }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The stream key it publishes (once it asked).
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// Its counters, the session's included.
    pub fn ingest_stats(&self) -> IngestStats {
        let session = self.session.stats();
        IngestStats {
            bytes_in: session.bytes_in,
            ignored: self.stats.ignored + session.messages_ignored,
            ..self.stats
        }
    }

    fn flush_tx(&mut self) {
        if !self.tx.is_empty() {
            self.out.push_back(Output::Transmit(Transmit {
                source: self.local,
                destination: self.remote,
                contents: std::mem::take(&mut self.tx),
            }));
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() && !self.closed {
            self.closing = Some(reason);
        }
    }

    fn receive(&mut self, now: Instant, bytes: &[u8]) -> Result<(), InputError> {
        self.last_input = now;
        let mut events = Vec::new();
        let r = self.session.push(bytes, &mut self.tx, &mut events);
        for e in events {
            self.session_event(now, e);
        }
        self.flush_tx();
        if let Err(e) = r {
            tracing::info!("rtmp {}: {e}", self.conn);
            self.close(CloseReason::PeerClosed);
            return Err(InputError::Refused(refusal_label(&e).to_string()));
        }
        Ok(())
    }

    fn session_event(&mut self, now: Instant, e: SessionEvent) {
        match e {
            SessionEvent::PublishRequested { stream, token } => {
                self.room = Some(stream.clone());
                self.out.push_back(Output::Event(Event::PublishRequest {
                    room: stream,
                    token,
                }));
            }
            SessionEvent::PlayRefused { stream } => {
                tracing::info!("rtmp {}: play of {stream} refused", self.conn);
                self.stats.play_refused += 1;
                self.close(CloseReason::Closed);
            }
            SessionEvent::Video { timestamp, body } => self.video(now, timestamp, &body),
            SessionEvent::Audio { timestamp, body } => self.audio(now, timestamp, &body),
            SessionEvent::Metadata(_) => {}
            SessionEvent::Unpublished => self.close(CloseReason::PeerClosed),
        }
    }

    fn admit(&mut self, answer: Result<String, Refusal>) {
        let Some(room) = self.room.clone() else {
            return;
        };
        match answer {
            Ok(peer) => {
                self.admitted = Some(Admitted {
                    audio: ChannelId::for_track(&room, &peer, "audio"),
                    video: ChannelId::for_track(&room, &peer, "video"),
                });
                self.session.accept_publish(&mut self.tx);
                self.out.push_back(Output::Event(Event::Connected));
            }
            Err(r) => {
                let code = match r {
                    Refusal::BadName(_) => "NetStream.Publish.BadName",
                    Refusal::Denied(_) => "NetStream.Publish.Denied",
                    Refusal::Unavailable(_) => "NetStream.Publish.Failed",
                };
                self.session.refuse_publish(code, r.message(), &mut self.tx);
                self.close(CloseReason::Closed);
            }
        }
        self.flush_tx();
    }

    /// The wall clock of FLV time `ts`.
    fn wallclock(&mut self, now: Instant, ts: u32) -> Instant {
        let (base_ts, base_at) = *self.media.base.get_or_insert((ts, now));
        let d = ts.wrapping_sub(base_ts) as i32;
        if d >= 0 {
            base_at + Duration::from_millis(d as u64)
        } else {
            base_at
                .checked_sub(Duration::from_millis(d.unsigned_abs() as u64))
                .unwrap_or(base_at)
        }
    }

    fn video(&mut self, now: Instant, ts: u32, body: &[u8]) {
        let Some(adm) = self.admitted else {
            return;
        };
        let tag = match flv::parse_video(body) {
            Ok(t) => t,
            Err(_) => {
                self.stats.ignored += 1;
                return;
            }
        };
        match tag {
            VideoTag::Sequence {
                codec: VideoCodec::H264,
                config,
            } => match AvcConfig::parse(config) {
                Ok(c) => {
                    let profile = c
                        .sps
                        .first()
                        .and_then(|s| s.get(1))
                        .copied()
                        .unwrap_or(0x42);
                    let info = h264_info(profile);
                    if self.media.video_codec != Some(info) {
                        self.media.video_codec = Some(info);
                        self.out
                            .push_back(Output::Event(Event::ActiveCodec(adm.video, info)));
                    }
                    self.media.avc = Some(c);
                }
                Err(e) => {
                    tracing::info!("rtmp {}: bad AVC configuration: {e}", self.conn);
                    self.stats.ignored += 1;
                }
            },
            VideoTag::Frame {
                codec: VideoCodec::H264,
                keyframe: _,
                composition_ms,
                data,
            } => self.h264_frame(now, ts, composition_ms, data, adm.video),
            VideoTag::Sequence {
                codec: VideoCodec::Av1,
                config,
            } => {
                self.media.av1_sequence = av1::config_sequence_header(config);
                self.video_codec(CodecInfo::new(Codec::Av1, 90_000), adm.video);
            }
            VideoTag::Sequence {
                codec: VideoCodec::Vp9,
                ..
            } => self.video_codec(CodecInfo::new(Codec::Vp9, 90_000), adm.video),
            VideoTag::Frame {
                codec: VideoCodec::Av1,
                keyframe,
                data,
                ..
            } => {
                let Some(codec) = self.media.video_codec.filter(|c| c.codec == Codec::Av1) else {
                    self.stats.ignored += 1;
                    return;
                };
                let Ok(obus) = av1::obus(data) else {
                    self.stats.ignored += 1;
                    return;
                };
                let mut payloads = std::mem::take(&mut self.media.payloads);
                let seq = self.media.av1_sequence.as_deref();
                av1::packetize(&obus, keyframe, seq, MAX_PAYLOAD, &mut payloads);
                self.video_packets(now, ts, codec, adm.video, &mut payloads);
                self.media.payloads = payloads;
            }
            VideoTag::Frame {
                codec: VideoCodec::Vp9,
                keyframe,
                data,
                ..
            } => {
                let Some(codec) = self.media.video_codec.filter(|c| c.codec == Codec::Vp9) else {
                    self.stats.ignored += 1;
                    return;
                };
                let mut payloads = std::mem::take(&mut self.media.payloads);
                vp9::packetize(
                    data,
                    keyframe,
                    self.media.picture_id,
                    MAX_PAYLOAD,
                    &mut payloads,
                );
                self.media.picture_id = self.media.picture_id.wrapping_add(1) & 0x7fff;
                self.video_packets(now, ts, codec, adm.video, &mut payloads);
                self.media.payloads = payloads;
            }
            VideoTag::Sequence { codec, .. } | VideoTag::Frame { codec, .. } => {
                // HEVC and the legacy codecs: WebRTC viewers cannot play
                // them. The encoder hears why and the connection closes.
                self.stats.unsupported_frames += 1;
                self.stats.codec_refused += 1;
                let why = format!(
                    "video codec {} is not forwarded: WebRTC viewers cannot play it; \
                     publish H.264, AV1 or VP9",
                    codec.name()
                );
                tracing::warn!("rtmp {}: {why}", self.conn);
                self.session
                    .fail_publish("NetStream.Publish.Failed", &why, &mut self.tx);
                self.flush_tx();
                self.close(CloseReason::Closed);
            }
            VideoTag::End { .. } | VideoTag::Ignored { .. } => self.stats.ignored += 1,
        }
    }

    /// The video track's codec is `info` from now on.
    fn video_codec(&mut self, info: CodecInfo, channel: ChannelId) {
        if self.media.video_codec != Some(info) {
            self.media.video_codec = Some(info);
            self.out
                .push_back(Output::Event(Event::ActiveCodec(channel, info)));
        }
    }

    /// Publishes one frame's payloads (the last carries the marker).
    fn video_packets(
        &mut self,
        now: Instant,
        ts: u32,
        codec: CodecInfo,
        channel: ChannelId,
        payloads: &mut Vec<Vec<u8>>,
    ) {
        self.stats.video_frames += 1;
        let rtp_time = ts.wrapping_mul(90);
        let wallclock = self.wallclock(now, ts);
        let n = payloads.len();
        for (i, p) in payloads.drain(..).enumerate() {
            let packet = MediaPacket {
                channel,
                kind: MediaKind::Video,
                codec,
                seq: self.media.video_seq,
                rtp_time,
                marker: i + 1 == n,
                arrival: now,
                wallclock,
                orientation: None,
                layer: Default::default(),
                audio_level: None,
                dependency: None,
                payload: Arc::from(p),
            };
            self.media.video_seq += 1;
            self.out.push_back(Output::Event(Event::Media(packet)));
        }
    }

    fn h264_frame(
        &mut self,
        now: Instant,
        ts: u32,
        composition_ms: i32,
        data: &[u8],
        channel: ChannelId,
    ) {
        let (Some(avc), Some(codec)) = (
            self.media.avc.as_ref(),
            self.media.video_codec.filter(|c| c.codec == Codec::H264),
        ) else {
            // Frames before the sequence header cannot be decoded.
            self.stats.ignored += 1;
            return;
        };
        if composition_ms != 0 {
            self.stats.b_frames += 1;
            if !self.media.b_frames_logged {
                self.media.b_frames_logged = true;
                tracing::warn!(
                    "rtmp {}: the stream has B-frames (composition time {composition_ms} ms): \
                     WebRTC players show them out of order; encode without B-frames \
                     (ffmpeg -bf 0, OBS: profile baseline or main with B-frames 0)",
                    self.conn
                );
            }
        }
        let nals = match avc.nal_units(data) {
            Ok(n) => n,
            Err(_) => {
                self.stats.ignored += 1;
                return;
            }
        };
        let mut payloads = std::mem::take(&mut self.media.payloads);
        h264::packetize(avc, &nals, MAX_PAYLOAD, &mut payloads);
        self.video_packets(now, ts, codec, channel, &mut payloads);
        self.media.payloads = payloads;
    }

    fn audio(&mut self, now: Instant, ts: u32, body: &[u8]) {
        let Some(adm) = self.admitted else {
            return;
        };
        let tag = match flv::parse_audio(body) {
            Ok(t) => t,
            Err(_) => {
                self.stats.ignored += 1;
                return;
            }
        };
        match tag {
            AudioTag::Sequence {
                codec: AudioCodec::Aac,
                config,
            } => match AacTranscoder::new(config, self.config.audio_bitrate) {
                Ok(t) => self.media.aac = Some(t),
                Err(e) => {
                    tracing::warn!("rtmp {}: AAC not transcoded: {e}", self.conn);
                    self.media.aac = None;
                    self.stats.audio_errors += 1;
                }
            },
            AudioTag::Frame {
                codec: AudioCodec::Aac,
                data,
            } => {
                let Some(t) = self.media.aac.as_mut() else {
                    self.stats.ignored += 1;
                    return;
                };
                let mut frames = std::mem::take(&mut self.media.opus);
                // Metrics only: what the transcoder costs this shard.
                let clock = self.config.cpu_clock;
                let started = clock.map(|c| c());
                let r = t.push(data, ts, &mut frames);
                if let (Some(c), Some(t0)) = (clock, started) {
                    self.stats.transcode_ns += c().saturating_duration_since(t0).as_nanos() as u64;
                }
                if let Err(e) = r {
                    self.stats.audio_errors += 1;
                    tracing::debug!("rtmp {}: AAC frame: {e}", self.conn);
                }
                for f in frames.drain(..) {
                    // The Opus frame's time in FLV milliseconds, for the
                    // clock: within a few frames of this message's.
                    let off = f.rtp_time.wrapping_sub(ts.wrapping_mul(48)) as i32 / 48;
                    let ms = ts.wrapping_add(off as u32);
                    self.opus_packet(now, ms, f.rtp_time, f.data, adm.audio);
                }
                self.media.opus = frames;
            }
            AudioTag::Sequence {
                codec: AudioCodec::Opus,
                ..
            } => {}
            AudioTag::Frame {
                codec: AudioCodec::Opus,
                data,
            } => {
                let rtp = ts.wrapping_mul(48);
                self.opus_packet(now, ts, rtp, data.to_vec(), adm.audio);
            }
            AudioTag::Sequence { codec, .. } | AudioTag::Frame { codec, .. } => {
                self.stats.unsupported_frames += 1;
                if !self.media.unsupported_logged {
                    self.media.unsupported_logged = true;
                    tracing::warn!(
                        "rtmp {}: audio codec {} is not forwarded (AAC and Opus are)",
                        self.conn,
                        codec.name()
                    );
                }
            }
            AudioTag::End { .. } | AudioTag::Ignored { .. } => self.stats.ignored += 1,
        }
    }

    fn opus_packet(&mut self, now: Instant, ms: u32, rtp_time: u32, data: Vec<u8>, ch: ChannelId) {
        let codec = opus_info();
        if !self.media.audio_codec_sent {
            self.media.audio_codec_sent = true;
            self.out
                .push_back(Output::Event(Event::ActiveCodec(ch, codec)));
        }
        self.stats.audio_frames += 1;
        let wallclock = self.wallclock(now, ms);
        let packet = MediaPacket {
            channel: ch,
            kind: MediaKind::Audio,
            codec,
            seq: self.media.audio_seq,
            rtp_time,
            marker: false,
            arrival: now,
            wallclock,
            orientation: None,
            layer: Default::default(),
            audio_level: None,
            dependency: None,
            payload: Arc::from(data),
        };
        self.media.audio_seq += 1;
        self.out.push_back(Output::Event(Event::Media(packet)));
    }

    fn deadline(&self) -> Instant {
        if self.admitted.is_none() && self.room.is_none() {
            // Handshake, connect and publish within the handshake timeout.
            (self.started + self.config.handshake_timeout)
                .min(self.last_input + self.config.idle_timeout)
        } else {
            self.last_input + self.config.idle_timeout
        }
    }
}

/// A bounded label of why a session failed.
fn refusal_label(e: &SessionError) -> &'static str {
    e.label()
}

impl Endpoint for RtmpEndpoint {
    fn transport(&self) -> TransportKind {
        TransportKind::Rtmp
    }

    fn route_key(&self) -> Option<RouteKey> {
        Some(RouteKey::Stream(self.stream))
    }

    fn published(&self) -> Vec<PublishedTrack> {
        let Some(adm) = &self.admitted else {
            return Vec::new();
        };
        vec![
            PublishedTrack {
                name: "audio".into(),
                kind: MediaKind::Audio,
                channel: adm.audio,
                codecs: vec![opus_info()],
                layers: 1,
            },
            PublishedTrack {
                name: "video".into(),
                kind: MediaKind::Video,
                channel: adm.video,
                codecs: self
                    .media
                    .video_codec
                    .map(|c| vec![c])
                    .unwrap_or_else(video_codecs),
                layers: 1,
            },
        ]
    }

    fn slots(&self) -> Vec<Slot> {
        Vec::new()
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<bool, InputError> {
        if self.closed {
            return Ok(false);
        }
        match input {
            Input::Stream(bytes) => {
                if bytes.is_empty() {
                    // The connection closed.
                    self.close(CloseReason::PeerClosed);
                    return Ok(true);
                }
                self.receive(now, bytes).map(|_| true)
            }
            Input::Timeout => {
                if now >= self.deadline() {
                    tracing::info!(
                        "rtmp {}: {} timed out",
                        self.conn,
                        if self.room.is_none() {
                            "handshake"
                        } else {
                            "idle connection"
                        }
                    );
                    self.close(CloseReason::ConsentExpired);
                }
                Ok(true)
            }
            Input::Command(Command::Admit(answer)) => {
                self.admit(answer);
                Ok(true)
            }
            Input::Command(Command::Close) => {
                self.close(CloseReason::Closed);
                Ok(true)
            }
            // Nothing to ask an RTMP encoder: it sends keyframes on its own
            // schedule (its GOP).
            Input::Command(Command::RequestKeyframe(..) | Command::Prefer { .. }) => Ok(false),
            Input::Command(_) | Input::Datagram { .. } | Input::Media(_) => {
                Err(InputError::Unrecognized)
            }
            Input::Flush => Ok(false),
        }
    }

    fn poll_output(&mut self, _now: Instant) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        if let Some(reason) = self.closing.take() {
            self.closed = true;
            return Output::Event(Event::Closed(reason));
        }
        Output::Timeout(self.deadline())
    }

    fn signal(&mut self, _now: Instant, _body: &str) -> Result<Option<String>, String> {
        Err("an RTMP connection takes no signalling".to_string())
    }

    fn stats(&self) -> EndpointStats {
        EndpointStats {
            ingest: self.ingest_stats(),
            ..EndpointStats::default()
        }
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}
