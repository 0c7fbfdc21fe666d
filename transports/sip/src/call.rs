//! A SIP call's media as a [`corecast_media::Endpoint`]: a peer of a room
//! that publishes the phone's audio and hears the room.
//!
//! The engine answers the INVITE ([`crate::dialog`]), binds the call's RTP
//! and RTCP sockets, and hands them with a [`SipEndpoint`] (the media
//! agreed) to the shard that holds the call. The shard feeds it the
//! datagrams of those sockets, the room's audio and time:
//!
//! - **phone → room.** RTP from the address the phone signalled (anything
//!   else is refused and counted: no media is taken from, or sent to, an
//!   address the dialog did not agree) goes through a [`JitterBuffer`];
//!   every 20 ms what plays goes into the room as the peer's `audio` track
//!   (Opus, 48 kHz RTP clock) with its RFC 6464 level, so that the room's
//!   active speakers hear phones too: G.711 is decoded and encoded to Opus
//!   (libopus, from 8 kHz, 20 ms frames); a phone's Opus is passed through
//!   as it came (decoded only for its length and level). RFC 4733 key presses become
//!   [`Event::Dtmf`].
//! - **room → phone.** The engine points the endpoint's audio slots
//!   ([`SLOTS`], the room's loudest speakers but the caller) at their
//!   tracks; each slot decodes its Opus packets into a short queue; every
//!   20 ms the queued frames are mixed ([`MixMinus`]) and sent in the call's
//!   codec. The stream is steady: silence when nobody speaks, and nothing
//!   at all while the phone holds the call or gave no address.
//!
//! The call ends with [`Command::Close`] (the dialog ended: BYE, CANCEL),
//! or when no RTP arrives for [`CallConfig::rtp_timeout`] outside of hold.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{
    ChannelId, CloseReason, Codec, CodecInfo, Command, ConnId, Endpoint, EndpointStats, Event,
    IngestStats, Input, InputError, MediaKind, MediaPacket, Output, PublishedTrack, RouteKey, Slot,
    SlotId, Transmit, TransportKind,
};
use opus::{Application, Bitrate, Channels};
use rtp_types::{RtpPacket, RtpPacketBuilder};

use crate::dtmf::DtmfReceiver;
use crate::g711::Law;
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::mixer::{rms_dbov, MixConfig, MixMinus, FRAME};
use crate::sdp::{CodecName, NegotiatedMedia};

/// Audio slots of a call: how many of the room's speakers it hears at once.
pub const SLOTS: u16 = 3;
/// The Opus RTP clock (RFC 7587), whatever the audio's bandwidth.
const OPUS_CLOCK: u32 = 48_000;
/// Decoded frames a slot may queue before the oldest are dropped (its
/// jitter allowance toward the phone).
const SLOT_QUEUE_FRAMES: usize = 6;
/// Frames a slot queues before it starts to play.
const SLOT_PREBUFFER_FRAMES: usize = 2;
/// How often a call sends its sender report (RFC 3550 §6.2 allows 5 s
/// as the minimum for a two-party session).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// The largest Opus packet libopus may write.
const MAX_OPUS_PACKET: usize = 1500;
/// Samples one Opus packet may decode to at 48 kHz (120 ms).
const MAX_OPUS_SAMPLES: usize = 5760;

/// How calls behave.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// No RTP from the phone for this long (outside of hold) ends the call.
    pub rtp_timeout: Duration,
    /// The jitter buffer of the phone's audio.
    pub jitter_delay: Duration,
    /// The Opus bitrate of the phone's audio in the room, bit/s.
    pub opus_bitrate: i32,
}

impl Default for CallConfig {
    fn default() -> CallConfig {
        CallConfig {
            rtp_timeout: Duration::from_secs(30),
            jitter_delay: Duration::from_millis(60),
            opus_bitrate: 32_000,
        }
    }
}

