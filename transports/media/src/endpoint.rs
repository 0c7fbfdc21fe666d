//! The one interface a shard drives every transport's endpoint through.
//!
//! A **transport** is one connection between a user and the node (a WebRTC
//! peer connection, an RTMP TCP connection, a SIP call, a QUIC connection),
//! named by a [`ConnId`]. It carries the user into an **endpoint**: a peer of
//! a room that publishes tracks and holds subscriptions. The shard does not
//! know which protocol it drives: it feeds an [`Endpoint`] sans-IO inputs
//! ([`Input`]: datagrams, bytes of its stream connection, time, media to
//! deliver, commands) and drains its outputs ([`Output`]: bytes to send,
//! [`Event`]s, the next timeout).
//!
//! - A **published track** is the endpoint's; its media comes out as
//!   [`Event::Media`] on the track's channel.
//! - A **subscription** plays one channel in one receive [`Slot`] (a WebRTC
//!   transceiver, a SIP call's audio, a MoQ subscription). Slots are
//!   separate from published tracks and have their own state: the shard
//!   points a slot at a channel with [`Command::Subscribe`] and hands it that
//!   channel's packets with [`Input::Media`].
//!
//! How datagrams and connections find their endpoint is the transport's
//! [`RouteKey`]: an ICE ufrag (WebRTC), a source address (plain RTP), a
//! stream connection the shard accepted (RTMP over TCP), a QUIC connection id.
//!
//! The rule is str0m's: after every input, drain
//! [`Endpoint::poll_output`] until it returns [`Output::Timeout`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use crate::{ChannelId, CodecInfo, MediaKind, MediaPacket};

/// One connection, unique across the cluster: the node id in the top 16
/// bits, 48 random bits below. Printed as 16 hex digits; it is in every log
/// line and API answer about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// A connection id of `node` from 48 random bits (`random`'s low bits).
    /// Never zero.
    pub fn new(node: u16, random: u64) -> ConnId {
        ConnId((u64::from(node) << 48) | (random & 0xffff_ffff_ffff) | 1)
    }

    /// The node that made it.
    pub fn node(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// Reads the printed form back (16 hex digits).
    pub fn parse(s: &str) -> Option<ConnId> {
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ConnId)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A user across nodes (a SIP registration): the node that made it, when
/// (milliseconds since the Unix epoch, from the caller's clock) and a
/// counter of that node. Printed as `node-time-counter` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub node: u32,
    pub unix_ms: u64,
    pub counter: u32,
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{:x}-{:x}", self.node, self.unix_ms, self.counter)
    }
}

/// Which protocol an endpoint speaks (a bounded metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The SDK's WebRTC connection: rooms, RPC on a data channel.
    WebRtc,
    /// A WHIP publisher.
    Whip,
    /// A WHEP viewer.
    Whep,
    Rtmp,
    Sip,
    Moq,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebRtc => "sdk",
            TransportKind::Whip => "whip",
            TransportKind::Whep => "whep",
            TransportKind::Rtmp => "rtmp",
            TransportKind::Sip => "sip",
            TransportKind::Moq => "moq",
        }
    }
}

/// How a shard finds the endpoint of an input that is not from a known
/// address yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKey {
    /// The server-side ICE username of a WebRTC endpoint (STUN requests).
    IceUfrag(String),
    /// Datagrams from this source (plain RTP of a SIP call).
    Address(SocketAddr),
    /// A stream connection the shard accepted itself (RTMP over TCP): the
    /// shard's number for it.
    Stream(u64),
    /// A QUIC connection id the endpoint issued.
    QuicConnectionId(Vec<u8>),
}

/// A receive slot of an endpoint: what one subscription plays in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u16);

/// A receive slot as the endpoint describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub id: SlotId,
    pub kind: MediaKind,
    /// The transport's name for it (a WebRTC transceiver's mid).
    pub label: String,
    /// The codecs it can play.
    pub codecs: Vec<CodecInfo>,
}

/// A track an endpoint publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    /// The name in the room (`audio`, `video`, `screen`, …).
    pub name: String,
    pub kind: MediaKind,
    pub channel: ChannelId,
    /// The codecs the transport negotiated for it, in preference order.
    pub codecs: Vec<CodecInfo>,
    /// How many simulcast layers it sends (1: a single stream).
    pub layers: u8,
}

