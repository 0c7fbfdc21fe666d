//! Which layers of tracks from other nodes this node receives.
//!
//! A simulcast track's spatial layer `s > 0` travels on a channel of its own,
//! [`ChannelId::layer`]; layer 0 (and every layer of a track without
//! simulcast, SVC included: its layers share one RTP stream) on the track's
//! channel. A node that relays a track subscribes to the track's channel
//! while it has viewers of it, and to a layer's sub-channel only while some
//! viewer on some shard wants that layer ([`super::demand`]). A layer nobody
//! wants is let go after [`LAYER_HOLD`], so that a viewer stepping down and
//! back up does not make the node unsubscribe and subscribe again.
//!
//! Plain state, no cluster calls: it says what to subscribe and unsubscribe,
//! and shard 0's [`super::ClusterPort`] does it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, MAX_SPATIAL};

/// How long a layer that no viewer wants is still received: longer than a
/// viewer's climb back after a dip (a few seconds), so that the layer it
/// climbs to is there with its rate known.
pub const LAYER_HOLD: Duration = Duration::from_secs(8);

/// A subscription to start or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChange {
    Subscribe(ChannelId),
    Unsubscribe(ChannelId),
}

/// The layer sub-channels of the remote tracks this node relays.
#[derive(Debug, Default)]
pub struct RelayLayers {
    tracks: HashMap<ChannelId, Track>,
    /// Sub-channel → its track's channel.
    subs: HashMap<ChannelId, ChannelId>,
}

#[derive(Debug, Default)]
struct Track {
    /// The node subscribes to the track's channel (it is published on
    /// another node and has viewers here).
    remote: bool,
    /// Its simulcast layers (1: a single stream, SVC included).
    layers: u8,
    /// What each shard's viewers want, one bit per spatial layer.
    wanted: HashMap<usize, u8>,
    /// Layer sub-channels subscribed to, one bit per spatial layer (bit 0,
    /// the track's own channel, is never set here).
    carried: u8,
    /// Since when a carried layer has been wanted by no one.
    unwanted_since: [Option<Instant>; MAX_SPATIAL],
}

impl RelayLayers {
    /// The node subscribes to a remote track's channel, a track of
    /// `layers` simulcast layers (`Some`), or stops (`None`).
    pub fn set_remote(
        &mut self,
        now: Instant,
        channel: ChannelId,
        layers: Option<u8>,
        out: &mut Vec<LayerChange>,
    ) {
        let track = self.tracks.entry(channel).or_default();
        track.remote = layers.is_some();
        track.layers = layers.unwrap_or(1);
        self.settle(now, channel, out);
    }

    /// What one shard's viewers want of a channel now.
    pub fn set_demand(
        &mut self,
        now: Instant,
        shard: usize,
        channel: ChannelId,
        layers: u8,
        out: &mut Vec<LayerChange>,
    ) {
        let track = self.tracks.entry(channel).or_default();
        if layers == 0 {
            track.wanted.remove(&shard);
        } else {
            track.wanted.insert(shard, layers);
        }
        self.settle(now, channel, out);
    }