/// What the engine knows when it places a call's endpoint.
#[derive(Debug, Clone)]
pub struct CallSetup {
    pub conn: ConnId,
    /// The call's RTP socket.
    pub local: SocketAddr,
    /// Its RTCP socket (RTP + 1), if it has one.
    pub rtcp_local: Option<SocketAddr>,
    /// The wall clock at an instant (read by the engine): sender reports
    /// carry wall-clock time.
    pub wallclock: (Instant, std::time::SystemTime),
    /// The media the dialog agreed.
    pub media: NegotiatedMedia,
    /// The channel of the peer's `audio` track.
    pub audio: ChannelId,
    /// Our SSRC toward the phone.
    pub ssrc: u32,
}

/// Counters of a call, beyond [`IngestStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallStats {
    /// RTP packets from the phone taken.
    pub rtp_in: u64,
    /// Datagrams from an address the dialog did not signal.
    pub unsignalled: u64,
    /// RTP packets sent to the phone.
    pub rtp_out: u64,
    /// Key presses.
    pub dtmf: u64,
    /// RTCP compound packets from the phone.
    pub rtcp_in: u64,
    /// Sender reports sent.
    pub rtcp_out: u64,
    /// Jitter-buffer slots with no packet.
    pub missing: u64,
}

/// The codec state of the phone's side.
enum PhoneCodec {
    G711(Law),
    Opus {
        decoder: Box<opus::Decoder>,
        encoder: Box<opus::Encoder>,
    },
}

/// One receive slot: the channel it plays and its decoded frames.
struct SlotState {
    channel: Option<ChannelId>,
    decoder: Option<opus::Decoder>,
    frames: VecDeque<Vec<i16>>,
    playing: bool,
    live_said: bool,
}

/// One SIP call's media.
pub struct SipEndpoint {
    conn: ConnId,
    local: SocketAddr,
    media: NegotiatedMedia,
    config: CallConfig,
    audio: ChannelId,
    /// The PCM rate of the call's mixing and coding: 8 kHz for G.711,
    /// 48 kHz for Opus.
    pcm_rate: u32,
    phone: PhoneCodec,
    /// The phone's audio encoded for the room.
    room_encoder: opus::Encoder,
    jitter: JitterBuffer,
    dtmf: DtmfReceiver,
    /// Decoded phone audio waiting to fill a 20 ms frame.
    pcm_in: Vec<i16>,
    published_seq: u64,
    published_ts: u32,
    codec_said: bool,
    slots: Vec<SlotState>,
    mixer: MixMinus<u16>,
    ssrc: u32,
    out_seq: u16,
    out_ts: u32,
    next_frame: Instant,
    last_rtp: Instant,
    rtcp_local: Option<SocketAddr>,
    wallclock: (Instant, std::time::SystemTime),
    next_report: Instant,
    /// Octets of RTP payload sent (for sender reports).
    octets_out: u64,
    out: VecDeque<Output>,
    closing: Option<CloseReason>,
    closed: bool,
    ingest: IngestStats,
    stats: CallStats,
    scratch: Vec<i16>,
}

impl std::fmt::Debug for SipEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("conn", &self.conn)
            .field("local", &self.local)
            .field("media", &self.media)
            .finish_non_exhaustive()
    }
}

/// Why a call's endpoint could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("codec {0:?} is not carried")]
    Codec(CodecName),
    #[error("opus: {0}")]
    Opus(String),
}

fn opus_err(e: opus::Error) -> CallError {
    CallError::Opus(e.to_string())
}

/// Opus as the room carries it.
pub fn opus_info() -> CodecInfo {
    CodecInfo::new(Codec::Opus, OPUS_CLOCK)
}

