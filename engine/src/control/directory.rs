//! The control plane's view of sessions and streams.
//!
//! A session is pending (its endpoint held here) until a shard receives its
//! first STUN request and claims it; from then on only its shard is known.
//! A stream (the `{stream}` of `/whip/{stream}`) has at most one publisher and
//! any number of viewers, which follow whoever publishes now.
//!
//! Lifecycle commands to shards are never lost: a full command queue puts
//! them in the shard's outbox, retried on every send and on the control
//! thread's tick ([`Directory::tick`]), in order. A shard acknowledges each
//! adoption; a placed session that no shard acknowledges within
//! [`ADOPT_DEADLINE`] is closed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corecast_media::{ChannelId, CodecInfo, MediaKind};
use corecast_webrtc::{CloseReason, Endpoint, Role};

use corecast_cluster::{NodeLoad, PeerRecord, TrackRecord};

use crate::messages::{ClusterCommand, ControlEvent, SessionId, ShardCommand};
use crate::metrics::{inc, ShardMetrics};

/// How long a shard may take to acknowledge an adoption before the session
/// is closed.
pub const ADOPT_DEADLINE: Duration = Duration::from_secs(5);
/// Commands waiting for room in one shard's queue, at most. Reached only if
/// a shard stops draining its queue; beyond it commands are dropped and
/// counted (and reconciliation closes the sessions they concerned).
pub const OUTBOX_CAP: usize = 65_536;
/// Recently closed sessions kept for `/api/closed`.
pub const RECENTLY_CLOSED: usize = 128;

enum Place {
    Pending {
        endpoint: Box<Endpoint>,
        since: Instant,
    },
    /// Placed on `shard` at `since`; `acked` once the shard said so.
    Shard {
        shard: usize,
        since: Instant,
        acked: bool,
    },
}

struct Session {
    stream: String,
    role: Role,
    ufrag: String,
    place: Place,
    /// The codecs a viewer's leg can receive (empty for a publisher).
    receivable: Vec<CodecInfo>,
    /// Shards (bit per shard) that forward an address of this session.
    routed: u64,
}

