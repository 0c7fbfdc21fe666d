//! One WebRTC leg: a WHIP publisher or a WHEP viewer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_media::dd::DdReader;
use corecast_media::{
    is_keyframe_start, ChannelId, CloseReason, Codec, CodecInfo, Dependency, EndpointStats, Layer,
    LayerPacket, LayerSelector, MediaKind, MediaPacket, Output, Preference, Rewriter,
    SelectorConfig, SlotId, Transmit, Verdict, MAX_SPATIAL,
};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::format::CodecConfig;
use str0m::media::SenderFeedback;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind as RtcKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, VideoOrientation};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Rtc};

use crate::codecs::{codec_info, restricted_codecs, server_codecs, viewer_codecs};
use crate::dependency::{with_dependency_descriptor, DdBytes};
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
    /// A WHIP publisher: sends tracks `audio` and `video`.
    Publisher,
    /// A WHEP viewer: one audio and one video slot.
    Viewer,
    /// An SDK connection: named published tracks, any number of receive
    /// slots, RPC on a data channel.
    Peer,
}

/// What the shard gets from an endpoint (the transport-neutral event).
pub type EndpointEvent = corecast_media::Event;

/// str0m's datagram as the engine's.
pub(crate) fn transmit(t: str0m::net::Transmit) -> Transmit {
    Transmit {
        source: t.source,
        destination: t.destination,
        contents: t.contents.into(),
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

/// A track a publisher sends us.
#[derive(Debug)]
struct InTrack {
    mid: Mid,
    kind: MediaKind,
    /// Its name in the room (`audio`, `video`, or what the SDK named it).
    name: String,
    channel: ChannelId,
    active: Option<CodecInfo>,
    /// The RIDs of its simulcast layers, lowest first (the order of the
    /// offer's `a=simulcast:send`); empty for a track of one stream.
    rids: Vec<Rid>,
    /// Per spatial layer (one without simulcast): keyframe requests and the
    /// last RTCP sender report (each simulcast stream has its own RTP clock
    /// offset).
    layers: Vec<InLayer>,
    /// Spatial layers seen in its one stream's VP9 payloads (SVC), 0 until
    /// a payload shows more than one.
    svc_layers: u8,
}

/// One stream of a published track: a simulcast layer, or the only one.
#[derive(Debug, Default)]
struct InLayer {
    last_keyframe_request: Option<Instant>,
    /// A keyframe was asked for before the stream's first packet: send the
    /// request as soon as the receive stream exists.
    keyframe_pending: bool,
    /// A keyframe was asked for within the keyframe interval of the last
    /// request: it goes out when the interval ends (requests aggregate,
    /// none is lost).
    keyframe_deferred: bool,
    /// Whether a packet of this stream arrived.
    seen: bool,
    /// Its dependency descriptors' structure, when it sends them.
    dd: DdReader,
    report: Option<TrackReport>,
}

/// A receive slot: a track we send to the user, playing one channel.
#[derive(Debug)]
struct SentTrack {
    mid: Mid,
    kind: MediaKind,
    source: Option<ChannelId>,
    rewriter: Option<Rewriter>,
    pt_cache: Option<(CodecInfo, Pt)>,
    /// When this slot last asked for a keyframe (the user's PLI/FIR, or
    /// waiting for the keyframe that starts its stream).
    last_keyframe: [Option<Instant>; corecast_media::MAX_SPATIAL],
    /// The first packet of the current source went out ([`Event::SlotLive`]).
    live: bool,
    /// Its retransmission buffer is bounded by the node's NACK window (set
    /// once, before its first packet: setting it empties the buffer).
    nack_window_set: bool,
    /// Which layer of a simulcast channel it forwards (video).
    selector: LayerSelector,
    /// Keeps VP8 picture ids continuous across layer switches.
    vp8: corecast_media::vp8::Vp8Rewriter,
    /// Its weight in the share of the leg's estimate (video).
    priority: u8,
}

impl SentTrack {
    fn new(mid: Mid, kind: MediaKind) -> SentTrack {
        SentTrack {
            mid,
            kind,
            source: None,
            rewriter: None,
            pt_cache: None,
            last_keyframe: [None; corecast_media::MAX_SPATIAL],
            live: false,
            nack_window_set: false,
            selector: LayerSelector::new(SelectorConfig::default()),
            vp8: corecast_media::vp8::Vp8Rewriter::new(),
            priority: 1,
        }
    }

    /// The simulcast stream being forwarded (an SVC track has one).
    fn stream(&self) -> Option<u8> {
        let current = self.selector.current()?;
        Some(if self.selector.is_svc() {
            0
        } else {
            current.spatial
        })
    }

    /// What the stats gauges count of this slot: the layer it forwards and
    /// whether it is paused.
    fn layer_state(&self) -> (Option<u8>, bool) {
        (
            self.selector.current().map(|l| l.spatial),
            self.selector.is_paused(),
        )
    }
}

/// How a WHEP viewer's leg adapts to its link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerOptions {
    /// Negotiate transport-wide congestion control and estimate the
    /// viewer's bandwidth, to pick the simulcast layer its link carries.
    /// Costs the feedback's processing (docs/benchmarks.md): worth it when
    /// the stream has layers to choose from.
    pub adaptive: bool,
    /// No spatial layer above this one (the viewer's preference).
    pub max_spatial: Option<u8>,
}

/// Bits per second kept for a leg's audio (Opus at up to 32 kbit/s with
/// its packet overhead) when its estimate is shared among its video slots.
const AUDIO_RESERVE: u64 = 64_000;
/// How often a leg whose estimate is below what it wants asks its
/// estimator for a probe.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// The estimator's first guess for an adaptive viewer's link.
const INITIAL_ESTIMATE: u64 = 1_000_000;

/// Receive slots of one kind an SDK connection may offer, at most.
pub const MAX_SLOTS_PER_KIND: usize = 32;
/// RPC messages larger than this are refused (see docs/sdk-protocol.md).
pub const MAX_RPC_MESSAGE: usize = 16_384;
/// RPC requests per second of one connection, and the burst allowed.
pub const RPC_RATE: u32 = 50;
pub const RPC_BURST: u32 = 100;
/// Messages for the user held until its data channel opens, at most.
const RPC_QUEUE: usize = 256;
/// How long a closing connection keeps sending what its data channel holds.
const CLOSE_LINGER: Duration = Duration::from_millis(300);

/// The RPC side of an SDK connection: its data channel and limits.
struct Rpc {
    channel: Option<str0m::channel::ChannelId>,
    /// Messages for the user written before the channel opened.
    queue: VecDeque<String>,
    limit: corecast_media::TokenBucket,
}

/// One WebRTC leg of the SFU, sans-IO.
///
/// Methods: getters, then `handle_*` inputs, then `poll_output`.
pub struct Endpoint {
    rtc: Rtc,
    role: Role,
    local_ufrag: String,
    remote_creds: Option<IceCreds>,
    published: Vec<InTrack>,
    sent: Vec<SentTrack>,
    /// Who publishes (channel ids of its tracks); none for a viewer.
    who: Option<PublisherInfo>,
    /// The SDK's names for its send transceivers, by mid.
    names: Vec<(String, String)>,
    /// Published track and spatial layer per SSRC (a Peer publishes several
    /// of a kind, a simulcast track one SSRC per layer).
    ssrc_tracks: Vec<(u32, usize, u8)>,
    /// The simulcast RIDs of each media section of the offer, lowest first.
    offer_rids: Vec<(Mid, Vec<Rid>)>,
    rpc: Rpc,
    /// A close asked for while the data channel still had messages to send.
    close_at: Option<Instant>,
    pt_codecs: Vec<(Pt, Option<CodecInfo>)>,
    events: VecDeque<EndpointEvent>,
    last_rx: Instant,
    last_now: Instant,
    consent_timeout: Duration,
    keyframe_interval: Duration,
    viewer_keyframe_interval: Duration,
    nack_window: Duration,
    /// The publisher's NTP clock on ours (lip sync).
    sender_clock: SenderClock,
    /// What this leg last asked its bandwidth estimator to find (minimum,
    /// desired), bits per second.
    bwe_wanted: (u64, u64),
    /// When a leg that wants more than its estimate may ask for a probe
    /// again, and how many it asked for.
    probe_at: Option<Instant>,
    probes: u64,
    /// A viewer's preferred top spatial layer (new slots start with it).
    max_spatial: Option<u8>,
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
        let (ep, answer) = Endpoint::accept(
            config,
            now,
            offer,
            Role::Publisher,
            server_codecs(),
            Some(who),
            Vec::new(),
            false,
        )?;
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
        Endpoint::viewer_with(config, now, offer, required, ViewerOptions::default())
    }

    /// [`Endpoint::viewer`] with options: an adaptive leg estimates the
    /// viewer's bandwidth and forwards the simulcast layer that fits it.
    pub fn viewer_with(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        required: &[CodecInfo],
        options: ViewerOptions,
    ) -> Result<(Endpoint, String), Error> {
        let codecs = if required.is_empty() {
            viewer_codecs()
        } else {
            restricted_codecs(required)
        };
        let (mut ep, answer) = Endpoint::accept(
            config,
            now,
            offer,
            Role::Viewer,
            codecs,
            None,
            Vec::new(),
            options.adaptive,
        )?;
        ep.max_spatial = options.max_spatial;
        for t in &mut ep.sent {
            t.selector.set_max_spatial(now, options.max_spatial);
        }
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
            let has = ep.sent.iter().filter(|t| t.kind == kind).any(|t| {
                ep.negotiated(t.mid)
                    .iter()
                    .any(|c| wanted.iter().any(|w| c.plays(w)))
            });
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

    /// An SDK connection (docs/sdk-protocol.md): publishes the tracks of its
    /// send transceivers into `who.room` as `who.peer`, named by `names`
    /// (`(mid, name)`; an unnamed one takes its kind's name if free), plays
    /// subscriptions in its receive transceivers (slots), and speaks RPC on
    /// its data channel. The offer must have a data channel. It estimates no
    /// bandwidth: its video slots get the top layer of a simulcast track, or
    /// the one their `max_layer` allows ([`Endpoint::peer_with`]).
    pub fn peer(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        who: PublisherInfo,
        names: Vec<(String, String)>,
    ) -> Result<(Endpoint, String), Error> {
        Endpoint::peer_with(config, now, offer, who, names, false)
    }

    /// [`Endpoint::peer`]; `adaptive` also estimates the user's downlink and
    /// gives its video slots the simulcast layers that fit their shares.
    /// Not the default: str0m's pacer then holds media at 1.1 × an estimate
    /// that starts low, and a single-layer track above it queues
    /// (docs/adaptive-forwarding.md).
    pub fn peer_with(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        who: PublisherInfo,
        names: Vec<(String, String)>,
        adaptive: bool,
    ) -> Result<(Endpoint, String), Error> {
        if !offer.lines().any(|l| l.starts_with("m=application")) {
            return Err(Error::NoMedia("data channel (m=application) for the RPC"));
        }
        if let Some(kind) = too_many_slots(offer) {
            return Err(Error::BadSdp(format!(
                "more than {MAX_SLOTS_PER_KIND} {kind} receive slots (recvonly)"
            )));
        }
        Endpoint::accept(
            config,
            now,
            offer,
            Role::Peer,
            viewer_codecs(),
            Some(who),
            names,
            adaptive,
        )
    }

    /// `adaptive`: estimate the user's downlink (transport-wide congestion
    /// control) and forward the simulcast layers that fit it.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        config: &EndpointConfig,
        now: Instant,
        offer: &str,
        role: Role,
        codecs: CodecConfig,
        who: Option<PublisherInfo>,
        names: Vec<(String, String)>,
        adaptive: bool,
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
        let extensions = match role == Role::Viewer && !adaptive {
            true => viewer_extensions(),
            false => ExtensionMap::standard(),
        };
        builder = builder.set_extension_map(with_dependency_descriptor(extensions));
        if adaptive {
            builder = builder.enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE)));
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
            who,
            names,
            ssrc_tracks: Vec::new(),
            offer_rids: offer_simulcast(offer_text),
            rpc: Rpc {
                channel: None,
                queue: VecDeque::new(),
                limit: corecast_media::TokenBucket::new(RPC_RATE, RPC_BURST),
            },
            close_at: None,
            pt_codecs: Vec::new(),
            events: VecDeque::new(),
            last_rx: now,
            last_now: now,
            consent_timeout: config.consent_timeout,
            keyframe_interval: config.keyframe_interval,
            viewer_keyframe_interval: config.viewer_keyframe_interval,
            nack_window: config.nack_window,
            sender_clock: SenderClock::default(),
            bwe_wanted: (0, 0),
            probe_at: None,
            probes: 0,
            max_spatial: None,
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

    /// The tracks this endpoint publishes, with their names and codecs.
    pub fn published_tracks(&self) -> Vec<corecast_media::PublishedTrack> {
        self.published
            .iter()
            .map(|t| corecast_media::PublishedTrack {
                name: t.name.clone(),
                kind: t.kind,
                channel: t.channel,
                codecs: self.negotiated(t.mid),
                layers: (t.rids.len() as u8).max(t.svc_layers).max(1),
            })
            .collect()
    }

    /// The receive slots (a viewer's or an SDK connection's receive
    /// transceivers), in offer order; a slot's id is its index.
    pub fn slots(&self) -> Vec<corecast_media::Slot> {
        self.sent
            .iter()
            .enumerate()
            .map(|(i, t)| corecast_media::Slot {
                id: SlotId(i as u16),
                kind: t.kind,
                label: t.mid.to_string(),
                codecs: self.negotiated(t.mid),
            })
            .collect()
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
        if self.close_at.is_some_and(|at| now >= at) {
            self.close_with(CloseReason::Closed);
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!("timeout input refused: {e}");
        }
        let mut deferred = Vec::new();
        for t in &self.published {
            for (i, l) in t.layers.iter().enumerate() {
                let due = l
                    .last_keyframe_request
                    .is_none_or(|at| now >= at + self.keyframe_interval);
                if l.keyframe_deferred && due {
                    deferred.push((t.channel, i as u8));
                }
            }
        }
        for (channel, layer) in deferred {
            self.request_keyframe(now, channel, Some(layer));
        }
    }

    /// When the next deferred keyframe request is due.
    fn keyframe_due(&self) -> Option<Instant> {
        self.published
            .iter()
            .flat_map(|t| &t.layers)
            .filter(|l| l.keyframe_deferred)
            .map(|l| {
                l.last_keyframe_request
                    .map_or(self.last_now, |at| at + self.keyframe_interval)
            })
            .min()
    }

    /// Points a viewer's track of `kind` at a channel; media from other
    /// channels is ignored from now on. The next packet continues the
    /// viewer's sequence numbers (see [`Rewriter`]).
    pub fn subscribe(&mut self, kind: MediaKind, channel: Option<ChannelId>) {
        for i in 0..self.sent.len() {
            if self.sent[i].kind == kind {
                self.point_slot(i, channel);
            }
        }
    }

    /// Points one receive slot at a channel (or stops it), like
    /// [`Endpoint::subscribe`] for one slot.
    pub fn subscribe_slot(&mut self, slot: SlotId, channel: Option<ChannelId>) {
        let i = usize::from(slot.0);
        if self.sent.get(i).is_some_and(|t| t.source != channel) {
            self.point_slot(i, channel);
        }
    }

    /// A slot plays another channel: its layer choice starts over (the
    /// rewriters keep the stream continuous).
    fn point_slot(&mut self, i: usize, channel: Option<ChannelId>) {
        let now = self.last_now;
        let max = self.max_spatial;
        let Some(t) = self.sent.get_mut(i) else {
            return;
        };
        let before = t.layer_state();
        t.source = channel;
        t.live = false;
        let estimate = t.selector.estimate();
        t.selector = LayerSelector::new(SelectorConfig::default());
        t.selector.set_max_spatial(now, max);
        if let Some(e) = estimate {
            t.selector.set_estimate(now, e);
        }
        self.layer_moved(before, (None, false));
    }

    /// The viewer's preference for one slot: its top spatial layer and
    /// its priority in the share of the link.
    pub fn prefer(&mut self, now: Instant, slot: SlotId, preference: Preference) {
        if let Some(t) = self.sent.get_mut(usize::from(slot.0)) {
            let before = t.layer_state();
            t.selector.set_max_spatial(now, preference.max_spatial);
            t.priority = preference.priority.clamp(1, Preference::MAX_PRIORITY);
            let after = t.layer_state();
            self.layer_moved(before, after);
        }
    }

    /// Keeps the layer counters in step with a slot whose forwarded layer
    /// or pause changed from `before` to `after`.
    fn layer_moved(&mut self, before: (Option<u8>, bool), after: (Option<u8>, bool)) {
        if before == after {
            return;
        }
        let l = &mut self.stats.layers;
        if let Some(b) = before.0 {
            let n = &mut l.on_layer[usize::from(b)];
            *n = n.saturating_sub(1);
        }
        if let Some(a) = after.0 {
            l.on_layer[usize::from(a)] += 1;
        }
        if after.1 && !before.1 {
            l.pauses += 1;
            l.paused += 1;
        } else if before.1 && !after.1 {
            l.paused = l.paused.saturating_sub(1);
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
        if self.closed || !self.connected || self.sent.is_empty() {
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
        // The simulcast stream: each is a source of its own for the
        // rewriters (SVC layers share their stream's numbers).
        let spatial = packet.layer.spatial;
        let source = packet.channel.layer(spatial);
        let mut switched = false;
        let mut marker = packet.marker;
        let mut vp8_desc = None;
        if packet.kind == MediaKind::Video {
            let (codec, payload) = (packet.codec.codec, &packet.payload);
            // VP8's descriptor is read once: for the layer, a dropped
            // picture and the picture-id patch.
            vp8_desc = match codec {
                Codec::Vp8 => corecast_media::vp8::parse(payload),
                _ => None,
            };
            // What the publisher's endpoint read of a dependency
            // descriptor (it knows the stream's structure), else the
            // payload descriptor. VP8 keeps its own: its picture ids are
            // rewritten from it.
            let described = match (&vp8_desc, &packet.dependency) {
                (Some(d), _) => LayerPacket::vp8(packet.layer, d),
                (None, Some(d)) => d.layer,
                (None, None) => LayerPacket::describe(codec, packet.layer, payload),
            };
            let track = &mut self.sent[idx];
            let before = track.layer_state();
            let counted = track.selector.stats();
            let verdict = track.selector.on_packet(now, described, payload.len(), || {
                is_keyframe_start(codec, payload)
            });
            let (after, starting) = (track.layer_state(), track.selector.starting());
            let waits = track.selector.wants_keyframe();
            let current = track.selector.current();
            let svc = track.selector.is_svc();
            if verdict == Verdict::Drop {
                // A packet of the stream being forwarded (a temporal or SVC
                // layer the viewer does not get): the ones after it close
                // the gap it leaves.
                if let Some(r) = track.rewriter.as_mut() {
                    if r.source() == Some(source) {
                        r.skip(source, packet.seq);
                        if let Some(d) = vp8_desc.as_ref().filter(|_| current.is_some()) {
                            track.vp8.drop_picture(d);
                        }
                    }
                }
            }
            let now_counted = track.selector.stats();
            self.layer_moved(before, after);
            let l = &mut self.stats.layers;
            l.switches_up += now_counted.switches_up - counted.switches_up;
            l.switches_down += now_counted.switches_down - counted.switches_down;
            // A packet of the stream whose keyframe it waits for (to start,
            // or to switch): ask for that keyframe (within the slot's
            // limit).
            let asked = match waits == Some(spatial) {
                true => {
                    if starting && verdict == Verdict::Drop {
                        self.stats.waiting_keyframe += 1;
                    }
                    self.viewer_wants_keyframe(now, idx, Some(spatial))
                }
                false => false,
            };
            match verdict {
                Verdict::Forward => {}
                Verdict::Switch => switched = true,
                Verdict::Drop => return asked,
            }
            // SVC: the viewer's top layer ends its pictures.
            if svc && described.frame_end {
                marker |= current.is_some_and(|c| c.spatial == described.layer.spatial);
            }
        }
        let track = &mut self.sent[idx];
        let rewriter = track.rewriter.get_or_insert_with(|| {
            // A random start below 2^15 (RFC 3550 §5.1), ROC 0.
            Rewriter::new(packet.codec.clock_rate, rand::random::<u16>() & 0x7fff)
        });
        if switched {
            // A layer (re)started at its keyframe: even the same layer after
            // a pause continues the viewer's numbers without a gap.
            rewriter.break_run();
        }
        let new_run = rewriter.starts_run(source, packet.seq);
        if packet.kind == MediaKind::Video
            && new_run
            && !switched
            && !is_keyframe_start(packet.codec.codec, &packet.payload)
        {
            self.stats.waiting_keyframe += 1;
            return self.viewer_wants_keyframe(now, idx, Some(spatial));
        }
        let Some(out) = rewriter.rewrite(source, packet.seq, packet.rtp_time, packet.arrival)
        else {
            self.stats.media_dropped += 1;
            return false;
        };
        let vp8_patch = match packet.codec.codec {
            Codec::Vp8 => vp8_desc
                .or_else(|| corecast_media::vp8::parse(&packet.payload))
                .and_then(|d| vp8_patch(&mut track.vp8, new_run, &d, &packet.payload)),
            _ => None,
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
        .marker(marker)
        .nackable(nackable);
        if let Some(patch) = vp8_patch {
            write = write.vp8_patch(patch);
        }
        // Header extension values only where there is one to send (the
        // orientation of a phone's video, a dependency descriptor, which
        // goes unchanged: the viewer's decoder follows references by
        // frame number); the common packet carries none.
        if packet.orientation.is_some() || packet.dependency.is_some() {
            let mut ext = ExtensionValues {
                video_orientation: packet.orientation.map(VideoOrientation::from),
                ..Default::default()
            };
            if let Some(d) = &packet.dependency {
                ext.user_values.set(DdBytes(d.descriptor.clone()));
            }
            write = write.ext_vals(ext);
        }
        // Once per leg; at the default the leg keeps str0m's own buffer.
        if !track.nack_window_set {
            track.nack_window_set = true;
            if self.nack_window != crate::config::DEFAULT_NACK_WINDOW {
                stream.set_rtx_cache(
                    crate::config::NACK_MAX_PACKETS,
                    self.nack_window,
                    crate::config::RTX_RATIO_CAP,
                );
            }
        }
        stream.write_rtp(write);
        if !track.live {
            track.live = true;
            if self.role == Role::Peer {
                self.events
                    .push_back(EndpointEvent::SlotLive(SlotId(idx as u16)));
            }
        }
        true
    }

    /// A slot asks for a keyframe of the channel it plays (of one spatial
    /// layer, or every layer with `None`), limited to one per layer per
    /// `viewer_keyframe_interval`. Returns whether an event was queued.
    fn viewer_wants_keyframe(&mut self, now: Instant, idx: usize, layer: Option<u8>) -> bool {
        let interval = self.viewer_keyframe_interval;
        let Some(track) = self.sent.get_mut(idx) else {
            return false;
        };
        let Some(channel) = track.source else {
            return false;
        };
        // Each layer has its own limit: a switch to another layer is not
        // held up by the user's requests for the one it gets.
        let Some(last) = track.last_keyframe.get_mut(usize::from(layer.unwrap_or(0))) else {
            return false;
        };
        if last.is_some_and(|at| now < at + interval) {
            self.stats.keyframe_requests_limited += 1;
            return false;
        }
        *last = Some(now);
        self.events
            .push_back(EndpointEvent::KeyframeRequest(channel, layer));
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

    /// Asks a publisher for a keyframe on its track of `channel`: of one
    /// spatial layer (a simulcast stream), or of every layer with `None`.
    /// Requests aggregate per layer: at most one goes out per keyframe
    /// interval, and one asked for within the interval goes out when it ends
    /// (from [`Endpoint::handle_timeout`]), so no viewer waits for a
    /// keyframe that was never requested. Returns whether a request went
    /// out now.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        channel: ChannelId,
        layer: Option<u8>,
    ) -> bool {
        if self.closed {
            return false;
        }
        let Some(idx) = self.published.iter().position(|t| t.channel == channel) else {
            return false;
        };
        let layers = self.published[idx].layers.len() as u8;
        match layer {
            Some(l) => l < layers && self.request_layer_keyframe(now, idx, l),
            None => (0..layers).fold(false, |sent, l| {
                self.request_layer_keyframe(now, idx, l) | sent
            }),
        }
    }

    fn request_layer_keyframe(&mut self, now: Instant, idx: usize, layer: u8) -> bool {
        let interval = self.keyframe_interval;
        let track = &mut self.published[idx];
        let (mid, rid) = (track.mid, track.rids.get(usize::from(layer)).copied());
        let Some(state) = track.layers.get_mut(usize::from(layer)) else {
            return false;
        };
        if !state.seen {
            // A request before the first packet is lost on some stacks; send
            // it when the stream starts.
            state.keyframe_pending = true;
            return false;
        }
        if state
            .last_keyframe_request
            .is_some_and(|at| now < at + interval)
        {
            state.keyframe_deferred = true;
            return false;
        }
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, rid) else {
            state.keyframe_pending = true;
            return false;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        state.last_keyframe_request = Some(now);
        state.keyframe_pending = false;
        state.keyframe_deferred = false;
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

    /// Closes the endpoint once what its data channel holds had time to go
    /// out (an SDK connection told why it is closed); at once otherwise.
    pub fn close_soon(&mut self, now: Instant) {
        if self.rpc.channel.is_some() {
            self.close_at.get_or_insert(now + CLOSE_LINGER);
        } else {
            self.close();
        }
    }

    /// Sends a message on the RPC data channel (held until it opens, at most
    /// `RPC_QUEUE` of them).
    pub fn send_rpc(&mut self, text: String) {
        if self.closed {
            return;
        }
        let Some(id) = self.rpc.channel else {
            if self.rpc.queue.len() < RPC_QUEUE {
                self.rpc.queue.push_back(text);
            }
            return;
        };
        let written = self
            .rtc
            .channel(id)
            .map(|mut ch| ch.write(false, text.as_bytes()));
        if !matches!(written, Some(Ok(true))) {
            tracing::debug!("endpoint {}: rpc message not written", self.local_ufrag);
        }
    }

    /// A message from the user's data channel: within the limits it becomes
    /// [`EndpointEvent::Rpc`]; over them it is answered here and counted.
    fn on_rpc_message(&mut self, data: &[u8]) {
        if data.len() > MAX_RPC_MESSAGE {
            self.stats.rpc_too_large += 1;
            self.send_rpc(crate::rpclimit::too_large(data.len()));
            return;
        }
        if !self.rpc.limit.allow(self.last_now) {
            self.stats.rpc_rate_limited += 1;
            self.send_rpc(crate::rpclimit::rate_limited(data));
            return;
        }
        match std::str::from_utf8(data) {
            Ok(text) => self.events.push_back(EndpointEvent::Rpc(text.to_string())),
            Err(_) => {
                self.stats.rpc_not_text += 1;
                self.send_rpc(crate::rpclimit::not_utf8());
            }
        }
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
                    Ok(str0m::Output::Transmit(t)) => Output::Transmit(transmit(t)),
                    _ => Output::Timeout(now + Duration::from_secs(3600)),
                };
            }
            match self.rtc.poll_output() {
                Ok(str0m::Output::Transmit(t)) => return Output::Transmit(transmit(t)),
                Ok(str0m::Output::Event(e)) => self.on_rtc_event(e),
                Ok(str0m::Output::Timeout(at)) => {
                    let consent = self.last_rx + self.consent_timeout;
                    let keyframe = self.keyframe_due().unwrap_or(consent);
                    let close = self.close_at.unwrap_or(consent);
                    return Output::Timeout(at.min(consent).min(keyframe).min(close));
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
                // The user lost a picture of the layer it gets.
                if let Some(idx) = self.sent.iter().position(|t| t.mid == req.mid) {
                    let layer = self.sent[idx].stream();
                    self.viewer_wants_keyframe(self.last_now, idx, layer);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.on_estimate(estimate.as_u64());
            }
            // The first channel the user opens carries the RPC.
            Event::ChannelOpen(id, _label)
                if self.role == Role::Peer && self.rpc.channel.is_none() =>
            {
                self.rpc.channel = Some(id);
                for text in std::mem::take(&mut self.rpc.queue) {
                    self.send_rpc(text);
                }
            }
            Event::ChannelData(data) if Some(data.id) == self.rpc.channel => {
                self.on_rpc_message(&data.data);
            }
            Event::ChannelClose(id) if Some(id) == self.rpc.channel => {
                // The RPC is gone: the connection is of no use any more.
                self.close_with(CloseReason::PeerClosed);
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
        // Our direction: we receive what the user publishes, we send slots.
        let receives = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
        let sends = matches!(direction, Direction::SendOnly | Direction::SendRecv);
        let (publishes, plays) = match self.role {
            Role::Publisher => (receives, false),
            Role::Viewer => (false, sends),
            Role::Peer => (receives, sends),
        };
        // str0m reports the offer's media again as it connects: a mid is
        // taken once.
        if publishes && !self.published.iter().any(|t| t.mid == mid) {
            self.add_published(mid, kind);
        }
        let one_per_kind = self.role == Role::Viewer;
        let of_kind = self.sent.iter().filter(|t| t.kind == kind).count();
        let known = self.sent.iter().any(|t| t.mid == mid);
        if plays && !known && !(one_per_kind && of_kind > 0) && of_kind < MAX_SLOTS_PER_KIND {
            let mut slot = SentTrack::new(mid, kind);
            slot.selector
                .set_max_spatial(self.last_now, self.max_spatial);
            self.sent.push(slot);
        }
    }

    /// A track the user publishes: WHIP's are `audio` and `video`, an SDK
    /// connection names them (a send transceiver it did not name takes its
    /// kind's name if free, else it is ignored).
    fn add_published(&mut self, mid: Mid, kind: MediaKind) {
        let Some(who) = &self.who else {
            return;
        };
        let given = self
            .names
            .iter()
            .find(|(m, _)| *m == *mid)
            .map(|(_, n)| n.clone());
        let name = match (self.role, given) {
            (Role::Peer, Some(name)) => name,
            _ => kind.track_name().to_string(),
        };
        if self.published.iter().any(|t| t.name == name) {
            return;
        }
        let channel = ChannelId::for_track(&who.room, &who.peer, &name);
        let rids: Vec<Rid> = match kind {
            MediaKind::Video => self
                .offer_rids
                .iter()
                .find(|(m, _)| *m == mid)
                .map(|(_, r)| r.clone())
                .unwrap_or_default(),
            MediaKind::Audio => Vec::new(),
        };
        let layers = (0..rids.len().max(1)).map(|_| InLayer::default()).collect();
        self.published.push(InTrack {
            mid,
            kind,
            name,
            channel,
            active: None,
            rids,
            layers,
            svc_layers: 0,
        });
    }

    fn on_rtp(&mut self, packet: RtpPacket) {
        if self.published.is_empty() {
            return;
        }
        let pt = packet.header.payload_type;
        let Some(codec) = self.codec_of(pt) else {
            return;
        };
        let Some((idx, spatial)) = self.track_of(*packet.header.ssrc, codec.kind()) else {
            return;
        };
        let track = &mut self.published[idx];
        if track.active != Some(codec) {
            track.active = Some(codec);
            self.events
                .push_back(EndpointEvent::ActiveCodec(track.channel, codec));
        }
        if codec.codec == Codec::Vp9 && track.rids.len() <= 1 {
            // One stream that may be SVC: its keyframes' scalability
            // structure, or a packet of an upper layer, says so.
            if let Some(d) = corecast_media::vp9::parse(&packet.payload) {
                let seen = d.ss_spatial_layers.unwrap_or(1).max(d.sid + 1);
                let layers = seen.min(corecast_media::MAX_SPATIAL as u8);
                if layers > track.svc_layers.max(1) {
                    track.svc_layers = layers;
                    self.events
                        .push_back(EndpointEvent::TrackLayers(track.channel, layers));
                }
            }
        }
        let one_stream = track.rids.len() <= 1;
        let Some(layer) = track.layers.get_mut(usize::from(spatial)) else {
            return;
        };
        layer.seen = true;
        // A dependency descriptor is read with its stream's structure (the
        // keyframes carry it) while that is at hand: here. Only for the
        // codecs whose layers nothing else names: VP8 and VP9 name theirs in
        // the payload descriptor, which viewers read too, so their
        // descriptors (Chromium attaches one to every packet of a layered
        // stream) cost nothing per viewer and are not forwarded.
        let dependency = match packet.header.ext_vals.user_values.get::<DdBytes>() {
            Some(DdBytes(bytes)) if matches!(codec.codec, Codec::Av1 | Codec::H264) => layer
                .dd
                .describe(bytes, spatial)
                .map(|described| Dependency {
                    descriptor: bytes.clone(),
                    layer: described,
                }),
            _ => None,
        };
        let svc_in_structure = match (&dependency, layer.dd.structure()) {
            (Some(_), Some(s)) if one_stream => s.spatial_layers().min(MAX_SPATIAL) as u8,
            _ => 0,
        };
        if svc_in_structure > track.svc_layers.max(1) {
            track.svc_layers = svc_in_structure;
            self.events
                .push_back(EndpointEvent::TrackLayers(track.channel, svc_in_structure));
        }
        let Some(layer) = track.layers.get_mut(usize::from(spatial)) else {
            return;
        };
        let (kind, pending, channel) = (track.kind, layer.keyframe_pending, track.channel);
        let rtp_time = packet.header.timestamp;
        let wallclock = match &layer.report {
            Some(report) => self
                .sender_clock
                .wallclock(report, rtp_time, packet.timestamp),
            None => packet.timestamp,
        };
        let orientation = packet.header.ext_vals.video_orientation.map(|o| o as u8);
        let audio_level = packet
            .header
            .ext_vals
            .audio_level
            .map(|l| l.unsigned_abs().min(127));
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
            layer: Layer {
                spatial,
                temporal: 0,
            },
            audio_level,
            dependency,
            payload: packet.payload,
        }));
        if pending {
            self.request_keyframe(packet.timestamp, channel, Some(spatial));
        }
    }

    /// A new estimate of the user's downlink: shared among the video slots
    /// that play something (after the audio's share), it picks their
    /// layers; the estimator is told what to probe for next.
    fn on_estimate(&mut self, bps: u64) {
        let now = self.last_now;
        self.stats.layers.estimate_bps = bps;
        let audio = self
            .sent
            .iter()
            .any(|t| t.kind == MediaKind::Audio && t.source.is_some());
        let video: Vec<usize> = (0..self.sent.len())
            .filter(|&i| self.sent[i].kind == MediaKind::Video && self.sent[i].source.is_some())
            .collect();
        if video.is_empty() {
            return;
        }
        let reserve = if audio { AUDIO_RESERVE } else { 0 };
        // Shared by priority: a slot of priority 2 gets twice the share.
        let weights: u64 = video
            .iter()
            .map(|&i| u64::from(self.sent[i].priority))
            .sum();
        let available = bps.saturating_sub(reserve);
        let (mut next_layers, mut desired) = (0, reserve);
        for i in video {
            let t = &mut self.sent[i];
            let share = available * u64::from(t.priority) / weights.max(1);
            let before = t.layer_state();
            t.selector.set_estimate(now, share);
            let after = t.layer_state();
            let (next, top) = t.selector.wanted_bitrate(now);
            // Only a slot with a layer above its own has more to find; every
            // slot wants its top layer kept. (str0m's periodic probes in an
            // application-limited leg go up to twice the desired rate and
            // set the estimate to what they measure: a desired rate below
            // what flows made a probe of 128 kbit/s pull a 2.7 Mbit/s
            // estimate down to 150 kbit/s.)
            next_layers += next;
            desired += top;
            self.layer_moved(before, after);
        }
        // The estimate of a leg that sends less than its link carries
        // stays near what it sends: padding (capped by the estimate) up to
        // the next layer's rate lets it grow until that layer fits; probes
        // look for the top layer's. A leg on its top layer pads nothing.
        let minimum = if next_layers > 0 {
            reserve + next_layers
        } else {
            0
        };
        // str0m probes when the desired rate rises above its estimate; a
        // leg that wants more than it gets asks again every
        // PROBE_INTERVAL (one bit per second more), so a link that came
        // back is found within seconds, not by slow growth.
        let mut desired = desired.max(reserve + 1);
        let wants_more = bps < desired;
        if wants_more && self.probe_at.is_none_or(|at| now >= at) {
            self.probe_at = Some(now + PROBE_INTERVAL);
            self.probes += 1;
            desired += self.probes;
        } else if desired <= self.bwe_wanted.1 && desired + 64 > self.bwe_wanted.1 {
            // The same wish as before: not a new probe, and no reset.
            desired = self.bwe_wanted.1;
        }
        if (minimum, desired) != self.bwe_wanted {
            self.bwe_wanted = (minimum, desired);
            self.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
        }
    }

    /// A publisher's RTCP sender report: the track's RTP ↔ NTP mapping.
    fn on_sender_report(&mut self, feedback: SenderFeedback) {
        let Some(track) = self.published.iter_mut().find(|t| t.mid == feedback.mid) else {
            return;
        };
        let spatial = feedback
            .rid
            .and_then(|rid| track.rids.iter().position(|r| *r == rid))
            .unwrap_or(0);
        let clock_rate = track.active.map_or(
            match track.kind {
                MediaKind::Audio => 48_000,
                MediaKind::Video => 90_000,
            },
            |c| c.clock_rate,
        );
        let info = feedback.sender_info;
        let Some(layer) = track.layers.get_mut(spatial) else {
            return;
        };
        layer.report = Some(self.sender_clock.on_report(
            info.ntp_time,
            info.rtp_time.numer() as u32,
            clock_rate,
            feedback.received_at,
        ));
    }

    /// The published track and spatial layer an SSRC belongs to: by its
    /// stream's mid and RID (cached); a WHIP publisher's only track of the
    /// kind when str0m has no stream.
    fn track_of(&mut self, ssrc: u32, kind: MediaKind) -> Option<(usize, u8)> {
        if let Some((_, idx, layer)) = self.ssrc_tracks.iter().find(|(s, ..)| *s == ssrc) {
            return Some((*idx, *layer));
        }
        let stream = self
            .rtc
            .direct_api()
            .stream_rx(&ssrc.into())
            .map(|s| (s.mid(), s.rid()));
        let (idx, rid) = match stream {
            Some((mid, rid)) => (self.published.iter().position(|t| t.mid == mid)?, rid),
            None if self.role == Role::Publisher => {
                (self.published.iter().position(|t| t.kind == kind)?, None)
            }
            None => return None,
        };
        let track = &self.published[idx];
        if track.kind != kind {
            return None;
        }
        // A simulcast track's stream without a known RID is not forwarded:
        // its layer is unknown.
        let layer = match rid {
            _ if track.rids.is_empty() => 0,
            Some(rid) => track.rids.iter().position(|r| *r == rid)? as u8,
            None => return None,
        };
        if self.ssrc_tracks.len() < 64 {
            self.ssrc_tracks.push((ssrc, idx, layer));
        }
        Some((idx, layer))
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
        // The codec itself, else one whose decoders play it (an H.264
        // profile above the stream's).
        let info = |pt: &Pt| params.iter().find(|p| p.pt() == *pt).and_then(codec_info);
        let pt = negotiated
            .iter()
            .find(|pt| info(pt) == Some(codec))
            .or_else(|| {
                negotiated
                    .iter()
                    .find(|pt| info(pt).is_some_and(|c| c.plays(&codec)))
            })
            .copied()?;
        self.sent[idx].pt_cache = Some((codec, pt));
        Some(pt)
    }
}

/// The descriptor patch that keeps a VP8 stream's picture ids continuous
/// toward one viewer (`new_run`: the packet starts a new run of the slot's
/// stream, as after a layer switch); `None` when nothing changes.
fn vp8_patch(
    rewriter: &mut corecast_media::vp8::Vp8Rewriter,
    new_run: bool,
    d: &corecast_media::vp8::Vp8Descriptor,
    payload: &[u8],
) -> Option<str0m::rtp::Vp8Patch> {
    let o = rewriter.offsets(new_run, d);
    if o.is_zero() {
        return None;
    }
    // str0m writes the new numbers as it serializes the packet: no copy.
    let parsed = str0m::rtp::Vp8Descriptor::parse(payload).ok()?;
    let mut patch = parsed.patch();
    if let Some(p) = d.picture_id {
        let mask = if d.long_picture_id { 0x7fff } else { 0x7f };
        patch = patch.picture_id(p.wrapping_add(o.picture_id) & mask);
    }
    if let Some(t) = d.tl0picidx {
        patch = patch.tl0_pic_idx(t.wrapping_add(o.tl0picidx));
    }
    patch.build().ok()
}

/// The RTP header extensions of a viewer's leg that is not adaptive (the
/// stream has one layer): str0m's standard set without transport-wide
/// congestion control. With nothing to choose between, that feedback
/// (about 20 RTCP packets a second from every viewer, each decrypted and
/// parsed) and its per-packet sequence register would be work for nobody.
/// Adaptive legs (simulcast streams) and publishers keep it.
fn viewer_extensions() -> ExtensionMap {
    let mut exts = ExtensionMap::empty();
    for (id, ext) in ExtensionMap::standard().iter() {
        if *ext != Extension::TransportSequenceNumber {
            exts.set(id, ext.clone());
        }
    }
    exts
}

/// The kind of which an offer has more recvonly sections than an SDK
/// connection may have slots, if any.
fn too_many_slots(offer: &str) -> Option<&'static str> {
    let (mut kind, mut audio, mut video) = ("", 0, 0);
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split(' ').next().unwrap_or("");
        } else if line == "a=recvonly" {
            match kind {
                "audio" => audio += 1,
                "video" => video += 1,
                _ => {}
            }
        }
    }
    if audio > MAX_SLOTS_PER_KIND {
        Some("audio")
    } else if video > MAX_SLOTS_PER_KIND {
        Some("video")
    } else {
        None
    }
}