impl SipEndpoint {
    /// The endpoint of a call whose dialog agreed `setup.media`.
    pub fn new(config: CallConfig, setup: CallSetup, now: Instant) -> Result<Self, CallError> {
        let (phone, pcm_rate) = phone_codec(&setup.media)?;
        let mut room_encoder =
            opus::Encoder::new(pcm_rate, Channels::Mono, Application::Voip).map_err(opus_err)?;
        room_encoder
            .set_bitrate(Bitrate::Bits(config.opus_bitrate))
            .map_err(opus_err)?;
        let jitter = JitterBuffer::new(JitterConfig {
            clock_rate: setup.media.codec.clock_rate,
            target_delay: config.jitter_delay,
            ..JitterConfig::default()
        });
        let mixer = MixMinus::new(MixConfig {
            sample_rate: pcm_rate,
            max_speakers: usize::from(SLOTS),
            ..MixConfig::default()
        });
        let slots = (0..SLOTS)
            .map(|_| SlotState {
                channel: None,
                decoder: None,
                frames: VecDeque::new(),
                playing: false,
                live_said: false,
            })
            .collect();
        Ok(SipEndpoint {
            conn: setup.conn,
            local: setup.local,
            media: setup.media,
            config,
            audio: setup.audio,
            pcm_rate,
            phone,
            room_encoder,
            jitter,
            dtmf: DtmfReceiver::new(),
            pcm_in: Vec::new(),
            published_seq: 0,
            published_ts: rand::random(),
            codec_said: false,
            slots,
            mixer,
            ssrc: setup.ssrc,
            out_seq: rand::random(),
            out_ts: rand::random(),
            next_frame: now + FRAME,
            last_rtp: now,
            rtcp_local: setup.rtcp_local,
            wallclock: setup.wallclock,
            next_report: now + RTCP_INTERVAL,
            octets_out: 0,
            out: VecDeque::new(),
            closing: None,
            closed: false,
            ingest: IngestStats::default(),
            stats: CallStats::default(),
            scratch: Vec::new(),
        })
    }

    /// The call's own counters.
    pub fn call_stats(&self) -> CallStats {
        self.stats
    }

    /// The media agreed now.
    pub fn media(&self) -> &NegotiatedMedia {
        &self.media
    }

    /// A re-INVITE changed the media (hold, address, codec).
    pub fn update_media(&mut self, media: NegotiatedMedia, now: Instant) -> Result<(), CallError> {
        // Coming back from hold is not a silence to time out on.
        self.last_rtp = now;
        let codec_changed =
            media.codec.name != self.media.codec.name || media.codec.pt != self.media.codec.pt;
        if codec_changed {
            if let Err(e) = self.change_codec(&media) {
                // The address, hold and direction still change.
                let codec = self.media.codec.clone();
                self.media = NegotiatedMedia { codec, ..media };
                return Err(e);
            }
        }
        self.media = media;
        Ok(())
    }

    fn change_codec(&mut self, media: &NegotiatedMedia) -> Result<(), CallError> {
        {
            let (phone, pcm_rate) = phone_codec(media)?;
            if pcm_rate != self.pcm_rate {
                // G.711 <-> Opus: the call's audio changes rate; the room's
                // stream goes on (same channel, sequence and timestamps).
                let mut encoder = opus::Encoder::new(pcm_rate, Channels::Mono, Application::Voip)
                    .map_err(opus_err)?;
                encoder
                    .set_bitrate(Bitrate::Bits(self.config.opus_bitrate))
                    .map_err(opus_err)?;
                self.room_encoder = encoder;
                self.pcm_rate = pcm_rate;
                self.pcm_in.clear();
                self.mixer = MixMinus::new(MixConfig {
                    sample_rate: pcm_rate,
                    max_speakers: usize::from(SLOTS),
                    ..MixConfig::default()
                });
                for slot in &mut self.slots {
                    slot.decoder = None;
                    slot.frames.clear();
                    slot.playing = false;
                }
            }
            self.phone = phone;
            self.jitter = JitterBuffer::new(JitterConfig {
                clock_rate: media.codec.clock_rate,
                target_delay: self.config.jitter_delay,
                ..JitterConfig::default()
            });
        }
        Ok(())
    }

    fn frame_len(&self) -> usize {
        (self.pcm_rate / 50) as usize
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() && !self.closed {
            self.closing = Some(reason);
        }
    }