/// An input to an endpoint.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram from the user.
    Datagram {
        source: SocketAddr,
        destination: SocketAddr,
        contents: &'a [u8],
    },
    /// Bytes read from the endpoint's stream connection (TCP, a QUIC stream).
    Stream(&'a [u8]),
    /// Time passes: give at (or after) the last [`Output::Timeout`].
    Timeout,
    /// A packet of a channel one of its slots plays. Queued: it leaves with
    /// the next [`Input::Flush`] (or any later time input), so that a burst
    /// costs one flush.
    Media(&'a MediaPacket),
    /// Send what [`Input::Media`] queued.
    Flush,
    Command(Command),
}

/// What the engine tells an endpoint to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Play `channel` in `slot` from its next keyframe (or stop, with `None`).
    /// The slot's stream stays continuous toward the user.
    Subscribe {
        slot: SlotId,
        channel: Option<ChannelId>,
    },
    /// Ask the user's encoder for a keyframe of a published track: of one
    /// spatial layer (a simulcast stream), or of every layer with `None`.
    RequestKeyframe(ChannelId, Option<u8>),
    /// The viewer's preference for a slot.
    Prefer {
        slot: SlotId,
        preference: Preference,
    },
    /// A message for the user on the connection's RPC stream.
    Rpc(String),
    /// Close the connection; what is queued on the RPC stream goes out first.
    Close,
    /// The answer to [`Event::PublishRequest`] or [`Event::WatchRequest`]:
    /// go on as this peer of the room, or the refusal to tell the user.
    Admit(Result<String, Refusal>),
}

/// How a viewer wants one video slot served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    /// No spatial layer above this one (`None`: the best its link carries).
    pub max_spatial: Option<u8>,
    /// Its weight when the link's estimate is shared among the connection's
    /// video slots: a slot of priority 2 gets twice the share of one of
    /// priority 1. From 1 to [`Preference::MAX_PRIORITY`].
    pub priority: u8,
}

impl Preference {
    pub const MAX_PRIORITY: u8 = 10;
}

impl Default for Preference {
    fn default() -> Self {
        Preference {
            max_spatial: None,
            priority: 1,
        }
    }
}

/// Why a publish request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The stream name is not valid.
    BadName(String),
    /// Missing or wrong credentials, or a token without the permission.
    Denied(String),
    /// The node cannot take it (capacity, shutting down).
    Unavailable(String),
}

impl Refusal {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::BadName(_) => "bad_name",
            Refusal::Denied(_) => "denied",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::BadName(m) | Refusal::Denied(m) | Refusal::Unavailable(m) => m,
        }
    }
}

/// Why an endpoint closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it (`DELETE`, replaced, shutdown).
    Closed,
    /// Nothing from the user within the consent (or idle) timeout.
    ConsentExpired,
    /// The user closed the connection.
    PeerClosed,
}

impl CloseReason {
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::ConsentExpired => "consent_expired",
            CloseReason::PeerClosed => "peer_closed",
        }
    }
}

/// Something the engine must act on.
#[derive(Debug)]
pub enum Event {
    /// The transport is up; media flows from now on.
    Connected,
    /// A packet of a published track, to publish on `packet.channel`.
    Media(MediaPacket),
    /// A published track started sending (or switched to) a codec.
    ActiveCodec(ChannelId, CodecInfo),
    /// A published track turned out to carry this many spatial layers in
    /// one stream (SVC, seen in its payloads), more than its signalling
    /// said.
    TrackLayers(ChannelId, u8),
    /// A slot lost a picture of the channel it plays, or waits to start or
    /// switch a layer, and asks its publisher for a keyframe: of that
    /// spatial layer, or of every layer with `None`.
    KeyframeRequest(ChannelId, Option<u8>),
    /// A slot sent the first packet of the channel it was pointed at.
    SlotLive(SlotId),
    /// A message from the user on the connection's RPC stream (within the
    /// transport's size and rate limits).
    Rpc(String),
    /// The user asks to publish into `room` in band (RTMP's `publish`),
    /// with the credentials it gave. The engine authorizes it and answers
    /// with [`Command::Admit`]; no media comes before.
    PublishRequest { room: String, token: Option<String> },
    /// The user asks to watch `room`'s stream in band (a MoQ subscription
    /// to the room's broadcast), with the credentials it gave. The engine
    /// authorizes it, answers with [`Command::Admit`] and points the
    /// endpoint's slots at the room's publisher, as for a WHEP viewer.
    WatchRequest { room: String, token: Option<String> },
    /// The user pressed a key (a phone's RFC 4733 DTMF): `0`–`9`, `*`,
    /// `#`, `A`–`D`.
    Dtmf(char),
    /// The endpoint is finished; drop it.
    Closed(CloseReason),
}

/// Bytes toward the user: one datagram, or for a stream transport the next
/// bytes of its connection.
#[derive(Debug)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What [`Endpoint::poll_output`] returns.
#[derive(Debug)]
pub enum Output<E = Event> {
    Transmit(Transmit),
    Event(E),
    /// Nothing more to do until this time (give [`Input::Timeout`] then).
    Timeout(Instant),
}

/// Counters of one endpoint, for the engine's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// Media packets a slot could not send (no payload type for the
    /// packet's codec, no stream, or older than the start of its run).
    pub media_dropped: u64,
    /// Video packets held back until the keyframe that starts a slot's
    /// stream (new subscription, switched publisher).
    pub waiting_keyframe: u64,
    /// Keyframe requests that went out to the user's encoder.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests of a slot over its limit, not passed on.
    pub keyframe_requests_limited: u64,
    /// RPC messages refused for their size.
    pub rpc_too_large: u64,
    /// RPC messages refused over the rate limit.
    pub rpc_rate_limited: u64,
    /// RPC messages refused because they are not UTF-8 text.
    pub rpc_not_text: u64,
    /// What a transport that carries frames (RTMP, MoQ, SIP) received.
    pub ingest: IngestStats,
    /// How adaptive forwarding serves the endpoint's video slots.
    pub layers: LayerStats,
    /// What a transport that carries frames toward the user (MoQ) sent.
    pub frames_out: FramesOutStats,
}

