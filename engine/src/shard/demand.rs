//! Which spatial layers of each channel the viewers of a shard want, for
//! the cluster.
//!
//! A node that relays a simulcast track from another node carries only the
//! layers some viewer of its own may take (docs/cluster.md, "Layers"). Every
//! shard of a clustered node looks at its viewers a few times a second
//! ([`corecast_media::Endpoint::wanted_layers`]) and tells shard 0 what
//! changed; shard 0 ORs the shards' wishes and subscribes to the layers'
//! sub-channels ([`super::ClusterPort`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corecast_media::ChannelId;

use super::Shard;
use crate::messages::RingMsg;

/// How often a shard looks at what its viewers want.
pub const DEMAND_PERIOD: Duration = Duration::from_millis(250);

/// What a shard last told shard 0, and when it looks again.
#[derive(Debug, Default)]
pub struct LayerDemand {
    told: HashMap<ChannelId, u8>,
    /// `None`: at the next tick.
    due: Option<Instant>,
}

impl LayerDemand {
    /// Looks at the next tick (a slot was pointed at a channel: a new
    /// viewer wants its layers now, not a period later).
    pub fn look_soon(&mut self) {
        self.due = None;
    }
}

impl Shard {
    /// Tells shard 0 the layers its viewers want where that changed (on
    /// every tick, at most every [`DEMAND_PERIOD`]). A wish lost to a full
    /// ring is told again at the next look.
    pub(super) fn report_demand(&mut self, now: Instant) {
        if !self.is_clustered() || self.demand.due.is_some_and(|at| now < at) {
            return;
        }
        self.demand.due = Some(now + DEMAND_PERIOD);
        let wanted = self.wanted_layers();
        let mut changes: Vec<(ChannelId, u8)> = wanted
            .iter()
            .filter(|(c, l)| self.demand.told.get(c) != Some(l))
            .copied()
            .collect();
        changes.extend(
            self.demand
                .told
                .keys()
                .filter(|c| !wanted.iter().any(|(w, _)| w == *c))
                .map(|c| (*c, 0)),
        );
        for (channel, layers) in changes {
            let told = match self.id {
                0 => {
                    self.on_layer_demand(now, 0, channel, layers);
                    true
                }
                _ => self.push_ring(
                    0,
                    RingMsg::LayerDemand {
                        shard: self.id,
                        channel,
                        layers,
                    },
                ),
            };
            if !told {
                continue;
            }
            if layers == 0 {
                self.demand.told.remove(&channel);
            } else {
                self.demand.told.insert(channel, layers);
            }
        }
        if let Some(port) = self.cluster.as_mut() {
            // Layers nobody wanted for the hold time are let go.
            port.settle_layers(now);
        }
        self.drain_cluster(now);
    }

    /// A shard's wish for a channel's layers (shard 0).
    pub(super) fn on_layer_demand(
        &mut self,
        now: Instant,
        shard: usize,
        channel: ChannelId,
        layers: u8,
    ) {
        if let Some(port) = self.cluster.as_mut() {
            port.set_demand(now, shard, channel, layers);
        }
        self.drain_cluster(now);
    }
}