    /// A datagram on the call's socket.
    fn datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> Result<bool, InputError> {
        if Some(destination) == self.rtcp_local {
            // RTCP from the phone's address (any port: some phones send it
            // from their RTP port).
            if self.media.remote.map(|r| r.ip()) != Some(source.ip()) {
                self.stats.unsignalled += 1;
                self.ingest.ignored += 1;
                return Err(InputError::Refused(format!(
                    "RTCP from {source}, which the call did not signal"
                )));
            }
            if !crate::rtcp::is_compound(contents) {
                self.ingest.ignored += 1;
                return Err(InputError::Refused("not RTCP".into()));
            }
            self.stats.rtcp_in += 1;
            self.last_rtp = now;
            return Ok(false);
        }
        if destination != self.local {
            return Err(InputError::Unrecognized);
        }
        if self.media.remote != Some(source) {
            self.stats.unsignalled += 1;
            self.ingest.ignored += 1;
            return Err(InputError::Refused(format!(
                "RTP from {source}, which the call did not signal"
            )));
        }
        self.ingest.bytes_in += contents.len() as u64;
        let packet = match RtpPacket::parse(contents) {
            Ok(p) if p.version() == 2 => p,
            _ => {
                self.ingest.ignored += 1;
                return Err(InputError::Refused("not RTP".into()));
            }
        };
        let pt = packet.payload_type();
        // RTCP multiplexed on the RTP port (RFC 5761: types 64-95 here).
        if (64..96).contains(&pt) {
            return Ok(false);
        }
        self.last_rtp = now;
        if self.media.telephone_event.is_some_and(|t| t.pt == pt) {
            if let Some(digit) = self.dtmf.receive(packet.timestamp(), packet.payload()) {
                self.stats.dtmf += 1;
                self.out.push_back(Output::Event(Event::Dtmf(digit)));
                return Ok(true);
            }
            return Ok(false);
        }
        if pt != self.media.codec.pt {
            self.ingest.ignored += 1;
            return Ok(false);
        }
        self.stats.rtp_in += 1;
        let payload: Arc<[u8]> = packet.payload().into();
        self.jitter
            .push(now, packet.sequence_number(), packet.timestamp(), payload);
        Ok(false)
    }

