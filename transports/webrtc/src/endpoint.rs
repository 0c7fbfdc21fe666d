//! One WebRTC leg: a WHIP publisher or a WHEP viewer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_media::{is_keyframe_start, ChannelId, CodecInfo, MediaKind, MediaPacket, Rewriter};
use str0m::change::SdpOffer;
use str0m::format::CodecConfig;
use str0m::media::SenderFeedback;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind as RtcKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, VideoOrientation};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Rtc};

use crate::codecs::{codec_info, restricted_codecs, server_codecs};
use crate::lipsync::{SenderClock, TrackReport};
use crate::sdpfrag::IceFragment;
use crate::{EndpointConfig, Error};

/// Who the publisher is, for its tracks' channel ids.
#[derive(Debug, Clone)]
pub struct PublisherInfo {
    pub room: String,
    pub peer: String,
}

/// Which way media flows on this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Viewer,
}

/// Why an endpoint closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it (`DELETE`, replaced publisher, shutdown).
    Closed,
    /// No datagram from the peer within the consent timeout.
    ConsentExpired,
    /// The peer closed DTLS or ICE disconnected for good.
    PeerClosed,
}

/// Something the engine must act on.
#[derive(Debug)]
pub enum EndpointEvent {
    /// ICE and DTLS are up; media flows from now on.
    Connected,
    /// A publisher's RTP packet, to publish on `packet.channel`.
    Media(MediaPacket),
    /// A publisher started sending (or switched to) a codec on one of its tracks.
    ActiveCodec(ChannelId, CodecInfo),
    /// A viewer lost a picture and asks the publisher for a keyframe.
    KeyframeRequest(MediaKind),
    /// The endpoint is finished; drop it.
    Closed(CloseReason),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

impl From<str0m::net::Transmit> for Transmit {
    fn from(t: str0m::net::Transmit) -> Transmit {
        Transmit {
            source: t.source,
            destination: t.destination,
            contents: t.contents.into(),
        }
    }
}

/// str0m's input for one UDP datagram, if str0m can represent it.
pub(crate) fn udp_input(
    now: Instant,
    source: SocketAddr,
    destination: SocketAddr,
    datagram: &[u8],
) -> Option<Input<'_>> {
    let contents = datagram.try_into().ok()?;
    Some(Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents,
        },
    ))
}

/// What [`Endpoint::poll_output`] (and the test client's) returns.
#[derive(Debug)]
pub enum Output<E = EndpointEvent> {
    Transmit(Transmit),
    Event(E),
    /// Nothing more to do until this time (call [`Endpoint::handle_timeout`]).
    Timeout(Instant),
}

/// A track a publisher sends us.
#[derive(Debug)]
struct PublishedTrack {
    mid: Mid,
    kind: MediaKind,
    channel: ChannelId,
    active: Option<CodecInfo>,
    last_keyframe_request: Option<Instant>,
    /// A keyframe was asked for before the track's first packet: send the
    /// request as soon as the receive stream exists.
    keyframe_pending: bool,
    /// A keyframe was asked for within the keyframe interval of the last
    /// request: it goes out when the interval ends (requests aggregate,
    /// none is lost).
    keyframe_deferred: bool,
    /// The track's last RTCP sender report.
    report: Option<TrackReport>,
}

/// A track we send to a viewer.
#[derive(Debug)]
struct SentTrack {
    mid: Mid,
    kind: MediaKind,
    source: Option<ChannelId>,
    rewriter: Option<Rewriter>,
    pt_cache: Option<(CodecInfo, Pt)>,
}

/// Counters of one endpoint, for the engine's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// Media packets a viewer could not send (no payload type for the
    /// packet's codec, no stream, or older than the start of its source's
    /// run).
    pub media_dropped: u64,
    /// Video packets held back from a viewer until the keyframe that starts
    /// its stream (new viewer, publisher switch).
    pub waiting_keyframe: u64,
    /// Keyframe requests that went out to a publisher.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests of a viewer over its limit, not passed on.
    pub keyframe_requests_limited: u64,
}

