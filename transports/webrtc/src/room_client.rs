//! A scriptable SDK client (docs/sdk-protocol.md) for tests and the load
//! generator: the other side of an [`crate::Endpoint::peer`].
//!
//! [`RoomClient`] offers named send tracks (Opus, VP8), receive slots and
//! the RPC data channel; it sends the RTP payloads it is given on a track,
//! reports every RTP payload a slot receives with the slot's mid, and every
//! RPC message as JSON. Sans-IO like the rest of the crate: what to request
//! and when is the caller's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use corecast_media::MediaKind;
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId as DataChannel;
use str0m::format::{Codec as RtcCodec, CodecConfig};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind as RtcKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Rtc};

use crate::client::{poll, receive, Polled};
use crate::{EndpointConfig, Error};
use corecast_media::Output;

/// Something a room client saw.
#[derive(Debug)]
pub enum RoomEvent {
    /// ICE and DTLS are up.
    Connected,
    /// The RPC data channel is open: requests go out from now on.
    Open,
    /// An RPC message from the server (an answer or an event).
    Message(Value),
    /// One RTP packet received on a slot.
    Media {
        mid: String,
        kind: MediaKind,
        seq: u64,
        rtp_time: u32,
        ssrc: u32,
        payload: Arc<[u8]>,
        arrival: Instant,
    },
    /// The server asked for a keyframe of a published track.
    KeyframeRequest(String),
    Closed,
}

/// A published track of the client.
struct SendTrack {
    name: String,
    kind: MediaKind,
    mid: Mid,
}

/// An SDK client: one connection, named send tracks, receive slots, RPC.
pub struct RoomClient {
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    channel: Option<DataChannel>,
    open: bool,
    tracks: Vec<SendTrack>,
    slots: Vec<(Mid, MediaKind)>,
    /// RPC text waiting for the channel to open.
    outbox: VecDeque<String>,
    events: VecDeque<RoomEvent>,
    next_id: u64,
    connected: bool,
}

impl RoomClient {
    /// A client that publishes `publish` (name, kind) and offers the given
    /// receive slots. Returns it and the offer.
    pub fn new(
        config: &EndpointConfig,
        now: Instant,
        local: SocketAddr,
        publish: &[(&str, MediaKind)],
        audio_slots: usize,
        video_slots: usize,
    ) -> Result<(RoomClient, String), Error> {
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .set_crypto_provider(config.crypto.clone())
            .set_dtls_cert(config.dtls_cert.clone())
            .set_stats_interval(None);
        let mut codecs = CodecConfig::empty();
        codecs.enable_opus(true, false);
        codecs.enable_vp8(true);
        *builder.codec_config() = codecs;
        let mut rtc = builder.build(now);
        let candidate =
            Candidate::host(local, "udp").map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mut tracks = Vec::new();
        for (name, kind) in publish {
            let mid = api.add_media(rtc_kind(*kind), Direction::SendOnly, None, None, None);
            tracks.push(SendTrack {
                name: name.to_string(),
                kind: *kind,
                mid,
            });
        }
        let mut slots = Vec::new();
        for (kind, n) in [
            (MediaKind::Audio, audio_slots),
            (MediaKind::Video, video_slots),
        ] {
            for _ in 0..n {
                let mid = api.add_media(rtc_kind(kind), Direction::RecvOnly, None, None, None);
                slots.push((mid, kind));
            }
        }
        let channel = api.add_channel("corecast".into());
        let (offer, pending) = api
            .apply()
            .ok_or(Error::NoMedia("media in the client's offer"))?;
        let client = RoomClient {
            rtc,
            pending: Some(pending),
            channel: Some(channel),
            open: false,
            tracks,
            slots,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            connected: false,
        };
        Ok((client, offer.to_sdp_string()))
    }

    /// The body of `POST /webrtc/connect` for this client's offer.
    pub fn connect_body(&self, room: &str, peer: &str, offer: &str, metadata: Value) -> String {
        let publish: Vec<Value> = self
            .tracks
            .iter()
            .map(|t| json!({"mid": t.mid.to_string(), "name": t.name}))
            .collect();
        json!({"room": room, "peer": peer, "sdp": offer, "metadata": metadata, "publish": publish})
            .to_string()
    }

