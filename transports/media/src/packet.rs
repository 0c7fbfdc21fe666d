//! The unit that travels through channels.

use std::sync::Arc;
use std::time::Instant;

use crate::{ChannelId, CodecInfo, MediaKind};

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
    /// RTP payload, without header.
    pub payload: Arc<[u8]>,
}