/// One WebRTC leg of the SFU, sans-IO.
///
/// Methods: getters, then `handle_*` inputs, then `poll_output`.
pub struct Endpoint {
    rtc: Rtc,
    role: Role,
    local_ufrag: String,
    remote_creds: Option<IceCreds>,
    published: Vec<PublishedTrack>,
    sent: Vec<SentTrack>,
    pt_codecs: Vec<(Pt, Option<CodecInfo>)>,
    events: VecDeque<EndpointEvent>,
    last_rx: Instant,
    last_now: Instant,
    consent_timeout: Duration,
    keyframe_interval: Duration,
    viewer_keyframe_interval: Duration,
    /// When this viewer last asked for a keyframe (its own PLI/FIR, or
    /// waiting for the keyframe that starts its stream).
    last_viewer_keyframe: Option<Instant>,
    /// The publisher's NTP clock on ours (lip sync).
    sender_clock: SenderClock,
    connected: bool,
    closed: bool,
    stats: EndpointStats,
}

impl Endpoint {
    /// A WHIP publisher: accepts its offer and returns the SDP answer.
    pub fn publisher(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        who: PublisherInfo,
    ) -> Result<(Endpoint, String), Error> {
        let (mut ep, answer) =
            Endpoint::accept(config, now, offer, Role::Publisher, server_codecs())?;
        for t in &mut ep.published {
            t.channel = ChannelId::for_track(&who.room, &who.peer, t.kind.track_name());
        }
        if ep.published.is_empty() {
            return Err(Error::NoMedia("audio or video track to publish (sendonly)"));
        }
        Ok((ep, answer))
    }