    /// Applies the `sdp` of the connect answer.
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

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Sends a request; returns its id.
    pub fn request(&mut self, request: &str, fields: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = match fields {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        message.insert("id".into(), json!(id));
        message.insert("request".into(), json!(request));
        self.send_text(&Value::Object(message).to_string());
        id
    }

    /// Sends raw text on the RPC channel (for tests of bad input).
    pub fn send_text(&mut self, text: &str) {
        if !self.open {
            self.outbox.push_back(text.to_string());
            return;
        }
        if let Some(mut ch) = self.channel.and_then(|id| self.rtc.channel(id)) {
            let _ = ch.write(false, text.as_bytes());
        }
    }

    /// Sends one RTP packet on the published track `name`.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Instant,
        name: &str,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
    ) -> bool {
        self.send_with_level(now, name, seq, rtp_time, marker, payload, None)
    }

    /// [`RoomClient::send`] with an audio level (RFC 6464: 0 loudest to
    /// 127 silence, -dBov) in the packet's header extension, as browsers
    /// send on every Opus packet.
    #[allow(clippy::too_many_arguments)]
    pub fn send_with_level(
        &mut self,
        now: Instant,
        name: &str,
        seq: u64,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
        audio_level: Option<u8>,
    ) -> bool {
        if !self.connected {
            return false;
        }
        let Some(track) = self.tracks.iter().find(|t| t.name == name) else {
            return false;
        };
        let (mid, kind) = (track.mid, track.kind);
        let Some(pt) = self.pt(kind) else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let mut write = RtpWrite::new(pt, seq.into(), rtp_time, now, payload.to_vec())
            .marker(marker)
            .nackable(kind == MediaKind::Video);
        if let Some(level) = audio_level {
            write = write.ext_vals(ExtensionValues {
                audio_level: Some(-(level.min(127) as i8)),
                voice_activity: Some(level < 127),
                ..Default::default()
            });
        }
        stream.write_rtp(write);
        let _ = self.rtc.handle_input(Input::Timeout(now));
        true
    }

    /// Asks for a keyframe on the slot `mid` (a PLI).
    pub fn request_keyframe(&mut self, mid: &str) -> bool {
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(Mid::from(mid), None) else {
            return false;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        true
    }

    fn pt(&self, kind: MediaKind) -> Option<Pt> {
        let want = match kind {
            MediaKind::Audio => RtcCodec::Opus,
            MediaKind::Video => RtcCodec::Vp8,
        };
        self.rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == want)
            .map(|p| p.pt())
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

    pub fn poll_output(&mut self, now: Instant) -> Output<RoomEvent> {
        loop {
            match poll(&mut self.rtc, &mut self.events, now, || RoomEvent::Closed) {
                Polled::Output(out) => return out,
                Polled::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.events.push_back(RoomEvent::Connected);
            }
            Event::ChannelOpen(id, _) if Some(id) == self.channel => {
                self.open = true;
                self.events.push_back(RoomEvent::Open);
                for text in std::mem::take(&mut self.outbox) {
                    self.send_text(&text);
                }
            }
            Event::ChannelData(d) if Some(d.id) == self.channel => {
                let value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                self.events.push_back(RoomEvent::Message(value));
            }
            Event::RtpPacket(p) => {
                let ssrc = *p.header.ssrc;
                let mid = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid());
                let Some((mid, kind)) = mid.and_then(|m| self.slots.iter().find(|(s, _)| *s == m))
                else {
                    return;
                };
                self.events.push_back(RoomEvent::Media {
                    mid: mid.to_string(),
                    kind: *kind,
                    seq: *p.seq_no,
                    rtp_time: p.header.timestamp,
                    ssrc,
                    payload: p.payload,
                    arrival: p.timestamp,
                });
            }
            Event::KeyframeRequest(r) => {
                if let Some(t) = self.tracks.iter().find(|t| t.mid == r.mid) {
                    self.events
                        .push_back(RoomEvent::KeyframeRequest(t.name.clone()));
                }
            }
            Event::Closed => self.events.push_back(RoomEvent::Closed),
            _ => {}
        }
    }
}

fn rtc_kind(kind: MediaKind) -> RtcKind {
    match kind {
        MediaKind::Audio => RtcKind::Audio,
        MediaKind::Video => RtcKind::Video,
    }
}