    /// A packet of a channel one of the slots plays: decoded into its queue.
    fn media_in(&mut self, packet: &MediaPacket) {
        let rate = self.pcm_rate;
        let frame_len = self.frame_len();
        let Some((i, slot)) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.channel == Some(packet.channel))
        else {
            return;
        };
        if packet.codec.codec != Codec::Opus {
            self.ingest.unsupported_frames += 1;
            return;
        }
        if slot.decoder.is_none() {
            match opus::Decoder::new(rate, Channels::Mono) {
                Ok(d) => slot.decoder = Some(d),
                Err(_) => return,
            }
        }
        let Some(decoder) = slot.decoder.as_mut() else {
            return;
        };
        self.scratch.resize(MAX_OPUS_SAMPLES, 0);
        let n = match decoder.decode(&packet.payload, &mut self.scratch, false) {
            Ok(n) => n,
            Err(_) => {
                self.ingest.audio_errors += 1;
                return;
            }
        };
        for chunk in self.scratch[..n].chunks(frame_len) {
            let mut frame = chunk.to_vec();
            frame.resize(frame_len, 0);
            slot.frames.push_back(frame);
        }
        while slot.frames.len() > SLOT_QUEUE_FRAMES {
            slot.frames.pop_front();
        }
        if !slot.live_said {
            slot.live_said = true;
            self.out
                .push_back(Output::Event(Event::SlotLive(SlotId(i as u16))));
        }
    }

    /// Every 20 ms: the phone's audio into the room, the room's mix to the
    /// phone.
    fn frame(&mut self, now: Instant) {
        self.play_phone(now);
        self.send_mix();
    }

    fn play_phone(&mut self, now: Instant) {
        while let Some(playout) = self.jitter.poll(now) {
            match playout {
                Playout::Frame(frame) => self.decode_phone(now, &frame.payload),
                Playout::Missing { .. } => self.stats.missing += 1,
            }
        }
        let frame_len = self.frame_len();
        while self.pcm_in.len() >= frame_len {
            let frame: Vec<i16> = self.pcm_in.drain(..frame_len).collect();
            self.publish(now, &frame);
        }
    }

    fn decode_phone(&mut self, now: Instant, payload: &Arc<[u8]>) {
        match &mut self.phone {
            PhoneCodec::G711(law) => law.decode(payload, &mut self.pcm_in),
            // Opus goes into the room as the phone encoded it; it is
            // decoded only for its length and level.
            PhoneCodec::Opus { decoder, .. } => {
                self.scratch.resize(MAX_OPUS_SAMPLES, 0);
                match decoder.decode(payload, &mut self.scratch, false) {
                    Ok(n) => {
                        let level = level_of(&self.scratch[..n]);
                        self.publish_payload(now, payload.clone(), n as u32, level);
                    }
                    Err(_) => self.ingest.audio_errors += 1,
                }
            }
        }
        // A phone that sends faster than it should does not grow this.
        let cap = self.frame_len() * 10;
        if self.pcm_in.len() > cap {
            let extra = self.pcm_in.len() - cap;
            self.pcm_in.drain(..extra);
        }
    }

    /// One 20 ms frame of the phone's audio (G.711, decoded) as an Opus
    /// packet of the room.
    fn publish(&mut self, now: Instant, frame: &[i16]) {
        let mut buf = [0u8; MAX_OPUS_PACKET];
        let n = match self.room_encoder.encode(frame, &mut buf) {
            Ok(n) => n,
            Err(_) => {
                self.ingest.audio_errors += 1;
                return;
            }
        };
        let samples = OPUS_CLOCK / 50;
        self.publish_payload(now, buf[..n].into(), samples, level_of(frame));
    }

    /// An Opus packet of `samples` (at 48 kHz) into the room.
    fn publish_payload(&mut self, now: Instant, payload: Arc<[u8]>, samples: u32, level: u8) {
        if !self.codec_said {
            self.codec_said = true;
            self.out
                .push_back(Output::Event(Event::ActiveCodec(self.audio, opus_info())));
        }
        let packet = MediaPacket {
            channel: self.audio,
            kind: MediaKind::Audio,
            codec: opus_info(),
            seq: self.published_seq,
            rtp_time: self.published_ts,
            marker: false,
            arrival: now,
            wallclock: now,
            orientation: None,
            layer: Default::default(),
            audio_level: Some(level),
            dependency: None,
            payload,
        };
        self.published_seq += 1;
        self.published_ts = self.published_ts.wrapping_add(samples);
        self.ingest.audio_frames += 1;
        self.out.push_back(Output::Event(Event::Media(packet)));
    }

    /// Mixes the slots' frames and sends the result to the phone.
    fn send_mix(&mut self) {
        self.mixer.begin_frame();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.playing && slot.frames.len() >= SLOT_PREBUFFER_FRAMES {
                slot.playing = true;
            }
            if !slot.playing {
                continue;
            }
            match slot.frames.pop_front() {
                Some(frame) => self.mixer.add(i as u16, &frame),
                // Ran dry: wait for a prebuffer again.
                None => slot.playing = false,
            }
        }
        let mix = self.mixer.mix_for(&u16::MAX).to_vec();
        let samples = mix.len() as u32;
        let ts = self.out_ts;
        self.out_ts = self.out_ts.wrapping_add(match self.phone {
            PhoneCodec::G711(_) => samples,
            PhoneCodec::Opus { .. } => OPUS_CLOCK / 50,
        });
        let Some(remote) = self.media.remote.filter(|_| self.media.sends()) else {
            return;
        };
        let mut payload = Vec::with_capacity(samples as usize);
        match &mut self.phone {
            PhoneCodec::G711(law) => law.encode(&mix, &mut payload),
            PhoneCodec::Opus { encoder, .. } => {
                payload.resize(MAX_OPUS_PACKET, 0);
                match encoder.encode(&mix, &mut payload) {
                    Ok(n) => payload.truncate(n),
                    Err(_) => return,
                }
            }
        }
        let seq = self.out_seq;
        self.out_seq = self.out_seq.wrapping_add(1);
        let Ok(contents) = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(self.media.codec.pt)
            .sequence_number(seq)
            .timestamp(ts)
            .ssrc(self.ssrc)
            .payload(payload.as_slice())
            .write_vec()
        else {
            return;
        };
        self.stats.rtp_out += 1;
        self.octets_out += payload.len() as u64;
        self.out.push_back(Output::Transmit(Transmit {
            source: self.local,
            destination: remote,
            contents,
        }));
    }

    fn deadline(&self) -> Instant {
        self.next_frame.min(self.next_report)
    }

    /// Our sender report, when it is due and there is somewhere to send it.
    fn report(&mut self, now: Instant) {
        if now < self.next_report {
            return;
        }
        self.next_report = now + RTCP_INTERVAL;
        let (Some(local), Some(remote)) = (self.rtcp_local, self.media.remote_rtcp) else {
            return;
        };
        if !self.media.sends() || self.stats.rtp_out == 0 {
            return;
        }
        let (anchor, wall) = self.wallclock;
        let at = wall + now.saturating_duration_since(anchor);
        // The RTP time of `now`: the next packet's, less what is left of
        // the frame period.
        let rate = match self.phone {
            PhoneCodec::G711(_) => 8_000,
            PhoneCodec::Opus { .. } => OPUS_CLOCK,
        };
        let ahead = self.next_frame.saturating_duration_since(now);
        let rtp_time = self
            .out_ts
            .wrapping_sub((ahead.as_micros() as u64 * u64::from(rate) / 1_000_000) as u32);
        let info = crate::rtcp::SenderInfo {
            ssrc: self.ssrc,
            at,
            rtp_time,
            packets: self.stats.rtp_out as u32,
            octets: self.octets_out as u32,
        };
        let cname = format!("{}@corecast", self.conn);
        self.stats.rtcp_out += 1;
        self.out.push_back(Output::Transmit(Transmit {
            source: local,
            destination: remote,
            contents: crate::rtcp::sender_report(&info, &cname),
        }));
    }
}

