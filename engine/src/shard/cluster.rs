//! Shard 0's part in the cluster: it drives the node's [`Cluster`] over the
//! cluster socket, sends local publishers' packets into their channels (a
//! simulcast layer above 0 into the layer's own channel) and publishes
//! packets from other nodes into the local fan-out like a local
//! publisher's.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use corecast_cluster::{Cluster, ClusterEvent, ClusterOutput};
use corecast_media::{decode_media, encode_media, ChannelId, MediaPacket};

use super::relay_layers::{LayerChange, RelayLayers};
use super::Shard;
use crate::messages::{ClusterCommand, ControlEvent};
use crate::metrics::inc;

/// The cluster and what shard 0 keeps for it.
pub struct ClusterPort {
    pub cluster: Cluster,
    /// Datagrams for the cluster socket.
    pub out: Vec<(SocketAddr, Vec<u8>)>,
    /// When the cluster next wants time.
    pub wake: Instant,
    /// Channels of other nodes this node subscribes to.
    remote: HashSet<ChannelId>,
    /// The layers of remote tracks that this node's viewers want.
    relay: RelayLayers,
    /// Local tracks whose layers above 0 this node publishes, one bit per
    /// started layer channel.
    published_layers: HashMap<ChannelId, u8>,
    /// Reused list of subscription changes.
    changes: Vec<LayerChange>,
    /// Reused buffer for encoding packets.
    scratch: Vec<u8>,
}

impl ClusterPort {
    pub fn new(cluster: Cluster, now: Instant) -> ClusterPort {
        ClusterPort {
            cluster,
            out: Vec::new(),
            wake: now,
            remote: HashSet::new(),
            relay: RelayLayers::default(),
            published_layers: HashMap::new(),
            changes: Vec::new(),
            scratch: Vec::with_capacity(1500),
        }
    }

    pub fn is_remote(&self, channel: ChannelId) -> bool {
        self.remote.contains(&channel)
    }

    /// A shard's viewers want these layers of a channel (bit per layer).
    pub fn set_demand(&mut self, now: Instant, shard: usize, channel: ChannelId, layers: u8) {
        let mut changes = std::mem::take(&mut self.changes);
        self.relay
            .set_demand(now, shard, channel, layers, &mut changes);
        self.apply(now, &mut changes);
        self.changes = changes;
    }

    /// Lets go of the layers no viewer wanted for a while.
    pub fn settle_layers(&mut self, now: Instant) {
        let mut changes = std::mem::take(&mut self.changes);
        self.relay.settle_all(now, &mut changes);
        self.apply(now, &mut changes);
        self.changes = changes;
    }

    /// Layer channels of remote tracks subscribed to.
    pub fn carried_layers(&self) -> usize {
        self.relay.carried()
    }

    /// `layers`: the simulcast layers of a remote track; `None` when it is
    /// no longer received.
    fn set_remote(&mut self, now: Instant, channel: ChannelId, layers: Option<u8>) {
        let mut changes = std::mem::take(&mut self.changes);
        self.relay.set_remote(now, channel, layers, &mut changes);
        self.apply(now, &mut changes);
        self.changes = changes;
    }

    fn apply(&mut self, now: Instant, changes: &mut Vec<LayerChange>) {
        for change in changes.drain(..) {
            match change {
                LayerChange::Subscribe(sub) => {
                    self.cluster.subscribe(now, sub);
                }
                LayerChange::Unsubscribe(sub) => self.cluster.unsubscribe(now, sub),
            }
        }
    }

    /// The channel a local packet goes out on: its layer's own for a
    /// simulcast layer above 0 (started on its first packet).
    fn out_channel(&mut self, now: Instant, packet: &MediaPacket) -> ChannelId {
        let spatial = packet.layer.spatial;
        if spatial == 0 || usize::from(spatial) >= corecast_media::MAX_SPATIAL {
            return packet.channel;
        }
        let sub = packet.channel.layer(spatial);
        let started = self.published_layers.entry(packet.channel).or_default();
        if *started & (1 << spatial) == 0 {
            *started |= 1 << spatial;
            self.cluster.publish_start(now, sub);
        }
        sub
    }

    /// Stops the layer channels of a local track.
    fn stop_layers(&mut self, now: Instant, channel: ChannelId) {
        let started = self.published_layers.remove(&channel).unwrap_or(0);
        for s in 1..corecast_media::MAX_SPATIAL as u8 {
            if started & (1 << s) != 0 {
                self.cluster.publish_stop(now, channel.layer(s));
            }
        }
    }
}

