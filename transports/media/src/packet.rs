//! The unit that travels through channels.

use std::sync::Arc;
use std::time::Instant;

use crate::{ChannelId, CodecInfo, Layer, LayerPacket, MediaKind};

/// One RTP packet as published on a track channel.
///
/// The payload is shared (`Arc`): fanning a packet out to many subscribers and
/// to other shards copies a pointer, never the bytes.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// The track channel this packet was published on.
    pub channel: ChannelId,
    pub kind: MediaKind,
    pub codec: CodecInfo,
    /// Extended (rollover-counted) sequence number as the publisher sent it.
    pub seq: u64,
    /// RTP timestamp as the publisher sent it.
    pub rtp_time: u32,
    pub marker: bool,
    /// When the packet arrived at this node.
    pub arrival: Instant,
    /// The packet's media time on this node's clock: where the publisher's
    /// RTCP sender reports put this `rtp_time`, placed with one offset per
    /// publisher so that its tracks stay in sync; `arrival` until the
    /// publisher's first sender report. Subscribers' sender reports are
    /// built from it (lip sync at the viewer).
    pub wallclock: Instant,
    /// Video orientation (the rotation bits of the CVO header extension,
    /// `urn:3gpp:video-orientation`: 0 none, 1 90° counter-clockwise,
    /// 2 180°, 3 90° clockwise), when the publisher sent it. Phones publish
    /// rotation only there.
    pub orientation: Option<u8>,
    /// The simulcast layer (and temporal layer) the packet belongs to;
    /// 0/0 for a track without layers.
    pub layer: Layer,
    /// The audio level the publisher measured (RFC 6464: 0 loudest to 127
    /// silence, -dBov), when it sent one.
    pub audio_level: Option<u8>,
    /// The dependency descriptor the publisher attached (AV1, and H.264,
    /// VP8 or VP9 from senders that add it), with what it says of the
    /// packet's layers.
    pub dependency: Option<Dependency>,
    /// RTP payload, without header.
    pub payload: Arc<[u8]>,
}

/// A packet's dependency descriptor ([`crate::dd`]): its bytes as the
/// publisher sent them (forwarded unchanged, shared like the payload), and
/// what the publisher's endpoint read of them with the structure of the
/// stream (which a viewer could not: only keyframes carry it).
#[derive(Debug, Clone)]
pub struct Dependency {
    pub descriptor: Arc<[u8]>,
    pub layer: LayerPacket,
}
