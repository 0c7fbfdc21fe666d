//! The control plane's view of sessions and streams.
//!
//! A session is pending (its endpoint held here) until a shard receives its
//! first STUN request and claims it; from then on only its shard is known.
//! A stream (the `{stream}` of `/whip/{stream}`) has at most one publisher and
//! any number of viewers, which follow whoever publishes now.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, CodecInfo, MediaKind};
use corecast_webrtc::{Endpoint, Role};

use corecast_cluster::{NodeLoad, PeerRecord, TrackRecord};

use crate::messages::{ClusterCommand, ControlEvent, SessionId, ShardCommand};
use crate::metrics::{inc, ShardMetrics};

enum Place {
    Pending {
        endpoint: Box<Endpoint>,
        since: Instant,
    },
    Shard(usize),
}

struct Session {
    stream: String,
    role: Role,
    ufrag: String,
    place: Place,
}

#[derive(Default)]
struct Stream {
    publisher: Option<SessionId>,
    channels: Vec<(MediaKind, ChannelId)>,
    negotiated: Vec<CodecInfo>,
    active: Vec<CodecInfo>,
    viewers: HashSet<SessionId>,
    /// The stream's publisher on another node, from the room key-value
    /// store. Used while there is no local publisher (a local one wins).
    remote: Option<PeerRecord>,
    /// Channels of `remote` this node subscribes to in the cluster.
    remote_subscribed: Vec<ChannelId>,
}

/// A live stream, as `/api/streams` shows it.
#[derive(Debug, serde::Serialize)]
pub struct StreamInfo {
    pub stream: String,
    pub live: bool,
    /// The node that holds the publisher, when it is another node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_node: Option<u32>,
    pub viewers: usize,
    pub codecs: Vec<String>,
}

/// Where a PATCH goes.
pub enum FragmentTarget<'a> {
    Pending(&'a mut Endpoint),
    Shard(flume::Sender<ShardCommand>),
}

/// Sessions, streams and the shards' command channels.
pub struct Directory {
    shards: Vec<flume::Sender<ShardCommand>>,
    sessions: HashMap<SessionId, Session>,
    by_ufrag: HashMap<String, SessionId>,
    streams: HashMap<String, Stream>,
    /// Whether this node is part of a cluster (shard 0 drives it).
    clustered: bool,
}

impl Directory {
    pub fn new(shards: Vec<flume::Sender<ShardCommand>>, clustered: bool) -> Directory {
        Directory {
            shards,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            streams: HashMap::new(),
            clustered,
        }
    }

    /// Sends this node's load to the cluster.
    pub fn report_load(&self, load: NodeLoad) {
        self.cluster(ClusterCommand::SetLoad(load));
    }