impl Shard {
    /// A datagram at the cluster socket.
    pub fn on_cluster_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if let Some(port) = self.cluster.as_mut() {
            port.cluster.handle_datagram(now, from, data);
        }
        self.drain_cluster(now);
    }

    /// The cluster's timer.
    pub fn on_cluster_timeout(&mut self, now: Instant) {
        if let Some(port) = self.cluster.as_mut() {
            if now >= port.wake {
                port.cluster.handle_timeout(now);
            }
        }
        self.drain_cluster(now);
    }

    /// Sends once a second what the control thread shows of the cluster.
    pub fn report_cluster(&mut self, now: Instant) {
        if let Some(port) = self.cluster.as_ref() {
            self.metrics.cluster_layer_subscriptions.store(
                port.carried_layers() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let view = Box::new(port.cluster.view(now));
            if self
                .control
                .try_send(ControlEvent::ClusterView(view))
                .is_err()
            {
                inc(&self.metrics.control_drops_total);
            }
        }
    }

    pub(super) fn on_cluster_command(&mut self, now: Instant, cmd: ClusterCommand) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        match cmd {
            ClusterCommand::Publish { channel, on: true } => {
                port.cluster.publish_start(now, channel)
            }
            ClusterCommand::Publish { channel, on: false } => {
                port.cluster.publish_stop(now, channel);
                port.stop_layers(now, channel);
            }
            ClusterCommand::Subscribe {
                channel,
                on,
                layers,
            } => {
                if on && port.remote.insert(channel) {
                    port.cluster.subscribe(now, channel);
                    port.set_remote(now, channel, Some(layers));
                    // The viewers already here need a keyframe to start.
                    port.cluster.request_keyframe(now, channel, None);
                } else if !on && port.remote.remove(&channel) {
                    port.cluster.unsubscribe(now, channel);
                    port.set_remote(now, channel, None);
                }
            }
            ClusterCommand::SetPeer(record) => port.cluster.set_peer(now, record),
            ClusterCommand::DelPeer { room, peer } => port.cluster.del_peer(now, &room, &peer),
            ClusterCommand::SetLoad(load) => port.cluster.set_load(load),
            ClusterCommand::SetRegistration(record) => port.cluster.set_registration(now, record),
            ClusterCommand::DelRegistration { aor, contact } => {
                port.cluster.del_registration(now, &aor, &contact)
            }
        }
        self.drain_cluster(now);
    }

    /// A local publisher's packet for the other nodes (shard 0 only).
    pub(super) fn export(&mut self, now: Instant, packet: &MediaPacket) {
        let Some(port) = self.cluster.as_mut() else {
            return;
        };
        if !port.cluster.has_peers() {
            return;
        }
        port.scratch.clear();
        encode_media(packet, &mut port.scratch);
        let data = port.scratch.clone();
        let channel = port.out_channel(now, packet);
        port.cluster.publish(now, channel, data);
        self.drain_cluster(now);
    }

    /// Asks the publishing node of a remote channel for a keyframe; false if
    /// the channel is not one this node subscribes to.
    pub(super) fn remote_keyframe(
        &mut self,
        now: Instant,
        channel: ChannelId,
        layer: Option<u8>,
    ) -> bool {
        let Some(port) = self.cluster.as_mut() else {
            return false;
        };
        if !port.is_remote(channel) {
            return false;
        }
        port.cluster.request_keyframe(now, channel, layer);
        self.drain_cluster(now);
        true
    }

    pub(super) fn drain_cluster(&mut self, now: Instant) {
        loop {
            let Some(port) = self.cluster.as_mut() else {
                return;
            };
            match port.cluster.poll_output() {
                ClusterOutput::Timeout(at) => {
                    port.wake = at;
                    return;
                }
                ClusterOutput::Transmit(t) => port.out.push((t.to, t.data)),
                ClusterOutput::Event(event) => self.on_cluster_event(now, event),
            }
        }
    }

    fn on_cluster_event(&mut self, now: Instant, event: ClusterEvent) {
        match event {
            ClusterEvent::Media { channel, data } => {
                // A layer's own channel carries packets of its track.
                let track = self
                    .cluster
                    .as_ref()
                    .and_then(|p| p.relay.track_of(channel))
                    .unwrap_or(channel);
                match decode_media(track, &data, now) {
                    Ok(packet) => self.publish(now, packet),
                    Err(_) => inc(&self.metrics.bad_packets_total),
                }
            }
            ClusterEvent::Keyframe(channel, layer) => self.request_keyframe(now, channel, layer),
            ClusterEvent::PeerUp(record) => {
                self.tell_control(ControlEvent::RemotePeer { up: true, record })
            }
            ClusterEvent::PeerDown(record) => {
                self.tell_control(ControlEvent::RemotePeer { up: false, record })
            }
            ClusterEvent::RegistrationUp(record) => {
                self.tell_control(ControlEvent::RemoteRegistration { up: true, record })
            }
            ClusterEvent::RegistrationDown(record) => {
                self.tell_control(ControlEvent::RemoteRegistration { up: false, record })
            }
            ClusterEvent::NodeUp(node) => tracing::info!("cluster: node {node} up"),
            ClusterEvent::NodeDown(node) => tracing::warn!("cluster: node {node} down"),
        }
    }

    /// Room peers coming and going are lifecycle events: never dropped
    /// (the outbox keeps them in order when the control queue is full).
    fn tell_control(&mut self, event: ControlEvent) {
        self.emit(event);
    }
}