/// The simulcast layers each media section of an offer sends: its mid and
/// the RIDs of `a=simulcast:send` in order (the first of alternatives;
/// paused ones, `~rid`, too: they may start later), at most
/// [`corecast_media::MAX_SPATIAL`].
fn offer_simulcast(offer: &str) -> Vec<(Mid, Vec<Rid>)> {
    let mut out = Vec::new();
    let mut mid = None;
    for line in offer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(Mid::from(m.trim()));
        } else if let Some(rest) = line.strip_prefix("a=simulcast:") {
            let Some(mid) = mid else { continue };
            let mut parts = rest.split_whitespace();
            while let (Some(dir), Some(list)) = (parts.next(), parts.next()) {
                if dir != "send" {
                    continue;
                }
                let rids: Vec<Rid> = list
                    .split(';')
                    .filter_map(|alts| alts.split(',').next())
                    .map(|r| r.trim_start_matches('~'))
                    .filter(|r| !r.is_empty() && r.len() <= 8)
                    .take(corecast_media::MAX_SPATIAL)
                    .map(Rid::from)
                    .collect();
                if rids.len() > 1 {
                    out.push((mid, rids));
                }
            }
        }
    }
    out
}

/// The media ids of an offer, in m-line order.
fn offer_mids(offer: &str) -> Vec<Mid> {
    offer
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .collect()
}