/// The RFC 6464 level of a frame (0 loudest, 127 silence).
fn level_of(frame: &[i16]) -> u8 {
    (-rms_dbov(frame)).round().clamp(0.0, 127.0) as u8
}

/// The phone's codec state and the PCM rate it works at.
fn phone_codec(media: &NegotiatedMedia) -> Result<(PhoneCodec, u32), CallError> {
    match media.codec.name {
        CodecName::Pcmu => Ok((PhoneCodec::G711(Law::Pcmu), 8_000)),
        CodecName::Pcma => Ok((PhoneCodec::G711(Law::Pcma), 8_000)),
        CodecName::Opus => {
            let decoder = opus::Decoder::new(OPUS_CLOCK, Channels::Mono).map_err(opus_err)?;
            let encoder = opus::Encoder::new(OPUS_CLOCK, Channels::Mono, Application::Voip)
                .map_err(opus_err)?;
            Ok((
                PhoneCodec::Opus {
                    decoder: Box::new(decoder),
                    encoder: Box::new(encoder),
                },
                OPUS_CLOCK,
            ))
        }
    }
}

impl Endpoint for SipEndpoint {
    fn transport(&self) -> TransportKind {
        TransportKind::Sip
    }

    /// A call's datagrams are those of its own socket: the shard routes
    /// them by that socket, not by a key.
    fn route_key(&self) -> Option<RouteKey> {
        None
    }

    fn published(&self) -> Vec<PublishedTrack> {
        vec![PublishedTrack {
            name: "audio".into(),
            kind: MediaKind::Audio,
            channel: self.audio,
            codecs: vec![opus_info()],
            layers: 1,
        }]
    }