    /// Streams with a local publisher or local viewers, for the load report.
    pub fn local_streams(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| s.publisher.is_some() || !s.viewers.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    fn cluster(&self, cmd: ClusterCommand) {
        if self.clustered {
            self.send(0, ShardCommand::Cluster(cmd));
        }
    }

    /// Tells the cluster about a local publisher (its room entry, its
    /// channels) or, with `on` false, that it left.
    fn announce(&self, stream: &str, session: SessionId, on: bool) {
        if !self.clustered {
            return;
        }
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        for (_, ch) in &st.channels {
            self.cluster(ClusterCommand::Publish { channel: *ch, on });
            for i in 0..self.shards.len() {
                self.send(i, ShardCommand::Export { channel: *ch, on });
            }
        }
        if !on {
            self.cluster(ClusterCommand::DelPeer {
                room: stream.to_string(),
                peer: session.to_string(),
            });
            return;
        }
        let required = self.required_codecs(stream);
        let tracks = st
            .channels
            .iter()
            .map(|(kind, ch)| TrackRecord {
                kind: *kind,
                channel: ch.0,
                codecs: required
                    .iter()
                    .filter(|c| c.kind() == *kind)
                    .copied()
                    .collect(),
            })
            .collect();
        self.cluster(ClusterCommand::SetPeer(PeerRecord {
            room: stream.to_string(),
            peer: session.to_string(),
            node: 0,
            session: 0,
            tracks,
        }));
    }

    /// A room peer on another node came or went.
    fn on_remote_peer(&mut self, up: bool, record: PeerRecord) {
        let stream = record.room.clone();
        let st = self.streams.entry(stream.clone()).or_default();
        let same = st
            .remote
            .as_ref()
            .is_some_and(|r| r.peer == record.peer && r.node == record.node);
        if up {
            tracing::info!("stream {stream}: publisher on node {}", record.node);
            st.remote = Some(record);
        } else if same {
            tracing::info!("stream {stream}: publisher on node {} left", record.node);
            st.remote = None;
        } else {
            return;
        }
        if st.publisher.is_none() {
            let (channels, negotiated) = match &st.remote {
                Some(r) => (
                    r.tracks.iter().map(|t| (t.kind, t.channel_id())).collect(),
                    r.tracks
                        .iter()
                        .flat_map(|t| t.codecs.iter().copied())
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            st.channels = channels;
            st.negotiated = negotiated;
            st.active.clear();
            self.resubscribe(&stream);
        }
        if let Some(st) = self.streams.get(&stream) {
            if st.publisher.is_none() && st.viewers.is_empty() && st.remote.is_none() {
                self.streams.remove(&stream);
            }
        }
    }

    /// Subscribes this node to the remote publisher's channels while it has
    /// placed viewers of the stream, and only then.
    fn update_remote_subscription(&mut self, stream: &str, viewers_placed: bool) {
        let Some(st) = self.streams.get_mut(stream) else {
            return;
        };
        let want: Vec<ChannelId> = match (&st.remote, st.publisher) {
            (Some(r), None) if viewers_placed => r.tracks.iter().map(|t| t.channel_id()).collect(),
            _ => Vec::new(),
        };
        let old = std::mem::replace(&mut st.remote_subscribed, want.clone());
        for ch in old.iter().filter(|c| !want.contains(c)) {
            self.cluster(ClusterCommand::Subscribe {
                channel: *ch,
                on: false,
            });
        }
        for ch in want.iter().filter(|c| !old.contains(c)) {
            self.cluster(ClusterCommand::Subscribe {
                channel: *ch,
                on: true,
            });
        }
    }

    pub fn shutdown(&mut self) {
        self.shards.clear();
        self.sessions.clear();
    }

    pub fn pending(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s.place, Place::Pending { .. }))
            .count()
    }

    /// The codecs a new viewer of `stream` must accept, per kind: the codec
    /// the publisher sends once known, else those it negotiated. A kind the
    /// publisher does not publish is unconstrained (empty: anything).
    pub fn required_codecs(&self, stream: &str) -> Vec<CodecInfo> {
        let Some(s) = self.streams.get(stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let active: Vec<CodecInfo> = s
                .active
                .iter()
                .filter(|c| c.kind() == kind)
                .copied()
                .collect();
            if active.is_empty() {
                out.extend(s.negotiated.iter().filter(|c| c.kind() == kind).copied());
            } else {
                out.extend(active);
            }
        }
        out
    }

    #[cfg(test)]
    fn set_codecs(&mut self, stream: &str, negotiated: Vec<CodecInfo>, active: Vec<CodecInfo>) {
        let s = self.streams.entry(stream.to_string()).or_default();
        s.negotiated = negotiated;
        s.active = active;
    }

    pub fn session_stream(&self, session: SessionId) -> Option<(&str, Role)> {
        self.sessions
            .get(&session)
            .map(|s| (s.stream.as_str(), s.role))
    }

    /// Adds a WHIP publisher; an earlier publisher of the stream is closed and
    /// its viewers switch to the new one.
    pub fn add_publisher(
        &mut self,
        stream: &str,
        session: SessionId,
        endpoint: Endpoint,
        now: Instant,
    ) {
        let old = self.streams.get(stream).and_then(|s| s.publisher);
        if let Some(old) = old {
            self.remove(old);
        }
        let channels: Vec<(MediaKind, ChannelId)> = endpoint.published_channels().collect();
        let negotiated = endpoint.negotiated_codecs();
        self.insert(session, stream, endpoint, now);
        let s = self.streams.entry(stream.to_string()).or_default();
        s.publisher = Some(session);
        s.channels = channels;
        s.negotiated = negotiated;
        s.active.clear();
        self.announce(stream, session, true);
        self.resubscribe(stream);
    }

    pub fn add_viewer(&mut self, stream: &str, endpoint: Endpoint, now: Instant) -> SessionId {
        let session = SessionId::random();
        self.insert(session, stream, endpoint, now);
        self.streams
            .entry(stream.to_string())
            .or_default()
            .viewers
            .insert(session);
        session
    }

    fn insert(&mut self, session: SessionId, stream: &str, endpoint: Endpoint, now: Instant) {
        let ufrag = endpoint.local_ufrag().to_string();
        self.by_ufrag.insert(ufrag.clone(), session);
        self.sessions.insert(
            session,
            Session {
                stream: stream.to_string(),
                role: endpoint.role(),
                ufrag,
                place: Place::Pending {
                    endpoint: Box::new(endpoint),
                    since: now,
                },
            },
        );
    }

    /// Ends a session (DELETE, replaced publisher). Returns whether it existed.
    pub fn remove(&mut self, session: SessionId) -> bool {
        let Some(s) = self.sessions.remove(&session) else {
            return false;
        };
        self.by_ufrag.remove(&s.ufrag);
        if let Place::Shard(shard) = s.place {
            self.send(shard, ShardCommand::Close { session });
        }
        self.forget(session, &s.stream, s.role);
        true
    }

    fn forget(&mut self, session: SessionId, stream: &str, role: Role) {
        let Some(st) = self.streams.get_mut(stream) else {
            return;
        };
        match role {
            Role::Publisher if st.publisher == Some(session) => {
                self.announce(stream, session, false);
                let Some(st) = self.streams.get_mut(stream) else {
                    return;
                };
                st.publisher = None;
                let old = std::mem::take(&mut st.channels);
                st.active.clear();
                st.negotiated.clear();
                for (_, ch) in old {
                    self.broadcast_fanout(ch, 0);
                }
                // Viewers stay and wait for the next publisher, here or on
                // another node.
                if let Some(r) = self.streams.get(stream).and_then(|s| s.remote.clone()) {
                    self.on_remote_peer(true, r);
                }
                self.resubscribe(stream);
            }
            Role::Viewer => {
                st.viewers.remove(&session);
                self.update_fanout(stream);
            }
            Role::Publisher => {}
        }
        if let Some(st) = self.streams.get(stream) {
            if st.publisher.is_none() && st.viewers.is_empty() && st.remote.is_none() {
                self.streams.remove(stream);
            }
        }
    }

    /// Points every placed viewer of `stream` at its current publisher.
    fn resubscribe(&mut self, stream: &str) {
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        let mut cmds = Vec::new();
        for viewer in &st.viewers {
            if let Some(Session {
                place: Place::Shard(shard),
                ..
            }) = self.sessions.get(viewer)
            {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let channel = st
                        .channels
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, c)| *c);
                    cmds.push((
                        *shard,
                        ShardCommand::Subscribe {
                            session: *viewer,
                            kind,
                            channel,
                        },
                    ));
                }
            }
        }
        for (shard, cmd) in cmds {
            self.send(shard, cmd);
        }
        self.update_fanout(stream);
    }

    /// Tells every shard which shards hold viewers of the stream's channels.
    fn update_fanout(&mut self, stream: &str) {
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        let mut mask = 0u64;
        for v in &st.viewers {
            if let Some(Session {
                place: Place::Shard(shard),
                ..
            }) = self.sessions.get(v)
            {
                mask |= 1 << shard;
            }
        }
        let channels: Vec<ChannelId> = st.channels.iter().map(|(_, c)| *c).collect();
        for ch in channels {
            self.broadcast_fanout(ch, mask);
        }
        self.update_remote_subscription(stream, mask != 0);
    }

    fn broadcast_fanout(&self, channel: ChannelId, shards: u64) {
        for i in 0..self.shards.len() {
            self.send(i, ShardCommand::Fanout { channel, shards });
        }
    }

    fn send(&self, shard: usize, cmd: ShardCommand) {
        if let Some(tx) = self.shards.get(shard) {
            if tx.try_send(cmd).is_err() {
                tracing::warn!("shard {shard} command queue full: command dropped");
            }
        }
    }

    pub fn fragment_target(&mut self, session: SessionId) -> Option<FragmentTarget<'_>> {
        match &mut self.sessions.get_mut(&session)?.place {
            Place::Pending { endpoint, .. } => Some(FragmentTarget::Pending(endpoint)),
            Place::Shard(shard) => self.shards.get(*shard).cloned().map(FragmentTarget::Shard),
        }
    }

    /// Records a new server ufrag after an ICE restart of a pending session.
    pub fn set_ufrag(&mut self, session: SessionId, ufrag: String) {
        if let Some(s) = self.sessions.get_mut(&session) {
            self.by_ufrag.remove(&s.ufrag);
            self.by_ufrag.insert(ufrag.clone(), session);
            s.ufrag = ufrag;
        }
    }

    pub fn on_event(&mut self, event: ControlEvent, metrics: &[Arc<ShardMetrics>]) {
        match event {
            ControlEvent::Claim {
                shard,
                ufrag,
                datagram,
            } => {
                let Some(&session) = self.by_ufrag.get(&ufrag) else {
                    if let Some(m) = metrics.get(shard) {
                        inc(&m.bad_packets_total);
                    }
                    return;
                };
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                match std::mem::replace(&mut s.place, Place::Shard(shard)) {
                    Place::Pending { endpoint, .. } => {
                        let stream = s.stream.clone();
                        let subscriptions = match s.role {
                            Role::Viewer => self
                                .streams
                                .get(&stream)
                                .map(|st| st.channels.clone())
                                .unwrap_or_default(),
                            Role::Publisher => Vec::new(),
                        };
                        self.send(
                            shard,
                            ShardCommand::Adopt {
                                session,
                                endpoint,
                                first: datagram,
                                subscriptions,
                            },
                        );
                        self.update_fanout(&stream);
                    }
                    Place::Shard(owner) => {
                        s.place = Place::Shard(owner);
                        if owner != shard {
                            // Another 4-tuple of this client hashed to another shard.
                            self.send(owner, ShardCommand::Ingress { session, datagram });
                        }
                    }
                }
            }
            ControlEvent::Closed { session, reason } => {
                tracing::info!("session {session} closed: {reason:?}");
                if let Some(s) = self.sessions.remove(&session) {
                    self.by_ufrag.remove(&s.ufrag);
                    self.forget(session, &s.stream, s.role);
                }
            }
            ControlEvent::ActiveCodec {
                session,
                channel,
                codec,
            } => {
                let stream = self.sessions.get(&session).map(|s| s.stream.clone());
                let mut changed = None;
                if let Some((name, st)) =
                    stream.and_then(|name| self.streams.get_mut(&name).map(|st| (name, st)))
                {
                    if st.channels.iter().any(|(_, c)| *c == channel) {
                        st.active.retain(|c| c.kind() != codec.kind());
                        st.active.push(codec);
                        changed = Some(name);
                    }
                }
                // Other nodes' viewers must accept the codec in use now.
                if let Some(name) = changed {
                    self.announce(&name, session, true);
                }
            }
            ControlEvent::RemotePeer { up, record } => self.on_remote_peer(up, record),
            ControlEvent::ClusterView(_) => {}
            ControlEvent::UfragChanged { session, ufrag } => self.set_ufrag(session, ufrag),
        }
    }

    pub fn expire_pending(&mut self, now: Instant, timeout: Duration) {
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(
                |(_, s)| matches!(s.place, Place::Pending { since, .. } if now >= since + timeout),
            )
            .map(|(id, _)| *id)
            .collect();
        for session in expired {
            tracing::info!("session {session} never connected: removed");
            self.remove(session);
        }
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = self
            .streams
            .iter()
            .map(|(name, s)| StreamInfo {
                stream: name.clone(),
                live: s.publisher.is_some() || s.remote.is_some(),
                remote_node: s
                    .remote
                    .as_ref()
                    .filter(|_| s.publisher.is_none())
                    .map(|r| r.node),
                viewers: s.viewers.len(),
                codecs: s.active.iter().map(|c| c.to_string()).collect(),
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_media::Codec;

    #[test]
    fn required_codecs_are_chosen_per_kind() {
        let mut d = Directory::new(Vec::new(), false);
        let opus = CodecInfo::new(Codec::Opus, 48_000);
        let vp8 = CodecInfo::new(Codec::Vp8, 90_000);
        let vp9 = CodecInfo::new(Codec::Vp9, 90_000);
        assert!(d.required_codecs("s").is_empty());
        d.set_codecs("s", vec![opus, vp8, vp9], vec![]);
        assert_eq!(d.required_codecs("s"), vec![opus, vp8, vp9]);
        // Audio became active first: video is still the negotiated set.
        d.set_codecs("s", vec![opus, vp8, vp9], vec![opus]);
        assert_eq!(d.required_codecs("s"), vec![opus, vp8, vp9]);
        d.set_codecs("s", vec![opus, vp8, vp9], vec![opus, vp9]);
        assert_eq!(d.required_codecs("s"), vec![opus, vp9]);
    }
}