/// The shard drives WebRTC endpoints through the transport-neutral
/// interface; the inherent methods above are the same operations, typed.
impl corecast_media::Endpoint for Endpoint {
    fn transport(&self) -> corecast_media::TransportKind {
        match self.role {
            Role::Publisher => corecast_media::TransportKind::Whip,
            Role::Viewer => corecast_media::TransportKind::Whep,
            Role::Peer => corecast_media::TransportKind::WebRtc,
        }
    }

    fn route_key(&self) -> Option<corecast_media::RouteKey> {
        Some(corecast_media::RouteKey::IceUfrag(self.local_ufrag.clone()))
    }

    fn published(&self) -> Vec<corecast_media::PublishedTrack> {
        self.published_tracks()
    }

    fn slots(&self) -> Vec<corecast_media::Slot> {
        Endpoint::slots(self)
    }

    fn handle_input(
        &mut self,
        now: Instant,
        input: corecast_media::Input<'_>,
    ) -> Result<bool, corecast_media::InputError> {
        use corecast_media::{Command, Input as In, InputError};
        match input {
            In::Datagram {
                source,
                destination,
                contents,
            } => self
                .handle_receive(now, source, destination, contents)
                .map(|()| true)
                .map_err(|e| match e {
                    Error::Unrecognized => InputError::Unrecognized,
                    e => InputError::Refused(e.to_string()),
                }),
            In::Stream(_) => Err(InputError::Unrecognized),
            In::Timeout => {
                self.handle_timeout(now);
                Ok(true)
            }
            In::Media(packet) => Ok(self.queue_media(now, packet)),
            In::Flush => {
                self.flush_media(now);
                Ok(true)
            }
            In::Command(Command::Subscribe { slot, channel }) => {
                self.subscribe_slot(slot, channel);
                Ok(false)
            }
            In::Command(Command::RequestKeyframe(channel, layer)) => {
                Ok(self.request_keyframe(now, channel, layer))
            }
            In::Command(Command::Prefer { slot, preference }) => {
                self.prefer(now, slot, preference);
                Ok(false)
            }
            In::Command(Command::Rpc(text)) => {
                self.send_rpc(text);
                Ok(true)
            }
            In::Command(Command::Close) => {
                self.close_soon(now);
                Ok(true)
            }
            // WebRTC publishers are admitted over HTTP, before they exist.
            In::Command(Command::Admit(_)) => Err(InputError::Unrecognized),
        }
    }

    fn poll_output(&mut self, now: Instant) -> Output {
        Endpoint::poll_output(self, now)
    }

    fn signal(&mut self, _now: Instant, body: &str) -> Result<Option<String>, String> {
        let fragment = crate::parse_sdpfrag(body).map_err(|e| e.to_string())?;
        self.handle_fragment(&fragment).map_err(|e| e.to_string())
    }

    fn stats(&self) -> EndpointStats {
        self.stats
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn wanted_layers(&self, channel: ChannelId) -> u8 {
        self.sent
            .iter()
            .filter(|t| t.source == Some(channel))
            .map(|t| match t.kind {
                MediaKind::Audio => 1,
                MediaKind::Video => t.selector.wanted_spatial(),
            })
            .fold(0, |a, b| a | b)
    }
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