    /// A WHEP viewer: accepts its offer and returns the SDP answer.
    ///
    /// `required` lists the codecs the publisher sends (or may send). The answer
    /// offers only those, and an offer that lacks all of a kind's codecs is
    /// refused with [`Error::NoCommonCodec`]. An empty list allows every codec
    /// the server forwards (no publisher yet).
    pub fn viewer(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        required: &[CodecInfo],
    ) -> Result<(Endpoint, String), Error> {
        let codecs = if required.is_empty() {
            server_codecs()
        } else {
            restricted_codecs(required)
        };
        let (ep, answer) = Endpoint::accept(config, now, offer, Role::Viewer, codecs)?;
        if ep.sent.is_empty() {
            return Err(Error::NoMedia("audio or video track to receive (recvonly)"));
        }
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let wanted: Vec<CodecInfo> = required
                .iter()
                .filter(|c| c.kind() == kind)
                .copied()
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let has = ep
                .sent
                .iter()
                .filter(|t| t.kind == kind)
                .any(|t| ep.negotiated(t.mid).iter().any(|c| wanted.contains(c)));
            if !has {
                let wanted = wanted
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::NoCommonCodec { kind, wanted });
            }
        }
        Ok((ep, answer))
    }

    fn accept(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        role: Role,
        codecs: CodecConfig,
    ) -> Result<(Endpoint, String), Error> {
        let offer_text = offer;
        let remote_creds = crate::sdpfrag::parse_sdpfrag(offer).ok().and_then(|f| {
            Some(IceCreds {
                ufrag: f.ufrag?,
                pass: f.pwd?,
            })
        });
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        let creds = IceCreds::new();
        let local_ufrag = creds.ufrag.clone();
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_crypto_provider(config.crypto.clone())
            .set_dtls_cert(config.dtls_cert.clone())
            .set_local_ice_credentials(creds)
            .set_stats_interval(None);
        *builder.codec_config() = codecs;
        if role == Role::Viewer {
            builder = builder.set_extension_map(viewer_extensions());
        }
        let mut rtc = builder.build(now);
        for addr in &config.candidates {
            let candidate = Candidate::host(*addr, "udp")
                .map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| Error::BadSdp(crate::error::reason(e)))?;
        let mut ep = Endpoint {
            rtc,
            role,
            local_ufrag,
            remote_creds,
            published: Vec::new(),
            sent: Vec::new(),
            pt_codecs: Vec::new(),
            events: VecDeque::new(),
            last_rx: now,
            last_now: now,
            consent_timeout: config.consent_timeout,
            keyframe_interval: config.keyframe_interval,
            viewer_keyframe_interval: config.viewer_keyframe_interval,
            last_viewer_keyframe: None,
            sender_clock: SenderClock::default(),
            connected: false,
            closed: false,
            stats: EndpointStats::default(),
        };
        for mid in offer_mids(offer_text) {
            let Some(media) = ep.rtc.media(mid) else {
                continue;
            };
            let (kind, direction) = (media.kind(), media.direction());
            ep.on_media_added(mid, kind, direction);
        }
        while let Output::Event(_) | Output::Transmit(_) = ep.poll_output(now) {}
        ep.events.clear();
        Ok((ep, answer.to_sdp_string()))
    }

    // ---- getters ----

    pub fn role(&self) -> Role {
        self.role
    }

    /// The server-side ICE ufrag: STUN requests for this endpoint carry it.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The channels this publisher publishes on (empty for a viewer).
    pub fn published_channels(&self) -> impl Iterator<Item = (MediaKind, ChannelId)> + '_ {
        self.published.iter().map(|t| (t.kind, t.channel))
    }

    /// The codecs negotiated for this publisher's tracks, in preference order.
    pub fn negotiated_codecs(&self) -> Vec<CodecInfo> {
        let mut all = Vec::new();
        for t in &self.published {
            all.extend(self.negotiated(t.mid));
        }
        all
    }

    /// The codecs a viewer's leg can receive, over all its tracks (empty for
    /// a publisher).
    pub fn receivable_codecs(&self) -> Vec<CodecInfo> {
        let mut all = Vec::new();
        for t in &self.sent {
            all.extend(self.negotiated(t.mid));
        }
        all
    }

    /// The codec each published track is sending now, once known.
    pub fn active_codecs(&self) -> impl Iterator<Item = CodecInfo> + '_ {
        self.published.iter().filter_map(|t| t.active)
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Media packets given to this viewer that it could not send (no codec in
    /// common with the publisher, or before the start of a switched stream).
    pub fn media_dropped(&self) -> u64 {
        self.stats.media_dropped
    }

    /// This endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The channel a viewer's track of `kind` follows.
    pub fn source(&self, kind: MediaKind) -> Option<ChannelId> {
        self.sent
            .iter()
            .find(|t| t.kind == kind)
            .and_then(|t| t.source)
    }

    fn negotiated(&self, mid: Mid) -> Vec<CodecInfo> {
        let Some(media) = self.rtc.media(mid) else {
            return Vec::new();
        };
        let params = self.rtc.codec_config().params();
        media
            .remote_pts()
            .iter()
            .filter_map(|pt| params.iter().find(|p| p.pt() == *pt))
            .filter_map(codec_info)
            .collect()
    }

    // ---- inputs ----

    /// Whether a datagram from `source` belongs to this endpoint.
    pub fn accepts(
        &self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        udp_input(now, source, destination, datagram).is_some_and(|input| self.rtc.accepts(&input))
    }

    /// A datagram from the peer.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), Error> {
        self.last_now = now;
        if self.closed {
            return Ok(());
        }
        let input = udp_input(now, source, destination, datagram).ok_or(Error::Unrecognized)?;
        if !self.rtc.accepts(&input) {
            return Err(Error::Unrecognized);
        }
        self.rtc.handle_input(input)?;
        self.last_rx = now;
        Ok(())
    }

    /// Time passes: call at (or after) the last [`Output::Timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if self.closed {
            return;
        }
        if now >= self.last_rx + self.consent_timeout {
            self.close_with(CloseReason::ConsentExpired);
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("timeout input refused: {e}");
        }
        let deferred: Vec<MediaKind> = self
            .published
            .iter()
            .filter(|t| t.keyframe_deferred)
            .filter(|t| {
                t.last_keyframe_request
                    .is_none_or(|at| now >= at + self.keyframe_interval)
            })
            .map(|t| t.kind)
            .collect();
        for kind in deferred {
            self.request_keyframe(now, kind);
        }
    }

    /// When the next deferred keyframe request is due.
    fn keyframe_due(&self) -> Option<Instant> {
        self.published
            .iter()
            .filter(|t| t.keyframe_deferred)
            .map(|t| {
                t.last_keyframe_request
                    .map_or(self.last_now, |at| at + self.keyframe_interval)
            })
            .min()
    }

    /// Points a viewer's track of `kind` at a channel; media from other
    /// channels is ignored from now on. The next packet continues the
    /// viewer's sequence numbers (see [`Rewriter`]).
    pub fn subscribe(&mut self, kind: MediaKind, channel: Option<ChannelId>) {
        for t in self.sent.iter_mut().filter(|t| t.kind == kind) {
            t.source = channel;
        }
    }

    /// A viewer sends one media packet from its subscribed channel:
    /// [`Endpoint::queue_media`] then [`Endpoint::flush_media`].
    ///
    /// Returns `false` when the packet was not sent (not connected yet, not
    /// subscribed to the packet's channel, or no payload type for its codec).
    pub fn handle_media(&mut self, now: Instant, packet: &MediaPacket) -> bool {
        let queued = self.queue_media(now, packet);
        if queued {
            self.flush_media(now);
        }
        queued
    }

    /// Queues one media packet of the subscribed channel; it leaves with the
    /// next [`Endpoint::flush_media`] (or any later time input). Queue a
    /// burst, then flush once: str0m's time input is the costly part.
    ///
    /// The viewer's stream has its own sequence space (see [`Rewriter`]).
    /// Video starts, for a new viewer and after a switch of publisher, only
    /// at a keyframe: delta frames before it are held back (counted in
    /// [`EndpointStats::waiting_keyframe`]), and while they are, the viewer
    /// asks for a keyframe as often as its limit allows.
    ///
    /// Returns whether the endpoint has something to send or say: call
    /// [`Endpoint::flush_media`] and drain [`Endpoint::poll_output`] then.
    /// `false` when the packet was not queued (not connected yet, not
    /// subscribed to the packet's channel, no payload type for its codec,
    /// waiting for a keyframe).
    pub fn queue_media(&mut self, now: Instant, packet: &MediaPacket) -> bool {
        self.last_now = now;
        if self.closed || !self.connected || self.role != Role::Viewer {
            return false;
        }
        let Some(idx) = self
            .sent
            .iter()
            .position(|t| t.kind == packet.kind && t.source == Some(packet.channel))
        else {
            return false;
        };
        let Some(pt) = self.pt_for(idx, packet.codec) else {
            self.stats.media_dropped += 1;
            return false;
        };
        let track = &mut self.sent[idx];
        let rewriter = track.rewriter.get_or_insert_with(|| {
            // A random start below 2^15 (RFC 3550 §5.1), ROC 0.
            Rewriter::new(packet.codec.clock_rate, rand::random::<u16>() & 0x7fff)
        });
        if packet.kind == MediaKind::Video
            && rewriter.starts_run(packet.channel, packet.seq)
            && !is_keyframe_start(packet.codec.codec, &packet.payload)
        {
            self.stats.waiting_keyframe += 1;
            return self.viewer_wants_keyframe(now, MediaKind::Video);
        }
        let Some(out) =
            rewriter.rewrite(packet.channel, packet.seq, packet.rtp_time, packet.arrival)
        else {
            self.stats.media_dropped += 1;
            return false;
        };
        let mid = track.mid;
        let nackable = packet.kind == MediaKind::Video;
        // str0m builds this leg's sender reports from the last written
        // (rtp time, wallclock); a wallclock after `now` would void them.
        let wallclock = packet.wallclock.min(now);
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            self.stats.media_dropped += 1;
            return false;
        };
        let mut write = RtpWrite::new(
            pt,
            out.seq.into(),
            out.rtp_time,
            wallclock,
            packet.payload.clone(),
        )
        .marker(packet.marker)
        .nackable(nackable);
        // Header extension values only where there is one to send (the
        // orientation of a phone's video); the common packet carries none.
        if let Some(o) = packet.orientation {
            write = write.ext_vals(ExtensionValues {
                video_orientation: Some(VideoOrientation::from(o)),
                ..Default::default()
            });
        }
        stream.write_rtp(write);
        true
    }

    /// A viewer asks for a keyframe, limited to one per
    /// `viewer_keyframe_interval`. Returns whether an event was queued.
    fn viewer_wants_keyframe(&mut self, now: Instant, kind: MediaKind) -> bool {
        if self
            .last_viewer_keyframe
            .is_some_and(|at| now < at + self.viewer_keyframe_interval)
        {
            self.stats.keyframe_requests_limited += 1;
            return false;
        }
        self.last_viewer_keyframe = Some(now);
        self.events.push_back(EndpointEvent::KeyframeRequest(kind));
        true
    }

    /// Releases the packets queued with [`Endpoint::queue_media`]: str0m's
    /// pacer takes queued packets only on a time input. Drain
    /// [`Endpoint::poll_output`] afterwards.
    pub fn flush_media(&mut self, now: Instant) {
        self.last_now = now;
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("timeout after write refused: {e}");
        }
    }

    /// Asks a publisher for a keyframe on its track of `kind`. Requests
    /// aggregate: at most one goes out per keyframe interval, and one asked
    /// for within the interval goes out when it ends (from
    /// [`Endpoint::handle_timeout`]), so no viewer waits for a keyframe that
    /// was never requested. Returns whether a request went out now.
    pub fn request_keyframe(&mut self, now: Instant, kind: MediaKind) -> bool {
        if self.closed || self.role != Role::Publisher {
            return false;
        }
        let interval = self.keyframe_interval;
        let Some(track) = self.published.iter_mut().find(|t| t.kind == kind) else {
            return false;
        };
        if track.active.is_none() {
            // A request before the first packet is lost on some stacks; send
            // it when the track starts.
            track.keyframe_pending = true;
            return false;
        }
        if track
            .last_keyframe_request
            .is_some_and(|at| now < at + interval)
        {
            track.keyframe_deferred = true;
            return false;
        }
        let mid = track.mid;
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, None) else {
            track.keyframe_pending = true;
            return false;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        track.last_keyframe_request = Some(now);
        track.keyframe_pending = false;
        track.keyframe_deferred = false;
        self.stats.keyframe_requests_sent += 1;
        true
    }

    /// Applies a trickle-ice-sdpfrag PATCH. Returns the answer fragment for
    /// an ICE restart, `None` for plain trickle.
    pub fn handle_fragment(&mut self, fragment: &IceFragment) -> Result<Option<String>, Error> {
        let restart = match (&fragment.ufrag, &fragment.pwd) {
            (Some(ufrag), Some(pwd)) => self
                .remote_creds
                .as_ref()
                .is_none_or(|c| c.ufrag != *ufrag || c.pass != *pwd)
                .then(|| IceCreds {
                    ufrag: ufrag.clone(),
                    pass: pwd.clone(),
                }),
            _ => None,
        };
        let mut answer = None;
        if let Some(remote) = restart {
            let local = IceCreds::new();
            let mut api = self.rtc.direct_api();
            api.set_remote_ice_credentials(remote.clone());
            self.remote_creds = Some(remote);
            api.set_local_ice_credentials(local.clone());
            answer = Some(format!(
                "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
                local.ufrag, local.pass
            ));
            self.local_ufrag = local.ufrag;
        }
        for line in &fragment.candidates {
            let candidate =
                Candidate::from_sdp_string(line).map_err(|e| Error::BadFragment(e.to_string()))?;
            self.rtc.add_remote_candidate(candidate);
        }
        Ok(answer)
    }

    /// Closes the endpoint now (DTLS close_notify and RTCP BYE go out on the
    /// next `poll_output`s).
    pub fn close(&mut self) {
        self.close_with(CloseReason::Closed);
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        // A graceful close: RTCP BYE and DTLS close_notify go out on the next
        // poll_output calls, so the peer learns at once. A peer that stopped
        // answering gets the forced disconnect.
        let graceful = reason == CloseReason::Closed && self.rtc.close().is_ok();
        if !graceful {
            self.rtc.disconnect();
        }
        self.events.push_back(EndpointEvent::Closed(reason));
    }

    // ---- output ----

    /// The next thing to do. Drain until [`Output::Timeout`] after every input.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Output::Event(event);
            }
            if self.closed {
                // What str0m still has to say after disconnect (DTLS
                // close_notify) goes out; nothing else is handled.
                return match self.rtc.poll_output() {
                    Ok(str0m::Output::Transmit(t)) => Output::Transmit(t.into()),
                    _ => Output::Timeout(now + Duration::from_secs(3600)),
                };
            }
            match self.rtc.poll_output() {
                Ok(str0m::Output::Transmit(t)) => return Output::Transmit(t.into()),
                Ok(str0m::Output::Event(e)) => self.on_rtc_event(e),
                Ok(str0m::Output::Timeout(at)) => {
                    let consent = self.last_rx + self.consent_timeout;
                    let keyframe = self.keyframe_due().unwrap_or(consent);
                    return Output::Timeout(at.min(consent).min(keyframe));
                }
                Err(e) => {
                    tracing::debug!("endpoint {} failed: {e}", self.local_ufrag);
                    self.close_with(CloseReason::PeerClosed);
                }
            }
        }
    }

    fn on_rtc_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.events.push_back(EndpointEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // ICE-lite: a disconnected pair may come back; consent expiry
                // (no datagram for consent_timeout) decides.
            }
            Event::MediaAdded(added) => self.on_media_added(added.mid, added.kind, added.direction),
            Event::RtpPacket(packet) => self.on_rtp(packet),
            Event::KeyframeRequest(req) => {
                if let Some(kind) = self.sent.iter().find(|t| t.mid == req.mid).map(|t| t.kind) {
                    self.viewer_wants_keyframe(self.last_now, kind);
                }
            }
            Event::SenderFeedback(feedback) => self.on_sender_report(feedback),
            Event::Closed => self.close_with(CloseReason::PeerClosed),
            _ => {}
        }
    }

    fn on_media_added(&mut self, mid: Mid, kind: RtcKind, direction: Direction) {
        let kind = match kind {
            RtcKind::Audio => MediaKind::Audio,
            RtcKind::Video => MediaKind::Video,
        };
        match self.role {
            Role::Publisher => {
                let receives = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
                if receives && !self.published.iter().any(|t| t.kind == kind) {
                    self.published.push(PublishedTrack {
                        mid,
                        kind,
                        channel: ChannelId(0),
                        active: None,
                        last_keyframe_request: None,
                        keyframe_pending: false,
                        keyframe_deferred: false,
                        report: None,
                    });
                }
            }
            Role::Viewer => {
                let sends = matches!(direction, Direction::SendOnly | Direction::SendRecv);
                if sends && !self.sent.iter().any(|t| t.kind == kind) {
                    self.sent.push(SentTrack {
                        mid,
                        kind,
                        source: None,
                        rewriter: None,
                        pt_cache: None,
                    });
                }
            }
        }
    }

    fn on_rtp(&mut self, packet: RtpPacket) {
        if self.role != Role::Publisher {
            return;
        }
        let pt = packet.header.payload_type;
        let Some(codec) = self.codec_of(pt) else {
            return;
        };
        let Some(track) = self.published.iter_mut().find(|t| t.kind == codec.kind()) else {
            return;
        };
        if track.active != Some(codec) {
            track.active = Some(codec);
            self.events
                .push_back(EndpointEvent::ActiveCodec(track.channel, codec));
        }
        let (kind, pending) = (track.kind, track.keyframe_pending);
        let rtp_time = packet.header.timestamp;
        let wallclock = match &track.report {
            Some(report) => self
                .sender_clock
                .wallclock(report, rtp_time, packet.timestamp),
            None => packet.timestamp,
        };
        let orientation = packet.header.ext_vals.video_orientation.map(|o| o as u8);
        self.events.push_back(EndpointEvent::Media(MediaPacket {
            channel: track.channel,
            kind,
            codec,
            seq: *packet.seq_no,
            rtp_time,
            marker: packet.header.marker,
            arrival: packet.timestamp,
            wallclock,
            orientation,
            payload: packet.payload,
        }));
        if pending {
            self.request_keyframe(packet.timestamp, kind);
        }
    }

    /// A publisher's RTCP sender report: the track's RTP ↔ NTP mapping.
    fn on_sender_report(&mut self, feedback: SenderFeedback) {
        if self.role != Role::Publisher {
            return;
        }
        let Some(track) = self.published.iter_mut().find(|t| t.mid == feedback.mid) else {
            return;
        };
        let clock_rate = track.active.map_or(
            match track.kind {
                MediaKind::Audio => 48_000,
                MediaKind::Video => 90_000,
            },
            |c| c.clock_rate,
        );
        let info = feedback.sender_info;
        track.report = Some(self.sender_clock.on_report(
            info.ntp_time,
            info.rtp_time.numer() as u32,
            clock_rate,
            feedback.received_at,
        ));
    }

    fn codec_of(&mut self, pt: Pt) -> Option<CodecInfo> {
        if let Some((_, c)) = self.pt_codecs.iter().find(|(p, _)| *p == pt) {
            return *c;
        }
        let c = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == pt)
            .and_then(codec_info);
        self.pt_codecs.push((pt, c));
        c
    }

    fn pt_for(&mut self, idx: usize, codec: CodecInfo) -> Option<Pt> {
        if let Some((c, pt)) = self.sent[idx].pt_cache {
            if c == codec {
                return Some(pt);
            }
        }
        let mid = self.sent[idx].mid;
        let negotiated = self.rtc.media(mid)?.remote_pts().to_vec();
        let params = self.rtc.codec_config().params();
        let pt = negotiated.into_iter().find(|pt| {
            params
                .iter()
                .any(|p| p.pt() == *pt && codec_info(p) == Some(codec))
        })?;
        self.sent[idx].pt_cache = Some((codec, pt));
        Some(pt)
    }
}

/// The RTP header extensions a viewer's leg negotiates: str0m's standard
/// set without transport-wide congestion control. corecast forwards one
/// layer per track and estimates no viewer's downlink, so that feedback
/// (about 20 RTCP packets a second from every viewer, each decrypted and
/// parsed) and its per-packet sequence register would be work for nobody.
/// Publishers keep it: their browsers' send-side estimate needs it.
fn viewer_extensions() -> ExtensionMap {
    let mut exts = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if *ext != Extension::TransportSequenceNumber {
            exts.set(id, ext.clone());
        }
    }
    exts
}

/// The media ids of an offer, in m-line order.
fn offer_mids(offer: &str) -> Vec<Mid> {
    offer
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .collect()
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.role)
            .field("local_ufrag", &self.local_ufrag)
            .field("connected", &self.connected)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}
