//! Shard 0's part in the cluster: it drives the node's [`Cluster`] over the
//! cluster socket, sends local publishers' packets into their channels and
//! publishes packets from other nodes into the local fan-out like a local
//! publisher's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use corecast_cluster::{Cluster, ClusterEvent, ClusterOutput};
use corecast_media::{decode_media, encode_media, ChannelId, MediaPacket};

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
            scratch: Vec::with_capacity(1500),
        }
    }

    pub fn is_remote(&self, channel: ChannelId) -> bool {
        self.remote.contains(&channel)
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
                port.cluster.publish_stop(now, channel)
            }
            ClusterCommand::Subscribe { channel, on } => {
                if on && port.remote.insert(channel) {
                    port.cluster.subscribe(now, channel);
                    // The viewers already here need a keyframe to start.
                    port.cluster.request_keyframe(now, channel, None);
                } else if !on && port.remote.remove(&channel) {
                    port.cluster.unsubscribe(now, channel);
                }
            }
            ClusterCommand::SetPeer(record) => port.cluster.set_peer(now, record),
            ClusterCommand::DelPeer { room, peer } => port.cluster.del_peer(now, &room, &peer),
            ClusterCommand::SetLoad(load) => port.cluster.set_load(load),
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
        port.cluster.publish(now, packet.channel, data);
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

    fn drain_cluster(&mut self, now: Instant) {
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
            ClusterEvent::Media { channel, data } => match decode_media(channel, &data, now) {
                Ok(packet) => self.publish(now, packet),
                Err(_) => inc(&self.metrics.bad_packets_total),
            },
            ClusterEvent::Keyframe(channel, layer) => self.request_keyframe(now, channel, layer),
            ClusterEvent::PeerUp(record) => {
                self.tell_control(ControlEvent::RemotePeer { up: true, record })
            }
            ClusterEvent::PeerDown(record) => {
                self.tell_control(ControlEvent::RemotePeer { up: false, record })
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