/// What a transport that carries frames toward the user (MoQ) sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramesOutStats {
    /// Groups started (one per video keyframe, one per second of audio).
    pub groups: u64,
    pub frames: u64,
    /// Bytes of frame payloads.
    pub bytes: u64,
    /// Pictures not sent: a packet lost, waiting for a keyframe, bad payloads.
    pub frames_dropped: u64,
    /// Requests of the user refused (a broadcast it may not have).
    pub refused: u64,
    /// Broadcasts the user subscribed to.
    pub subscriptions: u64,
}

/// Adaptive forwarding of one endpoint's video slots (see
/// [`crate::LayerSelector`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    pub switches_up: u64,
    pub switches_down: u64,
    /// Times a slot paused video because no layer fitted its link.
    pub pauses: u64,
    /// Video slots forwarding each spatial layer now (a gauge).
    pub on_layer: [u16; crate::layers::MAX_SPATIAL],
    /// Video slots paused now (a gauge).
    pub paused: u16,
    /// The leg's bandwidth estimate, bits per second (a gauge; 0 when it
    /// is not estimated).
    pub estimate_bps: u64,
}

/// Counters of an endpoint that receives frames and turns them into RTP
/// (RTMP today).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestStats {
    /// Bytes received on its connection.
    pub bytes_in: u64,
    pub video_frames: u64,
    /// Audio frames published (after any transcoding).
    pub audio_frames: u64,
    /// Video frames that need reordering (B-frames).
    pub b_frames: u64,
    /// Time spent transcoding, nanoseconds.
    pub transcode_ns: u64,
    /// Audio that could not be decoded.
    pub audio_errors: u64,
    /// Frames of a codec that is not forwarded.
    pub unsupported_frames: u64,
    /// Messages or tags not read.
    pub ignored: u64,
    /// Play requests refused (a transport that only ingests).
    pub play_refused: u64,
    /// Publishes ended because their codec cannot be forwarded.
    pub codec_refused: u64,
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Not this endpoint's, or not a protocol it speaks.
    Unrecognized,
    /// The protocol refused it.
    Refused(String),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Unrecognized => f.write_str("unrecognized input"),
            InputError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl std::error::Error for InputError {}

/// One transport connection's endpoint, sans-IO. A shard owns it and is the
/// only one to call it.
pub trait Endpoint: Send + fmt::Debug {
    fn transport(&self) -> TransportKind;

    /// How inputs that are not from a known address find this endpoint.
    fn route_key(&self) -> Option<RouteKey>;

    /// The tracks it publishes.
    fn published(&self) -> Vec<PublishedTrack>;

    /// Its receive slots.
    fn slots(&self) -> Vec<Slot>;

    /// One input. `Ok(true)` when it has something to send or say (drain
    /// [`Endpoint::poll_output`]; after [`Input::Media`], give
    /// [`Input::Flush`] first); `Ok(false)` when it did nothing.
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<bool, InputError>;

    /// The next output. Drain until [`Output::Timeout`] after every input.
    fn poll_output(&mut self, now: Instant) -> Output;

    /// Transport-specific signalling from the control plane (a WebRTC
    /// trickle or ICE-restart fragment). Returns the answer body, if any.
    fn signal(&mut self, now: Instant, body: &str) -> Result<Option<String>, String>;

    fn stats(&self) -> EndpointStats;

    fn is_closed(&self) -> bool;

    /// The spatial layers of `channel` its slots may play soon, one bit per
    /// layer (see [`crate::LayerSelector::wanted_spatial`]). A node that
    /// relays the channel from another node carries only the layers some
    /// local slot wants. Every layer unless the transport chooses.
    fn wanted_layers(&self, channel: ChannelId) -> u8 {
        let _ = channel;
        u8::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_carry_their_node_and_print_back() {
        let c = ConnId::new(0x1a2b, 0xffff_0123_4567_89ab);
        assert_eq!(c.node(), 0x1a2b);
        assert_eq!(c.to_string(), "1a2b0123456789ab");
        assert_eq!(ConnId::parse(&c.to_string()), Some(c));
        assert_eq!(ConnId::new(0, 0).0, 1, "never zero");
        assert_eq!(ConnId::parse(""), None);
        assert_eq!(ConnId::parse("12345678901234567"), None);
        assert_eq!(ConnId::parse("xyz"), None);
    }

    #[test]
    fn session_ids_print_node_time_counter() {
        let s = SessionId {
            node: 3,
            unix_ms: 0x10,
            counter: 255,
        };
        assert_eq!(s.to_string(), "3-10-ff");
    }
}
