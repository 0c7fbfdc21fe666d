//! A scriptable WebRTC client for tests and the load generator.
//!
//! [`Client`] is the other side of an [`crate::Endpoint`]: a full-ICE str0m
//! peer in RTP mode that makes the offer a WHIP publisher or WHEP viewer
//! makes, sends RTP with the payloads it is given, and reports every RTP
//! payload it receives. Sans-IO like the rest of the crate.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{Codec, MediaKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec as RtcCodec, CodecConfig};
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind as RtcKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::rtp::{ExtensionMap, ExtensionValues, RtpWrite, VideoOrientation};
use str0m::{Candidate, Event, Input, Rtc};

use crate::dependency::{with_dependency_descriptor, DdBytes};
use crate::endpoint::{transmit, udp_input};
use crate::{EndpointConfig, Error};
use corecast_media::Output as EndpointOutput;

/// Something a client saw.
#[derive(Debug)]
pub enum ClientEvent {
    Connected,
    /// One received RTP packet (viewer).
    Media {
        kind: MediaKind,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        ssrc: u32,
        /// The CVO rotation bits, when the packet carried them.
        orientation: Option<u8>,
        /// The dependency descriptor, when the packet carried one.
        dependency: Option<Arc<[u8]>>,
        payload: Arc<[u8]>,
        arrival: Instant,
    },
    /// An RTCP sender report of a received track (viewer): its RTP time ↔
    /// the sender's NTP wallclock.
    SenderReport {
        kind: MediaKind,
        ntp: std::time::SystemTime,
        rtp_time: u32,
    },
    /// The server asked this publisher for a keyframe.
    KeyframeRequest(MediaKind),
    /// The server asked this simulcast publisher for a keyframe of one
    /// layer (an index into its RIDs).
    LayerKeyframeRequest(usize),
    Closed,
}

/// Extras of one packet a publisher sends ([`Client::send_with`]).
#[derive(Debug, Clone)]
pub struct SendMeta {
    /// The capture time of the packet: the client's sender reports map RTP
    /// time to it.
    pub wallclock: Instant,
    /// CVO rotation bits to send in the video orientation extension.
    pub orientation: Option<u8>,
    /// A dependency descriptor to send (`corecast_media::dd::write`).
    pub dependency: Option<Vec<u8>>,
}

/// A datagram into a test client's str0m (shared with the room client).
pub(crate) fn receive(
    rtc: &mut Rtc,
    now: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    datagram: &[u8],
) -> Result<(), Error> {
    let input = udp_input(now, source, destination, datagram).ok_or(Error::Unrecognized)?;
    rtc.handle_input(input)?;
    Ok(())
}

/// What a test client's str0m says next: an output for the caller, or an
/// event for the client to handle.
#[allow(clippy::large_enum_variant)] // one at a time, returned at once
pub(crate) enum Polled<E> {
    Output(EndpointOutput<E>),
    Event(Event),
}

/// The next output of a test client: its own events first, then str0m's.
/// A failed str0m queues `closed()` (and sleeps once str0m is dead).
pub(crate) fn poll<E>(
    rtc: &mut Rtc,
    events: &mut VecDeque<E>,
    now: Instant,
    closed: impl Fn() -> E,
) -> Polled<E> {
    loop {
        if let Some(e) = events.pop_front() {
            return Polled::Output(EndpointOutput::Event(e));
        }
        match rtc.poll_output() {
            Ok(str0m::Output::Transmit(t)) => {
                return Polled::Output(EndpointOutput::Transmit(transmit(t)))
            }
            Ok(str0m::Output::Timeout(at)) => return Polled::Output(EndpointOutput::Timeout(at)),
            Ok(str0m::Output::Event(e)) => return Polled::Event(e),
            Err(_) => {
                events.push_back(closed());
                if !rtc.is_alive() {
                    return Polled::Output(EndpointOutput::Timeout(
                        now + Duration::from_secs(3600),
                    ));
                }
            }
        }
    }
}

/// What [`Client::poll_output`] returns (same shape as the endpoint's).
pub type ClientOutput = EndpointOutput<ClientEvent>;