    fn slots(&self) -> Vec<Slot> {
        (0..SLOTS)
            .map(|i| Slot {
                id: SlotId(i),
                kind: MediaKind::Audio,
                label: format!("audio{i}"),
                codecs: vec![opus_info()],
            })
            .collect()
    }

    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<bool, InputError> {
        if self.closed {
            return Ok(false);
        }
        match input {
            Input::Datagram {
                source,
                destination,
                contents,
            } => self.datagram(now, source, destination, contents),
            Input::Timeout => {
                self.report(now);
                if now >= self.next_frame {
                    self.frame(now);
                    self.next_frame += FRAME;
                    if self.next_frame + FRAME * 10 < now {
                        // The shard was away for long: do not send a burst.
                        self.next_frame = now + FRAME;
                    }
                }
                let held = self.media.on_hold || !self.media.direction.receives();
                if !held && now.saturating_duration_since(self.last_rtp) >= self.config.rtp_timeout
                {
                    tracing::info!(
                        "sip {}: no RTP for {:?}",
                        self.conn,
                        self.config.rtp_timeout
                    );
                    self.close(CloseReason::ConsentExpired);
                }
                Ok(true)
            }
            Input::Media(packet) => {
                self.media_in(packet);
                Ok(!self.out.is_empty())
            }
            Input::Flush => Ok(!self.out.is_empty()),
            Input::Command(Command::Subscribe { slot, channel }) => {
                let Some(s) = self.slots.get_mut(usize::from(slot.0)) else {
                    return Err(InputError::Refused(format!("no slot {}", slot.0)));
                };
                if s.channel != channel {
                    *s = SlotState {
                        channel,
                        decoder: None,
                        frames: VecDeque::new(),
                        playing: false,
                        live_said: false,
                    };
                }
                Ok(false)
            }
            Input::Command(Command::Close) => {
                self.close(CloseReason::Closed);
                Ok(true)
            }
            // Audio only; nothing to ask of a phone.
            Input::Command(
                Command::RequestKeyframe(..)
                | Command::Prefer { .. }
                | Command::Rpc(_)
                | Command::Admit(_),
            ) => Ok(false),
            Input::Stream(_) => Err(InputError::Unrecognized),
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

    /// A re-INVITE's media, as [`media_signal`] wrote it.
    fn signal(&mut self, now: Instant, body: &str) -> Result<Option<String>, String> {
        let media = parse_media_signal(body, &self.media)?;
        self.update_media(media, now).map_err(|e| e.to_string())?;
        Ok(None)
    }

    fn stats(&self) -> EndpointStats {
        EndpointStats {
            ingest: self.ingest,
            ..EndpointStats::default()
        }
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

/// The signalling the engine passes a call's endpoint after a re-INVITE:
/// `remote=ADDR|none hold=0|1 sends=0|1 receives=0|1 codec=NAME/PT`.
pub fn media_signal(media: &NegotiatedMedia) -> String {
    format!(
        "remote={} hold={} sends={} receives={} codec={}/{}",
        media
            .remote
            .map_or_else(|| "none".to_string(), |a| a.to_string()),
        u8::from(media.on_hold),
        u8::from(media.direction.sends()),
        u8::from(media.direction.receives()),
        media.codec.name.encoding(),
        media.codec.pt,
    )
}

/// Reads [`media_signal`]'s text over the media agreed before.
pub fn parse_media_signal(body: &str, was: &NegotiatedMedia) -> Result<NegotiatedMedia, String> {
    use crate::sdp::Direction;
    let mut media = was.clone();
    let (mut sends, mut receives) = (was.direction.sends(), was.direction.receives());
    for part in body.split_whitespace() {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("not key=value: {part}"))?;
        let flag = || match value {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("{key} must be 0 or 1")),
        };
        match key {
            "remote" if value == "none" => media.remote = None,
            "remote" => {
                media.remote = Some(value.parse().map_err(|_| format!("bad address {value}"))?)
            }
            "hold" => media.on_hold = flag()?,
            "sends" => sends = flag()?,
            "receives" => receives = flag()?,
            "codec" => {
                let (name, pt) = value
                    .split_once('/')
                    .ok_or_else(|| format!("codec must be NAME/PT: {value}"))?;
                let name = [CodecName::Pcmu, CodecName::Pcma, CodecName::Opus]
                    .into_iter()
                    .find(|c| c.encoding().eq_ignore_ascii_case(name))
                    .ok_or_else(|| format!("unknown codec {name}"))?;
                let pt: u8 = pt.parse().map_err(|_| format!("bad payload type {pt}"))?;
                if name != media.codec.name || pt != media.codec.pt {
                    media.codec = crate::sdp::Codec {
                        name,
                        pt,
                        clock_rate: name.clock_rate(),
                        channels: name.channels(),
                        fmtp: None,
                    };
                }
            }
            _ => return Err(format!("unknown key {key}")),
        }
    }
    media.direction = match (sends, receives) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    };
    Ok(media)
}

#[cfg(test)]
#[path = "call_tests.rs"]
mod tests;
