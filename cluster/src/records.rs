//! Values of the room key-value store.
//!
//! One map, [`ROOMS_MAP`], that every media node subscribes to: one entry
//! per published peer of a room, keyed by [`peer_key`], set by the node
//! that holds the peer and deleted when it leaves. From it every node knows
//! each room's peers, their tracks, the channels to subscribe to and the
//! codecs a viewer must accept.

use corecast_media::{ChannelId, CodecInfo, MediaKind};
use serde::{Deserialize, Serialize};

/// The dht_kv map of room peers (a fixed number: part of the protocol).
pub const ROOMS_MAP: u64 = 0x636f_7265_726f_6f6d; // "coreroom"

/// One track of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRecord {
    /// The track's name in the room (`audio`, `video`, `screen`, …).
    pub name: String,
    pub kind: MediaKind,
    pub channel: u64,
    /// The codecs a viewer must accept: the one in use once known, else those
    /// negotiated.
    pub codecs: Vec<CodecInfo>,
    pub muted: bool,
    /// Simulcast layers the track sends (1: a single stream): a WHEP viewer
    /// of it on another node gets an adaptive leg.
    pub layers: u8,
}

impl TrackRecord {
    pub fn channel_id(&self) -> ChannelId {
        ChannelId(self.channel)
    }
}

/// A peer of a room, as the room's key-value entry says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub room: String,
    pub peer: String,
    /// The node that holds the peer's endpoint, and that node's session
    /// (random per process start: a record of a restarted node's former self
    /// is stale). Set by the cluster when the record is stored.
    pub node: u32,
    pub session: u64,
    /// The transport's name (`whip`, `sdk`, …): WHEP viewers follow `whip`.
    pub transport: String,
    /// The peer's metadata, JSON text.
    pub metadata: String,
    /// When the connection was made (Unix milliseconds of its node's clock):
    /// of two connections of one peer id, the later one stays.
    pub since_ms: u64,
    /// Counts the holder's refreshes (see [`crate::REFRESH`]): a new
    /// value tells every node the entry is still meant.
    pub refresh: u64,
    pub tracks: Vec<TrackRecord>,
}

impl PeerRecord {
    /// Whether two records say the same, refreshes aside.
    pub fn same_as(&self, other: &PeerRecord) -> bool {
        PeerRecord {
            refresh: other.refresh,
            ..self.clone()
        } == *other
    }
}

impl PeerRecord {
    pub fn key(&self) -> u64 {
        peer_key(&self.room, &self.peer)
    }

    pub fn encode(&self) -> Vec<u8> {
        crate::bin::encode(self)
    }

    pub fn decode(data: &[u8]) -> Option<PeerRecord> {
        crate::bin::decode(data)
    }
}

/// The key of a peer's entry: the channel hash of `(room, peer, "")`, so it
/// is as stable across builds as channel ids are.
pub fn peer_key(room: &str, peer: &str) -> u64 {
    ChannelId::for_track(room, peer, "").0
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_media::Codec;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let r = PeerRecord {
            room: "r".into(),
            peer: "p".into(),
            node: 3,
            session: 9,
            transport: "sdk".into(),
            metadata: "{}".into(),
            since_ms: 1,
            refresh: 0,
            tracks: vec![TrackRecord {
                name: "video".into(),
                kind: MediaKind::Video,
                channel: 42,
                codecs: vec![CodecInfo::new(Codec::Vp8, 90_000)],
                muted: false,
                layers: 1,
            }],
        };
        assert_eq!(PeerRecord::decode(&r.encode()), Some(r.clone()));
        assert_eq!(PeerRecord::decode(b"\xff\xff\xff"), None);
        assert_eq!(r.key(), peer_key("r", "p"));
        assert_ne!(peer_key("r", "p"), peer_key("r", "q"));
    }
}