/// Counters of the control plane, exported on `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Commands put in an outbox because a shard's queue was full.
    pub commands_queued: u64,
    /// Commands delivered from an outbox on a retry.
    pub commands_retried: u64,
    /// Commands dropped because an outbox was full.
    pub outbox_drops: u64,
    /// STUN datagrams for another shard's endpoint dropped on a full queue.
    pub ingress_drops: u64,
    /// Placed sessions closed because no shard acknowledged the adoption.
    pub adopt_unacknowledged: u64,
    /// Viewers closed because the publisher switched to a codec they cannot receive.
    pub viewers_closed_codec_changed: u64,
    /// Sessions refused because too many were pending.
    pub refused_pending: u64,
    /// Sessions refused because the node was at capacity.
    pub refused_capacity: u64,
}

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-pending` endpoints wait for their first STUN request.
    Pending,
    /// Connected and pending endpoints fill every shard's capacity.
    Capacity,
}

/// A session that ended, as `/api/closed` shows it.
#[derive(Debug, Clone)]
pub struct ClosedSession {
    pub session: SessionId,
    pub stream: String,
    pub role: Role,
    pub reason: String,
    pub at: Instant,
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
    /// The shard that holds the session: send it a command with
    /// [`Directory::command`].
    Shard(usize),
}

/// Sessions, streams and the shards' command channels.
pub struct Directory {
    shards: Vec<flume::Sender<ShardCommand>>,
    /// Per shard: commands its queue had no room for, oldest first.
    outbox: Vec<VecDeque<ShardCommand>>,
    stats: DirectoryStats,
    closed: VecDeque<ClosedSession>,
    /// Placements waiting for the shard's acknowledgement, oldest first
    /// (entries of sessions acknowledged or gone meanwhile are skipped).
    awaiting_ack: VecDeque<(Instant, SessionId)>,
    /// Sessions in `Place::Pending`.
    pending: usize,
    sessions: HashMap<SessionId, Session>,
    by_ufrag: HashMap<String, SessionId>,
    streams: HashMap<String, Stream>,
    /// Whether this node is part of a cluster (shard 0 drives it).
    clustered: bool,
}

impl Directory {
    pub fn new(shards: Vec<flume::Sender<ShardCommand>>, clustered: bool) -> Directory {
        Directory {
            outbox: shards.iter().map(|_| VecDeque::new()).collect(),
            shards,
            stats: DirectoryStats::default(),
            closed: VecDeque::new(),
            awaiting_ack: VecDeque::new(),
            pending: 0,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            streams: HashMap::new(),
            clustered,
        }
    }

    /// Sends this node's load to the cluster.
    pub fn report_load(&mut self, load: NodeLoad) {
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

    fn cluster(&mut self, cmd: ClusterCommand) {
        if self.clustered {
            self.send(0, ShardCommand::Cluster(cmd));
        }
    }

    /// Tells the cluster about a local publisher (its room entry, its
    /// channels) or, with `on` false, that it left.
    fn announce(&mut self, stream: &str, session: SessionId, on: bool) {
        if !self.clustered {
            return;
        }
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        let channels: Vec<ChannelId> = st.channels.iter().map(|(_, c)| *c).collect();
        for ch in channels {
            self.cluster(ClusterCommand::Publish { channel: ch, on });
            for i in 0..self.shards.len() {
                self.send(i, ShardCommand::Export { channel: ch, on });
            }
        }
        let Some(st) = self.streams.get(stream) else {
            return;
        };
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
        self.outbox.clear();
        self.sessions.clear();
        self.awaiting_ack.clear();
        self.pending = 0;
    }

    pub fn stats(&self) -> DirectoryStats {
        self.stats
    }

    /// Commands waiting in the outboxes, per shard.
    pub fn outbox_len(&self) -> Vec<usize> {
        self.outbox.iter().map(VecDeque::len).collect()
    }

    /// Whether a new session may be answered: fewer than `max_pending`
    /// pending endpoints, and connected (`placed`, as the shards count them)
    /// plus pending endpoints below `capacity`. Counts refusals.
    pub fn admit(&mut self, placed: u64, capacity: u64, max_pending: usize) -> Result<(), Refusal> {
        let pending = self.pending();
        if pending >= max_pending {
            self.stats.refused_pending += 1;
            return Err(Refusal::Pending);
        }
        if placed + pending as u64 >= capacity {
            self.stats.refused_capacity += 1;
            return Err(Refusal::Capacity);
        }
        Ok(())
    }

    /// Sessions that ended lately, newest first.
    pub fn recently_closed(&self) -> impl Iterator<Item = &ClosedSession> {
        self.closed.iter().rev()
    }

    pub fn pending(&self) -> usize {
        self.pending
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
            self.end(now, old, "replaced");
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
        let receivable = endpoint.receivable_codecs();
        self.insert(session, stream, endpoint, now);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.receivable = receivable;
        }
        self.streams
            .entry(stream.to_string())
            .or_default()
            .viewers
            .insert(session);
        session
    }

    fn insert(&mut self, session: SessionId, stream: &str, endpoint: Endpoint, now: Instant) {
        self.pending += 1;
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
                receivable: Vec::new(),
                routed: 0,
            },
        );
    }

    /// Ends a session (DELETE). Returns whether it existed.
    pub fn remove(&mut self, now: Instant, session: SessionId) -> bool {
        self.end(now, session, "deleted")
    }

    /// Ends a session here and on its shard, and remembers why.
    fn end(&mut self, now: Instant, session: SessionId, reason: &str) -> bool {
        let Some(s) = self.sessions.remove(&session) else {
            return false;
        };
        self.by_ufrag.remove(&s.ufrag);
        if let Place::Shard { shard, .. } = s.place {
            self.send(shard, ShardCommand::Close { session });
        }
        self.ended(now, session, s, reason);
        true
    }

    /// What every end of a session does once it left `sessions`: routes,
    /// the stream, the record of recently closed sessions.
    fn ended(&mut self, now: Instant, session: SessionId, s: Session, reason: &str) {
        if matches!(s.place, Place::Pending { .. }) {
            self.pending = self.pending.saturating_sub(1);
        }
        for shard in 0..self.shards.len() {
            if s.routed & (1 << shard) != 0 {
                self.send(shard, ShardCommand::Unroute { session });
            }
        }
        self.forget(session, &s.stream, s.role);
        if self.closed.len() >= RECENTLY_CLOSED {
            self.closed.pop_front();
        }
        self.closed.push_back(ClosedSession {
            session,
            stream: s.stream,
            role: s.role,
            reason: reason.to_string(),
            at: now,
        });
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
                place: Place::Shard { shard, .. },
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
                place: Place::Shard { shard, .. },
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

    fn broadcast_fanout(&mut self, channel: ChannelId, shards: u64) {
        for i in 0..self.shards.len() {
            self.send(i, ShardCommand::Fanout { channel, shards });
        }
    }

    /// Sends a command to a shard the way lifecycle commands go (in order,
    /// never dropped).
    pub fn command(&mut self, shard: usize, cmd: ShardCommand) {
        self.send(shard, cmd);
    }

    /// Sends a lifecycle command; never drops it: a full queue (or older
    /// commands still waiting) puts it in the shard's outbox, in order.
    fn send(&mut self, shard: usize, cmd: ShardCommand) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        if self.outbox[shard].is_empty() {
            match tx.try_send(cmd) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(cmd)) => self.queue(shard, cmd),
                // The shard is gone: shutdown.
                Err(flume::TrySendError::Disconnected(_)) => {}
            }
        } else {
            self.queue(shard, cmd);
            self.flush(shard);
        }
    }

    fn queue(&mut self, shard: usize, cmd: ShardCommand) {
        if self.outbox[shard].len() >= OUTBOX_CAP {
            self.stats.outbox_drops += 1;
            tracing::error!("shard {shard}: command outbox full, command dropped");
            return;
        }
        self.stats.commands_queued += 1;
        self.outbox[shard].push_back(cmd);
    }

    /// Delivers what the shard's queue has room for, oldest first.
    fn flush(&mut self, shard: usize) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        while let Some(cmd) = self.outbox[shard].pop_front() {
            match tx.try_send(cmd) {
                Ok(()) => self.stats.commands_retried += 1,
                Err(flume::TrySendError::Full(cmd)) => {
                    self.outbox[shard].push_front(cmd);
                    return;
                }
                Err(flume::TrySendError::Disconnected(_)) => {
                    self.outbox[shard].clear();
                    return;
                }
            }
        }
    }

    /// The control thread's periodic work: retries every outbox, and closes
    /// placed sessions whose adoption no shard acknowledged in time.
    pub fn tick(&mut self, now: Instant) {
        for shard in 0..self.shards.len() {
            self.flush(shard);
        }
        let mut late = Vec::new();
        while let Some(&(since, session)) = self.awaiting_ack.front() {
            if now < since + ADOPT_DEADLINE {
                break;
            }
            self.awaiting_ack.pop_front();
            if let Some(Session {
                place:
                    Place::Shard {
                        shard,
                        since: placed,
                        acked: false,
                    },
                ..
            }) = self.sessions.get(&session)
            {
                if *placed == since {
                    late.push((session, *shard));
                }
            }
        }
        for (session, shard) in late {
            tracing::warn!(
                "session {session}: shard {shard} did not acknowledge its adoption within {ADOPT_DEADLINE:?}: closed"
            );
            self.stats.adopt_unacknowledged += 1;
            self.end(now, session, "not_adopted");
        }
    }

    /// A STUN datagram for a placed endpoint that reached another shard.
    /// Droppable (clients retransmit), so it never waits in an outbox.
    fn send_ingress(&mut self, shard: usize, cmd: ShardCommand) {
        let Some(tx) = self.shards.get(shard) else {
            return;
        };
        if tx.try_send(cmd).is_err() {
            self.stats.ingress_drops += 1;
        }
    }

    pub fn fragment_target(&mut self, session: SessionId) -> Option<FragmentTarget<'_>> {
        match &mut self.sessions.get_mut(&session)?.place {
            Place::Pending { endpoint, .. } => Some(FragmentTarget::Pending(endpoint)),
            Place::Shard { shard, .. } => Some(FragmentTarget::Shard(*shard)),
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

    pub fn on_event(&mut self, now: Instant, event: ControlEvent, metrics: &[Arc<ShardMetrics>]) {
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
                let placed = Place::Shard {
                    shard,
                    since: now,
                    acked: false,
                };
                match std::mem::replace(&mut s.place, placed) {
                    Place::Pending { endpoint, .. } => {
                        self.pending = self.pending.saturating_sub(1);
                        self.awaiting_ack.push_back((now, session));
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
                    old @ Place::Shard { shard: owner, .. } => {
                        s.place = old;
                        if owner != shard && shard < self.shards.len() {
                            // Another address of this client hashed to
                            // another shard: this datagram goes to the owner,
                            // and that shard forwards the address's next ones
                            // itself, over the ring.
                            let new_route = s.routed & (1 << shard) == 0;
                            s.routed |= 1 << shard;
                            let addr = datagram.source;
                            self.send_ingress(owner, ShardCommand::Ingress { session, datagram });
                            if new_route {
                                tracing::debug!("session {session}: {addr} routed from shard {shard} to {owner}");
                            }
                            self.send(
                                shard,
                                ShardCommand::Route {
                                    session,
                                    addr,
                                    owner,
                                },
                            );
                        }
                    }
                }
            }
            ControlEvent::Adopted { session, shard } => {
                if let Some(Session {
                    place:
                        Place::Shard {
                            shard: owner,
                            acked,
                            ..
                        },
                    ..
                }) = self.sessions.get_mut(&session)
                {
                    if *owner == shard {
                        *acked = true;
                    }
                }
            }
            ControlEvent::Closed { session, reason } => {
                tracing::info!("session {session} closed: {reason:?}");
                if let Some(s) = self.sessions.remove(&session) {
                    self.by_ufrag.remove(&s.ufrag);
                    let reason = match reason {
                        CloseReason::Closed => "closed",
                        CloseReason::ConsentExpired => "consent_expired",
                        CloseReason::PeerClosed => "peer_closed",
                    };
                    self.ended(now, session, s, reason);
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
                    if st.publisher == Some(session)
                        && st.channels.iter().any(|(_, c)| *c == channel)
                    {
                        st.active.retain(|c| c.kind() != codec.kind());
                        st.active.push(codec);
                        changed = Some(name);
                    }
                }
                if let Some(name) = changed {
                    // Other nodes' viewers must accept the codec in use now.
                    self.announce(&name, session, true);
                    self.close_unfit_viewers(now, &name, codec);
                }
            }
            ControlEvent::RemotePeer { up, record } => self.on_remote_peer(up, record),
            ControlEvent::ClusterView(_) => {}
            ControlEvent::UfragChanged { session, ufrag } => self.set_ufrag(session, ufrag),
        }
    }

    /// Closes the viewers of `stream` that cannot receive `codec` (the
    /// publisher switched to it): they would get nothing. Their players
    /// reconnect and negotiate the new codec. Viewers without a track of
    /// the codec's kind are left alone.
    fn close_unfit_viewers(&mut self, now: Instant, stream: &str, codec: CodecInfo) {
        let Some(st) = self.streams.get(stream) else {
            return;
        };
        let mut unfit: Vec<SessionId> = st
            .viewers
            .iter()
            .filter(|v| {
                self.sessions.get(v).is_some_and(|s| {
                    let mut same_kind = s.receivable.iter().filter(|c| c.kind() == codec.kind());
                    let mut any = false;
                    let fits = same_kind.any(|c| {
                        any = true;
                        *c == codec
                    });
                    any && !fits
                })
            })
            .copied()
            .collect();
        unfit.sort_by_key(|s| s.0);
        for viewer in unfit {
            tracing::info!(
                "session {viewer} closed: the publisher of {stream} switched to {codec}, which this viewer did not negotiate (codec_changed)"
            );
            self.stats.viewers_closed_codec_changed += 1;
            self.end(now, viewer, "codec_changed");
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
            self.end(now, session, "never_connected");
        }
    }

    /// Appends the control plane's counters in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        let st = self.stats;
        for (name, help, value) in [
            (
                "corecast_directory_commands_queued_total",
                "Lifecycle commands to shards queued in the control thread's outbox because a shard's queue was full (retried, not lost).",
                st.commands_queued,
            ),
            (
                "corecast_directory_command_retries_total",
                "Lifecycle commands delivered from the outbox on a retry.",
                st.commands_retried,
            ),
            (
                "corecast_directory_outbox_drops_total",
                "Lifecycle commands dropped because a shard's outbox was full (never expected).",
                st.outbox_drops,
            ),
            (
                "corecast_directory_ingress_drops_total",
                "STUN datagrams for another shard's endpoint dropped because that shard's queue was full (clients retransmit).",
                st.ingress_drops,
            ),
            (
                "corecast_adopt_unacknowledged_total",
                "Placed sessions closed because their shard did not acknowledge the adoption in time.",
                st.adopt_unacknowledged,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let name = "corecast_directory_outbox";
        let _ = writeln!(out, "# HELP {name} Lifecycle commands waiting in the control thread's outbox, per shard.\n# TYPE {name} gauge");
        for (i, q) in self.outbox.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", q.len());
        }
        let name = "corecast_viewers_closed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Viewers the node closed, by reason.\n# TYPE {name} counter"
        );
        let _ = writeln!(
            out,
            "{name}{{reason=\"codec_changed\"}} {}",
            st.viewers_closed_codec_changed
        );
        let name = "corecast_sessions_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} WHIP/WHEP requests refused with 503, by reason.\n# TYPE {name} counter"
        );
        let _ = writeln!(out, "{name}{{reason=\"pending\"}} {}", st.refused_pending);
        let _ = writeln!(out, "{name}{{reason=\"capacity\"}} {}", st.refused_capacity);
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
    use crate::messages::Datagram;
    use corecast_media::Codec;
    use corecast_webrtc::{Client, EndpointConfig, PublisherInfo};

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

    /// Endpoints made from the test client's offers; no sockets.
    struct Fixture {
        config: EndpointConfig,
        t0: Instant,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                config: EndpointConfig::new(vec!["127.0.0.1:9000".parse().unwrap()]),
                t0: Instant::now(),
            }
        }

        fn publisher(&self, d: &mut Directory, stream: &str, video: Codec) -> (SessionId, String) {
            let local = "127.0.0.1:5000".parse().unwrap();
            let (_, offer) =
                Client::with_video_codec(&self.config, self.t0, local, true, video).unwrap();
            let session = SessionId::random();
            let who = PublisherInfo {
                room: stream.to_string(),
                peer: session.to_string(),
            };
            let (ep, _) = Endpoint::publisher(&self.config, self.t0, &offer, who).unwrap();
            let ufrag = ep.local_ufrag().to_string();
            d.add_publisher(stream, session, ep, self.t0);
            (session, ufrag)
        }

        fn viewer(&self, d: &mut Directory, stream: &str, video: Codec) -> (SessionId, String) {
            let local = "127.0.0.1:5001".parse().unwrap();
            let (_, offer) =
                Client::with_video_codec(&self.config, self.t0, local, false, video).unwrap();
            let required = d.required_codecs(stream);
            let (ep, _) = Endpoint::viewer(&self.config, self.t0, &offer, &required).unwrap();
            let ufrag = ep.local_ufrag().to_string();
            (d.add_viewer(stream, ep, self.t0), ufrag)
        }
    }

    fn claim(d: &mut Directory, now: Instant, shard: usize, ufrag: &str) {
        let datagram = Datagram {
            at: now,
            source: "127.0.0.1:5000".parse().unwrap(),
            destination: "127.0.0.1:9000".parse().unwrap(),
            contents: Vec::new(),
        };
        d.on_event(
            now,
            ControlEvent::Claim {
                shard,
                ufrag: ufrag.to_string(),
                datagram,
            },
            &[],
        );
    }

    /// What a shard received, in order, as short strings.
    fn describe(cmd: &ShardCommand) -> String {
        match cmd {
            ShardCommand::Adopt { session, .. } => format!("adopt {session}"),
            ShardCommand::Close { session } => format!("close {session}"),
            ShardCommand::Subscribe {
                session, channel, ..
            } => format!("subscribe {session} {}", channel.is_some()),
            ShardCommand::Fanout { channel, shards } => format!("fanout {} {shards}", channel.0),
            ShardCommand::Export { .. } => "export".into(),
            ShardCommand::Ingress { .. } => "ingress".into(),
            ShardCommand::Route { session, .. } => format!("route {session}"),
            ShardCommand::Unroute { session } => format!("unroute {session}"),
            ShardCommand::Cluster(_) => "cluster".into(),
            ShardCommand::Fragment { .. } => "fragment".into(),
        }
    }

    #[test]
    fn lifecycle_commands_survive_full_shard_queues() {
        let f = Fixture::new();
        // Queues of one command: almost everything goes through the outboxes.
        let (tx0, rx0) = flume::bounded(1);
        let (tx1, rx1) = flume::bounded(1);
        let rx = [rx0, rx1];
        let mut d = Directory::new(vec![tx0, tx1], false);
        let mut now = f.t0;
        let (publisher, pu) = f.publisher(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &pu);
        let mut viewers = Vec::new();
        for i in 0..6 {
            let (v, u) = f.viewer(&mut d, "s", Codec::Vp8);
            claim(&mut d, now, i % 2, &u);
            viewers.push(v);
        }
        // Viewer 5 (on shard 1) leaves; a second address of viewer 0 (shard
        // 0) reaches shard 1.
        assert!(d.remove(now, viewers[5]));
        let u0 = d.sessions[&viewers[0]].ufrag.clone();
        claim(&mut d, now, 1, &u0);
        assert_eq!(d.pending(), 0, "every session is placed");

        // The shards drain one command at a time; the control thread ticks
        // every 100 ms in between.
        let mut got: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..10_000 {
            let mut any = false;
            for (i, r) in rx.iter().enumerate() {
                if let Ok(cmd) = r.try_recv() {
                    got[i].push(describe(&cmd));
                    any = true;
                }
            }
            now += Duration::from_millis(100);
            // Every adoption is acknowledged at once (no reconciliation here).
            for (i, list) in got.iter().enumerate() {
                for line in list.iter().filter(|l| l.starts_with("adopt ")) {
                    let session = SessionId::parse(&line[6..]).unwrap();
                    d.on_event(now, ControlEvent::Adopted { session, shard: i }, &[]);
                }
            }
            d.tick(now);
            if !any && d.outbox_len().iter().all(|n| *n == 0) {
                break;
            }
        }
        assert_eq!(d.outbox_len(), vec![0, 0]);
        let count = |i: usize, what: &str| got[i].iter().filter(|l| *l == what).count();
        assert_eq!(count(0, &format!("adopt {publisher}")), 1);
        for (n, v) in viewers.iter().enumerate() {
            assert_eq!(count(n % 2, &format!("adopt {v}")), 1, "viewer {n}");
        }
        let stats = d.stats();
        assert_eq!(stats.outbox_drops, 0);
        assert_eq!(stats.adopt_unacknowledged, 0);
        assert!(
            stats.commands_retried >= stats.commands_queued - 1,
            "{stats:?}"
        );
        assert!(stats.commands_queued > 10, "{stats:?}");
        // The close of viewer 5 comes after its adoption, on its shard.
        let pos = |i: usize, what: String| got[i].iter().position(|l| *l == what);
        assert!(pos(1, format!("close {}", viewers[5])) > pos(1, format!("adopt {}", viewers[5])));
        // Shard 1 learned viewer 0's second address; the others stay as they were.
        assert_eq!(count(1, &format!("route {}", viewers[0])), 1);
        // The last fan-out mask each shard heard is the final one: viewers
        // on both shards.
        for list in &got {
            let last = list
                .iter()
                .rev()
                .find(|l| l.starts_with("fanout "))
                .unwrap();
            assert!(last.ends_with(" 3"), "{last}");
        }
        // Viewer 0 ends: shard 0 closes it, shard 1 forgets its route.
        d.on_event(
            now,
            ControlEvent::Closed {
                session: viewers[0],
                reason: CloseReason::PeerClosed,
            },
            &[],
        );
        let unroute = rx[1].try_recv().map(|c| describe(&c));
        assert_eq!(unroute.ok(), Some(format!("unroute {}", viewers[0])));
    }

    #[test]
    fn an_unacknowledged_adoption_is_closed() {
        let f = Fixture::new();
        let (tx, rx) = flume::bounded(64);
        let mut d = Directory::new(vec![tx], false);
        let (publisher, pu) = f.publisher(&mut d, "s", Codec::Vp8);
        let (viewer, vu) = f.viewer(&mut d, "s", Codec::Vp8);
        let t0 = f.t0;
        claim(&mut d, t0, 0, &pu);
        claim(&mut d, t0, 0, &vu);
        // The shard took both, but the viewer's acknowledgement never came.
        d.on_event(
            t0,
            ControlEvent::Adopted {
                session: publisher,
                shard: 0,
            },
            &[],
        );
        while rx.try_recv().is_ok() {}
        d.tick(t0 + ADOPT_DEADLINE - Duration::from_millis(1));
        assert_eq!(d.stats().adopt_unacknowledged, 0);
        assert!(d.session_stream(viewer).is_some());
        d.tick(t0 + ADOPT_DEADLINE);
        assert_eq!(d.stats().adopt_unacknowledged, 1);
        assert!(d.session_stream(viewer).is_none(), "the viewer is closed");
        assert!(d.session_stream(publisher).is_some(), "the publisher stays");
        let sent: Vec<String> = rx.try_iter().map(|c| describe(&c)).collect();
        assert!(sent.contains(&format!("close {viewer}")), "{sent:?}");
        let last = d.recently_closed().next().unwrap();
        assert_eq!(
            (last.session, last.reason.as_str()),
            (viewer, "not_adopted")
        );
        let mut out = String::new();
        d.render_metrics(&mut out);
        assert!(
            out.contains("corecast_adopt_unacknowledged_total 1"),
            "{out}"
        );
    }

    #[test]
    fn pending_endpoints_are_limited_and_count_toward_capacity() {
        let f = Fixture::new();
        let mut d = Directory::new(Vec::new(), false);
        assert_eq!(d.admit(0, 100, 2), Ok(()));
        f.publisher(&mut d, "a", Codec::Vp8);
        f.viewer(&mut d, "a", Codec::Vp8);
        assert_eq!(d.pending(), 2);
        assert_eq!(d.admit(0, 100, 2), Err(Refusal::Pending));
        assert_eq!(d.admit(0, 100, 3), Ok(()));
        // 97 connected + 2 pending + this one would exceed 100... at 98 it does.
        assert_eq!(d.admit(97, 100, 3), Ok(()));
        assert_eq!(d.admit(98, 100, 3), Err(Refusal::Capacity));
        let st = d.stats();
        assert_eq!((st.refused_pending, st.refused_capacity), (1, 1));
    }

    #[test]
    fn viewers_that_cannot_receive_the_new_codec_are_closed() {
        let f = Fixture::new();
        let (tx, rx) = flume::bounded(256);
        let mut d = Directory::new(vec![tx], false);
        let now = f.t0;
        let active = |d: &mut Directory, session: SessionId, stream: &str, kind: MediaKind| {
            let (channel, codec) = {
                let st = &d.streams[stream];
                let channel = st.channels.iter().find(|(k, _)| *k == kind).unwrap().1;
                let codec = *st.negotiated.iter().find(|c| c.kind() == kind).unwrap();
                (channel, codec)
            };
            d.on_event(
                now,
                ControlEvent::ActiveCodec {
                    session,
                    channel,
                    codec,
                },
                &[],
            );
        };
        // An H264 stream with an H264 viewer on a shard and one pending.
        let (p1, u1) = f.publisher(&mut d, "s", Codec::H264);
        claim(&mut d, now, 0, &u1);
        let (placed, vu) = f.viewer(&mut d, "s", Codec::H264);
        claim(&mut d, now, 0, &vu);
        let (pending, _) = f.viewer(&mut d, "s", Codec::H264);
        assert_eq!(d.pending(), 1);
        active(&mut d, p1, "s", MediaKind::Audio);
        active(&mut d, p1, "s", MediaKind::Video);
        assert_eq!(d.stats().viewers_closed_codec_changed, 0, "H264 fits");
        // A VP8 publisher replaces it: both viewers stay until its codec is
        // known (it may still send what they take) ...
        let (p2, u2) = f.publisher(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &u2);
        assert!(d.session_stream(placed).is_some());
        // ... audio (Opus) still fits ...
        active(&mut d, p2, "s", MediaKind::Audio);
        assert!(d.session_stream(placed).is_some());
        // ... VP8 video does not: both are closed, the placed one on its shard.
        while rx.try_recv().is_ok() {}
        active(&mut d, p2, "s", MediaKind::Video);
        assert_eq!(d.stats().viewers_closed_codec_changed, 2);
        assert!(d.session_stream(placed).is_none());
        assert!(d.session_stream(pending).is_none());
        assert_eq!(
            d.pending(),
            0,
            "the closed pending viewer is no longer counted"
        );
        let sent: Vec<String> = rx.try_iter().map(|c| describe(&c)).collect();
        assert!(sent.contains(&format!("close {placed}")), "{sent:?}");
        let reasons: Vec<(SessionId, &str)> = d
            .recently_closed()
            .map(|c| (c.session, c.reason.as_str()))
            .collect();
        assert!(reasons.contains(&(placed, "codec_changed")), "{reasons:?}");
        assert!(reasons.contains(&(pending, "codec_changed")));
        assert!(reasons.contains(&(p1, "replaced")));
        // A VP8 viewer of the VP8 stream keeps playing when another VP8
        // publisher takes over.
        let (vp8_viewer, vu8) = f.viewer(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &vu8);
        let (p3, u3) = f.publisher(&mut d, "s", Codec::Vp8);
        claim(&mut d, now, 0, &u3);
        active(&mut d, p3, "s", MediaKind::Video);
        assert!(d.session_stream(vp8_viewer).is_some());
        assert_eq!(d.stats().viewers_closed_codec_changed, 2);
        let mut out = String::new();
        d.render_metrics(&mut out);
        assert!(
            out.contains("corecast_viewers_closed_total{reason=\"codec_changed\"} 2"),
            "{out}"
        );
    }
}
