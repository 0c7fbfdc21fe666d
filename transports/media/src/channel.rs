//! Track channel ids.

use std::fmt;

/// Seed of the channel hash. Changing it changes every channel id in a
/// cluster, so nodes of different builds would no longer agree: never change it.
const CHANNEL_SEED: u64 = 0x636f_7265_6361_7374; // "corecast"

/// The global pub-sub channel of one track.
///
/// It is a fixed hash (XXH3-64 with a constant seed) of `(room, peer, track)`,
/// each part length-prefixed so that `("ab", "c")` and `("a", "bc")` differ.
/// The value is the same on every node, build and platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

impl ChannelId {
    /// The channel of track `track` published by `peer` in `room`.
    pub fn for_track(room: &str, peer: &str, track: &str) -> ChannelId {
        let mut buf = Vec::with_capacity(room.len() + peer.len() + track.len() + 24);
        for part in [room, peer, track] {
            buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
            buf.extend_from_slice(part.as_bytes());
        }
        ChannelId(xxhash_rust::xxh3::xxh3_64_with_seed(&buf, CHANNEL_SEED))
    }

    /// The id of one spatial layer of this track, where a viewer's stream
    /// must tell layers apart (each is a source of its own for the
    /// [`crate::Rewriter`]). Layer 0 is the track's own id.
    pub fn layer(self, spatial: u8) -> ChannelId {
        if spatial == 0 {
            return self;
        }
        let mut buf = [0u8; 9];
        buf[..8].copy_from_slice(&self.0.to_le_bytes());
        buf[8] = spatial;
        ChannelId(xxhash_rust::xxh3::xxh3_64_with_seed(&buf, CHANNEL_SEED))
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_stable_across_builds() {
        // These values are part of the cluster protocol: nodes compute them
        // independently and must agree. If this test fails, the hash changed.
        let a = ChannelId::for_track("room1", "peer1", "video");
        let b = ChannelId::for_track("room1", "peer1", "video");
        assert_eq!(a, b);
        assert_eq!(a.0, 15_425_407_791_679_159_137);
        assert_eq!(a.to_string(), "d6120ea8c2943b61");
    }

    #[test]
    fn layers_have_ids_of_their_own() {
        let c = ChannelId::for_track("r", "p", "video");
        assert_eq!(c.layer(0), c);
        assert_ne!(c.layer(1), c);
        assert_ne!(c.layer(1), c.layer(2));
        assert_eq!(c.layer(2), c.layer(2));
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(
            ChannelId::for_track("ab", "c", "video"),
            ChannelId::for_track("a", "bc", "video")
        );
        assert_ne!(
            ChannelId::for_track("r", "p", "audio"),
            ChannelId::for_track("r", "p", "video")
        );
    }
}
