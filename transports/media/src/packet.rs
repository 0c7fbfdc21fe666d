//! The unit that travels through channels.

use std::sync::Arc;
use std::time::Instant;

use crate::{ChannelId, CodecInfo, Layer, MediaKind};

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
    /// RTP payload, without header.
    pub payload: Arc<[u8]>,
}