/// A WHIP publisher or WHEP viewer peer.
pub struct Client {
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    audio: Mid,
    video: Mid,
    events: VecDeque<ClientEvent>,
    connected: bool,
    video_codec: RtcCodec,
    /// The simulcast layers' RIDs it sends, lowest first (publisher).
    rids: Vec<Rid>,
}

impl Client {
    /// A publisher with one Opus and one VP8 track. Returns the WHIP offer.
    pub fn publisher(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
    ) -> Result<(Client, String), Error> {
        Client::new(config, now, local, Direction::SendOnly, Codec::Vp8, &[])
    }

    /// A publisher whose VP8 video is simulcast in layers with these RIDs,
    /// lowest first (`a=simulcast:send q;h;f`). Send each layer with
    /// [`Client::send_layer`]. Returns the WHIP offer.
    pub fn simulcast_publisher(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
        rids: &[&str],
    ) -> Result<(Client, String), Error> {
        Client::new(config, now, local, Direction::SendOnly, Codec::Vp8, rids)
    }

    /// A viewer receiving one audio and one video track. Returns the WHEP offer.
    pub fn viewer(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
    ) -> Result<(Client, String), Error> {
        Client::new(config, now, local, Direction::RecvOnly, Codec::Vp8, &[])
    }

    /// A publisher (`send = true`) or viewer that offers only `video` for its
    /// video track (VP8, VP9, H264 or AV1).
    pub fn with_video_codec(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
        send: bool,
        video: Codec,
    ) -> Result<(Client, String), Error> {
        let dir = if send {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        Client::new(config, now, local, dir, video, &[])
    }

    /// A viewer that answers the server's offer (servers whose viewers
    /// are offered to, as Janus's VideoRoom subscribers are): Opus and VP8,
    /// receive-only. The offer's first audio and video m-lines are the
    /// tracks it reads. Returns the answer.
    pub fn answering_viewer(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
        offer: &str,
    ) -> Result<(Client, String), Error> {
        let (audio, video) = offered_mids(offer)?;
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        let mut rtc = Client::rtc(config, now, RtcCodec::Vp8);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc.sdp_api().accept_offer(parsed)?;
        let client = Client {
            rtc,
            pending: None,
            audio,
            video,
            events: VecDeque::new(),
            connected: false,
            video_codec: RtcCodec::Vp8,
            rids: Vec::new(),
        };
        Ok((client, answer.to_sdp_string()))
    }

    /// A client's str0m: RTP mode, Opus and `video_codec`, the standard
    /// extensions and the dependency descriptor.
    fn rtc(config: &EndpointConfig, now: Instant, video_codec: RtcCodec) -> Rtc {
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .set_crypto_provider(config.crypto.clone())
            .set_dtls_cert(config.dtls_cert.clone())
            .set_stats_interval(None);
        let mut codecs = CodecConfig::empty();
        codecs.enable_opus(true, false);
        match video_codec {
            RtcCodec::Vp9 => codecs.enable_vp9(true),
            RtcCodec::H264 => codecs.enable_h264(true),
            RtcCodec::Av1 => codecs.enable_av1(true),
            _ => codecs.enable_vp8(true),
        }
        *builder.codec_config() = codecs;
        builder = builder.set_extension_map(with_dependency_descriptor(ExtensionMap::standard()));
        builder.build(now)
    }

    fn new(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
        dir: Direction,
        video_codec: Codec,
        rids: &[&str],
    ) -> Result<(Client, String), Error> {
        let video_codec = match video_codec {
            Codec::Vp9 => RtcCodec::Vp9,
            Codec::H264 => RtcCodec::H264,
            Codec::Av1 => RtcCodec::Av1,
            _ => RtcCodec::Vp8,
        };
        let mut rtc = Client::rtc(config, now, video_codec);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let audio = api.add_media(RtcKind::Audio, dir, None, None, None);
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for rid in rids {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let video = api.add_media(RtcKind::Video, dir, None, None, simulcast);
        let (offer, pending) = api
            .apply()
            .ok_or(Error::NoMedia("media in the client's offer"))?;
        let client = Client {
            rtc,
            pending: Some(pending),
            audio,
            video,
            events: VecDeque::new(),
            connected: false,
            video_codec,
            rids: rids.iter().map(|r| Rid::from(*r)).collect(),
        };
        Ok((client, offer.to_sdp_string()))
    }

    /// Applies the server's SDP answer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), Error> {
        let answer = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        let pending = self
            .pending
            .take()
            .ok_or(Error::BadSdp("no offer pending".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn mid(&self, kind: MediaKind) -> Mid {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }

    fn pt(&self, kind: MediaKind) -> Option<Pt> {
        let want = match kind {
            MediaKind::Audio => RtcCodec::Opus,
            MediaKind::Video => self.video_codec,
        };
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == want)
            .map(|p| p.pt())
    }

    /// Sends one RTP packet (publisher). `seq` is the extended sequence number.
    pub fn send(
        &mut self,
        now: Instant,
        kind: MediaKind,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
    ) -> bool {
        let meta = SendMeta {
            wallclock: now,
            orientation: None,
            dependency: None,
        };
        self.send_with(now, kind, seq, rtp_time, marker, payload, meta)
    }

    /// [`Client::send`] with the packet's capture wallclock (this client's
    /// sender reports map RTP time to it) and a video orientation.
    #[allow(clippy::too_many_arguments)]
    pub fn send_with(
        &mut self,
        now: Instant,
        kind: MediaKind,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
        meta: SendMeta,
    ) -> bool {
        if !self.connected {
            return false;
        }
        let Some(pt) = self.pt(kind) else {
            return false;
        };
        let mid = self.mid(kind);
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let mut ext_vals = ExtensionValues {
            video_orientation: meta.orientation.map(VideoOrientation::from),
            ..Default::default()
        };
        if let Some(d) = meta.dependency {
            ext_vals.user_values.set(DdBytes(Arc::from(d)));
        }
        stream.write_rtp(
            RtpWrite::new(pt, seq.into(), rtp_time, meta.wallclock, payload.to_vec())
                .marker(marker)
                .ext_vals(ext_vals)
                .nackable(kind == MediaKind::Video),
        );
        // str0m queues the packet; time input lets its pacer release it now.
        let _ = self.rtc.handle_input(Input::Timeout(now));
        true
    }

    /// Sends one packet of simulcast layer `layer` (an index into the RIDs
    /// it was made with; publisher). `seq` is the layer's own extended
    /// sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn send_layer(
        &mut self,
        now: Instant,
        layer: usize,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
    ) -> bool {
        if !self.connected {
            return false;
        }
        let (Some(pt), Some(rid)) = (self.pt(MediaKind::Video), self.rids.get(layer).copied())
        else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(self.video, Some(rid)) else {
            return false;
        };
        stream.write_rtp(
            RtpWrite::new(pt, seq.into(), rtp_time, now, payload.to_vec())
                .marker(marker)
                .nackable(true),
        );
        let _ = self.rtc.handle_input(Input::Timeout(now));
        true
    }

    /// Asks the server for a keyframe (viewer): a PLI on the video track.
    pub fn request_keyframe(&mut self) -> bool {
        let mid = self.video;
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, None) else {
            return false;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        true
    }

    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), Error> {
        receive(&mut self.rtc, now, source, destination, datagram)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }

    pub fn close(&mut self) {
        self.rtc.disconnect();
    }

    pub fn poll_output(&mut self, now: Instant) -> ClientOutput {
        loop {
            match poll(&mut self.rtc, &mut self.events, now, || ClientEvent::Closed) {
                Polled::Output(out) => return out,
                Polled::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.events.push_back(ClientEvent::Connected);
            }
            Event::RtpPacket(p) => {
                let kind =
                    if p.header.payload_type == self.pt(MediaKind::Audio).unwrap_or(Pt::from(0)) {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                self.events.push_back(ClientEvent::Media {
                    kind,
                    seq: *p.seq_no,
                    rtp_time: p.header.timestamp,
                    marker: p.header.marker,
                    ssrc: *p.header.ssrc,
                    orientation: p.header.ext_vals.video_orientation.map(|o| o as u8),
                    dependency: p
                        .header
                        .ext_vals
                        .user_values
                        .get::<DdBytes>()
                        .map(|d| d.0.clone()),
                    payload: p.payload,
                    arrival: p.timestamp,
                });
            }
            Event::KeyframeRequest(r) => {
                let kind = if r.mid == self.audio {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                match r
                    .rid
                    .and_then(|rid| self.rids.iter().position(|x| *x == rid))
                {
                    Some(layer) => self
                        .events
                        .push_back(ClientEvent::LayerKeyframeRequest(layer)),
                    None => self.events.push_back(ClientEvent::KeyframeRequest(kind)),
                }
            }
            Event::SenderFeedback(f) => {
                let kind = if f.mid == self.audio {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                self.events.push_back(ClientEvent::SenderReport {
                    kind,
                    ntp: f.sender_info.ntp_time,
                    rtp_time: f.sender_info.rtp_time.numer() as u32,
                });
            }
            Event::Closed => self.events.push_back(ClientEvent::Closed),
            _ => {}
        }
    }
}

/// The mids of the first audio and the first video m-line of an offer.
fn offered_mids(offer: &str) -> Result<(Mid, Mid), Error> {
    let (mut audio, mut video, mut kind) = (None, None, None);
    for line in offer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split(' ').next().map(str::to_owned);
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            let slot = match kind.as_deref() {
                Some("audio") => &mut audio,
                Some("video") => &mut video,
                _ => continue,
            };
            slot.get_or_insert_with(|| Mid::from(mid.trim()));
        }
    }
    match (audio, video) {
        (Some(a), Some(v)) => Ok((a, v)),
        _ => Err(Error::NoMedia(
            "an audio and a video m-line with mids in the offer",
        )),
    }
}

/// One video frame of simulcast layer `layer` as VP8 RTP payloads of at
/// most 1000 bytes (`bytes` in all), for tests and the load generator: the
/// payload descriptor with a 15-bit picture id (`frame`, offset per layer so
/// that layers' ids differ), the VP8 header byte whose bit 0 says keyframe
/// (first packet), then a body that names the layer, the frame, the packet
/// index and whether it is a keyframe: `[layer, frame (4, big-endian),
/// index, key]`, padded with 0xab.
pub fn simulcast_frame(layer: u8, frame: u64, key: bool, bytes: usize) -> Vec<Vec<u8>> {
    vp8_frame(layer, frame, None, key, bytes)
}

/// Where a VP8 frame sits among temporal layers: its TID, the layer sync
/// bit (Y: it refers only to the base layer) and TL0PICIDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Temporal {
    pub tid: u8,
    pub sync: bool,
    pub tl0picidx: u8,
}

/// [`simulcast_frame`] with temporal layer fields in the descriptor (L, T,
/// TL0PICIDX, TID and Y) when `temporal` is given.
pub fn vp8_frame(
    layer: u8,
    frame: u64,
    temporal: Option<Temporal>,
    key: bool,
    bytes: usize,
) -> Vec<Vec<u8>> {
    let n = bytes.div_ceil(1000).max(1);
    let pid = (frame as u16).wrapping_add(1000 * u16::from(layer)) & 0x7fff;
    (0..n)
        .map(|i| {
            let start = if i == 0 { 0x10 } else { 0 };
            // X; I (and L, T with temporal layers).
            let ext = if temporal.is_some() { 0xe0 } else { 0x80 };
            let mut p = vec![0x80 | start, ext, 0x80 | (pid >> 8) as u8, pid as u8];
            if let Some(t) = temporal {
                p.push(t.tl0picidx);
                p.push((t.tid & 0x03) << 6 | u8::from(t.sync) << 5);
            }
            if i == 0 {
                p.push(if key { 0x00 } else { 0x01 });
            }
            p.push(layer);
            p.extend_from_slice(&(frame as u32).to_be_bytes());
            p.push(i as u8);
            p.push(u8::from(key));
            p.resize((bytes / n).max(p.len()), 0xab);
            p
        })
        .collect()
}

/// What [`simulcast_frame`] put in a payload: (layer, frame, packet index,
/// keyframe, picture id), or `None` for another payload.
pub fn read_simulcast_frame(payload: &[u8]) -> Option<(u8, u32, u8, bool, u16)> {
    let d = corecast_media::vp8::parse(payload)?;
    let body = payload.get(d.header_len + usize::from(d.start)..)?;
    let frame = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
    Some((
        *body.first()?,
        frame,
        *body.get(5)?,
        *body.get(6)? == 1,
        d.picture_id?,
    ))
}

/// One spatial layer's frame of an SVC picture as VP9 RTP payloads of at
/// most 1000 bytes (`bytes` in all), for tests and the load generator: the
/// payload descriptor in non-flexible mode (I, P on delta pictures, L, B on
/// the first packet, E on the last; a 15-bit picture id, TID/U/SID/D with U
/// set and D on spatial layers above 0, TL0PICIDX; on a keyframe's first
/// packet a scalability structure of three spatial layers), then a body that names
/// the picture: `[sid, tid, picture (4, big-endian), index, key]`, padded
/// with 0xab. Send a picture's layers in order, the marker on the last
/// packet of the top one.
pub fn svc_frame(sid: u8, tid: u8, picture: u64, tl0: u8, key: bool, bytes: usize) -> Vec<Vec<u8>> {
    let n = bytes.div_ceil(1000).max(1);
    let pid = (picture as u16) & 0x7fff;
    (0..n)
        .map(|i| {
            let mut b0 = 0x80 | 0x20; // I, L
            if !key {
                b0 |= 0x40; // P
            }
            if i == 0 {
                b0 |= 0x08; // B
            }
            if i + 1 == n {
                b0 |= 0x04; // E
            }
            // The keyframe's first packet announces three spatial layers
            // (a scalability structure with N_S = 2, nothing else).
            let ss = key && sid == 0 && i == 0;
            if ss {
                b0 |= 0x02; // V
            }
            let layers = (tid << 5) | 0x10 | ((sid & 0x07) << 1) | u8::from(sid > 0);
            let mut p = vec![b0, 0x80 | (pid >> 8) as u8, pid as u8, layers, tl0];
            if ss {
                p.push(2 << 5);
            }
            p.extend_from_slice(&[sid, tid]);
            p.extend_from_slice(&(picture as u32).to_be_bytes());
            p.push(i as u8);
            p.push(u8::from(key));
            p.resize((bytes / n).max(p.len()), 0xab);
            p
        })
        .collect()
}

/// One spatial layer's frame of an AV1 `L3T3_KEY` picture (three spatial
/// and three temporal layers, [`corecast_media::dd::DdStructure::l3t3_key`]),
/// for tests: `(payload, dependency descriptor)` per RTP packet of at most
/// 1000 bytes (`bytes` in all). `phase` counts pictures from the last
/// keyframe (0: this one) and picks the frame's template, hence its
/// temporal layer; `frame_number` is the descriptor's. The payload is an
/// aggregation header (Z on packets after the first, Y on packets before
/// the last, W = 1, N on the first packet of a keyframe's base layer) and a
/// body that names the frame like [`svc_frame`]'s: `[sid, tid, picture
/// (4), index, key]`, padded with 0xab. The keyframe's first descriptor
/// carries the structure.
pub fn av1_svc_frame(
    sid: u8,
    picture: u64,
    phase: u64,
    frame_number: u16,
    bytes: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    use corecast_media::dd::{write, DdStructure, DependencyDescriptor};
    let structure = DdStructure::l3t3_key();
    let index = DdStructure::l3t3_key_template(phase, sid);
    let key = phase == 0;
    let n = bytes.div_ceil(1000).max(1);
    (0..n)
        .filter_map(|i| {
            let mut d = DependencyDescriptor::from_template(&structure, index, frame_number)?;
            d.start_of_frame = i == 0;
            d.end_of_frame = i + 1 == n;
            if key && sid == 0 && i == 0 {
                d.structure = Some(structure.clone());
            }
            let mut descriptor = Vec::new();
            write(&d, Some(&structure), &mut descriptor).ok()?;
            let mut header = 0x10; // W = 1
            if i > 0 {
                header |= 0x80; // Z
            }
            if i + 1 < n {
                header |= 0x40; // Y
            }
            if key && sid == 0 && i == 0 {
                header |= 0x08; // N
            }
            let mut p = vec![header, sid, d.temporal_id];
            p.extend_from_slice(&(picture as u32).to_be_bytes());
            p.push(i as u8);
            p.push(u8::from(key));
            p.resize((bytes / n).max(p.len()), 0xab);
            Some((p, descriptor))
        })
        .collect()
}

/// One frame of an H.264 stream in three temporal layers (`L1T3`, the
/// layers named only by the dependency descriptor, as Chromium's OpenH264
/// sends them; [`corecast_media::dd::DdStructure::l1t3`]), for tests:
/// `(payload, dependency descriptor)` per RTP packet of at most 1000 bytes
/// (`bytes` in all). `phase` counts frames from the last keyframe (0: this
/// one) and picks the template, hence the temporal layer; `frame_number`
/// is the descriptor's. The payload is one NAL unit (IDR on a keyframe,
/// else non-IDR) in FU-A fragments whose body names the frame: `[frame
/// (4, big-endian), tid, index, key]`, padded with 0xab. The keyframe's
/// first descriptor carries the structure.
pub fn h264_l1t3_frame(
    frame: u64,
    phase: u64,
    frame_number: u16,
    bytes: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    use corecast_media::dd::{write, DdStructure, DependencyDescriptor};
    let structure = DdStructure::l1t3();
    let key = phase == 0;
    let n = bytes.div_ceil(1000).max(1);
    (0..n)
        .filter_map(|i| {
            let index = DdStructure::l1t3_template(phase);
            let mut d = DependencyDescriptor::from_template(&structure, index, frame_number)?;
            d.start_of_frame = i == 0;
            d.end_of_frame = i + 1 == n;
            if key && i == 0 {
                d.structure = Some(structure.clone());
            }
            let mut descriptor = Vec::new();
            write(&d, Some(&structure), &mut descriptor).ok()?;
            let nal_type = if key { 5 } else { 1 };
            let mut fu = nal_type;
            if i == 0 {
                fu |= 0x80; // S
            }
            if i + 1 == n {
                fu |= 0x40; // E
            }
            let mut p = vec![0x60 | 28, fu];
            p.extend_from_slice(&(frame as u32).to_be_bytes());
            p.extend_from_slice(&[d.temporal_id, i as u8, u8::from(key)]);
            p.resize((bytes / n).max(p.len()), 0xab);
            Some((p, descriptor))
        })
        .collect()
}

/// What [`h264_l1t3_frame`] put in a payload: (frame, tid, packet index,
/// keyframe).
pub fn read_h264_l1t3_frame(payload: &[u8]) -> Option<(u32, u8, u8, bool)> {
    let body = payload.get(2..)?;
    Some((
        u32::from_be_bytes(body.get(..4)?.try_into().ok()?),
        *body.get(4)?,
        *body.get(5)?,
        *body.get(6)? == 1,
    ))
}

/// What [`av1_svc_frame`] put in a packet: (sid, tid, picture, packet
/// index, keyframe, begins, ends), the last two from the descriptor's
/// start and end of frame.
pub fn read_av1_svc_frame(
    payload: &[u8],
    descriptor: &[u8],
) -> Option<(u8, u8, u32, u8, bool, bool, bool)> {
    let body = payload.get(1..)?;
    let flags = *descriptor.first()?;
    Some((
        *body.first()?,
        *body.get(1)?,
        u32::from_be_bytes(body.get(2..6)?.try_into().ok()?),
        *body.get(6)?,
        *body.get(7)? == 1,
        flags & 0x80 != 0,
        flags & 0x40 != 0,
    ))
}

/// What [`svc_frame`] put in a payload: (sid, tid, picture, packet index,
/// keyframe, begins, ends), or `None` for another payload.
pub fn read_svc_frame(payload: &[u8]) -> Option<(u8, u8, u32, u8, bool, bool, bool)> {
    let d = corecast_media::vp9::parse(payload)?;
    let body = payload.get(d.header_len..)?;
    let picture = u32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    Some((
        *body.first()?,
        *body.get(1)?,
        picture,
        *body.get(6)?,
        *body.get(7)? == 1,
        d.begin,
        d.end,
    ))
}