    /// Lets go of the layers that nobody wanted for [`LAYER_HOLD`].
    pub fn settle_all(&mut self, now: Instant, out: &mut Vec<LayerChange>) {
        let held: Vec<ChannelId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.unwanted_since.iter().any(Option::is_some))
            .map(|(c, _)| *c)
            .collect();
        for channel in held {
            self.settle(now, channel, out);
        }
    }

    /// The track a sub-channel carries a layer of (`None`: not a layer
    /// sub-channel this node subscribes to).
    pub fn track_of(&self, sub: ChannelId) -> Option<ChannelId> {
        self.subs.get(&sub).copied()
    }

    /// Layer sub-channels subscribed to.
    pub fn carried(&self) -> usize {
        self.subs.len()
    }

    fn settle(&mut self, now: Instant, channel: ChannelId, out: &mut Vec<LayerChange>) {
        let Some(track) = self.tracks.get_mut(&channel) else {
            return;
        };
        let exists = ((1u16 << track.layers.min(8)) - 1) as u8;
        let want = match track.remote {
            true => track.wanted.values().fold(0, |a, b| a | b) & exists,
            false => 0,
        };
        for s in 1..MAX_SPATIAL as u8 {
            let bit = 1u8 << s;
            let sub = channel.layer(s);
            let since = &mut track.unwanted_since[usize::from(s)];
            if want & bit != 0 {
                *since = None;
                if track.carried & bit == 0 {
                    track.carried |= bit;
                    self.subs.insert(sub, channel);
                    out.push(LayerChange::Subscribe(sub));
                }
                continue;
            }
            if track.carried & bit == 0 {
                continue;
            }
            let unwanted = *since.get_or_insert(now);
            if !track.remote || now.saturating_duration_since(unwanted) >= LAYER_HOLD {
                *since = None;
                track.carried &= !bit;
                self.subs.remove(&sub);
                out.push(LayerChange::Unsubscribe(sub));
            }
        }
        if !track.remote && track.wanted.is_empty() && track.carried == 0 {
            self.tracks.remove(&channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LayerChange::{Subscribe, Unsubscribe};

    const TRACK: ChannelId = ChannelId(7);

    fn changes(f: impl FnOnce(&mut Vec<LayerChange>)) -> Vec<LayerChange> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn only_wanted_layers_of_remote_tracks_are_carried() {
        let mut r = RelayLayers::default();
        let t0 = Instant::now();
        // A wish for a track that is not remote (yet) subscribes nothing.
        let c = changes(|o| r.set_demand(t0, 1, TRACK, 0b011, o));
        assert_eq!(c, vec![]);
        let c = changes(|o| r.set_remote(t0, TRACK, Some(3), o));
        assert_eq!(c, vec![Subscribe(TRACK.layer(1))]);
        assert_eq!(r.track_of(TRACK.layer(1)), Some(TRACK));
        assert_eq!(r.track_of(TRACK.layer(2)), None);
        // Another shard wants the top layer too: the OR of the shards.
        let c = changes(|o| r.set_demand(t0, 0, TRACK, 0b101, o));
        assert_eq!(c, vec![Subscribe(TRACK.layer(2))]);
        assert_eq!(r.carried(), 2);
        // The same wish again changes nothing.
        assert_eq!(changes(|o| r.set_demand(t0, 0, TRACK, 0b101, o)), vec![]);
    }

    #[test]
    fn layers_the_track_does_not_have_are_not_subscribed() {
        let mut r = RelayLayers::default();
        let t0 = Instant::now();
        changes(|o| r.set_remote(t0, TRACK, Some(2), o));
        let c = changes(|o| r.set_demand(t0, 0, TRACK, 0b1111, o));
        assert_eq!(c, vec![Subscribe(TRACK.layer(1))]);
        let other = ChannelId(8);
        changes(|o| r.set_remote(t0, other, Some(1), o));
        assert_eq!(changes(|o| r.set_demand(t0, 0, other, 0b1111, o)), vec![]);
    }

    #[test]
    fn an_unwanted_layer_goes_after_the_hold_unless_wanted_again() {
        let mut r = RelayLayers::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        changes(|o| r.set_remote(t0, TRACK, Some(3), o));
        let c = changes(|o| r.set_demand(t0, 0, TRACK, 0b111, o));
        assert_eq!(c.len(), 2);
        // Down to layer 0 (wants 0 and 1): layer 2 is held.
        assert_eq!(changes(|o| r.set_demand(t0, 0, TRACK, 0b011, o)), vec![]);
        assert_eq!(changes(|o| r.settle_all(t0 + ms(7900), o)), vec![]);
        // Wanted again within the hold: kept, and the hold starts over.
        assert_eq!(
            changes(|o| r.set_demand(t0 + ms(7950), 0, TRACK, 0b111, o)),
            vec![]
        );
        assert_eq!(
            changes(|o| r.set_demand(t0 + ms(8000), 0, TRACK, 0b011, o)),
            vec![]
        );
        assert_eq!(changes(|o| r.settle_all(t0 + ms(15900), o)), vec![]);
        let c = changes(|o| r.settle_all(t0 + ms(16000), o));
        assert_eq!(c, vec![Unsubscribe(TRACK.layer(2))]);
        assert_eq!(r.track_of(TRACK.layer(2)), None);
        assert_eq!(r.carried(), 1);
    }

    #[test]
    fn a_track_that_stops_being_remote_lets_every_layer_go_at_once() {
        let mut r = RelayLayers::default();
        let t0 = Instant::now();
        changes(|o| r.set_remote(t0, TRACK, Some(3), o));
        changes(|o| r.set_demand(t0, 2, TRACK, 0b111, o));
        let mut c = changes(|o| r.set_remote(t0, TRACK, None, o));
        c.sort_by_key(|c| format!("{c:?}"));
        let mut want = vec![Unsubscribe(TRACK.layer(1)), Unsubscribe(TRACK.layer(2))];
        want.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(c, want);
        assert_eq!(r.carried(), 0);
        // Its viewers leave: nothing is kept of it.
        changes(|o| r.set_demand(t0, 2, TRACK, 0, o));
        assert!(r.tracks.is_empty());
    }
}
